"""The run folder as one object: what Sketch-RNN training writes and what `sketchvae report` reads.

    run = RunFolder("runs/sheep")
    run.record({"step": 500, "split": "valid", "loss": ...})   a line of metrics.jsonl (+ TensorBoard)
    run.save_checkpoint("last", ...)                           last.pt / best.pt, atomically
    run.record_samples(500, model, scale_factor, class_names)  samples/step_000500.svg
    run.metrics(), run.sample_grids(), run.write_report()      read back; report.html

The training loop (`sketchvae.train.fit`) only asks the run to record; this module owns the
file names, the formats and the report.  Layout:

    last.pt                 latest training state (resumable), written atomically
    best.pt                 weights with the lowest validation loss
    metrics.jsonl           one JSON object per line: step, split (train | valid | test), loss, recon, kl, ...
    samples/step_NNNNNN.svg a grid of sketches drawn at each validation, from the same z and seed
                            every time (one row per class for class-conditional models), so the
                            grids show what the model learned between two validations
    report.html             `sketchvae report RUN`: loss curves, the sample grids over time, the config
    data.h5                 the prepared cache, when DATA was not already one
    tensorboard/            TensorBoard event files (train --tensorboard)

The module sits beside the data flow (DESIGN.md): it reads checkpoints and metrics, and draws with
`sketchvae.sample` and `sketchvae.render` (imported when a grid is drawn); it holds no training logic.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from sketchvae import runtime

METRICS_FILE = "metrics.jsonl"
LAST_CKPT = "last.pt"
BEST_CKPT = "best.pt"
DATA_CACHE = "data.h5"
SAMPLES_DIR = "samples"
REPORT_FILE = "report.html"
TENSORBOARD_DIR = "tensorboard"

# The grid drawn at every validation: cheap (a few hundred decoder steps for a dozen sketches).
SAMPLE_COUNT = 10  # sketches per grid (unconditional / vae models): 2 rows of 5
SAMPLE_COLS = 5
SAMPLE_MAX_CLASSES = 8  # class-conditional models: one row for each of the first 8 classes ...
SAMPLE_PER_CLASS = 4  # ... with this many sketches each
SAMPLE_TEMPERATURE = 0.4
SAMPLE_MAX_LEN = 250  # points per sketch at most (capped further by the model's max_seq_len)
REPORT_MAX_GRIDS = 16  # report.html shows at most this many grids (evenly spaced, first and last kept)

TENSORBOARD_MISSING = ("TensorBoard logging needs the tensorboard package: pip install 'sketchvae[tensorboard]' "
                       "(or pip install tensorboard)")


def tensorboard_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None


class RunFolder:
    """One training run's folder.  `writer=False` (DDP ranks other than 0) turns every write into
    a no-op, so callers need not ask who they are.  `tensorboard=True` also logs every metrics
    record to `tensorboard/` (needs the tensorboard package; ImportError naming it otherwise)."""

    def __init__(self, path: str | os.PathLike, *, writer: bool = True, tensorboard: bool = False):
        self.path = Path(path)
        self.writer = writer
        self._tb = None
        if tensorboard and writer:
            if not tensorboard_available():
                raise ImportError(TENSORBOARD_MISSING)
            self._tensorboard = True
        else:
            self._tensorboard = False

    # ---------------------------------------------------------------------------------- paths
    @property
    def last(self) -> Path:
        return self.path / LAST_CKPT

    @property
    def best(self) -> Path:
        return self.path / BEST_CKPT

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def samples_dir(self) -> Path:
        return self.path / SAMPLES_DIR

    @property
    def report_path(self) -> Path:
        return self.path / REPORT_FILE

    def sample_path(self, step: int) -> Path:
        return self.samples_dir / f"step_{int(step):06d}.svg"

    def has_run(self) -> bool:
        """True when the folder holds a run (a last.pt)."""
        return self.last.exists()

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    # ---------------------------------------------------------------------------------- writing
    def create(self) -> None:
        if self.writer:
            self.path.mkdir(parents=True, exist_ok=True)

    def record(self, rec: dict) -> None:
        """Append one metrics record (a JSON object) to metrics.jsonl; also to TensorBoard if on."""
        if not self.writer:
            return
        self.create()
        line = json.dumps(rec) + "\n"
        try:
            with open(self.metrics_path, "a") as f:
                f.write(line)
        except OSError as err:
            if runtime.is_disk_full(err):
                raise runtime.DiskFullError(self.metrics_path) from None
            raise
        if self._tensorboard:
            self._log_tensorboard(rec)

    def _log_tensorboard(self, rec: dict) -> None:
        if self._tb is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ImportError(TENSORBOARD_MISSING) from None
            self._tb = SummaryWriter(str(self.path / TENSORBOARD_DIR))
        split, step = rec.get("split", "train"), int(rec.get("step", 0))
        for key, value in rec.items():
            if key not in ("step", "split", "epoch") and _num(value):
                self._tb.add_scalar(f"{key}/{split}", value, step)
        self._tb.flush()

    def truncate(self, step: int) -> None:
        """Forget what a killed run wrote after its last checkpoint at `step`: metrics lines of later
        steps, test lines (the end of training writes them again) and sample grids of later steps."""
        if not self.writer:
            return
        runtime.truncate_jsonl(self.metrics_path, lambda rec: rec.get("step", 0) <= step and rec.get("split") != "test")
        for grid_step, path in self.sample_grids():
            if grid_step > step:
                path.unlink(missing_ok=True)

    def save_checkpoint(self, which: str, **checkpoint) -> Path | None:
        """Write last.pt (`which="last"`) or best.pt atomically with `checkpoint.save_checkpoint`'s
        keyword arguments.  A full disk raises `runtime.DiskFullError` naming the file (the previous
        one is unchanged).  Returns the path (None when this process does not write)."""
        if not self.writer:
            return None
        from sketchvae.checkpoint import save_checkpoint

        path = {"last": self.last, "best": self.best}[which]
        return save_checkpoint(path, **checkpoint)

    def record_samples(self, step: int, model, scale_factor: float, class_names: Sequence[str], *,
                       seed: int = 0) -> Path | None:
        """Draw the fixed-z grid of a Sketch-RNN and write it to samples/step_NNNNNN.svg.

        The same seed gives the same z and the same random draws at every step, so two grids differ
        only by what the weights learned.  The model's train/eval mode and the global RNGs are left
        as they were."""
        if not self.writer:
            return None
        sketches, captions, cols = draw_grid(model, scale_factor, class_names, seed=seed)
        from sketchvae.render import grid_svg

        svg = grid_svg(sketches, cols=cols, captions=captions, cell_size=96)
        path = self.sample_path(step)
        text = '<?xml version="1.0" encoding="utf-8" ?>\n' + svg
        runtime.atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
        return path

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    # ---------------------------------------------------------------------------------- reading
    def metrics(self) -> list[dict]:
        """The metrics records (a line cut short by a crash is skipped)."""
        if not self.metrics_path.exists():
            return []
        out = []
        for line in self.metrics_path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict):
                out.append(rec)
        return out

    def sample_grids(self) -> list[tuple[int, Path]]:
        """(step, path) of every sample grid, by step."""
        if not self.samples_dir.is_dir():
            return []
        grids = []
        for p in self.samples_dir.glob("step_*.svg"):
            try:
                grids.append((int(p.stem[len("step_"):]), p))
            except ValueError:
                continue
        return sorted(grids)

    def checkpoint_step(self, which: str = "last") -> int | None:
        """The step recorded in last.pt / best.pt, or None when it is missing or unreadable."""
        from sketchvae.checkpoint import CheckpointError, load_checkpoint

        try:
            return int(load_checkpoint({"last": self.last, "best": self.best}[which])["extra"].get("step"))
        except (CheckpointError, TypeError, ValueError):
            return None

    def write_report(self, path: str | os.PathLike | None = None) -> Path:
        """Write report.html (one self-contained file): loss curves, sample grids over time, config."""
        if not self.path.is_dir():
            raise FileNotFoundError(f"{self.path}: run folder not found")
        metrics = self.metrics()
        ckpt = self._any_checkpoint()
        if not metrics and ckpt is None:
            raise ValueError(f"{self.path}: not a run folder (no {METRICS_FILE}, {LAST_CKPT} or {BEST_CKPT})")
        out = Path(path) if path is not None else self.report_path
        text = _report_html(self, metrics, ckpt)
        runtime.atomic_write(out, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
        return out

    def _any_checkpoint(self) -> dict | None:
        from sketchvae.checkpoint import CheckpointError, load_checkpoint

        for p in (self.last, self.best):
            if p.exists():
                try:
                    return load_checkpoint(p)
                except CheckpointError:
                    continue
        return None


# --------------------------------------------------------------------------------------------------
# Sample grids


def draw_grid(model, scale_factor: float, class_names: Sequence[str], *, seed: int = 0):
    """(sketches, captions, cols) of the validation grid for a SketchRNN (see `RunFolder.record_samples`)."""
    import torch

    from sketchvae.sample import Sampler, sample

    cfg = model.config
    max_len = min(SAMPLE_MAX_LEN, cfg.max_seq_len)
    if cfg.class_conditional:
        k = min(cfg.num_classes, SAMPLE_MAX_CLASSES)
        classes = [c for c in range(k) for _ in range(SAMPLE_PER_CLASS)]
        names = list(class_names) if len(class_names) == cfg.num_classes else [str(c) for c in range(cfg.num_classes)]
        captions = [names[c] for c in classes]
        n, cols = len(classes), SAMPLE_PER_CLASS
    else:
        classes, captions, n, cols = None, None, SAMPLE_COUNT, SAMPLE_COLS
    was_training = model.training
    cpu_rng = torch.get_rng_state()
    try:
        sketches = sample(Sampler(model, float(scale_factor), list(class_names)), n, temperature=SAMPLE_TEMPERATURE,
                          classes=classes, max_len=max_len, seed=seed)
    finally:
        model.train(was_training)
        torch.set_rng_state(cpu_rng)  # the sampler draws from its own generator; make sure of it
    return sketches, captions, cols


# --------------------------------------------------------------------------------------------------
# Data fingerprint


_FULL_HASH_BYTES = 64 << 20  # hash every point up to this size; above it, 256 evenly spaced blocks
_BLOCKS, _BLOCK_ROWS = 256, 4096


def data_fingerprint(cache) -> str:
    """A short content hash of a prepared cache (`StrokeCache`): class names, scale factor, every
    split's offsets and labels, and its points (all of them up to 64 MB, evenly spaced blocks
    above that).  Two caches prepared alike from the same sources have the same fingerprint."""
    h = hashlib.sha256()
    head = {"class_names": list(cache.class_names), "scale_factor": repr(float(cache.scale_factor)),
            "splits": {name: [len(cache.split(name)), len(cache.split(name).points)] for name in cache.splits}}
    h.update(json.dumps(head, sort_keys=True).encode())
    for name in cache.splits:
        view = cache.split(name)
        h.update(np.ascontiguousarray(view.offsets, dtype=np.int64).tobytes())
        h.update(np.ascontiguousarray(view.labels, dtype=np.int64).tobytes())
        points = view.points
        if points.nbytes <= _FULL_HASH_BYTES:
            h.update(np.ascontiguousarray(points, dtype=np.int16).tobytes())
        else:
            starts = np.linspace(0, len(points) - _BLOCK_ROWS, _BLOCKS).astype(np.int64)
            for s in starts:
                h.update(np.ascontiguousarray(points[s:s + _BLOCK_ROWS], dtype=np.int16).tobytes())
    return "sha256:" + h.hexdigest()[:32]


# --------------------------------------------------------------------------------------------------
# report.html


_CSS = """
body { font-family: system-ui, sans-serif; margin: 24px auto; max-width: 1100px; color: #222; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 28px; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 13px; }
td, th { padding: 2px 10px 2px 0; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.grid { display: inline-block; margin: 0 16px 16px 0; }
.grid img { border: 1px solid #ddd; max-width: 520px; }
.grid figcaption { font-size: 13px; color: #444; }
.configs { display: flex; gap: 40px; flex-wrap: wrap; }
.muted { color: #777; font-size: 13px; }
"""


def _report_html(run: RunFolder, metrics: list[dict], ckpt: dict | None) -> str:
    extra = (ckpt or {}).get("extra", {})
    esc = html.escape
    parts = [f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{esc(run.path.name)}: sketchvae run</title>",
             f"<style>{_CSS}</style></head><body>", f"<h1>Run {esc(run.path.name)}</h1>"]
    step = extra.get("step")
    parts.append(f"<p class='muted'>{esc(str(run.path.resolve()))} &middot; data {esc(str(extra.get('data', '?')))}"
                 f" &middot; step {esc(str(step))}</p>")
    parts.append(_summary_table(metrics))
    parts.append("<h2>Loss curves</h2>")
    if metrics:
        png = _curves_png(metrics)
        parts.append(f"<img alt='loss curves' src='data:image/png;base64,{base64.b64encode(png).decode()}' "
                     f"style='max-width: 100%'>")
        parts.append("<p class='muted'>train: averages over each logging window, with the annealed KL weight; "
                     "valid: the whole validation split (or --eval-batches), with the final KL weight w_KL.</p>")
    else:
        parts.append("<p class='muted'>no metrics recorded yet</p>")
    if any(r.get("split") == "score" and _num(r.get("c2st")) for r in metrics):
        png = _quality_png(metrics)
        parts.append("<h2>Sample quality</h2>")
        parts.append(f"<img alt='sample quality' src='data:image/png;base64,{base64.b64encode(png).decode()}' "
                     f"style='max-width: 100%'>")
        parts.append("<p class='muted'>at each validation (train --score-samples N): N samples at temperature 0.4 "
                     "against N validation drawings; left, the accuracy of a CNN telling them apart (5-fold, +- its "
                     "standard error; 0.5 = indistinguishable, see <code>sketchvae score</code>); right, the fraction "
                     "of samples that ended by themselves before the length limit.</p>")
    parts.append("<h2>Samples over time</h2>")
    grids = run.sample_grids()
    if grids:
        shown = _spread(grids, REPORT_MAX_GRIDS)
        valid = {r["step"]: r for r in metrics if r.get("split") == "valid"}
        parts.append(f"<p class='muted'>{len(grids)} grid{'s' if len(grids) != 1 else ''} in {SAMPLES_DIR}/, one per "
                     f"validation; the same z and random draws every time (temperature {SAMPLE_TEMPERATURE})"
                     + (f"; {len(shown)} shown, evenly spaced" if len(shown) < len(grids) else "") + "</p>")
        for grid_step, path in shown:
            data = base64.b64encode(path.read_bytes()).decode()
            v = valid.get(grid_step)
            cap = f"step {grid_step}" + (f" &middot; valid loss {v['loss']:.4f}" if v and _num(v.get("loss")) else "")
            parts.append(f"<figure class='grid'><img alt='samples at step {grid_step}' "
                         f"src='data:image/svg+xml;base64,{data}'><figcaption>{cap}</figcaption></figure>")
    else:
        parts.append("<p class='muted'>no sample grids (they are drawn at every validation)</p>")
    parts.append("<h2>Configuration</h2><div class='configs'>")
    if ckpt is not None:
        parts.append(_kv_table("model", ckpt.get("config", {})))
        parts.append(_kv_table("training", extra.get("train_config", {})))
        info = {"class_names": ", ".join(map(str, list(ckpt.get("class_names", []))[:50])) or "-",
                "scale_factor": ckpt.get("scale_factor"), "data": extra.get("data"),
                "data_fingerprint": extra.get("data_fingerprint"), "world_size": extra.get("world_size")}
        parts.append(_kv_table("data", info))
    else:
        parts.append("<p class='muted'>no readable checkpoint</p>")
    parts.append("</div></body></html>\n")
    return "\n".join(parts)


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _spread(items: list, k: int) -> list:
    if len(items) <= k:
        return items
    idx = sorted({round(i * (len(items) - 1) / (k - 1)) for i in range(k)})
    return [items[i] for i in idx]


def _summary_table(metrics: list[dict]) -> str:
    rows = []
    valid = [r for r in metrics if r.get("split") == "valid" and _num(r.get("loss"))]
    if valid:
        best = min(valid, key=lambda r: r["loss"])
        rows.append(("best valid", best))
        rows.append(("last valid", valid[-1]))
    train = [r for r in metrics if r.get("split") == "train" and _num(r.get("loss"))]
    if train:
        rows.append(("last train window", train[-1]))
    tests = [r for r in metrics if r.get("split") == "test"]
    if tests:  # the last one (the image trainer writes one per epoch)
        rows.append((f"test ({tests[-1].get('checkpoint', 'last epoch')})", tests[-1]))
    if not rows:
        return ""
    out = ["<table><tr><th></th><th>step</th><th>loss</th><th>L_R</th><th>L_KL</th></tr>"]
    for name, r in rows:
        cells = "".join(f"<td class='num'>{r[k]:.4f}</td>" if _num(r.get(k)) else "<td>-</td>"
                        for k in ("loss", "recon", "kl"))
        out.append(f"<tr><td>{html.escape(name)}</td><td class='num'>{r.get('step')}</td>{cells}</tr>")
    out.append("</table>")
    return "\n".join(out)


def _kv_table(title: str, values: dict) -> str:
    rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>"
                   for k, v in values.items())
    return f"<div><h3>{html.escape(title)}</h3><table>{rows}</table></div>"


def _curves_png(metrics: list[dict]) -> bytes:
    """Total loss, L_R and L_KL against step, train and valid, as a PNG (matplotlib, no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 3.6), dpi=100)
    FigureCanvasAgg(fig)
    panels = (("loss", "total loss"), ("recon", "L_R (reconstruction)"), ("kl", "L_KL (per z dimension)"))
    styles = {"train": dict(color="#1f77b4", lw=1.0, alpha=0.8),
              "valid": dict(color="#d62728", lw=1.6, marker="o", ms=3)}
    for i, (key, title) in enumerate(panels):
        ax = fig.add_subplot(1, 3, i + 1)
        for split, style in styles.items():
            pts = [(r["step"], r[key]) for r in metrics if r.get("split") == split and _num(r.get(key))]
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, label=split, **style)
        ax.set_title(title, fontsize=11)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _quality_png(metrics: list[dict]) -> bytes:
    """The quality curve (split "score" records: c2st +- c2st_se, ended) against step, as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = [r for r in metrics if r.get("split") == "score" and _num(r.get("c2st"))]
    fig = Figure(figsize=(8, 3.2), dpi=100)
    FigureCanvasAgg(fig)
    steps = [r["step"] for r in rows]
    ax = fig.add_subplot(1, 2, 1)
    acc = [r["c2st"] for r in rows]
    se = [r.get("c2st_se", 0.0) if _num(r.get("c2st_se")) else 0.0 for r in rows]
    ax.errorbar(steps, acc, yerr=se, color="#2ca02c", marker="o", ms=3, lw=1.4, capsize=2)
    ax.axhline(0.5, color="0.5", lw=0.8, ls="--")
    ax.set_ylim(0.4, 1.02)
    ax.set_title("samples told from real (0.5 = indistinguishable)", fontsize=10)
    ax = fig.add_subplot(1, 2, 2)
    ended = [(r["step"], r["ended"]) for r in rows if _num(r.get("ended"))]
    if ended:
        ax.plot(*zip(*ended), color="#9467bd", marker="o", ms=3, lw=1.4)
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("samples that ended by themselves", fontsize=10)
    for ax in fig.axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


__all__ = ["RunFolder", "data_fingerprint", "draw_grid", "tensorboard_available", "METRICS_FILE", "LAST_CKPT",
           "BEST_CKPT", "DATA_CACHE", "SAMPLES_DIR", "REPORT_FILE"]
