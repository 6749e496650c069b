"""The served models and what the page asks of them, in page pixels: no web code here.

    models, notes = discover(["checkpoints/"], device="cpu")   # name -> ServedModel, skipped files
    model = models["sheep"]
    endings = model.complete(strokes_px, n=6, temperature=0.4)  # continuations, page pixels

Page pixels and model units
---------------------------
The page draws on a square canvas of `CANVAS` x `CANVAS` page pixels (x right, y down, as the
data).  A drawing is stroke-3 in page pixels whose first row is the first point's offset from the
canvas's top-left corner.  Each model (and, for a class-conditional model, each class) gets ONE
factor `units_per_px` chosen so that a typical drawing of the model spans `FILL` of the canvas side:

    units_per_px = typical extent (model units) / (FILL * CANVAS)

The typical extent is measured once, the first time it is needed (at start-up for models with at
most `WARM_CLASSES` classes): the model draws `MEASURE_N` sketches from nothing at temperature
`MEASURE_TAU` with seed 0 and the median of their larger bounding-box side is taken (over the
sketches that ended before `max_seq_len`, when enough did).  A model's own drawings are the only
size information every checkpoint has (ours, and Magenta's converted ones, whose scale factors
follow another convention); for sheep.pt the measured extent is close to the training data's
(see the README).  So a drawing filling 3/4 of the canvas is, to the model, the size of the
sketches it was trained on, and the model's answers are scaled back by the same factor.

On the way in, each stroke is simplified with Ramer-Douglas-Peucker at `RDP_EPSILON_PX` page
pixels, the resolution of the Quick, Draw! data (epsilon 2.0 on a 255-unit sketch, scaled to a
typical sketch of FILL * CANVAS pixels), so that dense pointer input looks like training data.
The model's sketches start at the first point (the data's convention: the start token is a pen-down
at the origin), so the first row, the offset from the canvas corner, is dropped on the way in and
put back on the way out: completions continue from the drawing's last point, whole drawings
(sample, interpolate) are centred on the canvas.

Batching: `ServedModel.submit` hands `complete` / `sample` requests to the model's decoding thread,
which decodes all the requests it holds together (`sketchvae.continuous.ContinuousBatch`: they join
between decoder steps and leave when their sketches have ended), each answer bit for bit what the
request gets alone with its seed; `sketchvae serve` submits the requests that arrive within a few
milliseconds together (see `app`).

Thread safety: the operations only read the model (inference mode, a generator per call), so
several threads may use one model at once; the typical-extent cache and the decoding thread's job
list have their own locks.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import threading
from pathlib import Path

import numpy as np

CANVAS = 480            # page pixels, side of the page's square drawing area (app.js uses the same)
FILL = 0.75             # fraction of the canvas side that a typical drawing of a model spans
RDP_EPSILON_PX = 2.0 * FILL * CANVAS / 255.0   # ~2.8 px: the data's RDP epsilon 2.0 per 255 units
MEASURE_N = 32          # sketches drawn to measure a model's typical size
MEASURE_TAU = 0.4       # ... at this temperature (seed 0)
WARM_CLASSES = 16       # measure every class at start-up when a model has at most this many
MIN_CONTINUATION = 64   # points a completion may add even when the drawing is near max_seq_len
DECIMALS = 2            # page pixels are rounded to this many decimals in answers
BATCHED = ("complete", "sample")   # the operations that `ServedModel.submit` decodes together
MAX_BATCH_ROWS = 512    # sketches decoded together at most, per model (a full queue of n = 64 is 4,096)

log = logging.getLogger("sketchvae.serve")


class ModelError(ValueError):
    """A request that this model cannot serve (e.g. interpolating with a decoder-only model)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


# ------------------------------------------------------------------------------------------ conversions
def page_to_model(strokes_px: np.ndarray, units_per_px: float) -> tuple[np.ndarray, np.ndarray]:
    """A page drawing (stroke-3, page px, first row from the canvas corner) -> (the model's stroke-3 in
    model units, starting at the first point and ending in a pen lift; the absolute page position of
    its last point)."""
    from sketchvae.strokes import from_polylines, rdp, to_polylines

    polys = [rdp(p, RDP_EPSILON_PX) for p in to_polylines(strokes_px)]
    s3 = from_polylines(polys, dtype=np.float64)  # first row: the first point, from the corner
    last = polys[-1][-1].copy()
    if s3[0, 2] > 0.5:  # the first stroke is a single point: keep it as a dot at the start
        rows = np.concatenate([[[0.0, 0.0, 1.0]], s3[1:]])
    else:
        rows = s3[1:]
    if len(rows) == 0:  # one point in all: a dot
        rows = np.array([[0.0, 0.0, 1.0]])
    rows = rows.astype(np.float64)
    rows[:, 0:2] *= units_per_px
    rows[-1, 2] = 1.0
    return rows.astype(np.float32), last


def model_to_page(s3: np.ndarray, units_per_px: float) -> np.ndarray:
    """Model stroke-3 (model units) -> page pixels (float64), same rows."""
    out = np.asarray(s3, dtype=np.float64).copy()
    out[:, 0:2] /= units_per_px
    return out


def centred(s3_px: np.ndarray) -> np.ndarray:
    """A whole drawing in page px starting at its first point -> stroke-3 whose first row is the
    first point's offset from the canvas corner, placed so that its bounding box is centred."""
    if len(s3_px) == 0:
        return np.zeros((0, 3))
    xy = np.vstack([[0.0, 0.0], np.cumsum(s3_px[:, 0:2], axis=0)])
    mid = (xy.min(axis=0) + xy.max(axis=0)) / 2.0
    start = np.array([CANVAS / 2.0, CANVAS / 2.0]) - mid
    return np.concatenate([[[start[0], start[1], 0.0]], s3_px])


def to_json(s3: np.ndarray) -> list[list[float]]:
    """stroke-3 -> [[dx, dy, pen], ...] with dx, dy rounded to DECIMALS and pen 0 or 1."""
    return [[round(float(dx), DECIMALS), round(float(dy), DECIMALS), int(p > 0.5)] for dx, dy, p in s3]


def extent(s3: np.ndarray) -> float:
    """Larger side of the bounding box of a stroke-3 path that starts at the origin."""
    if len(s3) == 0:
        return 0.0
    xy = np.vstack([[0.0, 0.0], np.cumsum(np.asarray(s3, dtype=np.float64)[:, 0:2], axis=0)])
    return float(np.max(xy.max(axis=0) - xy.min(axis=0)))


# ------------------------------------------------------------------------------------------ one model
@dataclasses.dataclass
class ServedModel:
    """A loaded Sketch-RNN under the name the page uses, with its page-pixel scaling."""

    name: str
    sampler: object  # sketchvae.sample.Sampler
    path: Path
    _units: dict = dataclasses.field(default_factory=dict, repr=False)
    _units_lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, repr=False)
    _lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, repr=False)  # the jobs below
    _intake: list = dataclasses.field(default_factory=list, repr=False)  # jobs waiting for the next step
    _driving: bool = dataclasses.field(default=False, repr=False)  # the decoding thread runs

    @property
    def mode(self) -> str:
        return self.sampler.config.mode

    @functools.cached_property
    def packable(self) -> bool:
        """Whether `submit` decodes this model's jobs together (plain-LSTM decoders); the others are
        better served by the app's worker threads, several at once, than one after another here."""
        from sketchvae.continuous import ContinuousBatch

        return ContinuousBatch.packable(self.sampler)

    @property
    def classes(self) -> list[str]:
        cfg = self.sampler.config
        if not cfg.class_conditional:
            return []
        return list(self.sampler.class_names) or [str(i) for i in range(cfg.num_classes)]

    def info(self) -> dict:
        return {"name": self.name, "mode": self.mode, "classes": self.classes}

    # -------------------------------------------------------------------------------------- scaling
    def units_per_px(self, cls: str | None) -> float:
        """Model units per page pixel for class `cls` (None for models without classes)."""
        with self._units_lock:
            if cls not in self._units:
                self._units[cls] = self._measure(cls) / (FILL * CANVAS)
            return self._units[cls]

    def _measure(self, cls: str | None) -> float:
        from sketchvae import sample as S

        sketches = S.sample(self.sampler, MEASURE_N, MEASURE_TAU, classes=cls, seed=0)
        limit = self.sampler.config.max_seq_len
        ended = [s for s in sketches if 0 < len(s) < limit]
        use = ended if len(ended) >= MEASURE_N // 4 else [s for s in sketches if len(s)]
        sizes = [e for e in (extent(s) for s in use) if e > 0 and math.isfinite(e)]
        if not sizes:  # a model that draws nothing: fall back on the scale factor (the offsets' std)
            return 10.0 * self.sampler.scale_factor
        return float(np.median(sizes))

    def warm(self) -> None:
        """Measure the typical size now (every class when there are at most WARM_CLASSES)."""
        classes = self.classes
        if not classes:
            self.units_per_px(None)
        elif len(classes) <= WARM_CLASSES:
            for c in classes:
                self.units_per_px(c)

    def _check_class(self, cls: str | None, *, required: bool) -> None:
        if not self.classes:
            if cls is not None:
                raise ModelError("class", f"model {self.name!r} (mode {self.mode!r}) has no classes; leave "
                                          f"'class' out")
            return
        if cls is None:
            if required:
                raise ModelError("class", f"model {self.name!r} is class-conditional; choose one of: "
                                          f"{', '.join(self.classes)}")
            return
        if cls not in self.classes:
            raise ModelError("class", f"unknown class {cls!r} for model {self.name!r}; its classes: "
                                      f"{', '.join(self.classes)}")

    # -------------------------------------------------------------------------------------- operations
    def complete(self, strokes: np.ndarray, n: int, temperature: float, cls: str | None = None,
                 seed: int | None = None) -> list[list[list[float]]]:
        """n continuations of a page drawing, each only the continuation (its first row is the offset
        from the drawing's last point), in page px."""
        from sketchvae import sample as S

        (_, kwargs), finish = self._plan_complete(strokes, n, temperature, cls, seed)
        return finish(S.complete(self.sampler, **kwargs))

    def sample(self, n: int, temperature: float, cls: str | None = None,
               seed: int | None = None) -> list[list[list[float]]]:
        """n whole drawings from nothing, centred on the canvas, page px.  A class-conditional model
        without `cls` cycles through its classes."""
        from sketchvae import sample as S

        (_, kwargs), finish = self._plan_sample(n, temperature, cls, seed)
        return finish(S.sample(self.sampler, **kwargs))

    def run_batch(self, jobs: list[tuple[str, dict]]) -> list:
        """Several `complete` / `sample` calls (method name, keyword arguments) answered together (`submit`),
        waiting for all.  Returns, per job, its answer or the ValueError (ModelError) that the method
        would raise; the other jobs are answered all the same."""
        results: list = [None] * len(jobs)
        done = threading.Semaphore(0)

        def answer(k, result):
            results[k] = result
            done.release()

        self.submit([(method, kwargs, k) for k, (method, kwargs) in enumerate(jobs)], answer)
        for _ in jobs:
            done.acquire()
        return results

    def submit(self, jobs: list[tuple[str, dict, object]], answer, gone=lambda key: False) -> None:
        """Hand `complete` / `sample` jobs (method name, keyword arguments, key) to this model's decoding
        thread and return at once; `answer(key, result)` is called from that thread with the page-px
        answer, or the exception the method would raise, as soon as the job's sketches have all ended.
        A job for which `gone(key)` turns true (its client left) is dropped, unanswered, before its next
        decoder step.

        The thread decodes every job it holds in one `sketchvae.continuous.ContinuousBatch`: jobs join
        between decoder steps (up to MAX_BATCH_ROWS sketches at once; the rest wait) and leave when
        done, so each answer is bit for bit what the job gets alone with its seed, however busy the
        server.  Models that cannot be packed (layer-norm cells) answer the jobs one after another."""
        for method, _, _ in jobs:
            if method not in BATCHED:
                raise ValueError(f"submit: {method!r} is not one of {BATCHED}")
        with self._lock:
            self._intake.extend((method, kwargs, key, answer, gone) for method, kwargs, key in jobs)
            if self._driving:
                return
            self._driving = True
        # not a daemon: at exit the interpreter lets it finish its batch (it never waits for anything)
        threading.Thread(target=self._drive, name=f"decode {self.name}").start()

    def _drive(self) -> None:
        """The decoding thread: takes jobs between steps, steps the batch, answers finished jobs; exits
        when nothing is left (a later `submit` starts it again)."""
        try:
            self._decode_jobs()
        except BaseException:  # not expected (errors are answered); let the next submit start afresh
            with self._lock:
                self._driving = False
            raise

    def _decode_jobs(self) -> None:
        from sketchvae import continuous as C
        from sketchvae import sample as S

        packable = C.ContinuousBatch.packable(self.sampler)
        batch = C.ContinuousBatch(self.sampler) if packable else None
        while True:
            with self._lock:
                rows = batch.rows if batch is not None else 0
                take = []
                while self._intake and (not rows or rows + self._intake[0][1]["n"] <= MAX_BATCH_ROWS):
                    rows += self._intake[0][1]["n"]
                    take.append(self._intake.pop(0))
                if not take and not rows:
                    self._driving = False
                    return
            try:
                for method, kwargs, key, answer, gone in take:
                    if gone(key):
                        continue
                    try:
                        (kind, call), finish = getattr(self, f"_plan_{method}")(**kwargs)
                        if batch is None:
                            answer(key, finish(getattr(S, kind)(self.sampler, **call)))
                        else:
                            batch.add(kind, call, tag=(key, answer, finish, gone))
                    except Exception as err:  # noqa: BLE001 - ValueError: a bad request; others: a 500
                        if not isinstance(err, ValueError):
                            log.error("sampling failed for model %s", self.name, exc_info=err)
                        answer(key, err)
                if batch is not None:
                    for member in [m for m in batch.members if m.tag[3](m.tag[0])]:
                        batch.drop(member.tag)
                    for (key, answer, finish, _), sketches in batch.step():
                        answer(key, finish(sketches))
            except Exception as err:  # noqa: BLE001 - unexpected: every job held gets it (a 500 each), start afresh
                log.error("decoding failed for model %s", self.name, exc_info=err)
                for member in batch.members if batch is not None else []:
                    key, answer, _, _ = member.tag
                    answer(key, err)
                batch = C.ContinuousBatch(self.sampler) if packable else None

    def _plan_complete(self, strokes, n, temperature, cls=None, seed=None):
        """(the `sketchvae.sample.complete` call, page-px answer from its result) for `complete`."""
        self._check_class(cls, required=True)
        upp = self.units_per_px(cls)
        prefix, _ = page_to_model(strokes, upp)  # RDP keeps the last point: endings continue from it
        limit = self.sampler.config.max_seq_len
        max_len = len(prefix) + max(limit - len(prefix), MIN_CONTINUATION)
        call = ("complete", {"partial_sketch": prefix, "n": n, "temperature": temperature, "classes": cls,
                             "seed": seed, "max_len": max_len})
        return call, lambda full: [to_json(model_to_page(f[len(prefix):], upp)) for f in full]

    def _plan_sample(self, n, temperature, cls=None, seed=None):
        """(the `sketchvae.sample.sample` call, page-px answer from its result) for `sample`."""
        self._check_class(cls, required=False)
        classes = [cls] * n if cls is not None else (
            [self.classes[i % len(self.classes)] for i in range(n)] if self.classes else [None] * n)
        upps = [self.units_per_px(c) for c in classes]
        call = ("sample", {"n": n, "temperature": temperature, "classes": classes if self.classes else None,
                           "seed": seed})
        return call, lambda sketches: [to_json(centred(model_to_page(s, u))) for s, u in zip(sketches, upps)]

    def interpolate(self, a: np.ndarray, b: np.ndarray, steps: int, temperature: float,
                    seed: int | None = None) -> list[list[list[float]]]:
        """`steps` drawings decoded along the slerp between the posterior means of page drawings a and b,
        with the same random draws at every step (so only z changes along the strip); page px."""
        from sketchvae import sample as S

        if self.mode != "vae":
            raise ModelError("model", f"model {self.name!r} is a {self.mode!r} model; interpolation needs a "
                                      f"'vae' model")
        upp = self.units_per_px(None)
        strip = S.interpolation_strip(self.sampler, page_to_model(a, upp)[0], page_to_model(b, upp)[0], steps,
                                      temperature, seed=seed)
        return [to_json(centred(model_to_page(s, upp))) for s in strip]


# ------------------------------------------------------------------------------------------ discovery
def _candidates(path: Path, prefix: str | None) -> list[tuple[str, Path]]:
    """(name, file) for a checkpoint file or every *.pt under a folder (hidden folders skipped)."""
    if path.is_dir():
        base = path.name if prefix is None else prefix
        found = []
        for f in sorted(path.rglob("*.pt")):
            rel = f.relative_to(path)
            if any(part.startswith(".") for part in rel.parts):
                continue
            stem = rel.with_suffix("").as_posix()
            found.append((f"{base}/{stem}" if base else stem, f))
        return found
    return [(path.stem, path)]


def discover(paths, device="cpu", *, warm: bool = True):
    """Load the Sketch-RNN checkpoints among `paths` (files or folders; none: the shipped
    checkpoints folder, Magenta's converted models under its magenta/ included).

    Returns (models: dict name -> ServedModel in listing order, notes: list of one-line strings about
    files skipped).  A file named explicitly that cannot be served raises ValueError naming it;
    files inside folders that are not Sketch-RNN checkpoints (the MNIST image VAEs) are skipped
    with a note.  Names: a file's stem; for a folder, "FOLDER/relative/path" without ".pt" (the
    shipped folder's models go without the prefix: "sheep", "magenta/sheep"); clashes get "-2", ...
    """
    from sketchvae.checkpoint import CheckpointError, load_checkpoint, shipped_checkpoints, shipped_checkpoints_dir
    from sketchvae.sample import sampler_from_checkpoint

    items: list[tuple[str, Path, bool]] = []
    if not paths:
        shipped = shipped_checkpoints_dir()
        if not shipped.is_dir():
            raise ValueError(f"no MODELS given and the shipped checkpoints folder {shipped} is missing; "
                             f"pass checkpoints or folders of them")
        items = [(name, f, False) for name, f in shipped_checkpoints().items()]  # as resolve_checkpoint names them
    else:
        for p in paths:
            p = Path(p)
            if not p.exists():
                raise ValueError(f"{p}: no such file or folder")
            explicit = not p.is_dir()
            cands = _candidates(p, None)
            if not cands:
                raise ValueError(f"{p}: no checkpoints (*.pt) in this folder")
            items += [(name, f, explicit) for name, f in cands]
    models: dict[str, ServedModel] = {}
    notes: list[str] = []
    other_kinds: list[str] = []  # checkpoints of other models found in folders (the MNIST ones): one note
    for name, f, explicit in items:
        try:
            ckpt = load_checkpoint(f)
            kind = ckpt["kind"]
            if kind != "sketch_rnn":
                if explicit:
                    raise ValueError(f"{f}: holds a model of kind {kind!r}, not a Sketch-RNN (serve draws with "
                                     f"Sketch-RNN models only)")
                other_kinds.append(f"{Path(f).name} ({kind})")
                continue
            sampler = sampler_from_checkpoint(ckpt, f, device=device)  # the file is read once
        except CheckpointError as err:
            if explicit:
                raise
            notes.append(f"skipped {err}")
            continue
        unique, k = name, 2
        while unique in models:
            unique, k = f"{name}-{k}", k + 1
        models[unique] = ServedModel(unique, sampler, f)
    if other_kinds:
        notes.insert(0, f"skipped {len(other_kinds)} checkpoint{'s' if len(other_kinds) > 1 else ''} of other "
                        f"models (serve draws with Sketch-RNN models only): {', '.join(other_kinds)}")
    if not models:
        raise ValueError("no Sketch-RNN checkpoints to serve" + (f" ({'; '.join(notes)})" if notes else ""))
    if warm:
        for m in models.values():
            m.warm()
    return models, notes
