"""Batches for Sketch-RNN: a dataset over the HDF5 cache, a length-bucketed (and rank-sharded)
batch sampler and a vectorised stroke-5 collate.

Pieces (all deterministic functions of ``seed``, ``epoch`` and the sketch's index in its split):

* :class:`SketchDataset` - items of one cache split, addressed by their index in the split:
  ``dataset[i] -> (stroke-3 float32 (n, 3) with offsets / scale_factor (augmented), label)``.
  Sketches longer than ``max_len`` (or empty) are left out at construction: ``dataset.indices``
  lists the usable ones, ``dataset.num_too_long`` / ``num_empty`` count the others (logged), and
  asking for one of them raises ``ValueError``.  :meth:`SketchDataset.collate` is the fast path:
  a whole batch straight from the memory-mapped points.
* :class:`BucketBatchSampler` - batches of similar length: each epoch the sketches are
  permuted (seeded by ``(seed, epoch)``), cut into large random chunks, sorted by length inside
  each chunk, cut into batches, and the batch order is shuffled.  Sharded for
  DistributedDataParallel: every rank builds the same global order (same seed) and takes a
  disjoint, equal-count share; rank ``r`` gets batch ``r`` of each group of ``world_size``
  neighbouring batches, so the ranks of one step have similar lengths (no rank waits for a long one).
  ``set_epoch(e, batch_index=k)`` / ``state_dict()`` start at batch ``k`` of epoch ``e``.
* :func:`collate_stroke5` (items -> :class:`Batch`) and :func:`collate_indices` (split indices
  -> :class:`Batch`, gathered from the memmap in one go, no per-point Python).
* :func:`make_loader` -> :class:`SketchLoader`: an iterable of :class:`Batch` per epoch that
  remembers its position (``state_dict()`` after any batch resumes exactly at the next one).

Batch layout (the model's input), B sketches, T = longest in the batch (or ``max_len``)::

    strokes  float32 (B, T + 1, 5)   row 0 = start token (0, 0, 1, 0, 0); rows 1..n real points
                                     (dx, dy, p_down, p_up, 0); rows after the end (0, 0, 0, 0, 1)
    lengths  int64   (B,)            n, real points excluding the start token
    labels   int64   (B,)            class indices (index into the cache's class_names)

Offsets are clamped to +-``OFFSET_LIMIT`` (1000, magenta's ``limit``) and divided by the scale factor.
Augmentation (``augment={"scale_range": r, "drop_prob": p}``, see :func:`sketchvae.strokes.augment`)
is applied to the normalised sketch with the generator :func:`item_rng` ``(seed, epoch, index)``:
the same sketch in the same epoch is augmented identically whatever batch, rank, worker or
resumed run it lands in.  The fast path reproduces ``strokes.augment`` exactly (tested), with
the per-point work vectorised over the batch.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
import math
import numbers
import queue
import threading
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from sketchvae import strokes

log = logging.getLogger(__name__)

AUGMENT_KEYS = ("scale_range", "drop_prob")
OFFSET_LIMIT = strokes.OFFSET_LIMIT  # offsets are clamped to +-1000 in every batch (see strokes.OFFSET_LIMIT)
_SHUFFLE_TAG = 0x5B0C  # separates the sampler's and the augmentation's seed sequences
_AUGMENT_TAG = 0xA06E
_BALANCE_TAG = 0xBA1A  # the balanced epochs' choice of repeats
DEFAULT_BUCKET_BATCHES = 64  # chunk = this many (global) batches, sorted by length inside


# --------------------------------------------------------------------------------------------------
# Batch


@dataclasses.dataclass
class Batch:
    """A padded stroke-5 batch (see the module docstring for the layout)."""

    strokes: torch.Tensor  # (B, T + 1, 5) float32, row 0 the start token
    lengths: torch.Tensor  # (B,) int64, real points (start token excluded)
    labels: torch.Tensor  # (B,) int64
    indices: torch.Tensor | None = None  # (B,) int64 index of each sketch in its split, when known

    def __len__(self) -> int:
        return int(self.strokes.shape[0])

    @property
    def max_len(self) -> int:
        """T, the padded length (points, start token excluded)."""
        return int(self.strokes.shape[1]) - 1

    @property
    def padding_fraction(self) -> float:
        """Fraction of the B * T point slots that are padding."""
        slots = len(self) * self.max_len
        return 1.0 - float(self.lengths.sum()) / slots if slots else 0.0

    def to(self, device, non_blocking: bool = False) -> "Batch":
        return Batch(*(None if t is None else t.to(device, non_blocking=non_blocking)
                       for t in (self.strokes, self.lengths, self.labels, self.indices)))

    def pin_memory(self) -> "Batch":  # used by torch's DataLoader(pin_memory=True)
        return Batch(*(None if t is None else t.pin_memory()
                       for t in (self.strokes, self.lengths, self.labels, self.indices)))


def _assemble(x: np.ndarray, y: np.ndarray, lift: np.ndarray, lens: np.ndarray, labels, indices=None,
              max_len: int | None = None) -> Batch:
    """Scatter concatenated points into the padded stroke-5 layout.

    x, y (N,) float32 normalised offsets, lift (N,) pen-lift 0/1, lens (B,) with sum N, in
    sketch order.  Column by column through one boolean mask (faster than a row scatter).
    """
    lens = np.asarray(lens, dtype=np.int64)
    b = len(lens)
    if b == 0:
        raise ValueError("cannot collate an empty batch")
    longest = int(lens.max())
    if max_len is None:
        t = longest
    else:
        t = int(max_len)
        if longest > t:
            raise ValueError(f"a sketch in the batch has {longest} points, more than max_len={t}")
    out = np.zeros((b, t + 1, 5), dtype=np.float32)  # (B, T + 1, 5)
    out[:, 0, 2] = 1.0  # start token (0, 0, 1, 0, 0)
    body = out[:, 1:]  # (B, T, 5) view
    real = np.arange(t) < lens[:, None]  # (B, T): row-major order = concatenation order
    body[..., 4] = ~real  # end padding (0, 0, 0, 0, 1)
    if len(x):
        body[..., 0][real] = x
        body[..., 1][real] = y
        body[..., 3][real] = lift
        body[..., 2][real] = 1.0 - lift
    return Batch(strokes=torch.from_numpy(out), lengths=torch.from_numpy(lens),
                 labels=torch.as_tensor(np.asarray(labels, dtype=np.int64)),
                 indices=None if indices is None else torch.as_tensor(np.asarray(indices, dtype=np.int64)))


def collate_stroke5(items: Sequence[Any], max_len: int | None = None) -> Batch:
    """Items ``(stroke-3 (n, 3), label)`` (or bare stroke-3 arrays, label 0) -> :class:`Batch`.

    Padded to the longest sketch in the batch, or to ``max_len`` points (``ValueError`` if a
    sketch is longer).  One concatenation and one scatter: no per-point Python.
    """
    arrays, labels = [], []
    for k, item in enumerate(items):
        if isinstance(item, np.ndarray):
            s3, label = item, 0
        else:
            s3, label = item[0], item[1]
        s3 = np.asarray(s3)
        if s3.ndim != 2 or s3.shape[1] != 3:
            raise ValueError(f"item {k}: expected a stroke-3 array of shape (n, 3), got shape {s3.shape}")
        arrays.append(s3)
        labels.append(int(label))
    if not arrays:
        raise ValueError("cannot collate an empty batch")
    lens = np.fromiter((len(a) for a in arrays), dtype=np.int64, count=len(arrays))
    flat = np.concatenate(arrays).astype(np.float32, copy=False)
    return _assemble(flat[:, 0], flat[:, 1], flat[:, 2], lens, labels, max_len=max_len)


# --------------------------------------------------------------------------------------------------
# Per-sketch randomness


def _check_seed(seed, what: str = "seed") -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"{what}={seed!r} must be an integer >= 0")
    return int(seed)


@functools.lru_cache(maxsize=64)
def _epoch_key(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, _AUGMENT_TAG]).generate_state(1, np.uint64)[0])


def item_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The augmentation generator of sketch ``index`` in ``epoch`` (Philox keyed by the three).

    Counter-based: the key is ``(index, hash(seed, epoch))``, so streams of different sketches
    are independent and any one can be made without the others (resume, sharding, workers).
    """
    seed, epoch, index = _check_seed(seed), _check_seed(epoch, "epoch"), _check_seed(index, "index")
    return np.random.Generator(np.random.Philox(key=np.array([index, _epoch_key(seed, epoch)], dtype=np.uint64)))


class _Rekeyed:
    """One Philox generator re-keyed per sketch: the same streams as :func:`item_rng`, several
    times cheaper (setting the state skips constructing and seeding a bit generator)."""

    def __init__(self, seed: int, epoch: int):
        self.seed_epoch = (seed, epoch)
        self.key1 = _epoch_key(seed, epoch)
        self.bitgen = np.random.Philox(key=np.array([0, self.key1], dtype=np.uint64))
        self.gen = np.random.Generator(self.bitgen)
        self.state = self.bitgen.state  # fresh: counter 0, empty buffer; only the key changes

    def __call__(self, index: int) -> np.random.Generator:
        self.state["state"]["key"] = np.array([index, self.key1], dtype=np.uint64)
        self.bitgen.state = self.state
        return self.gen


# missing keys take strokes.augment's defaults: ``augment`` means ``strokes.augment(s3, rng, **augment)``
_AUGMENT_DEFAULTS = {k: float(inspect.signature(strokes.augment).parameters[k].default) for k in AUGMENT_KEYS}


_local = threading.local()


def _rekeyer(seed: int, epoch: int) -> _Rekeyed:
    """This thread's re-keyable generator for (seed, epoch) (kept: per-sketch calls are frequent)."""
    r = getattr(_local, "rekey", None)
    if r is None or r.seed_epoch != (seed, epoch):
        r = _local.rekey = _Rekeyed(seed, epoch)
    return r


def check_augment(augment: dict | None) -> dict | None:
    """Validate an augmentation dict (keyword arguments of :func:`sketchvae.strokes.augment`; missing
    ones take its defaults) -> the full dict, or None when there is nothing to do."""
    if augment is None:
        return None
    if not isinstance(augment, dict):
        raise ValueError(f"augment={augment!r} must be None or a dict with keys {AUGMENT_KEYS}")
    unknown = sorted(set(augment) - set(AUGMENT_KEYS))
    if unknown:
        raise ValueError(f"unknown augmentation option(s) {unknown}; allowed: {list(AUGMENT_KEYS)}")
    out = dict(_AUGMENT_DEFAULTS)
    for k, v in augment.items():
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not (0.0 <= float(v) < 1.0):
            raise ValueError(f"augment[{k!r}]={v!r} must be a number in [0, 1)")
        out[k] = float(v)
    return out if (out["scale_range"] > 0 or out["drop_prob"] > 0) else None


def _augment_flat(x: np.ndarray, y: np.ndarray, lift: np.ndarray, lens: np.ndarray, indices: np.ndarray,
                  augment: dict, seed: int, epoch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``strokes.augment`` of every sketch of a batch at once, with ``item_rng(seed, epoch, i)``.

    x, y (N,) float32 normalised offsets (modified in place), lift (N,), lens (B,), indices (B,).
    Returns the kept (x, y, lift, lens).  Each sketch's stream is consumed as ``strokes.augment``
    does: ``uniform(1 - r, 1 + r, 2)`` (only if scale_range > 0), then ``random(n)`` for the point
    drops (only if drop_prob > 0), i.e. (2 +) n doubles, drawn here with one ``random(out=...)`` call
    per sketch; everything per point is vectorised over the batch.
    """
    r, p = augment["scale_range"], augment["drop_prob"]
    b, n = len(lens), len(x)
    n_scale = 2 if r > 0 else 0
    n_drop = lens if p > 0 else np.zeros(b, dtype=np.int64)
    n_draw = n_drop + n_scale
    u_start = np.cumsum(n_draw) - n_draw
    u = np.empty(int(n_draw.sum()))
    rekey = _rekeyer(seed, epoch)
    for i, a, c in zip(indices.tolist(), u_start.tolist(), n_draw.tolist()):
        if c:
            rekey(i).random(out=u[a:a + c])
    if r > 0 and n:
        lo, hi = 1.0 - r, 1.0 + r
        scale = lo + (hi - lo) * u[u_start[:, None] + np.arange(2)]  # (B, 2) as Generator.uniform
        x *= np.repeat(scale[:, 0], lens)  # float64 products rounded to float32, as strokes.augment
        y *= np.repeat(scale[:, 1], lens)
    if p > 0 and n:
        starts = np.cumsum(lens) - lens
        draws = u[np.repeat(u_start + n_scale - starts, lens) + np.arange(n)]  # point -> its draw in u
        first = np.zeros(n, dtype=bool)
        first[starts[lens > 0]] = True
        keep = strokes._drop_in_place(x, y, lift, draws, p, first)  # magenta's augment_strokes
        if not keep.all():
            count = np.concatenate([[0], np.cumsum(~keep)])
            lens = lens - (count[starts + lens] - count[starts])
            x, y, lift = x[keep], y[keep], lift[keep]
    return x, y, lift, lens


def collate_indices(split, indices, scale_factor: float, *, max_len: int | None = None,
                    augment: dict | None = None, seed: int = 0, epoch: int = 0) -> Batch:
    """Fast path: the sketches ``indices`` of a cache split -> :class:`Batch`, in one go.

    split: a ``SplitView`` (anything with ``.points`` (N, 3) int16, ``.offsets`` (S + 1,) and
    ``.labels`` (S,)).  Rows are gathered from the memmap with one fancy index, offsets divided by
    ``scale_factor``, augmented (``augment`` dict, per-sketch generator ``item_rng(seed, epoch, i)``)
    and scattered into the padded layout.  Equal to ``collate_stroke5`` of the per-sketch items
    (tested).  ``max_len``: pad to that many points instead of the longest in the batch.
    """
    scale = float(scale_factor)
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale_factor={scale_factor!r} must be a positive finite number")
    augment = check_augment(augment)
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    offsets = split.offsets
    num = len(offsets) - 1
    if len(idx) and (idx.min() < 0 or idx.max() >= num):
        bad = idx[(idx < 0) | (idx >= num)][0]
        raise IndexError(f"sketch index {bad} out of range for a split of {num} sketches")
    starts = np.asarray(offsets[idx], dtype=np.int64)
    lens = np.asarray(offsets[idx + 1], dtype=np.int64) - starts
    total = int(lens.sum())
    # row of each point in the flat memmap: its sketch's start + its position in the sketch
    rows = np.arange(total, dtype=np.int64) + np.repeat(starts - (np.cumsum(lens) - lens), lens)
    raw = np.take(np.asarray(split.points), rows, axis=0)  # (N, 3) int16: one gather from the memmap
    x, y, lift = _normalized_columns(raw, scale)
    if augment is not None:
        x, y, lift, lens = _augment_flat(x, y, lift, lens, idx, augment, seed, epoch)
    labels = np.asarray(split.labels[idx], dtype=np.int64)
    return _assemble(x, y, lift, lens, labels, indices=idx, max_len=max_len)


def _normalized_columns(raw: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """int16 stroke-3 rows -> contiguous float32 x / scale, y / scale, lift, the offsets first clamped
    to [-OFFSET_LIMIT, OFFSET_LIMIT] (as strokes.clamp, then strokes.normalize)."""
    cols = raw.T.astype(np.float32)  # (3, N) C-contiguous: each column contiguous
    x, y, lift = cols[0], cols[1], cols[2]
    np.clip(cols[0:2], -OFFSET_LIMIT, OFFSET_LIMIT, out=cols[0:2])
    x /= scale
    y /= scale
    return x, y, lift


def padding_waste(lengths: Sequence[int] | np.ndarray, batches: Sequence[Sequence[int]],
                  pad_to: int | None = None) -> float:
    """Fraction of padded point slots over ``batches`` (positions into ``lengths``), each batch
    padded to its longest sketch or to ``pad_to``."""
    lengths = np.asarray(lengths, dtype=np.int64)
    real = slots = 0
    for bt in batches:
        ls = lengths[np.asarray(bt, dtype=np.int64)]
        if len(ls) == 0:
            continue
        real += int(ls.sum())
        slots += len(ls) * (int(pad_to) if pad_to else int(ls.max()))
    return 1.0 - real / slots if slots else 0.0


# --------------------------------------------------------------------------------------------------
# Dataset


class SketchDataset(torch.utils.data.Dataset):
    """The sketches of one cache split, normalised (and augmented), addressed by split index.

    split_view: ``StrokeCache.split(name)``.  scale_factor: offsets are divided by it (the cache's
    ``scale_factor`` for training, the checkpoint's afterwards).  max_len: sketches with more points
    (and empty ones) are left out: ``indices`` (int64, ascending) are the usable split indices,
    ``lengths`` their lengths; ``num_too_long`` / ``num_empty`` count the rest (logged once).
    augment: None or ``{"scale_range": r, "drop_prob": p}``; seed: for :func:`item_rng`;
    ``set_epoch(e)`` picks the epoch the augmentation is drawn for.

    ``dataset[i]`` -> ``(float32 (n, 3), int label)`` for split index ``i`` (``ValueError`` naming
    the sketch for a left-out one).  Keys are split indices, so ``len(dataset)`` is the number of
    sketches in the split (usable or not; ``len(dataset.indices)`` counts the usable ones) and a
    DataLoader should get ``batch_sampler=BucketBatchSampler(dataset.lengths, ...,
    indices=dataset.indices)`` (:func:`make_loader` sets this up).  :meth:`collate` is the fast
    path for a whole batch.
    """

    def __init__(self, split_view, scale_factor: float, max_len: int, augment: dict | None = None,
                 seed: int = 0, name: str | None = None, *, _quiet: bool = False):
        scale = float(scale_factor)
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale_factor={scale_factor!r} must be a positive finite number")
        if isinstance(max_len, bool) or not isinstance(max_len, numbers.Integral) or max_len < 1:
            raise ValueError(f"max_len={max_len!r} must be an integer >= 1")
        self.split = split_view
        self.scale_factor = scale
        self.max_len = int(max_len)
        self.augment = check_augment(augment)
        self.seed = _check_seed(seed)
        self.epoch = 0
        self.name = name or getattr(split_view, "name", None) or "split"
        all_lengths = np.asarray(split_view.lengths, dtype=np.int64)
        self.num_sketches = len(all_lengths)
        too_long = all_lengths > self.max_len
        empty = all_lengths < 1
        self.indices = np.flatnonzero(~too_long & ~empty).astype(np.int64)
        self.lengths = all_lengths[self.indices]
        self.num_too_long = int(too_long.sum())
        self.num_empty = int(empty.sum())
        self._usable = ~too_long & ~empty
        self._all_lengths = all_lengths
        if (self.num_too_long or self.num_empty) and not _quiet:
            log.warning("%s: left out %d of %d sketches longer than max_len=%d and %d empty ones",
                        self.name, self.num_too_long, self.num_sketches, self.max_len, self.num_empty)

    def __len__(self) -> int:
        return self.num_sketches

    def __reduce__(self):
        # for spawned DataLoader workers: the split view pickles as (path, name); the index arrays
        # are rebuilt there instead of being copied through the pipe
        return (_restore_dataset, (self.split, self.scale_factor, self.max_len, self.augment, self.seed, self.name,
                                   self.epoch))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = _check_seed(epoch, "epoch")

    def _check(self, idx: np.ndarray) -> None:
        if len(idx) == 0:
            return
        if idx.min() < 0 or idx.max() >= self.num_sketches:
            bad = idx[(idx < 0) | (idx >= self.num_sketches)][0]
            raise IndexError(f"{self.name}: sketch index {bad} out of range for {self.num_sketches} sketches")
        ok = self._usable[idx]
        if not ok.all():
            bad = int(idx[~ok][0])
            n = int(self._all_lengths[bad])
            why = "is empty" if n < 1 else f"has {n} points, more than max_len={self.max_len}"
            raise ValueError(f"{self.name}: sketch {bad} {why}; it was left out (use dataset.indices)")

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        """(normalised, augmented stroke-3 float32 (n, 3), label) of split index ``index``."""
        i = int(index)
        idx = np.array([i], dtype=np.int64)
        self._check(idx)
        split = self.split
        lo, hi = int(split.offsets[i]), int(split.offsets[i + 1])
        x, y, lift = _normalized_columns(np.asarray(split.points[lo:hi]), self.scale_factor)
        if self.augment is not None:
            x, y, lift, _ = _augment_flat(x, y, lift, np.array([hi - lo], dtype=np.int64), idx, self.augment,
                                          self.seed, self.epoch)
        return np.stack([x, y, lift], axis=1), int(split.labels[i])

    def collate(self, indices, epoch: int | None = None, pad_to: int | None = None) -> Batch:
        """Fast path: split indices -> :class:`Batch` (augmented for ``epoch``, default the
        current one), padded to the longest or to ``pad_to`` points."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        self._check(idx)
        return collate_indices(self.split, idx, self.scale_factor, max_len=pad_to, augment=self.augment,
                               seed=self.seed, epoch=self.epoch if epoch is None else _check_seed(epoch, "epoch"))


def _restore_dataset(split, scale_factor, max_len, augment, seed, name, epoch) -> SketchDataset:
    ds = SketchDataset(split, scale_factor, max_len, augment=augment, seed=seed, name=name, _quiet=True)
    ds.set_epoch(epoch)
    return ds


# --------------------------------------------------------------------------------------------------
# Sampler


def _sort_keys(lengths: np.ndarray) -> np.ndarray:
    """`lengths` in the narrowest integer dtype that holds them.  NumPy's stable argsort is a radix
    sort for 8- and 16-bit keys, faster than its merge sort on int64 (one epoch's order of 24M
    Quick, Draw! lengths: about 1.5x, ``scripts/bench_scale.py``); a stable sort of the same values
    gives the same order whatever the dtype."""
    if len(lengths) == 0:
        return lengths
    narrow = np.result_type(np.min_scalar_type(int(lengths.min())), np.min_scalar_type(int(lengths.max())))
    return lengths.astype(narrow, copy=False)


class BucketBatchSampler(torch.utils.data.Sampler):
    """Length-bucketed, shuffled, seeded batches, sharded by rank.

    lengths: (S,) length of each sketch; batches are lists of positions into it, or of
    ``indices[position]`` when ``indices`` (S,) is given (e.g. ``dataset.indices``).

    Each epoch (a pure function of ``seed`` and the epoch; identical on every rank):
    permute (or keep the order when ``shuffle=False``); set aside ``S mod (batch_size * world_size)``
    random sketches; cut the rest into chunks of ``bucket_size`` sketches (default 64 groups of
    ``batch_size * world_size``), sort each chunk by length, cut it into groups of
    ``world_size`` batches of ``batch_size`` neighbouring lengths; shuffle the group order.
    Rank ``r`` takes batch ``r`` of every group: disjoint, the same count on every rank.
    The set-aside sketches are dropped (``drop_last=True``, they differ every epoch) or form one
    last smaller batch per rank (``drop_last=False``; if there are fewer of them than ranks, a
    rank's batch repeats one sketch so that every rank has the same number of batches).

    ``labels`` (S,) with ``balance=True``: every class is drawn equally often.  Each epoch is a pool
    of ``K * n_max`` positions (K classes, ``n_max`` sketches in the largest): every class repeats
    all its sketches ``n_max // n_c`` times plus a seeded random ``n_max % n_c`` of them without
    replacement (a different subset each epoch), and the pool goes through the steps above.  A small
    class's repeats within one epoch get the same augmentation (it is drawn per sketch and epoch).
    The pool costs 8 bytes a position per epoch (the full Quick, Draw!, 345 classes of up to ~330k: ~0.9 GB).

    ``set_epoch(e, batch_index=0)`` selects the epoch and the first batch to yield;
    ``state_dict()`` / ``load_state_dict(d)`` save / restore that position (checked against the
    sampler's settings).  Iterating does not move the position: record the batch you consumed
    (:class:`SketchLoader` does).  ``len()`` is the number of batches per epoch and rank.
    """

    def __init__(self, lengths, batch_size: int, shuffle: bool = True, seed: int = 0, rank: int = 0,
                 world_size: int = 1, drop_last: bool = True, bucket_size: int | None = None, indices=None,
                 labels=None, balance: bool = False):
        lengths = np.asarray(lengths)
        if lengths.ndim != 1:
            raise ValueError(f"lengths must be 1-D, got shape {lengths.shape}")
        for name, v, lo in (("batch_size", batch_size, 1), ("world_size", world_size, 1)):
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < lo:
                raise ValueError(f"{name}={v!r} must be an integer >= {lo}")
        if isinstance(rank, bool) or not isinstance(rank, numbers.Integral) or not 0 <= rank < world_size:
            raise ValueError(f"rank={rank!r} must be an integer in [0, world_size={world_size})")
        self.lengths = lengths.astype(np.int64, copy=False)  # no copy of a large int64 array
        self._keys = _sort_keys(self.lengths)
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = _check_seed(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.drop_last = bool(drop_last)
        group = self.batch_size * self.world_size
        if bucket_size is None:
            bucket_size = DEFAULT_BUCKET_BATCHES * group
        if isinstance(bucket_size, bool) or not isinstance(bucket_size, numbers.Integral) or bucket_size < 1:
            raise ValueError(f"bucket_size={bucket_size!r} must be an integer >= 1 (sketches per sorted chunk)")
        self.bucket_size = -(-int(bucket_size) // group) * group  # a whole number of groups
        if indices is not None:
            indices = np.asarray(indices, dtype=np.int64)
            if indices.shape != self.lengths.shape:
                raise ValueError(f"indices has shape {indices.shape}, lengths {self.lengths.shape}; they must match")
        self.indices = indices
        self.balance = bool(balance)
        self._members: list[np.ndarray] = []  # positions of each class (balance=True)
        if self.balance:
            if labels is None:
                raise ValueError("balance=True needs the sketches' labels")
            labels = np.asarray(labels).reshape(-1)
            if labels.shape != self.lengths.shape:
                raise ValueError(f"labels has shape {labels.shape}, lengths {self.lengths.shape}; they must match")
            order = np.argsort(labels, kind="stable")
            _, starts = np.unique(labels[order], return_index=True)
            self._members = [m.astype(np.int64) for m in np.split(order, starts[1:])] if len(order) else []
        self.epoch = 0
        self.batch_index = 0

    # -- sizes
    @property
    def num_samples(self) -> int:
        """Sketches per epoch (with ``balance``: classes x the largest class, repeats included)."""
        if self.balance:
            return len(self._members) * max((len(m) for m in self._members), default=0)
        return len(self.lengths)

    def _epoch_pool(self, epoch: int) -> np.ndarray:
        """The positions one balanced epoch draws from (``balance=True``), a function of (seed, epoch)."""
        per_class = max(len(m) for m in self._members)
        rng = np.random.default_rng([self.seed, epoch, _BALANCE_TAG])
        parts = []
        for members in self._members:
            reps, extra = divmod(per_class, len(members))
            parts.append(np.tile(members, reps))
            if extra:
                parts.append(np.sort(rng.choice(members, extra, replace=False)))
        return np.concatenate(parts)

    def __len__(self) -> int:
        group = self.batch_size * self.world_size
        full, rest = divmod(self.num_samples, group)
        return full + (1 if rest and not self.drop_last else 0)

    # -- position
    def set_epoch(self, epoch: int, batch_index: int = 0) -> None:
        self.epoch = _check_seed(epoch, "epoch")
        self.batch_index = _check_seed(batch_index, "batch_index")

    def _settings(self) -> dict:
        return {"seed": self.seed, "batch_size": self.batch_size, "world_size": self.world_size,
                "num_samples": self.num_samples, "shuffle": self.shuffle, "drop_last": self.drop_last,
                "bucket_size": self.bucket_size, "balance": self.balance}

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "batch_index": self.batch_index, **self._settings()}

    def load_state_dict(self, state: dict) -> None:
        mine = self._settings()
        diff = {k: (state[k], v) for k, v in mine.items() if k in state and state[k] != v}
        if diff:
            detail = ", ".join(f"{k}: saved {a!r}, now {b!r}" for k, (a, b) in diff.items())
            raise ValueError(f"sampler state does not match this sampler ({detail}); the batch order would differ")
        self.set_epoch(int(state["epoch"]), int(state.get("batch_index", 0)))

    # -- batches
    def epoch_batches(self, epoch: int | None = None) -> list[np.ndarray]:
        """All of this rank's batches of ``epoch`` (default: the current one), as int64 arrays."""
        epoch = self.epoch if epoch is None else _check_seed(epoch, "epoch")
        s, bs, ws = self.num_samples, self.batch_size, self.world_size
        group = bs * ws
        if self.shuffle:
            rng = np.random.default_rng([self.seed, epoch, _SHUFFLE_TAG])
            order = rng.permutation(s)
        else:
            rng = None
            order = np.arange(s)
        if self.balance and s:
            order = self._epoch_pool(epoch)[order]  # positions, some of them repeated
        n_groups, n_rest = divmod(s, group)
        main, rest = order[:n_groups * group], order[n_groups * group:]
        c = self.bucket_size
        n_chunks = len(main) // c
        sorted_parts = []
        if n_chunks:
            chunks = main[:n_chunks * c].reshape(n_chunks, c)
            sorted_parts.append(np.take_along_axis(chunks, np.argsort(self._keys[chunks], axis=1, kind="stable"),
                                                   axis=1).reshape(-1))
        tail = main[n_chunks * c:]
        if len(tail):
            sorted_parts.append(tail[np.argsort(self._keys[tail], kind="stable")])
        main = np.concatenate(sorted_parts) if sorted_parts else main
        groups = main.reshape(n_groups, ws, bs)
        if self.shuffle:
            groups = groups[rng.permutation(n_groups)]
        batches = list(groups[:, self.rank])
        if n_rest and not self.drop_last:
            rest = rest[np.argsort(self._keys[rest], kind="stable")]
            part = np.array_split(rest, ws)[self.rank]
            if len(part) == 0:  # fewer leftovers than ranks: repeat one so every rank has a batch
                part = rest[self.rank % len(rest):][:1]
            batches.append(part)
        if self.indices is not None:
            batches = [self.indices[bt] for bt in batches]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        for bt in self.epoch_batches()[self.batch_index:]:
            yield bt.tolist()


# --------------------------------------------------------------------------------------------------
# Loader


class _EpochBatches(torch.utils.data.Dataset):
    """Batch k of a fixed list of index batches, collated: what DataLoader workers run."""

    def __init__(self, dataset: SketchDataset, batches: list[np.ndarray], epoch: int, pad_to: int | None):
        self.dataset, self.batches, self.epoch, self.pad_to = dataset, batches, epoch, pad_to

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, k: int) -> Batch:
        return self.dataset.collate(self.batches[k], epoch=self.epoch, pad_to=self.pad_to)


class _Raised:
    def __init__(self, exc: BaseException):
        self.exc = exc


def _in_background(make_iter, depth: int) -> Iterator[Any]:
    """Run ``make_iter()`` in a daemon thread, ``depth`` items ahead; same items, same order.

    NumPy's gathers and ufuncs release the GIL, and a training loop on a GPU mostly waits for the
    device, so collating the next batches there is nearly free.  Closing the consumer stops it.
    """
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in make_iter():
                if not put(item):
                    return
            put(done)
        except BaseException as exc:  # handed to the consumer, raised there
            put(_Raised(exc))

    thread = threading.Thread(target=work, name="sketchvae-batches", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, _Raised):
                raise item.exc
            yield item
    finally:
        stop.set()
        thread.join(timeout=5.0)


class SketchLoader:
    """Iterable of :class:`Batch`, one epoch per ``iter()``, resumable at any batch.

    Iterating yields the batches of the current epoch from the current batch index; when the
    epoch is exhausted the position moves to ``(epoch + 1, 0)``, so ``for epoch ...: for batch in
    loader`` walks through epochs without ``set_epoch`` (calling it is fine too).  After
    receiving a batch, ``state_dict()`` is the position of the *next* one: save it with the model
    and ``load_state_dict`` it to continue exactly (same batches, same augmentation).

    num_workers > 0: a torch DataLoader whose workers collate whole batches (in order).
    prefetch > 0 (with num_workers=0): a background thread collates that many batches ahead.
    pin_memory: page-locked batches (CUDA only) for ``batch.to(device, non_blocking=True)``.
    """

    def __init__(self, dataset: SketchDataset, sampler: BucketBatchSampler, *, num_workers: int = 0,
                 prefetch: int = 0, pin_memory: bool = False, pad_to: int | None = None):
        for name, v in (("num_workers", num_workers), ("prefetch", prefetch)):
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 0:
                raise ValueError(f"{name}={v!r} must be an integer >= 0")
        self.dataset = dataset
        self.sampler = sampler
        self.num_workers = int(num_workers)
        self.prefetch = int(prefetch)
        self.pin_memory = bool(pin_memory) and torch.cuda.is_available()
        self.pad_to = pad_to

    def __len__(self) -> int:
        return len(self.sampler)

    @property
    def epoch(self) -> int:
        return self.sampler.epoch

    @property
    def batch_index(self) -> int:
        return self.sampler.batch_index

    def set_epoch(self, epoch: int, batch_index: int = 0) -> None:
        self.sampler.set_epoch(epoch, batch_index)

    def state_dict(self) -> dict:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state)

    def __iter__(self) -> Iterator[Batch]:
        epoch, start = self.sampler.epoch, self.sampler.batch_index
        batches = self.sampler.epoch_batches(epoch)
        todo = batches[start:]
        if self.num_workers > 0 and todo:
            it = iter(torch.utils.data.DataLoader(_EpochBatches(self.dataset, todo, epoch, self.pad_to),
                                                  batch_size=None, shuffle=False, num_workers=self.num_workers,
                                                  pin_memory=self.pin_memory, worker_init_fn=_ignore_sigint))
        else:
            def collated() -> Iterator[Batch]:
                for bt in todo:
                    batch = self.dataset.collate(bt, epoch=epoch, pad_to=self.pad_to)
                    yield batch.pin_memory() if self.pin_memory else batch

            it = _in_background(collated, self.prefetch) if self.prefetch > 0 and todo else collated()
        for k, batch in enumerate(it):
            self.sampler.batch_index = start + k + 1  # position of the next batch
            yield batch
        self.sampler.set_epoch(epoch + 1, 0)


def _ignore_sigint(_worker_id: int) -> None:
    """DataLoader workers leave Ctrl-C to the main process: a terminal's SIGINT reaches the whole process
    group, and a worker that died of it would break the batch the main process is waiting for while it
    saves last.pt (`runtime.StopRequests`).  Workers end when the main process closes the loader."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def make_loader(cache_or_path, split: str = "train", batch_size: int = 100, max_len: int = 250, *,
                shuffle: bool = True, seed: int = 0, augment: dict | None = None, rank: int = 0,
                world_size: int = 1, num_workers: int = 0, drop_last: bool | None = None,
                scale_factor: float | None = None, bucket_size: int | None = None, epoch: int = 0,
                batch_index: int = 0, pad_to: int | None = None, prefetch: int = 0,
                pin_memory: bool = False, balance: bool = False) -> SketchLoader:
    """Batches of one split of a prepared cache: dataset + bucketed sampler + fast collate.

    cache_or_path: a ``StrokeCache`` or the path of a prepared ``.h5`` cache.  split: "train",
    "valid" or "test".  batch_size: sketches per batch and rank.  max_len: longer sketches are
    left out (counted in ``loader.dataset.num_too_long``).  shuffle: new bucketed order every epoch
    (False: the same length-sorted order each epoch, for evaluation).  seed: order and augmentation.
    augment: None or ``{"scale_range": r, "drop_prob": p}``.  rank / world_size: DDP sharding
    (same seed on every rank).  num_workers: DataLoader worker processes, each collating whole
    batches (0: in this process; the fast collate rarely needs more).  drop_last: default
    ``shuffle`` (drop the ragged remainder when training, keep it when evaluating).  scale_factor:
    default the cache's (pass a checkpoint's to match a trained model).  bucket_size: sketches per
    length-sorted chunk (default 64 batches' worth).  epoch / batch_index: where to start (resume).
    pad_to: pad every batch to this many points instead of its longest (for comparisons).
    prefetch: batches collated ahead in a background thread (num_workers=0; 2 is plenty on a GPU).
    pin_memory: page-locked batches when CUDA is available.  balance: draw every class equally often
    (small classes repeated; :class:`BucketBatchSampler`), for class-conditional training on unequal classes.
    """
    if isinstance(cache_or_path, (str, Path)):
        from sketchvae.data.cache import open_cache

        cache = open_cache(cache_or_path)
    else:
        cache = cache_or_path
    if split not in cache.splits:
        raise ValueError(f"{getattr(cache, 'path', 'cache')}: no split {split!r}; it has {list(cache.splits)}")
    scale = float(cache.scale_factor if scale_factor is None else scale_factor)
    dataset = SketchDataset(cache.split(split), scale, max_len, augment=augment, seed=seed, name=split)
    sampler = BucketBatchSampler(dataset.lengths, batch_size, shuffle=shuffle, seed=seed, rank=rank,
                                 world_size=world_size, drop_last=shuffle if drop_last is None else drop_last,
                                 bucket_size=bucket_size, indices=dataset.indices,
                                 labels=np.asarray(dataset.split.labels)[dataset.indices] if balance else None,
                                 balance=balance)
    sampler.set_epoch(epoch, batch_index)
    return SketchLoader(dataset, sampler, num_workers=num_workers, prefetch=prefetch, pin_memory=pin_memory,
                        pad_to=pad_to)


__all__ = ["Batch", "BucketBatchSampler", "SketchDataset", "SketchLoader", "check_augment", "collate_indices",
           "collate_stroke5", "item_rng", "make_loader", "padding_waste"]
