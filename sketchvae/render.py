"""Stroke-3 sketches -> SVG: single sketches, grids, interpolation strips, completions (svgwrite).

    sketch_svg(s3, "cat.svg")                              one sketch
    grid_svg(sketches, cols=8, captions=names, path=...)   a grid of cells, optional captions
    interpolation_svg(sketches, path=...)                  one row, z_a ... z_b
    completion_svg(given, continuations, path=...)         the given strokes in one colour, each
                                                           continuation in another

Coordinates are those of the data (Quick, Draw!: x right, y DOWN, as SVG), so sketches appear the
way they were drawn.  Every sketch is scaled uniformly and centred to fit its cell, leaving a margin
(a fraction of the cell on each side); the cell's own size does not depend on the sketch.  Every
function returns the SVG document as a string and also writes it to `path` when one is given.

Structure (what the tests and any post-processing can rely on): each cell is a
`<g class="cell" id="cell-K">` holding one `<polyline class="stroke">` per stroke (a one-point
stroke is a `<circle class="dot">`), given strokes of a completion carry class "given",
continuations class "continuation"; captions are `<text class="caption">` below the drawing,
inside the cell.

svgwrite is imported inside the functions, so `import sketchvae.render` works without it; this
module does not import torch.
"""

from __future__ import annotations

import colorsys
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from sketchvae.strokes import to_polylines

DEFAULT_CELL = 128          # px, width and height of a cell's drawing area
DEFAULT_MARGIN = 0.08       # fraction of the cell left empty on each side
CAPTION_SIZE = 12           # px font size of captions
GIVEN_COLOR = "#222222"
CONTINUATION_COLOR = "#d62728"


def _check_sketch(s3, k: int = 0) -> np.ndarray:
    s3 = np.asarray(s3, dtype=np.float64)
    if s3.ndim != 2 or s3.shape[1] != 3:
        raise ValueError(f"sketch {k}: expected a stroke-3 array (n, 3), got shape {s3.shape}")
    if not np.isfinite(s3).all():
        raise ValueError(f"sketch {k}: has non-finite offsets")
    return s3


def order_colors(count: int) -> list[str]:
    """`count` colours along a hue ramp (blue -> red), for colouring strokes by drawing order."""
    out = []
    for i in range(count):
        h = 0.66 * (1.0 - (i / (count - 1) if count > 1 else 0.0))
        r, g, b = colorsys.hls_to_rgb(h, 0.42, 0.75)
        out.append(f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}")
    return out


def _fit(polys: Sequence[np.ndarray], x0: float, y0: float, w: float, h: float, margin: float):
    """Uniform scale + offset mapping the polylines' box into the cell box shrunk by the margin."""
    if not polys:
        return 1.0, x0 + w / 2, y0 + h / 2, 0.0, 0.0
    pts = np.concatenate(polys)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    ext = hi - lo
    inner_w, inner_h = w * (1 - 2 * margin), h * (1 - 2 * margin)
    scale = min(inner_w / ext[0] if ext[0] > 0 else math.inf, inner_h / ext[1] if ext[1] > 0 else math.inf)
    if not math.isfinite(scale):
        scale = 1.0  # a single point (or all points equal)
    centre = (lo + hi) / 2
    return scale, x0 + w / 2, y0 + h / 2, float(centre[0]), float(centre[1])


def _points(p: np.ndarray, fit) -> list[tuple[float, float]]:
    scale, cx, cy, mx, my = fit
    xy = (p - np.array([mx, my])) * scale + np.array([cx, cy])
    return [(round(float(x), 2), round(float(y), 2)) for x, y in xy]


def _draw_polys(dwg, group, polys, fit, colors, width: float, cls: str) -> None:
    for poly, color in zip(polys, colors):
        pts = _points(poly, fit)
        if len(pts) == 1:
            group.add(dwg.circle(center=pts[0], r=max(width / 2, 0.5), fill=color, class_=f"dot {cls}".strip()))
        else:
            group.add(dwg.polyline(pts, fill="none", stroke=color, stroke_width=width, stroke_linecap="round",
                                   stroke_linejoin="round", class_=f"stroke {cls}".strip()))


def _layout(count: int, rows: int | None, cols: int | None) -> tuple[int, int]:
    for name, v in (("rows", rows), ("cols", cols)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ValueError(f"{name}={v!r} must be an integer >= 1")
    if count == 0:
        return 1, 1
    if cols is None and rows is None:
        cols = min(count, max(1, math.ceil(math.sqrt(count))))
    if cols is None:
        cols = math.ceil(count / rows)
    if rows is None:
        rows = math.ceil(count / cols)
    if rows * cols < count:
        raise ValueError(f"{count} sketches do not fit in {rows} rows x {cols} columns")
    return rows, cols


def _document(path, width: float, height: float, background: str | None):
    import svgwrite

    dwg = svgwrite.Drawing(str(path) if path is not None else "sketch.svg", size=(f"{width:g}px", f"{height:g}px"),
                           profile="full", debug=False)
    dwg.viewbox(0, 0, width, height)
    if background:
        dwg.add(dwg.rect(insert=(0, 0), size=(width, height), fill=background, class_="background"))
    return dwg


def _finish(dwg, path) -> str:
    text = dwg.tostring()
    if path is not None:
        from sketchvae.runtime import atomic_write

        doc = '<?xml version="1.0" encoding="utf-8" ?>\n' + text
        atomic_write(Path(path), lambda tmp: Path(tmp).write_text(doc, encoding="utf-8"))
    return text


def _cells(items, rows, cols, cell: float, captions, margin: float, draw_cell, path, background,
           caption_size: float, border: bool) -> str:
    """Lay out `items` in a grid; `draw_cell(dwg, group, item, x0, y0, w, h)` draws one."""
    count = len(items)
    rows, cols = _layout(count, rows, cols)
    if captions is not None:
        captions = [None if c is None else str(c) for c in captions]
        if len(captions) != count:
            raise ValueError(f"got {len(captions)} captions for {count} sketches")
    if not (isinstance(margin, (int, float)) and 0 <= margin < 0.5):
        raise ValueError(f"margin={margin!r} must be a fraction in [0, 0.5)")
    if not (isinstance(cell, (int, float)) and cell > 0):
        raise ValueError(f"cell_size={cell!r} must be > 0")
    band = caption_size * 1.6 if captions is not None else 0.0
    cell_h = cell + band
    dwg = _document(path, cols * cell, rows * cell_h, background)
    for k, item in enumerate(items):
        r, c = divmod(k, cols)
        x0, y0 = c * cell, r * cell_h
        group = dwg.g(id=f"cell-{k}", class_="cell")
        if border:
            group.add(dwg.rect(insert=(x0, y0), size=(cell, cell_h), fill="none", stroke="#dddddd",
                               stroke_width=1, class_="border"))
        draw_cell(dwg, group, item, x0, y0, cell, cell, margin)
        if captions is not None and captions[k]:
            group.add(dwg.text(captions[k], insert=(x0 + cell / 2, y0 + cell + caption_size * 1.1),
                               text_anchor="middle", font_size=caption_size, font_family="sans-serif",
                               fill="#333333", class_="caption"))
        dwg.add(group)
    return _finish(dwg, path)


def _sketch_drawer(color: str, width: float, color_by_order: bool):
    def draw(dwg, group, s3, x0, y0, w, h, margin):
        polys = to_polylines(s3)
        fit = _fit(polys, x0, y0, w, h, margin)
        colors = order_colors(len(polys)) if color_by_order else [color] * len(polys)
        _draw_polys(dwg, group, polys, fit, colors, width, "")

    return draw


def sketch_svg(s3, path=None, *, size: float = 256, margin: float = DEFAULT_MARGIN, color: str = "black",
               stroke_width: float = 2.0, color_by_order: bool = False, background: str | None = "white") -> str:
    """One sketch in a `size` x `size` SVG; returns the SVG text (and writes it to `path` if given)."""
    s3 = _check_sketch(s3)
    return _cells([s3], 1, 1, size, None, margin, _sketch_drawer(color, stroke_width, color_by_order), path,
                  background, CAPTION_SIZE, False)


def grid_svg(sketches, rows: int | None = None, cols: int | None = None, captions=None, path=None, *,
             cell_size: float = DEFAULT_CELL, margin: float = DEFAULT_MARGIN, color: str = "black",
             stroke_width: float = 1.5, color_by_order: bool = False, background: str | None = "white",
             caption_size: float = CAPTION_SIZE, border: bool = True) -> str:
    """Sketches in a grid (row-major), each fitted to its cell; captions (one per sketch) below them.

    rows / cols: either, both or neither (then a near-square grid).  Returns the SVG text.
    """
    items = [_check_sketch(s, k) for k, s in enumerate(sketches)]
    return _cells(items, rows, cols, cell_size, captions, margin, _sketch_drawer(color, stroke_width, color_by_order),
                  path, background, caption_size, border)


def interpolation_svg(sketches, path=None, *, captions=None, rows: int | None = 1, **kw) -> str:
    """An interpolation strip: the sketches decoded along z_a -> z_b in one row (or `rows`).
    Default captions: the interpolation fraction t of each step."""
    sketches = list(sketches)
    if captions is None and sketches:
        count = len(sketches)
        captions = [f"t={i / (count - 1):.2f}" if count > 1 else "t=0.00" for i in range(count)]
    return grid_svg(sketches, rows=rows, captions=captions, path=path, **kw)


def completion_svg(given, continuations, path=None, *, rows: int | None = None, cols: int | None = None,
                   captions=None, show_given: bool = True, cell_size: float = DEFAULT_CELL,
                   margin: float = DEFAULT_MARGIN, given_color: str = GIVEN_COLOR,
                   continuation_color: str = CONTINUATION_COLOR, stroke_width: float = 1.5,
                   background: str | None = "white", caption_size: float = CAPTION_SIZE) -> str:
    """Completions of one partial sketch: every cell shows the given strokes in `given_color` and one
    continuation in `continuation_color`.  `continuations` are the parts after the given sketch
    (stroke-3 whose first offset is from the given sketch's last point, `complete(...)[i][len(given):]`).
    show_given: a first cell with the given strokes alone.  Each cell is fitted to given + continuation.
    """
    given = _check_sketch(given)
    tails = [_check_sketch(c, k) for k, c in enumerate(continuations)]
    items = ([None] if show_given else []) + tails
    if captions is None:
        captions = (["given"] if show_given else []) + [f"#{k + 1}" for k in range(len(tails))]
    gpolys = to_polylines(given)
    end = np.cumsum(given[:, 0:2], axis=0)[-1] if len(given) else np.zeros(2)

    def draw(dwg, group, tail, x0, y0, w, h, m):
        cpolys = [] if tail is None else to_polylines(tail, start=end)
        if cpolys and gpolys and len(given) and given[-1, 2] < 0.5:
            cpolys[0] = np.concatenate([gpolys[-1][-1:], cpolys[0]])  # the pen was down: join the stroke
        fit = _fit(gpolys + cpolys, x0, y0, w, h, m)
        _draw_polys(dwg, group, gpolys, fit, [given_color] * len(gpolys), stroke_width, "given")
        _draw_polys(dwg, group, cpolys, fit, [continuation_color] * len(cpolys), stroke_width, "continuation")

    return _cells(items, rows, cols, cell_size, captions, margin, draw, path, background, caption_size, True)


__all__ = ["sketch_svg", "grid_svg", "interpolation_svg", "completion_svg", "order_colors"]
