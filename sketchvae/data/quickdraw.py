"""Quick, Draw!: the official class list, downloads (resumable, verified) and ``prepare``.

``download(classes)`` fetches the official per-class Sketch-RNN ``.npz`` files (and optionally the
simplified ndjson) into ``data/quickdraw/``: HTTP Range resume of ``.part`` files, retries when the
connection drops, size checked against Content-Length / Content-Range, ``.npz`` verified with the
safe loader (three splits) before it is renamed into place. The server is
``$SKETCHVAE_QUICKDRAW_URL`` or ``base_url=`` (a mirror, or a local server in tests), else Google's.

``prepare(sources, out)`` turns any mix of ``.npz`` files, ``.ndjson`` files, folders of them
(one class per file) and class names (downloaded when missing) into one HDF5 cache
(:mod:`sketchvae.data.cache`), in one pass over the sources with bounded memory:

* **Classes.** Each file is a class named by its stem. Files with the same stem (e.g.
  ``simplified/cat.ndjson`` and ``raw/cat.ndjson``) are the same category and are **merged**
  into one class. Within a class, an ndjson drawing whose ``key_id`` was already read from an
  earlier source is skipped as a duplicate (the same drawing in raw and simplified form), so
  nothing is counted twice and no drawing can land in both train and test. Class order is
  order of first appearance.
* **Splits.** ``.npz`` files keep their own train/valid/test. ndjson drawings of a class are
  split by a seeded hash of their ``key_id`` (of file and line when there is none): sorted by
  hash, the first ``round(n * test_frac)`` go to test, the next ``round(n * valid_frac)`` to
  valid, the rest to train; with 3 or more drawings valid and test get at least one each. The
  assignment depends only on (seed, key_ids), not on file order.
* **Filters.** Sketches longer than ``max_len`` or shorter than ``min_len`` points are skipped
  and counted by reason; bad input raises :class:`~sketchvae.data.formats.DataError` (file and
  line / split[index]) unless ``skip_bad``, which skips and counts it. For every source,
  kept + skipped == input (``PrepareReport``).
* **Attributes.** ``scale_factor`` = std of all train dx and dy after filtering (Sketch-RNN's
  ``calculate_normalizing_scale_factor``), sha256 of every source file, the preprocessing
  options and the per-source report. An existing output prepared from the same source bytes
  with the same options is reused (``force=True`` rebuilds).
"""

from __future__ import annotations

import difflib
import hashlib
import http.client
import json
import logging
import math
import os
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from sketchvae.data.formats import (MAX_ABS_OFFSET, SIMPLIFY_EPSILON, SIMPLIFY_SIZE, SIMPLIFY_SPACING, SPLITS,
                                    DataError, iter_ndjson, npz_members, read_npz_member, read_npz_split)

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://storage.googleapis.com/quickdraw_dataset"
BASE_URL_ENV = "SKETCHVAE_QUICKDRAW_URL"
DEFAULT_DATA_DIR = Path("data") / "quickdraw"

# The 345 Quick, Draw! categories (file names of the official per-class files).
CLASS_NAMES: tuple[str, ...] = (
    'The Eiffel Tower', 'The Great Wall of China', 'The Mona Lisa', 'aircraft carrier', 'airplane',
    'alarm clock', 'ambulance', 'angel', 'animal migration', 'ant', 'anvil', 'apple', 'arm',
    'asparagus', 'axe', 'backpack', 'banana', 'bandage', 'barn', 'baseball', 'baseball bat',
    'basket', 'basketball', 'bat', 'bathtub', 'beach', 'bear', 'beard', 'bed', 'bee', 'belt',
    'bench', 'bicycle', 'binoculars', 'bird', 'birthday cake', 'blackberry', 'blueberry', 'book',
    'boomerang', 'bottlecap', 'bowtie', 'bracelet', 'brain', 'bread', 'bridge', 'broccoli', 'broom',
    'bucket', 'bulldozer', 'bus', 'bush', 'butterfly', 'cactus', 'cake', 'calculator', 'calendar',
    'camel', 'camera', 'camouflage', 'campfire', 'candle', 'cannon', 'canoe', 'car', 'carrot',
    'castle', 'cat', 'ceiling fan', 'cell phone', 'cello', 'chair', 'chandelier', 'church',
    'circle', 'clarinet', 'clock', 'cloud', 'coffee cup', 'compass', 'computer', 'cookie', 'cooler',
    'couch', 'cow', 'crab', 'crayon', 'crocodile', 'crown', 'cruise ship', 'cup', 'diamond',
    'dishwasher', 'diving board', 'dog', 'dolphin', 'donut', 'door', 'dragon', 'dresser', 'drill',
    'drums', 'duck', 'dumbbell', 'ear', 'elbow', 'elephant', 'envelope', 'eraser', 'eye',
    'eyeglasses', 'face', 'fan', 'feather', 'fence', 'finger', 'fire hydrant', 'fireplace',
    'firetruck', 'fish', 'flamingo', 'flashlight', 'flip flops', 'floor lamp', 'flower',
    'flying saucer', 'foot', 'fork', 'frog', 'frying pan', 'garden', 'garden hose', 'giraffe',
    'goatee', 'golf club', 'grapes', 'grass', 'guitar', 'hamburger', 'hammer', 'hand', 'harp',
    'hat', 'headphones', 'hedgehog', 'helicopter', 'helmet', 'hexagon', 'hockey puck',
    'hockey stick', 'horse', 'hospital', 'hot air balloon', 'hot dog', 'hot tub', 'hourglass',
    'house', 'house plant', 'hurricane', 'ice cream', 'jacket', 'jail', 'kangaroo', 'key',
    'keyboard', 'knee', 'knife', 'ladder', 'lantern', 'laptop', 'leaf', 'leg', 'light bulb',
    'lighter', 'lighthouse', 'lightning', 'line', 'lion', 'lipstick', 'lobster', 'lollipop',
    'mailbox', 'map', 'marker', 'matches', 'megaphone', 'mermaid', 'microphone', 'microwave',
    'monkey', 'moon', 'mosquito', 'motorbike', 'mountain', 'mouse', 'moustache', 'mouth', 'mug',
    'mushroom', 'nail', 'necklace', 'nose', 'ocean', 'octagon', 'octopus', 'onion', 'oven', 'owl',
    'paint can', 'paintbrush', 'palm tree', 'panda', 'pants', 'paper clip', 'parachute', 'parrot',
    'passport', 'peanut', 'pear', 'peas', 'pencil', 'penguin', 'piano', 'pickup truck',
    'picture frame', 'pig', 'pillow', 'pineapple', 'pizza', 'pliers', 'police car', 'pond', 'pool',
    'popsicle', 'postcard', 'potato', 'power outlet', 'purse', 'rabbit', 'raccoon', 'radio', 'rain',
    'rainbow', 'rake', 'remote control', 'rhinoceros', 'rifle', 'river', 'roller coaster',
    'rollerskates', 'sailboat', 'sandwich', 'saw', 'saxophone', 'school bus', 'scissors',
    'scorpion', 'screwdriver', 'sea turtle', 'see saw', 'shark', 'sheep', 'shoe', 'shorts',
    'shovel', 'sink', 'skateboard', 'skull', 'skyscraper', 'sleeping bag', 'smiley face', 'snail',
    'snake', 'snorkel', 'snowflake', 'snowman', 'soccer ball', 'sock', 'speedboat', 'spider',
    'spoon', 'spreadsheet', 'square', 'squiggle', 'squirrel', 'stairs', 'star', 'steak', 'stereo',
    'stethoscope', 'stitches', 'stop sign', 'stove', 'strawberry', 'streetlight', 'string bean',
    'submarine', 'suitcase', 'sun', 'swan', 'sweater', 'swing set', 'sword', 'syringe', 't-shirt',
    'table', 'teapot', 'teddy-bear', 'telephone', 'television', 'tennis racquet', 'tent', 'tiger',
    'toaster', 'toe', 'toilet', 'tooth', 'toothbrush', 'toothpaste', 'tornado', 'tractor',
    'traffic light', 'train', 'tree', 'triangle', 'trombone', 'truck', 'trumpet', 'umbrella',
    'underwear', 'van', 'vase', 'violin', 'washing machine', 'watermelon', 'waterslide', 'whale',
    'wheel', 'windmill', 'wine bottle', 'wine glass', 'wristwatch', 'yoga', 'zebra', 'zigzag',
)

_CHUNK = 1 << 16  # bytes per read while downloading


# --------------------------------------------------------------------------------------------------
# class names and URLs


def resolve_class(name: str) -> str:
    """The official spelling of a Quick, Draw! class (case-insensitive); ValueError suggesting the closest."""
    if name in CLASS_NAMES:
        return name
    lower = {c.lower(): c for c in CLASS_NAMES}
    key = " ".join(name.replace("_", " ").split()).lower()
    if key in lower:
        return lower[key]
    raise ValueError(f"unknown Quick, Draw! class {name!r}{class_hint(name)}")


def class_hint(name: str) -> str:
    """'; did you mean ...?' with the few closest class names (difflib), and where the full list is."""
    lower = {c.lower(): c for c in CLASS_NAMES}
    key = " ".join(str(name).replace("_", " ").split()).lower()
    close = difflib.get_close_matches(key, list(lower), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(repr(lower[c]) for c in close)}?" if close else ""
    return f"{hint} (`sketchvae download --list` shows all {len(CLASS_NAMES)}; quote names with spaces)"


def base_url(override: str | None = None) -> str:
    """The server: `override`, else ``$SKETCHVAE_QUICKDRAW_URL``, else Google's bucket."""
    return (override or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL).rstrip("/")


def class_url(name: str, kind: str = "npz", base: str | None = None) -> str:
    """URL of a class file: kind "npz" (Sketch-RNN) or "simplified" (ndjson). Spaces are quoted."""
    quoted = urllib.parse.quote(name)
    if kind == "npz":
        return f"{base_url(base)}/sketchrnn/{quoted}.npz"
    if kind == "simplified":
        return f"{base_url(base)}/full/simplified/{quoted}.ndjson"
    raise ValueError(f"unknown file kind {kind!r}; choose from npz, simplified")


# --------------------------------------------------------------------------------------------------
# downloading


class DownloadError(ValueError):
    """A download failed (offline, HTTP error, interrupted too often, or failed verification).

    A ValueError so that command lines which turn ValueError into a message handle it.
    """


def _offline_message(url: str, reason, advice: str | None = None) -> str:
    host = urllib.parse.urlsplit(url).netloc or url
    advice = advice or f"set {BASE_URL_ENV} to a mirror, or copy the files into the data folder yourself"
    return f"could not reach {host} ({reason}) for {url}; you appear to be offline; connect to the internet, {advice}"


def _total_from_content_range(value: str | None) -> tuple[int | None, int | None]:
    """'bytes START-END/TOTAL' or 'bytes */TOTAL' -> (start, total); None where absent."""
    if not value or not value.startswith("bytes "):
        return None, None
    rng, _, total = value[6:].partition("/")
    start = None if rng.strip() == "*" else int(rng.split("-")[0])
    return start, (int(total) if total.strip().isdigit() else None)


def verify_npz(path) -> dict[str, int]:
    """Check that an ``.npz`` loads with the safe loader and has train/valid/test; return sketch counts."""
    have = npz_members(path)
    missing = [s for s in SPLITS if s not in have]
    if missing:
        raise DataError(f"missing split(s) {missing}; the file has {have}", file=path, reason="missing split")
    counts = {}
    for s in SPLITS:
        arr = read_npz_member(path, s)
        if not (arr.dtype.hasobject and arr.ndim == 1) and not (arr.ndim in (2, 3) and arr.shape[-1] == 3):
            raise DataError(f"array of shape {arr.shape} and dtype {arr.dtype} is not a set of sketches",
                            file=path, place=s, reason="bad shape")
        counts[s] = len(arr) if arr.dtype.hasobject or arr.ndim == 3 else 1
    return counts


def verify_ndjson(path) -> None:
    """Check that the first line of an ndjson file is a JSON object with a 'drawing'."""
    with open(path, "rb") as f:
        first = f.readline()
    try:
        obj = json.loads(first)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"invalid JSON: {err}", file=path, place="line 1", reason="invalid JSON") from None
    if not isinstance(obj, dict) or "drawing" not in obj:
        raise DataError("no 'drawing' in the first line", file=path, place="line 1", reason="missing key 'drawing'")


def download_file(url: str, dest: str | os.PathLike, *, timeout: float = 60.0, retries: int = 5,
                  backoff: float = 1.0, verify: Callable[[Path], object] | None = None,
                  progress: bool = False, desc: str | None = None, offline_advice: str | None = None) -> Path:
    """Download `url` to `dest` through ``dest.part``, resuming a partial ``.part`` with HTTP Range.

    A dropped connection is retried `retries` times (resuming each time, waiting `backoff` x
    attempt seconds). The size must match Content-Length (or the Content-Range total); then
    `verify(part_path)` runs (a DataError there deletes the ``.part``) and the file is renamed
    onto `dest`. Raises :class:`DownloadError`; an interrupted ``.part`` is kept for the next run.
    `offline_advice` replaces the end of the offline message (which mirror variable, which folder;
    default: the Quick, Draw! mirror variable).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    headers = {"User-Agent": "sketchvae (https://github.com/sketchvae)", "Accept-Encoding": "identity"}
    failures = 0
    bar = None

    def retry_or_fail(what: str) -> None:
        nonlocal failures
        failures += 1
        have = part.stat().st_size if part.exists() else 0
        if failures > retries:
            raise DownloadError(f"download of {url} failed {failures} times ({what}); {have} bytes are kept in "
                                f"{part}: run the command again to resume")
        log.warning("%s: %s; retrying (%d/%d) from byte %d", url, what, failures, retries, have)
        if backoff:
            time.sleep(backoff * failures)

    try:
        while True:
            have = part.stat().st_size if part.exists() else 0
            req = urllib.request.Request(url, headers={**headers, **({"Range": f"bytes={have}-"} if have else {})})
            try:
                resp = urllib.request.urlopen(req, timeout=timeout)
            except urllib.error.HTTPError as err:
                if err.code == 416 and have:  # the .part is already whole (or longer than the file)
                    _, total = _total_from_content_range(err.headers.get("Content-Range"))
                    err.close()
                    if total == have:
                        break
                    part.unlink()
                    retry_or_fail(f"partial file of {have} bytes does not match the server's size {total}")
                    continue
                err.close()
                if err.code == 404:
                    raise DownloadError(f"{url}: not found on the server (HTTP 404)") from None
                if err.code >= 500:
                    retry_or_fail(f"HTTP {err.code} {err.reason}")
                    continue
                raise DownloadError(f"{url}: HTTP {err.code} {err.reason}") from None
            except urllib.error.URLError as err:
                reason = err.reason
                if isinstance(reason, (socket.gaierror, ConnectionRefusedError, OSError)) and not isinstance(
                        reason, (ConnectionResetError, TimeoutError)):
                    raise DownloadError(_offline_message(url, reason, offline_advice)) from None
                retry_or_fail(str(reason))
                continue
            except (http.client.HTTPException, ConnectionError, TimeoutError) as err:
                retry_or_fail(f"{type(err).__name__}: {err}")
                continue
            with resp:
                if resp.status == 206:
                    start, total = _total_from_content_range(resp.headers.get("Content-Range"))
                    if start != have:
                        raise DownloadError(f"{url}: server resumed at byte {start}, expected {have}")
                    mode = "ab"
                else:  # 200: the whole file (a server without Range support starts over)
                    length = resp.headers.get("Content-Length")
                    total = int(length) if length and length.isdigit() else None
                    have, mode = 0, "wb"
                if progress:
                    if bar is None:
                        from tqdm import tqdm

                        bar = tqdm(total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
                                   desc=desc or dest.name, file=sys.stderr, leave=False)
                    else:
                        bar.reset(total=total)
                        bar.update(have)
                try:
                    with open(part, mode) as f:
                        while True:
                            chunk = resp.read(_CHUNK)
                            if not chunk:
                                break
                            f.write(chunk)
                            if bar is not None:
                                bar.update(len(chunk))
                except (http.client.HTTPException, ConnectionError, TimeoutError, socket.timeout) as err:
                    retry_or_fail(f"connection lost: {type(err).__name__}: {err}")
                    continue
            size = part.stat().st_size
            if total is not None and size < total:
                retry_or_fail(f"connection closed after {size} of {total} bytes")
                continue
            if total is not None and size > total:
                part.unlink()
                raise DownloadError(f"{url}: got {size} bytes, more than the announced {total}; the partial file "
                                    f"was removed, run again")
            break
    finally:
        if bar is not None:
            bar.close()
    if verify is not None:
        try:
            verify(part)
        except DataError as err:
            part.unlink()
            raise DownloadError(f"{url}: the downloaded file failed verification ({err.message}); it was removed")
    os.replace(part, dest)
    return dest


@dataclass
class Fetched:
    """One file handled by :func:`download`."""

    cls: str
    kind: str            # "npz" | "simplified"
    path: Path
    downloaded: bool     # False: it was already there
    size: int


def download(classes: Iterable[str], data_dir: str | os.PathLike = DEFAULT_DATA_DIR, *, npz: bool = True,
             simplified: bool = False, base: str | None = None, force: bool = False, timeout: float = 60.0,
             retries: int = 5, backoff: float = 1.0, progress: bool = False) -> list[Fetched]:
    """Download Quick, Draw! class files into `data_dir` (``{class}.npz``, ``{class}.ndjson``).

    Class names are checked first (ValueError listing the 345 classes). Files already present
    are kept unless `force`. See :func:`download_file` for resume, retries and verification.
    """
    names = [resolve_class(c) for c in classes]
    if not names:
        raise ValueError("no class names given")
    if not (npz or simplified):
        raise ValueError("nothing to download: choose the npz and/or simplified files")
    data_dir = Path(data_dir)
    out = []
    for name in dict.fromkeys(names):
        for kind, ext, verify in (("npz", ".npz", verify_npz), ("simplified", ".ndjson", verify_ndjson)):
            if not (npz if kind == "npz" else simplified):
                continue
            dest = data_dir / f"{name}{ext}"
            if dest.exists() and not force:
                out.append(Fetched(name, kind, dest, False, dest.stat().st_size))
                continue
            if force and dest.exists():
                dest.unlink()
            download_file(class_url(name, kind, base), dest, timeout=timeout, retries=retries, backoff=backoff,
                          verify=verify, progress=progress, desc=f"{name}{ext}")
            out.append(Fetched(name, kind, dest, True, dest.stat().st_size))
    return out


# --------------------------------------------------------------------------------------------------
# prepare


@dataclass
class SourceFile:
    """One input file of :func:`prepare`."""

    path: Path
    cls: str        # class name (file stem)
    kind: str       # "npz" | "ndjson"
    name: str       # display name / key in source_checksums ("aaron_sheep.npz", "raw/cat.ndjson")


@dataclass
class SourceReport:
    """What happened to one source file: kept + sum(skipped) == input."""

    name: str
    cls: str
    kind: str
    input: int = 0
    kept: dict = field(default_factory=lambda: {s: 0 for s in SPLITS})
    skipped: Counter = field(default_factory=Counter)
    notes: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"name": self.name, "cls": self.cls, "kind": self.kind, "input": self.input, "kept": dict(self.kept),
                "skipped": dict(self.skipped), "notes": list(self.notes)}

    @classmethod
    def from_dict(cls, d: dict) -> "SourceReport":
        return cls(d["name"], d["cls"], d["kind"], d["input"], dict(d["kept"]), Counter(d["skipped"]), list(d["notes"]))


@dataclass
class PrepareReport:
    """Result of :func:`prepare`; path-like (``os.fspath`` gives the cache file)."""

    path: Path
    class_names: list
    counts: np.ndarray           # int64 (classes, 3): kept sketches per class and split (train, valid, test)
    points: dict                 # split -> total points kept
    scale_factor: float
    sources: list                # SourceReport per source file
    examples: dict = field(default_factory=dict)  # reason -> a few error messages of skipped bad input
    reused: bool = False         # an up-to-date cache was already there

    def __fspath__(self) -> str:
        return str(self.path)

    @property
    def input(self) -> int:
        return sum(s.input for s in self.sources)

    @property
    def kept(self) -> int:
        return int(self.counts.sum())

    @property
    def skipped(self) -> Counter:
        total = Counter()
        for s in self.sources:
            total.update(s.skipped)
        return total


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def resolve_sources(sources: Sequence[str | os.PathLike], *, data_dir: str | os.PathLike = DEFAULT_DATA_DIR,
                    download_missing: bool = True, base: str | None = None, progress: bool = False,
                    ) -> list[SourceFile]:
    """Expand files, folders (their ``*.npz`` / ``*.ndjson``) and class names into source files.

    A class name is ``data_dir/{class}.npz``, else ``data_dir/{class}.ndjson`` (what `download` with
    ndjson leaves), else the .npz downloaded (if `download_missing`).
    """
    files: list[SourceFile] = []
    used: set[str] = set()

    def add(path: Path, label: str) -> None:
        name = label
        k = 2
        while name in used:  # same display name from two places: keep both, distinguishable
            name, k = f"{label}#{k}", k + 1
        used.add(name)
        files.append(SourceFile(path, path.stem, path.suffix.lower()[1:], name))

    for src in sources:
        path = Path(src)
        if path.is_dir():
            members = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in (".npz", ".ndjson"))
            if not members:
                raise ValueError(f"{path}: folder has no .npz or .ndjson files")
            for p in members:
                add(p, f"{path.name}/{p.name}")
        elif path.is_file():
            if path.suffix.lower() not in (".npz", ".ndjson"):
                raise ValueError(f"{path}: unsupported file type {path.suffix!r}; expected .npz or .ndjson "
                                 f"(or a folder of them, or a Quick, Draw! class name)")
            add(path, path.name)
        elif path.suffix.lower() in (".npz", ".ndjson", ".h5", ".hdf5") or os.sep in str(src) or "/" in str(src):
            raise FileNotFoundError(f"{src}: no such file or folder")
        else:
            try:
                name = resolve_class(str(src))
            except ValueError:
                raise FileNotFoundError(f"{src}: no such file or folder, and not a Quick, Draw! class name"
                                        f"{class_hint(str(src))}") from None
            target = Path(data_dir) / f"{name}.npz"
            simplified = Path(data_dir) / f"{name}.ndjson"  # what `download --ndjson --no-npz` leaves
            if not target.exists() and simplified.exists():
                target = simplified
            if not target.exists():
                if not download_missing:
                    raise FileNotFoundError(f"{target}: class {name!r} is not downloaded (run `sketchvae download "
                                            f"{name!r}` or allow downloads)")
                download([name], data_dir, base=base, progress=progress)
            add(target, target.name)
    return files


def _split_counts(n: int, valid_frac: float, test_frac: float) -> tuple[int, int]:
    def part(frac):
        k = int(math.floor(n * frac + 0.5))
        return max(k, 1) if frac > 0 and n >= 3 else k
    n_test, n_valid = part(test_frac), part(valid_frac)
    n_test = min(n_test, n)
    n_valid = min(n_valid, n - n_test)
    return n_valid, n_test


def _hash_unit(seed: int, key: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{seed}\x00{key}".encode(), digest_size=8).digest(), "little")


class _ClassBuffer:
    """ndjson sketches of one class, kept flat until its splits are assigned."""

    def __init__(self):
        self.chunks: list[np.ndarray] = []
        self.lengths: list[int] = []
        self.hashes: list[int] = []
        self.owner: list[int] = []  # index of the SourceReport each sketch came from

    def add(self, s3: np.ndarray, h: int, owner: int) -> None:
        self.chunks.append(s3)
        self.lengths.append(len(s3))
        self.hashes.append(h)
        self.owner.append(owner)
        if len(self.chunks) >= 4096:
            self.chunks = [np.concatenate(self.chunks)]

    def flush(self, writer, label: int, valid_frac: float, test_frac: float, reports: list[SourceReport]) -> None:
        n = len(self.lengths)
        if not n:
            return
        points = np.concatenate(self.chunks)
        lengths = np.asarray(self.lengths, dtype=np.int64)
        owner = np.asarray(self.owner)
        n_valid, n_test = _split_counts(n, valid_frac, test_frac)
        order = np.argsort(np.asarray(self.hashes, dtype=np.uint64), kind="stable")
        which = np.zeros(n, dtype=np.int8)  # 0 train, 1 valid, 2 test
        which[order[:n_test]] = 2
        which[order[n_test:n_test + n_valid]] = 1
        for code, split in enumerate(SPLITS):
            mask = which == code
            if mask.any():
                writer.append(split, points[np.repeat(mask, lengths)], lengths[mask], label)
                for o, k in zip(*np.unique(owner[mask], return_counts=True)):
                    reports[o].kept[split] += int(k)
        self.__init__()


def _preprocessing(max_len, min_len, valid_frac, test_frac, seed, ndjson_format, skip_bad, files) -> dict:
    return json.loads(json.dumps({
        "max_len": max_len, "min_len": min_len, "valid_frac": valid_frac, "test_frac": test_frac, "seed": seed,
        "ndjson_format": ndjson_format, "skip_bad": skip_bad, "max_abs_offset": MAX_ABS_OFFSET,
        "raw_simplify": {"size": SIMPLIFY_SIZE, "spacing": SIMPLIFY_SPACING, "rdp_epsilon": SIMPLIFY_EPSILON,
                         "steps": "align top-left, uniform scale to max 255, resample 1 px, RDP, round"},
        "classes": "file stem; same-named classes merged; ndjson duplicates by key_id within a class skipped",
        "ndjson_split": "seeded blake2b hash of key_id ranks drawings within a class: test, valid, then train",
        "sources": [f.name for f in files],
    }))


class CacheExistsError(ValueError):
    """`prepare(..., overwrite=False)` found another data set where it would write."""


def _differs(out: Path, checksums: dict, preprocessing: dict) -> str:
    """How the existing file `out` differs from what `prepare` would write there (a phrase)."""
    from sketchvae.data.cache import open_cache

    try:
        with open_cache(out) as cache:
            a = dict(cache.attrs)
    except (DataError, OSError, ValueError):
        return "is not a prepared cache"
    have, want = a.get("source_checksums") or {}, checksums
    if sorted(have) != sorted(want):
        return f"was prepared from other sources ({', '.join(sorted(have)) or 'unknown'})"
    if have != want:
        changed = sorted(k for k in want if have.get(k) != want[k])
        return f"was prepared from other versions of {', '.join(changed)}"
    old = a.get("preprocessing") or {}
    changed = sorted(k for k in set(old) | set(preprocessing) if old.get(k) != preprocessing.get(k))
    return f"was prepared with other options ({', '.join(changed) or 'unknown'})"


def _reuse(out: Path, checksums: dict, preprocessing: dict) -> PrepareReport | None:
    from sketchvae.data.cache import open_cache

    try:
        cache = open_cache(out)
    except (DataError, OSError, ValueError):
        return None
    a = cache.attrs
    if a.get("source_checksums") != checksums or a.get("preprocessing") != preprocessing or "prepare_report" not in a:
        return None
    counts = np.stack([cache.split(s).class_counts(len(cache.class_names)) if s in cache.splits
                       else np.zeros(len(cache.class_names), np.int64) for s in SPLITS], axis=1)
    points = {s: len(cache.split(s).points) if s in cache.splits else 0 for s in SPLITS}
    rep = a["prepare_report"]
    return PrepareReport(out, list(cache.class_names), counts, points, cache.scale_factor,
                         [SourceReport.from_dict(d) for d in rep["sources"]], rep.get("examples", {}), reused=True)


def prepare(sources: Sequence[str | os.PathLike] | str | os.PathLike, out: str | os.PathLike, *,
            max_len: int | None = 250, min_len: int = 1, skip_bad: bool = False, valid_frac: float = 0.05,
            test_frac: float = 0.05, seed: int = 0, ndjson_format: str = "auto",
            data_dir: str | os.PathLike = DEFAULT_DATA_DIR, download_missing: bool = True, base: str | None = None,
            force: bool = False, progress: bool = False, overwrite: bool = True) -> PrepareReport:
    """Prepare one HDF5 cache from `sources` (see the module docstring); returns a path-like report.

    max_len / min_len: keep sketches with min_len <= points <= max_len (None / 0: no maximum).
    skip_bad: skip and count bad sketches instead of raising DataError. valid_frac / test_frac:
    ndjson split fractions (train gets the rest). ndjson_format: "auto" | "simplified" | "raw".
    data_dir / download_missing / base: where class names are looked up and fetched from.
    force: rebuild even if `out` is up to date. progress: a tqdm bar over source files (stderr).
    overwrite=False: raise `CacheExistsError` instead of replacing an existing `out` that is not up
    to date with these sources and options (a run may point to it); `force` overrides it.
    """
    from sketchvae import __version__
    from sketchvae.data.cache import CacheWriter

    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    if not sources:
        raise ValueError("no sources given: pass .npz / .ndjson files, folders of them or class names")
    max_len = max_len or None
    if min_len < 1 or (max_len is not None and max_len < min_len):
        raise ValueError(f"need 1 <= min_len <= max_len, got min_len={min_len}, max_len={max_len}")
    if not (0 <= valid_frac < 1 and 0 <= test_frac < 1 and valid_frac + test_frac < 1):
        raise ValueError(f"need 0 <= valid_frac, test_frac and valid_frac + test_frac < 1, got {valid_frac}, {test_frac}")
    if ndjson_format not in ("auto", "simplified", "raw"):
        raise ValueError(f"unknown ndjson format {ndjson_format!r}; choose from auto, simplified, raw")
    out = Path(out)
    files = resolve_sources(sources, data_dir=data_dir, download_missing=download_missing, base=base,
                            progress=progress)
    checksums = {f.name: _sha256(f.path) for f in files}
    preprocessing = _preprocessing(max_len, min_len, valid_frac, test_frac, seed, ndjson_format, skip_bad, files)
    if out.exists() and not force:
        reused = _reuse(out, checksums, preprocessing)
        if reused is not None:
            log.info("%s is up to date with its sources; reusing it", out)
            return reused
        if not overwrite:
            raise CacheExistsError(f"{out} already exists and {_differs(out, checksums, preprocessing)}")

    groups: dict[str, list[int]] = {}
    for i, f in enumerate(files):
        groups.setdefault(f.cls, []).append(i)
    class_names = list(groups)
    reports = [SourceReport(f.name, f.cls, f.kind) for f in files]
    examples: dict[str, list[str]] = {}
    too_long = f"longer than max_len={max_len}"
    too_short = f"shorter than min_len={min_len}"

    def on_bad_for(rep: SourceReport, counts_input: bool):
        def on_bad(err: DataError):
            if not skip_bad:
                raise err
            rep.input += counts_input  # npz inputs are counted per split by read_npz_split
            rep.skipped[err.reason] += 1
            ex = examples.setdefault(err.reason, [])
            if len(ex) < 3:
                ex.append(str(err))
        return on_bad

    def length_ok(n: int, rep: SourceReport) -> bool:
        if max_len is not None and n > max_len:
            rep.skipped[too_long] += 1
            return False
        if n < min_len:
            rep.skipped[too_short] += 1
            return False
        return True

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(files), unit="file", desc="prepare", file=sys.stderr)
    try:
        with CacheWriter(out) as writer:
            for label, cls in enumerate(class_names):
                buf = _ClassBuffer()
                seen: set[str] = set()
                for i in groups[cls]:
                    f, rep = files[i], reports[i]
                    if bar is not None:
                        bar.set_postfix_str(f.name[-40:], refresh=False)
                    if f.kind == "npz":
                        _prepare_npz(f, rep, writer, label, on_bad_for(rep, False), skip_bad, min_len, max_len,
                                     too_short, too_long)
                    else:
                        for d in iter_ndjson(f.path, fmt=ndjson_format, on_bad=on_bad_for(rep, True)):
                            rep.input += 1
                            if d.key_id is not None:
                                if d.key_id in seen:
                                    rep.skipped["duplicate key_id (same drawing read from an earlier source)"] += 1
                                    continue
                                seen.add(d.key_id)
                            if length_ok(len(d.strokes), rep):
                                key = d.key_id if d.key_id is not None else f"{f.name}:{d.line}"
                                buf.add(d.strokes, _hash_unit(seed, key), i)
                    if bar is not None:
                        bar.update(1)
                buf.flush(writer, label, valid_frac, test_frac, reports)
            if writer.count("train")[0] == 0:
                raise ValueError("no training sketches left after filtering; check --max-len / --min-len and the sources")
            scale = writer.train_scale_factor()
            counts = np.zeros((len(class_names), len(SPLITS)), dtype=np.int64)
            for rep in reports:
                for k, s in enumerate(SPLITS):
                    counts[class_names.index(rep.cls), k] += rep.kept[s]
            points = {s: writer.count(s)[1] for s in SPLITS}
            for rep in reports:
                assert rep.input == sum(rep.kept.values()) + sum(rep.skipped.values()), rep
            writer.finish(class_names, {
                "scale_factor": scale,
                "source_checksums": checksums,
                "preprocessing": preprocessing,
                "created_by": f"sketchvae {__version__} prepare",
                "prepare_report": {"sources": [r.to_dict() for r in reports], "examples": examples},
            })
    finally:
        if bar is not None:
            bar.close()
    return PrepareReport(out, class_names, counts, points, scale, reports, examples)


def _prepare_npz(f: SourceFile, rep: SourceReport, writer, label: int, on_bad, skip_bad: bool, min_len: int,
                 max_len: int | None, too_short: str, too_long: str) -> None:
    have = npz_members(f.path)
    for split in SPLITS:
        if split not in have:
            err = DataError(f"missing split {split!r}; the file has {have}", file=f.path, place=f"{split}.npy",
                            reason="missing split")
            if not skip_bad:
                raise err
            rep.notes.append(f"{err} (treated as empty)")
            continue
        points, lengths, n_input = read_npz_split(f.path, split, on_bad=on_bad)
        rep.input += n_input
        keep = lengths >= min_len
        rep.skipped[too_short] += int((~keep).sum())
        if max_len is not None:
            long = lengths > max_len
            rep.skipped[too_long] += int(long.sum())
            keep &= ~long
        if not keep.all():
            points, lengths = points[np.repeat(keep, lengths)], lengths[keep]
        if len(lengths):
            writer.append(split, points, lengths, label)
        rep.kept[split] += len(lengths)
    for reason in [r for r, k in rep.skipped.items() if k == 0]:
        del rep.skipped[reason]


__all__ = [
    "CLASS_NAMES", "DEFAULT_BASE_URL", "BASE_URL_ENV", "DEFAULT_DATA_DIR", "resolve_class", "base_url", "class_url",
    "DownloadError", "download_file", "download", "Fetched", "verify_npz", "verify_ndjson", "resolve_sources",
    "SourceFile", "SourceReport", "PrepareReport", "prepare",
]
