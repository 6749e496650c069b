"""Stroke formats and pure-numpy stroke operations (no torch).

stroke-3  (n, 3): ``(dx, dy, pen_lifted_after_this_point)``. Offsets are relative to the
          previous point (the first one relative to the origin). The storage format of
          Quick, Draw!'s Sketch-RNN ``.npz`` files (int16). A well-formed sketch ends with a
          pen lift.
stroke-5  (L, 5): ``(dx, dy, p_down, p_up, p_end)``, one-hot pen state; the model's format.
          The start token ``(0, 0, 1, 0, 0)`` is prepended by the batch collate, not here;
          rows after the end are ``(0, 0, 0, 0, 1)``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

START_TOKEN = np.array([0.0, 0.0, 1.0, 0.0, 0.0], dtype=np.float32)
END_ROW = np.array([0.0, 0.0, 0.0, 0.0, 1.0], dtype=np.float32)
# What a model reads has its offsets clamped to [-OFFSET_LIMIT, OFFSET_LIMIT] (data units, before
# scaling), in training batches and at inference alike, as magenta's DataLoader does with its `limit`
# ("removes large gaps"); the published data sets stay below 700, so this only touches larger jumps.
OFFSET_LIMIT = 1000


def _as_stroke3(s3) -> np.ndarray:
    s3 = np.asarray(s3)
    if s3.ndim != 2 or s3.shape[1] != 3:
        raise ValueError(f"expected a stroke-3 array of shape (n, 3), got shape {s3.shape}")
    return s3


def to_stroke5(s3, max_len: int | None = None) -> np.ndarray:
    """stroke-3 (n, 3) -> stroke-5 (max_len or n, 5) float32, end rows as padding.

    As magenta's ``to_big_strokes``: ``p_up`` is the stroke-3 pen bit, ``p_down = 1 - p_up``.
    """
    s3 = _as_stroke3(s3)
    n = len(s3)
    length = n if max_len is None else max_len
    if n > length:
        raise ValueError(f"sketch has {n} points, more than max_len={length}")
    out = np.zeros((length, 5), dtype=np.float32)
    out[:n, 0:2] = s3[:, 0:2]
    out[:n, 3] = s3[:, 2]
    out[:n, 2] = 1.0 - out[:n, 3]
    out[n:, 4] = 1.0
    return out


def to_stroke3(s5) -> np.ndarray:
    """stroke-5 (L, 5) -> stroke-3 (n, 3) float32, stopping at the first end row.

    The pen bit of each row is 1 when its most likely pen state is ``p_up`` (works for
    one-hot rows and for probabilities). The last kept row gets a pen lift so the result
    is a well-formed sketch.
    """
    s5 = np.asarray(s5, dtype=np.float32)
    if s5.ndim != 2 or s5.shape[1] != 5:
        raise ValueError(f"expected a stroke-5 array of shape (L, 5), got shape {s5.shape}")
    pen = s5[:, 2:5].argmax(axis=1)
    ends = np.flatnonzero(pen == 2)
    n = int(ends[0]) if len(ends) else len(s5)
    out = np.zeros((n, 3), dtype=np.float32)
    out[:, 0:2] = s5[:n, 0:2]
    out[:, 2] = (pen[:n] == 1).astype(np.float32)
    if n:
        out[-1, 2] = 1.0
    return out


def to_polylines(s3, start: Sequence[float] = (0.0, 0.0)) -> list[np.ndarray]:
    """stroke-3 -> list of absolute polylines (k, 2) float64, one per stroke.

    Points after the last pen lift (a sketch not ending in a lift) form a final stroke.
    """
    s3 = _as_stroke3(s3)
    if len(s3) == 0:
        return []
    xy = np.cumsum(s3[:, 0:2].astype(np.float64), axis=0) + np.asarray(start, dtype=np.float64)
    cuts = np.flatnonzero(s3[:, 2] > 0.5) + 1
    return [p for p in np.split(xy, cuts) if len(p)]


def from_polylines(polylines: Sequence[np.ndarray], dtype=np.float32) -> np.ndarray:
    """List of absolute polylines -> stroke-3; the first offset is from the origin (0, 0)."""
    polys = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in polylines]
    polys = [p for p in polys if len(p)]
    if not polys:
        return np.zeros((0, 3), dtype=dtype)
    xy = np.concatenate(polys)
    pen = np.zeros(len(xy))
    pen[np.cumsum([len(p) for p in polys]) - 1] = 1.0
    out = np.empty((len(xy), 3), dtype=np.float64)
    out[:, 0:2] = np.diff(xy, axis=0, prepend=np.zeros((1, 2)))
    out[:, 2] = pen
    return out.astype(dtype)


def bounds(s3) -> tuple[float, float, float, float]:
    """(min_x, max_x, min_y, max_y) of the absolute path (starting at the origin)."""
    s3 = _as_stroke3(s3)
    if len(s3) == 0:
        return (0.0, 0.0, 0.0, 0.0)
    xy = np.cumsum(s3[:, 0:2].astype(np.float64), axis=0)
    return (float(xy[:, 0].min()), float(xy[:, 0].max()), float(xy[:, 1].min()), float(xy[:, 1].max()))


def scale_factor(sketches: Sequence[np.ndarray] | np.ndarray) -> float:
    """Std of all dx and dy of a set of sketches (Sketch-RNN's normalising scale factor).

    Accepts a list of stroke-3 arrays or one (N, 3) array of concatenated rows.
    """
    if isinstance(sketches, np.ndarray) and sketches.ndim == 2:
        rows = sketches
    else:
        rows = np.concatenate([_as_stroke3(s) for s in sketches]) if len(sketches) else np.zeros((0, 3))
    if len(rows) == 0:
        raise ValueError("cannot compute a scale factor from an empty set of sketches")
    std = float(np.std(rows[:, 0:2].astype(np.float64)))
    if not np.isfinite(std) or std <= 0:
        raise ValueError(f"degenerate scale factor {std}: all offsets are equal or not finite")
    return std


def normalize(s3, scale: float) -> np.ndarray:
    """float32 copy with offsets divided by ``scale``."""
    out = _as_stroke3(s3).astype(np.float32, copy=True)
    out[:, 0:2] /= scale
    return out


def model_input(s3, scale: float) -> np.ndarray:
    """What a model reads of a stroke-3 sketch in data units: offsets clamped to +-OFFSET_LIMIT, then
    divided by ``scale`` (float32 copy; what training batches hold, see `sketchvae.data.batching`)."""
    return normalize(clamp(s3, OFFSET_LIMIT), scale)


def denormalize(s3, scale: float) -> np.ndarray:
    """float32 copy with offsets multiplied by ``scale`` (inverse of :func:`normalize`)."""
    out = _as_stroke3(s3).astype(np.float32, copy=True)
    out[:, 0:2] *= scale
    return out


def clamp(s3, limit: float) -> np.ndarray:
    """Copy with offsets clamped to [-limit, limit] (pen bits untouched)."""
    out = _as_stroke3(s3).copy()
    np.clip(out[:, 0:2], -limit, limit, out=out[:, 0:2])
    return out


def augment(s3, rng: np.random.Generator, scale_range: float = 0.15, drop_prob: float = 0.0) -> np.ndarray:
    """Sketch-RNN data augmentation as magenta's ``DataLoader``; returns a float32 copy.

    1. random per-axis scale: dx *= U(1 - r, 1 + r), dy *= U(1 - r, 1 + r) (magenta's
       ``random_scale`` with ``random_scale_factor`` r); two draws ``rng.uniform(.., size=2)``;
    2. point dropping with probability ``drop_prob`` (magenta's ``augment_strokes``, see
       :func:`drop_points`); one draw ``rng.random()`` per point, all drawn as ``rng.random(n)``.
    """
    out = _as_stroke3(s3).astype(np.float32, copy=True)
    if scale_range > 0:
        sx, sy = rng.uniform(1.0 - scale_range, 1.0 + scale_range, size=2)
        out[:, 0] *= sx
        out[:, 1] *= sy
    if drop_prob > 0 and len(out):
        out = drop_points(out, rng.random(len(out)), drop_prob)
    return out


def drop_points(s3, draws, prob: float) -> np.ndarray:
    """magenta's ``augment_strokes`` with the uniform draws given (one per point, ``draws`` (n,)).

    Point i is dropped when ``draws[i] < prob``, its pen is down (0), the point before it has its
    pen down too, and it is at least the fourth point of its stroke (magenta's ``count > 2``: the
    first three points of every stroke, counted from the point after a pen lift, are kept).  Runs of
    dropped points are allowed.  A dropped point's offset is added to the last KEPT point before it,
    so the kept points' offsets still sum to the same path end, every pen lift is kept (the number of
    strokes is unchanged) and so is each stroke's last point; the kept point before a run of drops
    moves to where the run ends.  Returns a copy, float32 when the input is.
    """
    out = _as_stroke3(s3).copy()
    draws = np.asarray(draws, dtype=np.float64).reshape(-1)
    if len(draws) != len(out):
        raise ValueError(f"drop_points: {len(draws)} draws for {len(out)} points")
    first = np.zeros(len(out), dtype=bool)
    if len(out):
        first[0] = True
    keep = _drop_in_place(out[:, 0], out[:, 1], out[:, 2], draws, prob, first)
    return out[keep]


def _drop_in_place(x: np.ndarray, y: np.ndarray, lift: np.ndarray, draws: np.ndarray, prob: float,
                   sketch_start: np.ndarray) -> np.ndarray:
    """Vectorised ``augment_strokes`` over one or many concatenated sketches (``sketch_start`` marks
    each sketch's first point): adds each dropped point's offset to the last kept point before it
    (in point order, as the reference's loop does: ``np.add.at`` applies them one by one) and returns
    the keep mask (N,) bool."""
    n = len(lift)
    idx = np.arange(n)
    prev_up = np.ones(n, dtype=bool)  # a sketch starts as after a pen lift (magenta's prev_stroke [0, 0, 1])
    prev_up[1:] = lift[:-1] == 1
    prev_up |= sketch_start
    reset = (lift == 1) | prev_up  # magenta's count = 0
    count = idx - np.maximum.accumulate(np.where(reset, idx, 0))
    prev_down = np.zeros(n, dtype=bool)
    prev_down[1:] = lift[:-1] == 0
    prev_down &= ~sketch_start
    drop = (lift == 0) & prev_down & (count > 2) & (draws < prob)
    dropped = np.flatnonzero(drop)
    if len(dropped):
        target = np.maximum.accumulate(np.where(drop, -1, idx))[dropped]  # the last kept point before each
        np.add.at(x, target, x[dropped])
        np.add.at(y, target, y[dropped])
    return ~drop


def rdp(points, epsilon: float) -> np.ndarray:
    """Ramer-Douglas-Peucker simplification of a polyline (k, 2); keeps both endpoints.

    Iterative (explicit stack), so long raw strokes cannot hit the recursion limit.
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"expected points of shape (k, 2), got {pts.shape}")
    n = len(pts)
    if n < 3:
        return pts.copy()
    keep = np.zeros(n, dtype=bool)
    keep[0] = keep[-1] = True
    stack = [(0, n - 1)]
    while stack:
        a, b = stack.pop()
        if b - a < 2:
            continue
        seg = pts[b] - pts[a]
        rel = pts[a + 1:b] - pts[a]
        norm = np.hypot(seg[0], seg[1])
        if norm == 0:
            dist = np.hypot(rel[:, 0], rel[:, 1])
        else:
            dist = np.abs(seg[0] * rel[:, 1] - seg[1] * rel[:, 0]) / norm
        i = int(np.argmax(dist))
        if dist[i] > epsilon:
            k = a + 1 + i
            keep[k] = True
            stack.append((a, k))
            stack.append((k, b))
    return pts[keep]
