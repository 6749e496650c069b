"""Readers for stroke data files: Sketch-RNN ``.npz`` (safely) and Quick, Draw! ndjson.

Everything returns validated int16 stroke-3 arrays ``(n, 3)`` = ``(dx, dy, pen_lifted)``.
Bad input raises :class:`DataError` naming the file and the place (``line 7`` for ndjson,
``train[12]`` for npz); readers that take ``on_bad`` call it with the error instead and go on,
so a caller can skip and count bad sketches (nothing is dropped silently).

* **npz** (:func:`read_npz_member`, :func:`iter_npz_split`, :func:`load_npz`): the official
  files hold pickled object arrays (Python 2 pickles: latin1). They are read member by member
  from the zip with a restricted unpickler that can only rebuild numpy arrays
  (``_reconstruct``, ``ndarray``, ``dtype``); any other global (``os.system``, ...) is refused
  before it is called. Plain numeric members are read without pickle: ``(S, n, 3)`` is S
  sketches of n points, ``(n, 3)`` one sketch.
* **ndjson** (:func:`iter_ndjson`, :func:`load_ndjson`): one JSON object per line with a
  ``drawing`` list of strokes ``[[x...], [y...]]`` (simplified) or ``[[x...], [y...], [t...]]``
  (raw). Raw drawings are converted as Google made the simplified set
  (:func:`simplify_drawing`): align to the top-left, scale uniformly so the largest extent is
  255, resample every stroke at 1 px spacing, RDP with epsilon 2.0, round. On the raw/simplified
  pairs of the shared Quick, Draw! subset this reproduces about 94% of the simplified drawings
  exactly (``scripts/audit_raw_conversion.py``).
"""

from __future__ import annotations

import ast
import json
import math
import pickle
import zipfile
from itertools import chain
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

import numpy as np

from sketchvae.strokes import from_polylines, rdp

SPLITS = ("train", "valid", "test")

# Largest |dx| / |dy| accepted in a stroke-3 sketch. Real data stays far below (Quick, Draw!
# <= 255, the sketch-rnn-datasets <= 600); larger values are corrupt or unscaled coordinates.
MAX_ABS_OFFSET = 10000

# Google's simplification of raw Quick, Draw! drawings (quickdraw-dataset README).
SIMPLIFY_SIZE = 255.0     # largest extent after uniform scaling, px
SIMPLIFY_SPACING = 1.0    # resampling step along each stroke, px
SIMPLIFY_EPSILON = 2.0    # Ramer-Douglas-Peucker tolerance, px

_MAX_NPY_HEADER = 10000   # bytes; as numpy's own limit against literal_eval abuse

OnBad = Callable[["DataError"], None]


class DataError(ValueError):
    """Bad input data: names the file, the place in it and what is wrong.

    ``reason`` is a short category ("invalid JSON", "offset out of range", ...) used to count
    skipped sketches; ``place`` is e.g. ``"line 7"`` (ndjson) or ``"train[12]"`` (npz).
    """

    def __init__(self, message: str, *, file=None, place: str | None = None, reason: str | None = None):
        self.message = message
        self.file = None if file is None else str(file)
        self.place = place
        self.reason = reason or message
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ": ".join(p for p in (self.file, self.place) if p)
        return f"{where}: {self.message}" if where else self.message

    def at(self, *, file=None, place: str | None = None) -> "DataError":
        """The same error with file / place filled in where missing."""
        return DataError(self.message, file=self.file or file, place=self.place or place, reason=self.reason)


def _report(err: DataError, on_bad: OnBad | None) -> None:
    if on_bad is None:
        raise err
    on_bad(err)


# --------------------------------------------------------------------------------------------------
# stroke-3 validation


def validate_stroke3(arr, *, file=None, place: str | None = None) -> np.ndarray:
    """Check one stroke-3 sketch and return it as a new int16 ``(n, 3)`` array.

    Accepts integer arrays and float arrays holding whole numbers. Raises :class:`DataError`
    for: not an array, wrong shape, no points, non-numeric dtype, NaN/inf, non-integer
    offsets, ``|offset| > MAX_ABS_OFFSET``, pen values other than 0/1. A sketch whose last
    point has no pen lift gets one (the end of a sketch is a lift; no point changes).
    """
    def bad(msg, reason):
        return DataError(msg, file=file, place=place, reason=reason)

    if isinstance(arr, (list, tuple)):
        try:
            arr = np.asarray(arr)
        except (ValueError, TypeError) as err:
            raise bad(f"not a rectangular array ({err})", "bad shape") from None
    if not isinstance(arr, np.ndarray):
        raise bad(f"expected a stroke-3 array, got {type(arr).__name__}", "bad type")
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise bad(f"expected shape (n, 3), got {arr.shape}", "bad shape")
    if arr.shape[0] == 0:
        raise bad("empty sketch (no points)", "empty sketch")
    if arr.dtype.kind not in "iuf":
        raise bad(f"expected integer or float values, got dtype {arr.dtype}", "bad dtype")
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            row = int(np.flatnonzero(~np.isfinite(arr).all(axis=1))[0])
            raise bad(f"non-finite value at row {row}: {arr[row].tolist()}", "non-finite value")
        frac = arr != np.round(arr)
        if frac.any():
            row = int(np.flatnonzero(frac.any(axis=1))[0])
            raise bad(f"non-integer value at row {row}: {arr[row].tolist()} (the cache stores int16 pixel "
                      f"offsets; rescale normalised data first)", "non-integer offset")
    big = np.abs(arr[:, 0:2].astype(np.float64)) > MAX_ABS_OFFSET
    if big.any():
        row = int(np.flatnonzero(big.any(axis=1))[0])
        raise bad(f"offset out of range at row {row}: {arr[row, 0:2].tolist()} (allowed |offset| <= "
                  f"{MAX_ABS_OFFSET})", "offset out of range")
    pen = arr[:, 2]
    odd = (pen != 0) & (pen != 1)
    if odd.any():
        row = int(np.flatnonzero(odd)[0])
        raise bad(f"pen value {pen[row].item()} at row {row}; expected 0 or 1", "bad pen value")
    out = arr.astype(np.int16)
    out[-1, 2] = 1
    return out


# --------------------------------------------------------------------------------------------------
# npz (safe)

# The only globals a pickled numpy array needs. Anything else is refused before it is called.
_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    # Python 3 pickles of protocol <= 2 spell bytes (the array data) as _codecs.encode(str, "latin1"):
    # a pure str -> bytes conversion, safe to allow.
    ("_codecs", "encode"),
}


def _reconstruct_fn():
    try:
        from numpy._core.multiarray import _reconstruct  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Rebuilds numpy arrays and nothing else (no code from a file is ever run)."""

    def find_class(self, module, name):
        if (module, name) not in _NUMPY_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}: only numpy arrays are allowed")
        if name == "_reconstruct":
            return _reconstruct_fn()
        if module == "_codecs":
            import codecs

            return codecs.encode
        return getattr(np, name)

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("refusing persistent ids: only numpy arrays are allowed")


def _read_npy_header(fp) -> tuple[tuple, bool, np.dtype]:
    magic = fp.read(8)
    if len(magic) != 8 or magic[:6] != b"\x93NUMPY":
        raise ValueError("not a .npy member (bad magic)")
    major = magic[6]
    if major == 1:
        size = int.from_bytes(fp.read(2), "little")
    elif major in (2, 3):
        size = int.from_bytes(fp.read(4), "little")
    else:
        raise ValueError(f"unsupported .npy format version {major}.{magic[7]}")
    if size > _MAX_NPY_HEADER:
        raise ValueError(f".npy header of {size} bytes is larger than {_MAX_NPY_HEADER}")
    raw = fp.read(size)
    text = raw.decode("utf8" if major == 3 else "latin1")
    header = ast.literal_eval(text)  # literals only: never runs code
    if not isinstance(header, dict) or not {"descr", "fortran_order", "shape"} <= header.keys():
        raise ValueError(f"bad .npy header {text.strip()!r}")
    shape = header["shape"]
    if not isinstance(shape, tuple) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise ValueError(f"bad shape {shape!r} in .npy header")
    dtype = np.lib.format.descr_to_dtype(header["descr"])
    return shape, bool(header["fortran_order"]), dtype


def npz_members(path) -> list[str]:
    """Array names in an ``.npz`` file (``train``, ``valid``, ...)."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zf:
            return [n[:-4] for n in zf.namelist() if n.endswith(".npy")]
    except zipfile.BadZipFile as err:
        raise DataError(f"not an .npz (zip) archive: {err}", file=path, reason="bad file") from None


def read_npz_member(path, name: str) -> np.ndarray:
    """Read one array of an ``.npz`` without ever running code from the file.

    Object arrays are unpickled with a loader that only rebuilds numpy arrays (latin1, for
    Python 2 pickles); numeric arrays are read straight from the bytes.
    """
    path = Path(path)
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile as err:
        raise DataError(f"not an .npz (zip) archive: {err}", file=path, reason="bad file") from None
    with zf:
        member = f"{name}.npy"
        if member not in zf.namelist():
            have = [n[:-4] for n in zf.namelist() if n.endswith(".npy")]
            raise DataError(f"no array {name!r}; the file has {have}", file=path, place=member,
                            reason="missing split")
        with zf.open(member) as fp:
            try:
                shape, fortran, dtype = _read_npy_header(fp)
                if dtype.hasobject:
                    arr = _NumpyOnlyUnpickler(fp, encoding="latin1").load()
                    if not isinstance(arr, np.ndarray):
                        raise ValueError(f"pickle holds a {type(arr).__name__}, not an array")
                    return arr
                count = math.prod(shape)
                data = fp.read(count * dtype.itemsize)
                if len(data) != count * dtype.itemsize:
                    raise ValueError(f"truncated: {len(data)} of {count * dtype.itemsize} bytes")
                arr = np.frombuffer(data, dtype=dtype, count=count)
                return arr.reshape(shape[::-1]).T if fortran else arr.reshape(shape)
            except (pickle.UnpicklingError, ValueError, SyntaxError, EOFError, TypeError, AttributeError,
                    KeyError, IndexError, MemoryError, zipfile.BadZipFile, OSError) as err:
                raise DataError(f"cannot load array: {err}", file=path, place=member, reason="unsafe or corrupt array") \
                    from None


def _split_items(arr: np.ndarray, split: str, path: Path) -> list:
    """The sketches of one npz member with their places, whatever its layout."""
    if arr.dtype.hasobject:
        if arr.ndim != 1:
            raise DataError(f"object array of shape {arr.shape}; expected a 1-D array of sketches",
                            file=path, place=split, reason="bad shape")
        return [(f"{split}[{i}]", arr[i]) for i in range(len(arr))]
    if arr.ndim == 3 and arr.shape[2] == 3:
        return [(f"{split}[{i}]", arr[i]) for i in range(len(arr))]
    if arr.ndim == 2 and arr.shape[1] == 3:
        return [(split, arr)]
    raise DataError(f"array of shape {arr.shape} and dtype {arr.dtype}; expected an object array of (n, 3) "
                    f"sketches, (S, n, 3) or (n, 3)", file=path, place=split, reason="bad shape")


def _row_problems(rows: np.ndarray) -> np.ndarray:
    """Boolean (N,) mask of rows that `validate_stroke3` would reject (vectorised)."""
    bad = np.zeros(len(rows), dtype=bool)
    if rows.dtype.kind == "f":
        finite = np.isfinite(rows).all(axis=1)
        bad |= ~finite
        safe = np.where(finite[:, None], rows, 0)
        bad |= (safe != np.round(safe)).any(axis=1)
        rows = safe
    xy = rows[:, 0:2]
    if xy.dtype.kind == "f":
        too_big = np.abs(xy) > MAX_ABS_OFFSET
    else:  # integers compared in their own dtype: no float64 copy of every offset (8x the int16 bytes)
        too_big = xy > MAX_ABS_OFFSET
        if xy.dtype.kind == "i":
            too_big |= xy < -MAX_ABS_OFFSET
    bad |= too_big.any(axis=1)
    bad |= (rows[:, 2] != 0) & (rows[:, 2] != 1)
    return bad


def read_npz_split(path, split: str, *, on_bad: OnBad | None = None, arr: np.ndarray | None = None,
                   ) -> tuple[np.ndarray, np.ndarray, int]:
    """One split of an ``.npz`` as flat arrays: ``(points int16 (N, 3), lengths int64 (S,), n_input)``.

    The same checks as :func:`validate_stroke3`, vectorised over the whole split. A bad
    sketch raises :class:`DataError` (place ``split[i]``), or is passed to ``on_bad`` and left
    out; ``n_input`` counts every sketch in the member, kept or not. ``arr``: the member, if
    already read with :func:`read_npz_member`.
    """
    path = Path(path)
    if arr is None:
        arr = read_npz_member(path, split)
    items = _split_items(arr, split, path)
    good: list[tuple[str, np.ndarray]] = []
    for place, item in items:
        if (isinstance(item, np.ndarray) and item.ndim == 2 and item.shape[1] == 3 and item.shape[0] > 0
                and item.dtype.kind in "iuf"):
            good.append((place, item))
        else:  # structurally wrong: let the scalar check name the problem
            try:
                good.append((place, validate_stroke3(item, file=path, place=place)))
            except DataError as err:
                _report(err, on_bad)
    if not good:
        return np.zeros((0, 3), np.int16), np.zeros(0, np.int64), len(items)
    lengths = np.fromiter((len(a) for _, a in good), dtype=np.int64, count=len(good))
    rows = np.concatenate([a for _, a in good])
    ends = np.cumsum(lengths)
    bad_rows = np.flatnonzero(_row_problems(rows))
    if len(bad_rows):
        bad_sketches = np.unique(np.searchsorted(ends, bad_rows, side="right"))
        for i in bad_sketches:
            place, a = good[i]
            try:
                validate_stroke3(a, file=path, place=place)
            except DataError as err:
                _report(err, on_bad)
            else:  # pragma: no cover - the two checks disagree
                raise AssertionError(f"{path}: {place}: vectorised and scalar checks disagree")
        keep = np.ones(len(good), dtype=bool)
        keep[bad_sketches] = False
        rows = rows[np.repeat(keep, lengths)]
        lengths = lengths[keep]
        ends = np.cumsum(lengths)
    out = rows.astype(np.int16, copy=False)  # rows is this function's own array (concatenated or masked)
    if len(ends):
        out[ends - 1, 2] = 1  # a sketch ends with a pen lift
    return out, lengths, len(items)


def iter_npz_split(path, split: str, *, on_bad: OnBad | None = None, arr: np.ndarray | None = None
                   ) -> Iterator[np.ndarray]:
    """Validated int16 stroke-3 sketches of one split of an ``.npz`` (see :func:`read_npz_split`)."""
    points, lengths, _ = read_npz_split(path, split, on_bad=on_bad, arr=arr)
    start = 0
    for n in lengths.tolist():
        yield points[start:start + n]
        start += n


def load_npz(path, splits=SPLITS, *, on_bad: OnBad | None = None) -> dict[str, list[np.ndarray]]:
    """All sketches of the given splits as lists of int16 arrays (for small files and tests)."""
    return {s: list(iter_npz_split(path, s, on_bad=on_bad)) for s in splits}


# --------------------------------------------------------------------------------------------------
# ndjson


class Drawing(NamedTuple):
    """One ndjson drawing as stroke-3."""

    line: int               # 1-based line number in the file
    key_id: str | None      # Quick, Draw! key_id (None when the line has none)
    word: str | None        # the line's "word" (class), if any
    strokes: np.ndarray     # int16 (n, 3) stroke-3
    raw: bool               # converted from raw coordinates (simplify_drawing)


def _resample(points: np.ndarray, spacing: float) -> np.ndarray:
    """Points every `spacing` px of arc length along a polyline, plus its last point.

    A stroke of zero length (a dot) becomes two equal points, as in Google's output.
    """
    if len(points) < 2:
        return points[[0, 0]]
    seg = np.hypot(*np.diff(points, axis=0).T)
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    total = cum[-1]
    if total == 0:
        return points[[0, -1]]
    t = np.arange(int(total // spacing) + 1) * spacing
    if t[-1] < total:
        t = np.append(t, total)
    return np.stack([np.interp(t, cum, points[:, 0]), np.interp(t, cum, points[:, 1])], axis=1)


def simplify_drawing(polylines, *, size: float = SIMPLIFY_SIZE, spacing: float = SIMPLIFY_SPACING,
                     epsilon: float = SIMPLIFY_EPSILON) -> list[np.ndarray]:
    """Google's simplification of a raw Quick, Draw! drawing -> integer polylines in 0..size.

    Align to the top-left (min x, min y = 0), scale uniformly so the largest extent is
    `size` (aspect kept), resample each stroke at `spacing` px, Ramer-Douglas-Peucker with
    `epsilon`, round to integers. Input: list of (k, 2) float arrays (absolute coordinates).
    """
    polys = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in polylines]
    polys = [p for p in polys if len(p)]
    if not polys:
        return []
    allp = np.concatenate(polys)
    lo = allp.min(axis=0)
    extent = float((allp.max(axis=0) - lo).max())
    scale = size / extent if extent > 0 else 1.0
    out = []
    for p in polys:
        p = (p - lo) * scale
        p = rdp(_resample(p, spacing), epsilon)
        out.append(np.round(p).astype(np.int64))
    return out


def _parse_drawing(obj, fmt: str) -> tuple[list[np.ndarray], bool]:
    """JSON drawing -> (absolute polylines as float arrays, is_raw). Raises DataError (no place)."""
    if not isinstance(obj, dict):
        raise DataError(f"expected a JSON object, got {type(obj).__name__}", reason="not a JSON object")
    if "drawing" not in obj:
        raise DataError(f"missing key 'drawing' (keys: {sorted(obj)[:8]})", reason="missing key 'drawing'")
    drawing = obj["drawing"]
    if not isinstance(drawing, list):
        raise DataError(f"'drawing' is a {type(drawing).__name__}, expected a list of strokes",
                        reason="bad drawing structure")
    raw = fmt == "raw"
    sizes = []
    for j, stroke in enumerate(drawing):
        if not isinstance(stroke, list) or len(stroke) not in (2, 3) or not all(isinstance(r, list) for r in stroke):
            raise DataError(f"stroke {j} is not [[x...], [y...]] or [[x...], [y...], [t...]]",
                            reason="bad drawing structure")
        if len({len(r) for r in stroke}) != 1:
            raise DataError(f"stroke {j} has rows of different lengths {[len(r) for r in stroke]}",
                            reason="bad drawing structure")
        if fmt == "auto" and len(stroke) == 3:
            raw = True
        sizes.append(len(stroke[0]))
    if sum(sizes) == 0:
        raise DataError("empty drawing (no points)", reason="empty drawing")
    try:
        xy = np.array([list(chain.from_iterable(s[0] for s in drawing)),
                       list(chain.from_iterable(s[1] for s in drawing))])
    except (ValueError, TypeError):
        raise DataError("coordinates are not all numbers", reason="non-numeric coordinate") from None
    if xy.dtype.kind not in "iuf":
        raise DataError(f"coordinates are not all numbers (dtype {xy.dtype})", reason="non-numeric coordinate")
    if xy.dtype.kind == "f" and not np.isfinite(xy).all():
        k = int(np.flatnonzero(~np.isfinite(xy).all(axis=0))[0])
        raise DataError(f"non-finite coordinate (point {k}: {xy[:, k].tolist()})", reason="non-finite value")
    if not raw and xy.dtype.kind == "f":
        frac = xy != np.round(xy)
        if frac.any():
            k = int(np.flatnonzero(frac.any(axis=0))[0])
            raise DataError(f"non-integer coordinate {xy[:, k].tolist()} in a simplified drawing (raw drawings "
                            f"have a time row; or force the raw format)", reason="non-integer coordinate")
    pts = xy.T.astype(np.float64)
    cuts = np.cumsum(sizes)[:-1]
    return np.split(pts, cuts), raw


def drawing_to_stroke3(obj, fmt: str = "auto") -> tuple[np.ndarray, bool]:
    """A parsed ndjson object -> (int16 stroke-3, converted_from_raw). Raises DataError without a place.

    fmt: "auto" (raw if a stroke has a time row), "simplified" or "raw".
    """
    if fmt not in ("auto", "simplified", "raw"):
        raise ValueError(f"unknown ndjson format {fmt!r}; choose from auto, simplified, raw")
    polys, raw = _parse_drawing(obj, fmt)
    if raw:
        polys = simplify_drawing(polys)
    s3 = from_polylines(polys, dtype=np.float64)
    return validate_stroke3(s3), raw


def iter_ndjson(path, *, fmt: str = "auto", on_bad: OnBad | None = None) -> Iterator[Drawing]:
    """Drawings of a Quick, Draw! ndjson file (simplified or raw) as validated stroke-3.

    Blank lines are ignored. A bad line raises :class:`DataError` naming file and line, or is
    passed to ``on_bad`` and skipped.
    """
    if fmt not in ("auto", "simplified", "raw"):
        raise ValueError(f"unknown ndjson format {fmt!r}; choose from auto, simplified, raw")
    path = Path(path)
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            place = f"line {lineno}"
            try:
                try:
                    obj = json.loads(line)
                except (json.JSONDecodeError, UnicodeDecodeError) as err:
                    raise DataError(f"invalid JSON: {err}", reason="invalid JSON") from None
                s3, raw = drawing_to_stroke3(obj, fmt)
            except DataError as err:
                _report(err.at(file=path, place=place), on_bad)
                continue
            key = obj.get("key_id")
            word = obj.get("word")
            yield Drawing(lineno, None if key is None else str(key), word if isinstance(word, str) else None, s3, raw)


def load_ndjson(path, *, fmt: str = "auto", on_bad: OnBad | None = None) -> list[Drawing]:
    """All drawings of an ndjson file (for small files and tests)."""
    return list(iter_ndjson(path, fmt=fmt, on_bad=on_bad))


def count_ndjson_lines(path) -> int:
    """Non-blank lines of an ndjson file (the number of drawings it claims)."""
    n = 0
    with open(path, "rb") as f:
        for line in f:
            n += bool(line.strip())
    return n


__all__ = [
    "SPLITS", "MAX_ABS_OFFSET", "DataError", "validate_stroke3", "npz_members", "read_npz_member",
    "read_npz_split", "iter_npz_split", "load_npz", "Drawing", "simplify_drawing", "drawing_to_stroke3",
    "iter_ndjson", "load_ndjson", "count_ndjson_lines",
]
