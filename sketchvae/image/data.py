"""MNIST: IDX files (read, write, validate), download + verify, and binarised batches on device.

IDX format (LeCun et al., http://yann.lecun.com/exdb/mnist/): a big-endian header
``0x00 0x00 <dtype code> <ndim>``, then ``ndim`` uint32 sizes, then the values, row-major,
big-endian. Files may be gzip-compressed (recognised by their first two bytes, not their name).
Every inconsistency raises :class:`IDXError` (a ``DataError``, so a ``ValueError``) naming the file.

Binarisation (how a grey image becomes the binary data a Bernoulli decoder models):

* ``dynamic`` (default; Salakhutdinov & Murray 2008, used by the IWAE paper): every epoch the whole
  training set is re-sampled at once, ``x ~ Bernoulli(grey / 255)``, on the training device, with a
  generator seeded from ``(seed, epoch)`` (so resuming at an epoch boundary reproduces the data).
* ``static``: one Bernoulli sample drawn once with a fixed seed and kept for all epochs. (The
  "static MNIST" of Larochelle & Murray 2011 is a different fixed sample; numbers are close but not
  identical.)
* ``grey``: the grey levels in [0, 1] themselves are the targets of the Bernoulli cross-entropy. Not
  a normalised likelihood for non-binary x: its "nll" is not comparable with binarised results.

Test (and validation) images under ``dynamic``/``static`` are binarised once with ``EVAL_SEED`` so
every evaluation of every checkpoint sees the same binary test set.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from sketchvae.data.formats import DataError

log = logging.getLogger(__name__)

DEFAULT_DATA_DIR = Path("data") / "mnist"
# Canonical MNIST mirror (the one torchvision uses first); LeCun's own site often refuses bots.
DEFAULT_BASE_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
BASE_URL_ENV = "SKETCHVAE_MNIST_URL"

# split -> (images file, labels file), as published.
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
# MD5 of the *decompressed* files: the canonical MNIST checksums. We check the content, not the
# .gz bytes, because mirrors re-gzip the files (different .gz bytes, identical content).
MD5 = {
    "train-images-idx3-ubyte.gz": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte.gz": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte.gz": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte.gz": "27ae3e4e09519cfbb04c329615203637",
}
SIZES = {"train": 60000, "test": 10000}
IMAGE_SHAPE = (28, 28)
NUM_CLASSES = 10
BINARIZE = ("dynamic", "static", "grey")
EVAL_SEED = 0  # seed of the one binarisation of the test / validation images
STATIC_SEED = 1234  # seed of the one binarisation of the training images under "static"

# IDX dtype code -> numpy dtype (big-endian)
_IDX_DTYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_CODES = {v.newbyteorder(">"): k for k, v in _IDX_DTYPES.items()}


class IDXError(DataError):
    """A malformed IDX file (bad magic, unknown dtype, sizes that do not match the file length)."""


# --------------------------------------------------------------------------------------------------
# IDX read / write


def _read_bytes(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise
    except OSError as err:
        raise IDXError(f"cannot read: {err}", file=path, reason="unreadable") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as err:
            raise IDXError(f"corrupt or truncated gzip data: {err}", file=path, reason="bad gzip") from None
    return raw


def parse_idx(raw: bytes, file="<bytes>", *, ndim: int | None = None,
              shape: tuple[int | None, ...] | None = None) -> np.ndarray:
    """Parse decompressed IDX bytes into a native-endian array, validating everything.

    `ndim` / `shape` (None entries = any size) state what the caller expects.
    """
    if len(raw) < 4:
        raise IDXError(f"only {len(raw)} bytes; an IDX file starts with a 4-byte magic number",
                       file=file, reason="truncated")
    if raw[0] != 0 or raw[1] != 0:
        raise IDXError(f"bad magic number 0x{raw[:4].hex()}: an IDX file starts with two zero bytes "
                       f"(e.g. 0x00000803 for images, 0x00000801 for labels)", file=file, reason="bad magic")
    code, nd = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        raise IDXError(f"unknown IDX dtype code 0x{code:02x} in magic 0x{raw[:4].hex()}; known: "
                       f"{', '.join(f'0x{c:02x}' for c in _IDX_DTYPES)}", file=file, reason="bad dtype")
    if nd == 0:
        raise IDXError("IDX header says 0 dimensions", file=file, reason="bad dims")
    if ndim is not None and nd != ndim:
        raise IDXError(f"has {nd} dimensions, expected {ndim} (magic 0x{raw[:4].hex()})", file=file,
                       reason="wrong dims")
    head = 4 + 4 * nd
    if len(raw) < head:
        raise IDXError(f"truncated header: {len(raw)} bytes, the {nd} sizes need {head}", file=file,
                       reason="truncated")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=nd, offset=4))
    if shape is not None:
        for i, (got, want) in enumerate(zip(dims, shape)):
            if want is not None and got != want:
                raise IDXError(f"dimension {i} is {got}, expected {want} (shape {dims})", file=file,
                               reason="wrong dims")
    dtype = _IDX_DTYPES[code]
    need = head + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) != need:
        what = "truncated" if len(raw) < need else "has trailing bytes"
        raise IDXError(f"{what}: {len(raw)} bytes, but the header (shape {dims}, {dtype.str[1:]}) needs {need}",
                       file=file, reason="wrong size")
    return np.frombuffer(raw, dtype=dtype, offset=head).reshape(dims).astype(dtype.newbyteorder("="))


def read_idx(path: str | os.PathLike, *, ndim: int | None = None,
             shape: tuple[int | None, ...] | None = None) -> np.ndarray:
    """Read an IDX file (gzipped or not) into a native-endian numpy array; see :func:`parse_idx`."""
    path = Path(path)
    return parse_idx(_read_bytes(path), path, ndim=ndim, shape=shape)


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode an array as IDX bytes (uint8, int8, int16, int32, float32 or float64)."""
    array = np.asarray(array)
    dt = array.dtype.newbyteorder(">")
    if dt not in _CODES:
        raise ValueError(f"dtype {array.dtype} has no IDX code; use one of uint8, int8, int16, int32, float32, "
                         f"float64")
    header = bytes([0, 0, _CODES[dt], array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + np.ascontiguousarray(array, dtype=dt).tobytes()


def write_idx(path: str | os.PathLike, array: np.ndarray, *, compress: bool | None = None) -> Path:
    """Write `array` as an IDX file; gzip it when `compress` (default: when the name ends in .gz)."""
    path = Path(path)
    data = idx_bytes(array)
    if compress if compress is not None else path.suffix == ".gz":
        data = gzip.compress(data, compresslevel=6, mtime=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# --------------------------------------------------------------------------------------------------
# the MNIST files


def find_file(data_dir: str | os.PathLike, name: str) -> Path:
    """`data_dir/name` or, for 'x.gz', an uncompressed `data_dir/x`; FileNotFoundError naming both."""
    data_dir = Path(data_dir)
    for cand in (data_dir / name, data_dir / name.removesuffix(".gz")):
        if cand.is_file():
            return cand
    raise FileNotFoundError(f"{data_dir / name} not found; run `sketchvae mnist download --data-dir {data_dir}` "
                            f"or copy the MNIST IDX files there")


def load_split(data_dir: str | os.PathLike = DEFAULT_DATA_DIR, split: str = "train",
               limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 (N, 28, 28) and labels int64 (N,) of a split ("train" | "test"); first `limit` only."""
    if split not in FILES:
        raise ValueError(f"unknown MNIST split {split!r}; choose from {sorted(FILES)}")
    img_path, lab_path = (find_file(data_dir, n) for n in FILES[split])
    images = read_idx(img_path, ndim=3, shape=(None, *IMAGE_SHAPE))
    labels = read_idx(lab_path, ndim=1)
    if images.dtype != np.uint8 or labels.dtype != np.uint8:
        bad = img_path if images.dtype != np.uint8 else lab_path
        raise IDXError("MNIST files hold uint8 values (dtype code 0x08)", file=bad, reason="bad dtype")
    if len(images) != len(labels):
        raise IDXError(f"{len(images)} images but {lab_path.name} has {len(labels)} labels", file=img_path,
                       reason="count mismatch")
    if labels.size and labels.max() >= NUM_CLASSES:
        raise IDXError(f"label {int(labels.max())} out of range 0..{NUM_CLASSES - 1}", file=lab_path,
                       reason="bad label")
    if limit is not None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        images, labels = images[:limit], labels[:limit]
    return np.ascontiguousarray(images), labels.astype(np.int64)


def md5_of_content(path: str | os.PathLike) -> str:
    """MD5 of a file's decompressed content (gzip recognised by its magic bytes)."""
    path = Path(path)
    h = hashlib.md5()
    with open(path, "rb") as raw:
        gz = raw.read(2) == b"\x1f\x8b"
    opener = gzip.open if gz else open
    try:
        with opener(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except (EOFError, OSError, zlib.error) as err:
        raise IDXError(f"corrupt or truncated gzip data: {err}", file=path, reason="bad gzip") from None
    return h.hexdigest()


def verify_file(path: str | os.PathLike, expected_md5: str | None, name: str | None = None) -> None:
    """Check the decompressed content's MD5 (when given) and that the file parses as IDX."""
    path = Path(path)
    if expected_md5 is not None:
        got = md5_of_content(path)
        if got != expected_md5:
            raise IDXError(f"checksum mismatch: MD5 of the content is {got}, expected {expected_md5}",
                           file=name or path, reason="checksum mismatch")
    read_idx(path)


@dataclass
class Downloaded:
    name: str
    path: Path
    status: str  # "downloaded" | "present"


def download(data_dir: str | os.PathLike = DEFAULT_DATA_DIR, *, base_url: str | None = None,
             checksums: dict[str, str] | None = None, progress: bool = False,
             retries: int = 5, timeout: float = 60.0) -> list[Downloaded]:
    """Fetch the four MNIST files into `data_dir` (resumable), verifying each file's content MD5.

    Files already present and valid are kept. `base_url` defaults to ``$SKETCHVAE_MNIST_URL`` or
    the canonical mirror; `checksums` (file name -> MD5 of the decompressed file) defaults to the
    canonical MNIST ones. Raises ``DownloadError`` (a ValueError) on failure.
    """
    from sketchvae.data.quickdraw import download_file

    base = (base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL).rstrip("/") + "/"
    checksums = MD5 if checksums is None else checksums
    data_dir = Path(data_dir)
    done = []
    for names in FILES.values():
        for name in names:
            dest = data_dir / name
            md5 = checksums.get(name)
            if dest.is_file():
                try:
                    verify_file(dest, md5)
                    done.append(Downloaded(name, dest, "present"))
                    continue
                except IDXError as err:
                    log.warning("%s; downloading it again", err)
            download_file(base + name, dest, verify=lambda p, md5=md5, name=name: verify_file(p, md5, name),
                          progress=progress, desc=name, retries=retries, timeout=timeout,
                          offline_advice=f"set {BASE_URL_ENV} to a mirror, or copy the files into the data folder yourself",
                          backoff=1.0 if retries else 0.0)
            done.append(Downloaded(name, dest, "downloaded"))
    return done


# --------------------------------------------------------------------------------------------------
# tensors on device and binarised batches


def _check_binarize(binarize: str) -> None:
    if binarize not in BINARIZE:
        raise ValueError(f"unknown binarisation {binarize!r}; choose from {list(BINARIZE)}")


def binarize_once(images, binarize: str, seed: int):
    """Images (N, 28, 28) uint8 (numpy or tensor) -> float32 tensor (N, 784) of targets, binarised with
    `seed` unless `binarize` is 'grey'. The Bernoulli sample is drawn on the tensor's device."""
    import torch

    _check_binarize(binarize)
    x = torch.as_tensor(images).reshape(len(images), -1).float().div_(255.0)
    if binarize == "grey":
        return x
    g = torch.Generator(device=x.device).manual_seed(seed)
    return torch.bernoulli(x, generator=g)


class ImageData:
    """One MNIST split as a single tensor on `device`, served as shuffled batches.

    images: uint8 (N, 28, 28); labels: int64 (N,). Training batches (``epoch(e)``) re-binarise the
    whole set in one tensor operation per epoch under ``dynamic``; nothing happens per image in Python.
    """

    def __init__(self, images, labels, *, binarize: str = "dynamic", device="cpu", seed: int = 0,
                 train: bool = True):
        import torch

        _check_binarize(binarize)
        self.binarize = binarize
        self.seed = seed
        self.device = torch.device(device)
        self.train = train
        self.labels = torch.as_tensor(labels, dtype=torch.int64).to(self.device)
        grey = torch.as_tensor(np.asarray(images)).to(self.device)
        if len(grey) != len(self.labels):
            raise ValueError(f"{len(grey)} images but {len(self.labels)} labels")
        self.probs = grey.reshape(len(grey), -1).float().div_(255.0)  # (N, 784) in [0, 1]
        if binarize == "grey":
            self.fixed = self.probs
        elif binarize == "static" or not train:
            self.fixed = binarize_once(grey, "dynamic", STATIC_SEED if train else EVAL_SEED)
        else:
            self.fixed = None  # dynamic: drawn per epoch

    def __len__(self) -> int:
        return len(self.labels)

    def targets(self, epoch: int = 0):
        """The (N, 784) float32 targets of an epoch (a fresh Bernoulli sample under dynamic training)."""
        import torch

        if self.fixed is not None:
            return self.fixed
        g = torch.Generator(device=self.device).manual_seed(self.seed * 1_000_003 + epoch)
        return torch.bernoulli(self.probs, generator=g)

    def batches(self, batch_size: int, *, epoch: int = 0, shuffle: bool = True,
                drop_last: bool = False) -> Iterator[tuple]:
        """Yield (x (B, 784) float32, labels (B,) int64) on the device."""
        import torch

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        x = self.targets(epoch)
        n = len(self)
        if shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch + 7)
            order = torch.randperm(n, generator=g).to(self.device)
        else:
            order = None
        stop = n - n % batch_size if drop_last else n
        for i in range(0, stop, batch_size):
            if order is None:
                yield x[i:i + batch_size], self.labels[i:i + batch_size]
            else:
                idx = order[i:i + batch_size]
                yield x[idx], self.labels[idx]

    def num_batches(self, batch_size: int, drop_last: bool = False) -> int:
        return len(self) // batch_size if drop_last else -(-len(self) // batch_size)


def load_data(data_dir, split: str, *, binarize: str = "dynamic", device="cpu", seed: int = 0,
              limit: int | None = None, train: bool | None = None) -> ImageData:
    """`load_split` + `ImageData`; `train` defaults to split == 'train'."""
    images, labels = load_split(data_dir, split, limit)
    return ImageData(images, labels, binarize=binarize, device=device, seed=seed,
                     train=(split == "train") if train is None else train)



def write_synthetic(data_dir: str | os.PathLike, n_train: int = 300, n_test: int = 100, seed: int = 0) -> Path:
    """Write a tiny MNIST-shaped data set (the four .gz IDX files) of learnable fake digits.

    Digit c is a bright horizontal bar at rows 2 + 2c..3 + 2c over faint noise: for tests and offline
    demos, never for numbers. Returns `data_dir`.
    """
    rng = np.random.default_rng(seed)
    data_dir = Path(data_dir)
    for split, n in (("train", n_train), ("test", n_test)):
        labels = rng.integers(0, NUM_CLASSES, n).astype(np.uint8)
        images = (rng.random((n, *IMAGE_SHAPE)) * 40).astype(np.uint8)
        for c in range(NUM_CLASSES):
            images[labels == c, 2 + 2 * c:4 + 2 * c, 4:24] = 255
        img_name, lab_name = FILES[split]
        write_idx(data_dir / img_name, images)
        write_idx(data_dir / lab_name, labels)
    return data_dir
