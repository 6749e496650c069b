"""HDF5 stroke cache: one file per prepared data set, memory-mapped on reading.

Layout (``format_version`` 1)::

    /                 attrs: format_version=1, class_names (JSON list), scale_factor (std of all
                      train dx and dy), max_sketch_len (points in the longest sketch of any
                      split; older files lack it and it is computed on opening),
                      source_checksums (JSON dict name -> sha256), preprocessing (JSON dict),
                      created_by
    /train /valid /test
        points   int16 (N, 3)   stroke-3 rows of every sketch, concatenated
        offsets  int64 (S + 1,) sketch i is points[offsets[i]:offsets[i + 1]]
        labels   int32 (S,)     index into class_names

Every dataset is contiguous, uncompressed and little-endian, so :func:`open_cache` maps it with
``np.memmap`` at ``ds.id.get_offset()`` and closes the HDF5 handle: reopening is a few header
reads however big the file is, nothing is copied, and a :class:`StrokeCache` is safe to hand to
forked or spawned DataLoader workers (it pickles as its path). Files with chunked, filtered or
big-endian datasets (written by other tools) are read into memory instead.

Writing: :class:`CacheWriter` appends sketches split by split as flat arrays, spooling them to
raw temporary files beside the output (sequential writes, bounded memory, a single pass over
the sources), then ``finish`` creates the contiguous datasets at their exact final sizes, copies
the spools in blocks of ``_COPY_ROWS`` rows with plain reads (not memory maps, whose pages would
stay resident: prepare's peak RSS is set by its largest source file, whatever the total size;
see ``scripts/bench_scale.py``) and renames the file into place (atomic). Contiguous HDF5 datasets
cannot grow, and chunked ones cannot be memory-mapped; a spool costs one extra sequential copy
but avoids parsing every source twice (count pass + write pass), which for raw ndjson (RDP per
stroke) is far more expensive than copying int16 rows. :func:`write_cache` wraps it for data
already in memory.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np

from sketchvae.data.formats import SPLITS, DataError

FORMAT_VERSION = 1
_JSON_ATTRS = ("class_names", "source_checksums", "preprocessing")
_COPY_ROWS = 1 << 22  # rows per block when copying spools into the HDF5 file (~24 MB of points)
_STAT_ROWS = 1 << 20  # rows per block when summing train offsets for the scale factor (~16 MB as int64)
_DTYPES = {"points": np.dtype("<i2"), "offsets": np.dtype("<i8"), "labels": np.dtype("<i4")}


# --------------------------------------------------------------------------------------------------
# writing


class _Spool:
    """An append-only raw file of fixed-width rows."""

    def __init__(self, directory: Path, tag: str, dtype: np.dtype, width: int = 0):
        fd, name = tempfile.mkstemp(prefix=f".{tag}.", suffix=".spool", dir=directory)
        self.path = Path(name)
        self.file = os.fdopen(fd, "wb")
        self.dtype, self.width, self.rows = np.dtype(dtype), width, 0

    def write(self, arr: np.ndarray) -> None:
        arr = np.ascontiguousarray(arr, dtype=self.dtype)
        if arr.size:  # (a memoryview of an empty array cannot be cast)
            self.file.write(memoryview(arr).cast("B"))  # the array's own bytes, not a copy (tobytes)
        self.rows += len(arr)

    def blocks(self, rows: int) -> Iterator[np.ndarray]:
        """The rows written so far, `rows` at a time, read with plain file reads.

        Not a memory map: every page of a map that has been read counts in the process's resident
        set until the map goes, so copying a 7 GB spool through one would show a 7 GB peak RSS
        (page cache, reclaimable, but it is what ``ps``, schedulers and OOM killers see).
        """
        self.file.flush()
        width = self.width or 1
        with open(self.path, "rb") as f:
            for a in range(0, self.rows, rows):
                n = min(rows, self.rows - a)
                block = np.fromfile(f, dtype=self.dtype, count=n * width)
                if len(block) != n * width:
                    raise OSError(f"{self.path}: spool truncated at row {a + len(block) // width} of {self.rows}")
                yield block.reshape(n, self.width) if self.width else block

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


class CacheWriter:
    """Build a cache incrementally: ``append`` flat arrays per split, then ``finish``.

    Memory use is bounded by what one ``append`` call passes in. The train offsets' sums are
    accumulated exactly (int64 -> Python int) for the scale factor. Use as a context manager
    (or call ``close``) so the spool files are removed on errors.
    """

    def __init__(self, path: str | os.PathLike, splits: Sequence[str] = SPLITS):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.splits = tuple(splits)
        self._spools: dict[str, dict[str, _Spool]] = {}
        tag = self.path.name
        try:
            for s in self.splits:
                self._spools[s] = {
                    "points": _Spool(self.path.parent, f"{tag}.{s}.points", _DTYPES["points"], 3),
                    "lengths": _Spool(self.path.parent, f"{tag}.{s}.lengths", np.dtype("<i8")),
                    "labels": _Spool(self.path.parent, f"{tag}.{s}.labels", _DTYPES["labels"]),
                }
        except BaseException:
            self.close()
            raise
        self._n, self._sum, self._sumsq = 0, 0, 0  # train dx, dy: count, sum, sum of squares
        self._max_label = -1
        self._max_len = 0  # points in the longest sketch appended to any split

    def __enter__(self) -> "CacheWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def append(self, split: str, points: np.ndarray, lengths: np.ndarray, labels) -> None:
        """Add sketches: ``points`` int16 (N, 3) concatenated, ``lengths`` (S,), ``labels`` (S,) or one int."""
        if split not in self._spools:
            raise ValueError(f"unknown split {split!r}; choose from {list(self.splits)}")
        points = np.asarray(points)
        lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
        if points.ndim != 2 or points.shape[1] != 3:
            raise ValueError(f"points must have shape (N, 3), got {points.shape}")
        if points.dtype != np.int16:
            raise ValueError(f"points must be int16 stroke-3 (validate first), got {points.dtype}")
        if (lengths < 0).any() or int(lengths.sum()) != len(points):
            raise ValueError(f"lengths sum to {int(lengths.sum())} but there are {len(points)} points")
        labels = np.broadcast_to(np.asarray(labels, dtype=np.int64), lengths.shape)
        if len(labels) and labels.min() < 0:
            raise ValueError(f"negative label {int(labels.min())}")
        sp = self._spools[split]
        sp["points"].write(points)
        sp["lengths"].write(lengths)
        sp["labels"].write(labels)
        if len(labels):
            self._max_label = max(self._max_label, int(labels.max()))
            self._max_len = max(self._max_len, int(lengths.max()))
        if split == "train":
            for a in range(0, len(points), _STAT_ROWS):  # in blocks: an int64 copy is 8x the int16 bytes
                xy = points[a:a + _STAT_ROWS, 0:2].astype(np.int64)
                self._n += xy.size
                self._sum += int(xy.sum())
                self._sumsq += int(np.einsum("ij,ij->", xy, xy))

    def add(self, split: str, s3: np.ndarray, label: int) -> None:
        """Add one sketch (already int16 stroke-3)."""
        s3 = np.asarray(s3)
        self.append(split, s3, np.array([len(s3)]), label)

    def count(self, split: str) -> tuple[int, int]:
        """(sketches, points) appended to a split so far."""
        sp = self._spools[split]
        return sp["lengths"].rows, sp["points"].rows

    def train_scale_factor(self) -> float:
        """Population std of all train dx and dy appended so far (Sketch-RNN's normalising scale)."""
        if self._n == 0:
            raise ValueError("no training sketches: cannot compute the scale factor (std of train offsets)")
        var = (self._sumsq * self._n - self._sum * self._sum) / (self._n * self._n)  # exact ints
        std = math.sqrt(max(var, 0.0))
        if not std > 0:
            raise ValueError("degenerate training data: every train offset is equal, scale factor would be 0")
        return std

    def finish(self, class_names: Sequence[str], attrs: Mapping | None = None) -> Path:
        """Write the HDF5 file (atomically) and remove the spools. Returns the path.

        ``attrs`` may set ``scale_factor`` (else the train std; 1.0 when there is no train
        data), ``max_sketch_len`` (else the longest sketch appended), ``source_checksums``,
        ``preprocessing``, ``created_by`` and any extra keys (dicts and lists are stored as JSON).
        """
        import h5py

        from sketchvae import __version__
        from sketchvae.runtime import atomic_write

        class_names = [str(c) for c in class_names]
        if self._max_label >= len(class_names):
            raise ValueError(f"label {self._max_label} has no class name ({len(class_names)} class names given)")
        attrs = dict(attrs or {})
        if "scale_factor" not in attrs:
            attrs["scale_factor"] = self.train_scale_factor() if self._n else 1.0
        attrs.setdefault("max_sketch_len", self._max_len)
        root = {
            "format_version": FORMAT_VERSION,
            "class_names": class_names,
            "source_checksums": {},
            "preprocessing": {},
            "created_by": f"sketchvae {__version__}",
        }
        root.update(attrs)

        def write(tmp):
            with h5py.File(tmp, "w") as f:
                for key, value in root.items():
                    f.attrs[key] = json.dumps(value) if isinstance(value, (dict, list, tuple)) else value
                for split, sp in self._spools.items():
                    self._write_split(f.create_group(split), sp)

        try:
            return atomic_write(self.path, write)
        finally:
            self.close()

    @staticmethod
    def _write_split(group, sp: dict[str, _Spool]) -> None:
        n_points, n_sketches = sp["points"].rows, sp["lengths"].rows
        pts = group.create_dataset("points", shape=(n_points, 3), dtype=_DTYPES["points"])
        offs = group.create_dataset("offsets", shape=(n_sketches + 1,), dtype=_DTYPES["offsets"])
        labs = group.create_dataset("labels", shape=(n_sketches,), dtype=_DTYPES["labels"])
        a = 0
        for block in sp["points"].blocks(_COPY_ROWS):
            pts[a:a + len(block)] = block
            a += len(block)
        offs[0:1] = np.zeros(1, np.int64)
        a = total = 0
        for lengths, labels in zip(sp["lengths"].blocks(_COPY_ROWS), sp["labels"].blocks(_COPY_ROWS)):
            block = np.cumsum(lengths, dtype=np.int64) + total
            offs[a + 1:a + 1 + len(block)] = block
            labs[a:a + len(block)] = labels
            total = int(block[-1])
            a += len(block)

    def close(self) -> None:
        """Remove the spool files (after ``finish``, or to abandon the cache)."""
        for sp in self._spools.values():
            for spool in sp.values():
                spool.remove()


def write_cache(path: str | os.PathLike, splits: Mapping, class_names: Sequence[str],
                attrs: Mapping | None = None) -> Path:
    """Write a cache from data in memory (atomically).

    splits: name -> a list of ``(s3, label)`` pairs, or a dict with ``points`` (N, 3),
    ``offsets`` (S + 1,) and ``labels`` (S,) (the file's own layout). Splits not given are
    written empty. Sketches must already be valid int16-range stroke-3 (see
    ``sketchvae.data.formats.validate_stroke3``). See :meth:`CacheWriter.finish` for attrs.
    """
    unknown = set(splits) - set(SPLITS)
    if unknown:
        raise ValueError(f"unknown split(s) {sorted(unknown)}; choose from {list(SPLITS)}")
    with CacheWriter(path) as w:
        for name, data in splits.items():
            if isinstance(data, Mapping):
                offsets = np.asarray(data["offsets"], dtype=np.int64)
                w.append(name, _as_int16(data["points"], name), np.diff(offsets), data["labels"])
            else:
                for i, (s3, label) in enumerate(data):
                    w.add(name, _as_int16(s3, f"{name}[{i}]"), int(label))
        return w.finish(class_names, attrs)


def _as_int16(arr, place: str) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ValueError(f"{place}: expected stroke-3 of shape (n, 3), got {arr.shape}")
    if arr.dtype == np.int16:
        return arr
    if arr.size and (not np.isfinite(arr).all() or (arr != np.round(arr)).any()
                     or np.abs(arr).max() > np.iinfo(np.int16).max):
        raise ValueError(f"{place}: values must be whole numbers within int16 to be cached")
    return arr.astype(np.int16)


# --------------------------------------------------------------------------------------------------
# reading


def _mappable(ds, dtype: np.dtype) -> int | None:
    """File offset of a dataset's data if it can be memory-mapped as `dtype`, else None."""
    if ds.chunks is not None or ds.compression is not None or ds.dtype != dtype:
        return None
    if ds.id.get_create_plist().get_nfilters() or ds.external:
        return None
    return ds.id.get_offset()


def _load(ds, path: Path, dtype: np.dtype) -> tuple[np.ndarray, bool]:
    """(array, memory_mapped): a read-only memmap when possible, else the data read into memory."""
    shape = ds.shape
    if ds.size == 0:
        return np.zeros(shape, dtype=dtype), True
    offset = _mappable(ds, dtype)
    if offset is None:
        arr = np.asarray(ds[()]).astype(dtype, copy=False)
        arr.flags.writeable = False
        return arr, False
    return np.memmap(path, mode="r", dtype=dtype, offset=offset, shape=shape), True


class SplitView:
    """One split of a cache: ``len``, ``view[i]`` -> int16 (n, 3), ``lengths``, ``labels``.

    ``points`` (int16 (N, 3)), ``offsets`` (int64 (S + 1,)) and ``labels`` (int32 (S,)) are
    read-only memory maps (or in-memory arrays for non-contiguous files); nothing builds a
    Python list of arrays. ``view[i]`` is a read-only view, copy it to modify.
    """

    def __init__(self, path: Path, name: str, points: np.ndarray, offsets: np.ndarray, labels: np.ndarray):
        self.path, self.name = path, name
        self.points, self.offsets, self.labels = points, offsets, labels
        self._lengths: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i) -> np.ndarray:
        n = len(self.labels)
        i = int(i)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"sketch index {i} out of range for split {self.name!r} of {n} sketches")
        return np.asarray(self.points[self.offsets[i]:self.offsets[i + 1]])

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self)):
            yield self[i]

    @property
    def lengths(self) -> np.ndarray:
        """Points per sketch, int64 (S,)."""
        if self._lengths is None:
            self._lengths = np.diff(np.asarray(self.offsets)).astype(np.int64, copy=False)
        return self._lengths

    def class_counts(self, num_classes: int) -> np.ndarray:
        """Sketches per class label, int64 (num_classes,)."""
        return np.bincount(np.asarray(self.labels), minlength=num_classes).astype(np.int64)

    def __reduce__(self):
        return (_reopen_split, (str(self.path), self.name))

    def __repr__(self) -> str:
        return f"SplitView({self.name!r}, sketches={len(self)}, points={len(self.points)})"


def _reopen_split(path: str, name: str) -> SplitView:
    # A DataLoader worker (re)opening the split the main process already opened and validated.
    return open_cache(path, validate=False).split(name)


class StrokeCache:
    """A prepared cache opened for reading (see :func:`open_cache`).

    ``class_names`` (list of str), ``scale_factor`` (float), ``max_sketch_len`` (int: points in
    the longest sketch of any split, Sketch-RNN's N_max; from the attribute, or computed from the
    offsets for files written before it existed), ``attrs`` (root attributes, JSON
    ones decoded), ``splits`` (names present), ``split(name)`` -> :class:`SplitView`,
    ``memory_mapped`` (every dataset is mapped, nothing was read into memory). Pickles as its
    path (workers reopen the file instead of copying the data).
    """

    def __init__(self, path: str | os.PathLike, *, validate: bool = True):
        import h5py

        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"{self.path}: cache not found (create it with `sketchvae prepare`)")
        try:
            f = h5py.File(self.path, "r")
        except OSError as err:
            raise DataError(f"not a readable HDF5 file ({err})", file=self.path, reason="bad file") from None
        with f:
            self.attrs = {k: _decode_attr(k, v) for k, v in f.attrs.items()}
            version = self.attrs.get("format_version")
            if version != FORMAT_VERSION:
                raise DataError(f"unsupported cache format_version {version!r}; this sketchvae reads "
                                f"{FORMAT_VERSION} (re-run `sketchvae prepare`)", file=self.path, reason="bad file")
            for key in ("class_names", "scale_factor"):
                if key not in self.attrs:
                    raise DataError(f"missing attribute {key!r}", file=self.path, reason="bad file")
            self.class_names = [str(c) for c in self.attrs["class_names"]]
            self.scale_factor = float(self.attrs["scale_factor"])
            self._views: dict[str, SplitView] = {}
            self.memory_mapped = True
            for name in [s for s in SPLITS if s in f] + sorted(k for k in f if k not in SPLITS):
                g = f[name]
                missing = [d for d in _DTYPES if d not in g]
                if missing:
                    raise DataError(f"missing dataset(s) {missing}", file=self.path, place=name, reason="bad file")
                arrays = {}
                for d, dtype in _DTYPES.items():
                    arrays[d], mapped = _load(g[d], self.path, dtype)
                    self.memory_mapped &= mapped
                self._views[name] = self._check(name, SplitView(self.path, name, **arrays))
        self.splits = tuple(self._views)
        stored = self.attrs.get("max_sketch_len")
        if isinstance(stored, int) and not isinstance(stored, bool) and stored >= 0:
            self.max_sketch_len = stored
        else:  # written before the attribute existed: one pass over the offsets
            self.max_sketch_len = max((int(np.diff(np.asarray(v.offsets)).max()) for v in self._views.values()
                                       if len(v)), default=0)
        if validate:
            for name, view in self._views.items():
                validate_split(view, len(self.class_names), self.path)

    def _check(self, name: str, view: SplitView) -> SplitView:
        p, o, lab = view.points, view.offsets, view.labels
        problem = None
        if p.ndim != 2 or p.shape[1] != 3:
            problem = f"points has shape {p.shape}, expected (N, 3)"
        elif o.ndim != 1 or len(o) != len(lab) + 1:
            problem = f"offsets has shape {o.shape} for {len(lab)} labels, expected ({len(lab) + 1},)"
        elif o[0] != 0 or o[-1] != len(p):
            problem = f"offsets run from {int(o[0])} to {int(o[-1])}, expected 0 to {len(p)}"
        if problem:
            raise DataError(problem, file=self.path, place=name, reason="bad file")
        return view

    def check(self) -> None:
        """Full consistency scan (offsets non-decreasing, labels in range, pen values 0/1, every
        point); raises DataError.  Opening already runs it, with a bounded pen scan."""
        for v in self._views.values():
            validate_split(v, len(self.class_names), self.path, max_pen_rows=None)

    def split(self, name: str) -> SplitView:
        if name not in self._views:
            raise ValueError(f"{self.path}: no split {name!r}; it has {list(self.splits)}")
        return self._views[name]

    def __contains__(self, name: str) -> bool:
        return name in self._views

    def close(self) -> None:
        """Drop the memory maps (they also go when the object is garbage collected)."""
        self._views.clear()

    def __enter__(self) -> "StrokeCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __reduce__(self):
        return (open_cache, (str(self.path),))

    def __repr__(self) -> str:
        counts = ", ".join(f"{s}={len(v)}" for s, v in self._views.items())
        return f"StrokeCache({str(self.path)!r}, classes={len(self.class_names)}, {counts})"


PEN_SCAN_ROWS = 1 << 26  # opening a cache checks the pen values of at most this many points (~64M)


def validate_split(view: "SplitView", num_classes: int, path=None, *, max_pen_rows: int | None = PEN_SCAN_ROWS) -> None:
    """Check one split's contents, vectorised: offsets never decrease, labels are class indices,
    pen values are 0 or 1.  Raises DataError naming the file, the split and the first bad sketch.

    The offset and label checks read one number per sketch.  The pen check reads one column of the
    points; past `max_pen_rows` points (None: no bound) it reads evenly spaced blocks of that many
    points in all, so opening a very large cache stays fast.
    """
    name, where = view.name, path if path is not None else view.path
    offsets = np.asarray(view.offsets)
    if len(offsets) > 1:
        step = np.diff(offsets)
        if (step < 0).any():
            i = int(np.flatnonzero(step < 0)[0])
            raise DataError(f"offsets decrease at sketch {i} ({int(offsets[i])} then {int(offsets[i + 1])}): "
                            f"the file is damaged; prepare it again", file=where, place=name, reason="bad file")
    labels = np.asarray(view.labels)
    if len(labels) and num_classes and (labels.min() < 0 or labels.max() >= num_classes):
        i = int(np.flatnonzero((labels < 0) | (labels >= num_classes))[0])
        raise DataError(f"sketch {i} has label {int(labels[i])}, but the file names {num_classes} class(es) "
                        f"(labels 0..{num_classes - 1})", file=where, place=name, reason="bad file")
    points = view.points
    n = len(points)
    if not n:
        return
    block = 1 << 20
    if max_pen_rows is None or n <= max_pen_rows:
        starts = range(0, n, block)
    else:
        starts = np.linspace(0, n - block, max(1, max_pen_rows // block)).astype(np.int64)
    for s in starts:
        pen = np.asarray(points[int(s):int(s) + block, 2])
        bad = (pen != 0) & (pen != 1)
        if bad.any():
            row = int(s) + int(np.flatnonzero(bad)[0])
            sketch = int(np.searchsorted(offsets, row, side="right")) - 1
            raise DataError(f"point {row} (sketch {sketch}) has pen value {int(pen[row - int(s)])}; pen values "
                            f"must be 0 or 1", file=where, place=name, reason="bad file")


def _decode_attr(key: str, value):
    if isinstance(value, bytes):
        value = value.decode("utf8")
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, str) and (key in _JSON_ATTRS or value.startswith(("[", "{"))):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            if key in _JSON_ATTRS:
                raise DataError(f"attribute {key!r} is not valid JSON", reason="bad file") from None
    return value


def open_cache(path: str | os.PathLike, *, validate: bool = True) -> StrokeCache:
    """Open a prepared HDF5 cache for reading (memory-mapped; see :class:`StrokeCache`).  validate: check
    every split's contents (`validate_split`); off only where the same file was checked already."""
    return StrokeCache(path, validate=validate)


__all__ = ["FORMAT_VERSION", "CacheWriter", "write_cache", "StrokeCache", "SplitView", "open_cache", "validate_split"]
