"""Drawings that show themselves in Jupyter: stroke-3 arrays with an SVG picture.

    sheep = sketchvae.load("sheep")
    drawings = sheep.sample(8, seed=0)   # Drawings: a list of 8 Drawing; a notebook shows them as a grid
    drawings[0]                          # a Drawing: one sheep, drawn
    drawings[0][:, 0:2].sum(axis=0)      # and a numpy array: (dx, dy) summed
    np.asarray(drawings[0])              # the plain (n, 3) float32 array, no copy

`Drawing` is a subclass of `np.ndarray` (a view, no copy), so whatever takes a stroke-3 array takes it:
numpy functions, `sketchvae.strokes`, `sketchvae.render`, `torch.as_tensor`, the sampler's own inputs.
Slicing keeps the type, and so does arithmetic while the result is still an (n, 3) array of numbers
(`d * 2`, `np.cumsum(d, axis=0)`); other results (`d.sum()`, `d > 0`) are plain numpy.  Only a 2-d
array with 3 columns and finite values draws itself; anything else shows as the plain array would.
A Drawing pickles as a plain `np.ndarray`, so saved drawings (`np.savez` of an object array,
`pickle`) hold nothing but numpy arrays and the safe `.npz` reader (`sketchvae.data.formats`) loads
them.

`Drawings` is a `list` of them, what every sampling function of `sketchvae.sample` returns: its
picture is a grid (`render.grid_svg`, up to 8 to a row); a Drawings of Drawings (`reconstruct`: one
row per input sketch) draws a row for each; `cols` lays a strip out in one row
(`interpolation_strip`), and `given` (`complete`) draws every drawing's first `len(given)` points in
black and the rest in red, as `render.completion_svg` does.  Slices keep the type; a Drawings
pickles as a plain list.

Not to be confused with `sketchvae.data.formats.Drawing`, one record of an `.ndjson` file.
This module does not import torch.
"""

from __future__ import annotations

import numpy as np

from sketchvae import render

ROW = 8  # cells per row at most when a flat Drawings lays itself out (wide rows suit a notebook)


def _drawable(s) -> bool:
    """Whether `s` is a stroke-3 array that render can draw: (n >= 1, 3), finite."""
    s = np.asarray(s)
    return s.ndim == 2 and s.shape[1] == 3 and len(s) > 0 and s.dtype.kind in "iuf" and bool(np.isfinite(s).all())


class Drawing(np.ndarray):
    """A stroke-3 sketch (n, 3) = (dx, dy, pen_lifted_after_this_point) that draws itself in Jupyter."""

    def __new__(cls, s3):
        arr = np.asarray(s3)
        if arr.ndim != 2 or arr.shape[1] != 3:
            raise ValueError(f"a Drawing is a stroke-3 array (n, 3), got shape {arr.shape}")
        return arr.view(cls)

    def __array_wrap__(self, arr, context=None, return_scalar=False):
        # What numpy functions compute from a Drawing (d * 2, np.cumsum(d, 0), d.sum(), d > 0) is a Drawing
        # only while it still has the shape and number type of one; sums come back as numbers.
        if arr.ndim == 2 and arr.shape[1] == 3 and arr.dtype.kind in "iuf":
            return arr.view(Drawing)
        arr = arr.view(np.ndarray)
        return arr[()] if return_scalar else arr

    def __iter__(self):
        return iter(self.view(np.ndarray))  # rows (3,) are points, not drawings (and plain rows are faster)

    def __reduce__(self):
        return np.asarray(self).__reduce__()  # pickled as a plain array: loading needs no sketchvae class

    def _repr_svg_(self) -> str | None:
        return render.sketch_svg(self, size=2 * render.DEFAULT_CELL) if _drawable(self) else None


def _wrap(item):
    """An item of a Drawings: Drawings stay, lists of arrays become Drawings, arrays become Drawing."""
    if isinstance(item, (Drawing, Drawings)):
        return item
    if isinstance(item, (list, tuple)):
        return Drawings(item)
    return Drawing(item)


class Drawings(list):
    """A list of `Drawing` (or of `Drawings`, one per row) that draws itself as a grid in Jupyter.

    cols: cells per row of the picture (None: up to `ROW`; rows of a nested Drawings set their own).
    given: the stroke-3 prefix every drawing starts with (`complete`), drawn in another colour.
    """

    def __init__(self, items=(), *, cols: int | None = None, given=None):
        super().__init__(_wrap(s) for s in items)
        self.cols = cols
        self.given = None if given is None else np.asarray(given)

    def __getitem__(self, index):
        item = super().__getitem__(index)
        return Drawings(item, given=self.given) if isinstance(index, slice) else item

    def __reduce__(self):
        return list, (list(self),)  # pickled as a plain list of plain arrays

    def __repr__(self) -> str:
        return f"Drawings({super().__repr__()})"

    def _repr_svg_(self) -> str | None:
        if not self:
            return None
        if all(isinstance(row, Drawings) for row in self):
            widths = {len(row) for row in self}
            cells = [s for row in self for s in row]
            cols = widths.pop() if len(widths) == 1 else None
        else:
            cells, cols = list(self), self.cols or min(len(self), ROW)
        if not cells or not all(_drawable(s) for s in cells):
            return None
        given = self.given
        if given is not None and _drawable(given) and all(len(s) >= len(given) for s in cells):
            return render.completion_svg(given, [s[len(given):] for s in cells], cols=cols, show_given=False)
        return render.grid_svg(cells, cols=cols)


__all__ = ["Drawing", "Drawings"]
