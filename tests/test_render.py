"""SVG rendering: valid XML, one cell per sketch, captions, every point inside its cell."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from sketchvae import render as R

NS = "{http://www.w3.org/2000/svg}"


def parse(text: str) -> ET.Element:
    root = ET.fromstring(text)
    assert root.tag == f"{NS}svg"
    return root


def cells(root) -> list[ET.Element]:
    return [g for g in root.iter(f"{NS}g") if g.get("class") == "cell"]


def points_of(cell) -> np.ndarray:
    pts = []
    for el in cell.iter():
        if el.tag == f"{NS}polyline":
            pts += [tuple(map(float, p.split(","))) for p in el.get("points").split()]
        elif el.tag == f"{NS}circle":
            pts.append((float(el.get("cx")), float(el.get("cy"))))
    return np.array(pts).reshape(-1, 2)


def sketch(rng, n=20, spread=50.0) -> np.ndarray:
    s = np.zeros((n, 3), np.float32)
    s[:, 0:2] = rng.normal(0, spread, (n, 2))
    s[n // 2, 2] = s[-1, 2] = 1
    return s


def test_single_sketch_is_valid_svg_and_saved(tmp_path):
    s = sketch(np.random.default_rng(0))
    out = tmp_path / "sub" / "one.svg"
    text = R.sketch_svg(s, out, size=200)
    root = parse(text)
    assert root.get("width") == "200px"
    assert parse(out.read_text()).tag == f"{NS}svg"
    assert len([e for e in root.iter(f"{NS}polyline")]) == 2  # two strokes
    assert R.sketch_svg(s, None) == R.sketch_svg(s)


@pytest.mark.parametrize("count,rows,cols,shape", [(7, None, 3, (3, 3)), (6, 2, None, (2, 3)), (5, None, None, (2, 3)),
                                                   (4, 1, None, (1, 4))])
def test_grid_cells_captions_and_fit(count, rows, cols, shape):
    rng = np.random.default_rng(count)
    # wildly different sizes and positions: every one must be scaled into its own cell
    sketches = [sketch(rng, spread=10.0 ** (k % 4)) for k in range(count)]
    sketches[0][0, 0:2] += 5000
    cell = 100
    margin = 0.1
    captions = [f"cap {k}" for k in range(count)]
    root = parse(R.grid_svg(sketches, rows=rows, cols=cols, captions=captions, cell_size=cell, margin=margin))
    cs = cells(root)
    assert len(cs) == count
    texts = [t for t in root.iter(f"{NS}text") if t.get("class") == "caption"]
    assert [t.text for t in texts] == captions
    width, height = float(root.get("width")[:-2]), float(root.get("height")[:-2])
    assert width == shape[1] * cell
    band = height / shape[0] - cell
    assert band > 0
    for k, c in enumerate(cs):
        r, col = divmod(k, shape[1])
        x0, y0 = col * cell, r * (cell + band)
        pts = points_of(c)
        assert len(pts) == len(sketches[k])
        lo, hi = x0 + margin * cell - 0.02, x0 + (1 - margin) * cell + 0.02
        assert pts[:, 0].min() >= lo and pts[:, 0].max() <= hi
        assert pts[:, 1].min() >= y0 + margin * cell - 0.02 and pts[:, 1].max() <= y0 + (1 - margin) * cell + 0.02
        # fitted: the longer side fills the inner box
        ext = pts.max(0) - pts.min(0)
        assert max(ext) == pytest.approx(cell * (1 - 2 * margin), abs=0.05)


def test_aspect_ratio_is_kept():
    s = np.array([[0, 0, 0], [100, 0, 0], [0, 25, 1]], np.float32)
    pts = points_of(cells(parse(R.grid_svg([s], cell_size=100, margin=0.0)))[0])
    ext = pts.max(0) - pts.min(0)
    assert ext[0] == pytest.approx(100, abs=0.02) and ext[1] == pytest.approx(25, abs=0.02)


def test_empty_and_single_point_sketches():
    root = parse(R.grid_svg([np.zeros((0, 3)), np.array([[3.0, 4.0, 1.0]])], cols=2))
    empty, dot = cells(root)
    assert len(points_of(empty)) == 0
    assert len([e for e in dot.iter(f"{NS}circle")]) == 1


def test_color_by_order():
    s = sketch(np.random.default_rng(1), 30)
    s[[5, 10, 20], 2] = 1
    root = parse(R.sketch_svg(s, color_by_order=True))
    colors = [e.get("stroke") for e in root.iter(f"{NS}polyline")]
    assert len(colors) == 5 and len(set(colors)) == 5
    assert all(re.fullmatch(r"#[0-9a-f]{6}", c) for c in colors)


def test_interpolation_strip_is_one_row_with_t_captions():
    rng = np.random.default_rng(2)
    root = parse(R.interpolation_svg([sketch(rng) for _ in range(5)], cell_size=50))
    assert float(root.get("width")[:-2]) == 250
    assert [t.text for t in root.iter(f"{NS}text")] == ["t=0.00", "t=0.25", "t=0.50", "t=0.75", "t=1.00"]


def test_completion_colours_given_and_continuations(tmp_path):
    rng = np.random.default_rng(3)
    given = sketch(rng, 10)
    tails = [sketch(rng, 6) for _ in range(3)]
    tails[0][0, 0:2] = 0  # first continuation point == the given sketch's last point
    text = R.completion_svg(given, tails, tmp_path / "c.svg", given_color="#000000", continuation_color="#ff0000")
    root = parse(text)
    cs = cells(root)
    assert len(cs) == 4  # the given sketch alone, then 3 completions
    for k, c in enumerate(cs):
        lines = [e for e in c.iter(f"{NS}polyline")]
        given_lines = [e for e in lines if "given" in e.get("class")]
        cont_lines = [e for e in lines if "continuation" in e.get("class")]
        assert len(given_lines) == 2 and {e.get("stroke") for e in given_lines} == {"#000000"}
        assert len(cont_lines) == (0 if k == 0 else 2)
        assert {e.get("stroke") for e in cont_lines} <= {"#ff0000"}
    # the continuation starts where the given sketch ends (same transform within a cell)
    c = cs[1]
    last_given = [e for e in c.iter(f"{NS}polyline") if "given" in e.get("class")][-1].get("points").split()[-1]
    first_cont = [e for e in c.iter(f"{NS}polyline") if "continuation" in e.get("class")][0].get("points").split()[0]
    gx, gy = map(float, last_given.split(","))
    cx, cy = map(float, first_cont.split(","))
    assert (cx, cy) == pytest.approx((gx, gy), abs=0.02)
    assert len(R.completion_svg(given, tails, show_given=False).split('class="cell"')) - 1 == 3


def test_bad_arguments():
    s = np.zeros((3, 3))
    with pytest.raises(ValueError, match="captions"):
        R.grid_svg([s, s], captions=["one"])
    with pytest.raises(ValueError, match="do not fit"):
        R.grid_svg([s] * 5, rows=2, cols=2)
    with pytest.raises(ValueError, match="stroke-3"):
        R.grid_svg([np.zeros((3, 2))])
    with pytest.raises(ValueError, match="non-finite"):
        R.sketch_svg(np.array([[np.nan, 0, 1]]))


def test_module_imports_without_svgwrite_or_torch():
    import subprocess
    import sys

    code = ("import sys; sys.modules['svgwrite'] = None; sys.modules['torch'] = None; "
            "import sketchvae.render as r; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr
