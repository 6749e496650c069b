"""Training and evaluation of Sketch-RNN: a thin loop (minGPT's `Trainer`) with exact resume.

    fit(model_config, train_config, data, run_dir)   train, validate, checkpoint, test at the end
    evaluate(model, batches, ...)                    mean loss / L_R / L_KL over batches
    evaluate_checkpoint(path, data, split)           the same for a saved model and a cache

The optimiser, the learning-rate and KL schedules, clipping and the non-finite guard live here,
not on the model (STYLE.md practice 7).  Library code never prints: `fit` reports through a
`callback(event, info)` and `logging`; the CLI (`sketchvae/cli/train.py`) draws the progress bar.

Objective (Ha & Eck 2017, eq. 9-11, and magenta's `sketch_rnn_train.py`)
-----------------------------------------------------------------------
    loss = L_R + w_KL * eta_step * max(L_KL, KL_min)            training, step `step`
    eta_step = 1 - (1 - eta_min) * R^step                       (`losses.KLSchedule`)
    lr_step = (lr - min_lr) * decay^step + min_lr               (`losses.lr_at`), Adam

Logged `kl` is the plain KL per z dimension, L_KL, *without* the floor (the floor only stops its
gradient; the value below it is what you want to see).  Validation `loss` uses the final weight
w_KL (not the annealed one), so validation losses of different steps are comparable and the best
checkpoint is the one that is best under the objective the annealing converges to:

    valid loss = L_R + w_KL * max(L_KL, KL_min)

Evaluation samples z = mu + sigma * eps, as the reference's validation (a one-sample estimate of
the ELBO's reconstruction term), with a generator seeded by `TrainConfig.seed` for every
evaluation, so the same weights always give the same numbers and evaluation never touches the
training RNG.  Dropout is off in evaluation.

Run folder (scripts rely on it; `sketchvae.run.RunFolder` owns it)
-------------------------------------------------------------------
    run_dir/last.pt        latest state: weights + `train_state` (optimiser, step, data position,
                           RNG states, best validation loss, counters); written atomically at every
                           validation, every `save_every` steps, every `save_minutes` and on Ctrl-C
    run_dir/best.pt        weights with the lowest validation loss so far (no train_state)
    run_dir/metrics.jsonl  one JSON object per line: step, split ("train"/"valid"/"test"), loss,
                           recon, kl (+ offset, pen); train lines add kl_weight, lr,
                           sketches_per_s, grad_norm, nonfinite_skipped
    run_dir/samples/       step_NNNNNN.svg: sketches drawn at every validation from a fixed z and seed
    run_dir/report.html    `sketchvae report`: curves, sample grids, config
    run_dir/data.h5        the prepared cache, when DATA was not already one (`prepare_data`)

Checkpoints record the data's absolute path and a fingerprint of its content: a run resumes on its
own data only (`DataMismatch` otherwise; `init_from` starts a new run from its weights instead).

Stopping
--------
Ctrl-C or SIGTERM finishes the step, saves last.pt and raises `TrainingInterrupted` (a second one
stops at once); a full disk raises `runtime.DiskFullError` naming the file, the previous one intact.

Exact resume
------------
`last.pt` holds everything the trajectory depends on: weights, Adam state, the step (from which
the learning rate and KL weight follow), the data position (epoch, batch index within the epoch:
the bucketed sampler's order is a function of (seed, epoch), augmentation a function of (seed,
epoch, sketch)), and every RNG state (torch, numpy, python; one per rank under DDP).  A run killed
at any moment and resumed from `last.pt` therefore continues exactly as if it had never stopped
(bit-identical on CPU; tested in tests/test_train.py).

Distributed data parallel
-------------------------
Under `torchrun` (env WORLD_SIZE > 1) `fit` joins the process group (NCCL on CUDA, gloo on CPU),
wraps the model in DistributedDataParallel and shards the bucketed sampler by rank.
`batch_size` is per process: the global batch is batch_size * world_size.  Rank 0 evaluates,
writes metrics and checkpoints; the RNG states of all ranks go into `last.pt`.  A stop request
(signal), a periodic save or the `max_minutes` deadline due on any rank is agreed by all ranks at
every step (one all-reduce of three flags), so they save and stop at the same step.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import numbers
import os
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from sketchvae import runtime
from sketchvae.checkpoint import CheckpointError, build_model, config_from_dict, load_checkpoint, resolve_checkpoint
from sketchvae.losses import KLSchedule, gaussian_kl, kl_loss, lr_at, sketch_rnn_loss
from sketchvae.models.sketch_rnn import SketchRNN, SketchRNNConfig
from sketchvae.run import BEST_CKPT, DATA_CACHE, LAST_CKPT, METRICS_FILE, RunFolder, data_fingerprint  # noqa: F401
from sketchvae.runtime import TrainingInterrupted

log = logging.getLogger(__name__)

CLIP_MODES = ("value", "norm")

Callback = Callable[[str, dict], None]


@dataclasses.dataclass
class TrainConfig:
    """Training hyperparameters; defaults are the Sketch-RNN reference's (magenta
    `sketch_rnn/model.py: get_default_hparams` and `sketch_rnn_train.py`).  Saved in every
    checkpoint (`extra["train_config"]`); the CLI's options map one-to-one onto these fields."""

    # Optimiser steps to train for (total, counted from step 0 also when resuming); >= 1.
    steps: int = 20000
    # Sketches per optimiser step and process (global batch = batch_size * world size); reference 100.
    batch_size: int = 100
    # Adam learning rate at step 0; 1e-4 .. 3e-3.  Reference 1e-3.
    lr: float = 1e-3
    # Learning-rate decay per step: lr_step = (lr - min_lr) * lr_decay^step + min_lr; reference 0.9999.
    lr_decay: float = 0.9999
    # Floor the learning rate decays towards; reference 1e-5.
    min_lr: float = 1e-5
    # w_KL, the final weight of the KL term (eq. 10).  magenta's default (`get_default_hparams`) is
    # 0.5, "recommend 0.5 or 1.0" (1.0 = the true ELBO; the paper's Fig. 6 range: 0.25 .. 1.0).
    kl_weight: float = 0.5
    # eta_min, the KL weight at step 0 as a fraction of w_KL (eq. 11); in [0, 1], the paper's 0.01.
    # magenta's code starts from an ABSOLUTE weight kl_weight_start = 0.01, i.e. eta_min = 0.01 / w_KL
    # (0.02 with w_KL 0.5): `--preset magenta` sets that.
    kl_eta_min: float = 0.01
    # R, the KL annealing rate per step (eq. 11): eta_step = 1 - (1 - eta_min) R^step; reference 0.99995.
    kl_decay_rate: float = 0.99995
    # KL_min, the floor of L_KL per z dimension (eq. 10; magenta's kl_tolerance); reference 0.2.
    kl_tolerance: float = 0.2
    # Gradient clipping threshold; reference 1.0.  0 turns clipping off.
    grad_clip: float = 1.0
    # "value": clamp every gradient element to [-grad_clip, grad_clip] (the reference);
    # "norm": rescale the whole gradient to a 2-norm of at most grad_clip.
    clip_mode: str = "value"
    # Augmentation: random per-axis scale in [1 - r, 1 + r] (magenta's random_scale_factor 0.15); 0 = off.
    augment_scale: float = 0.15
    # Augmentation: probability of dropping an interior stroke point (magenta's augment_stroke_prob 0.1); 0 = off.
    augment_drop: float = 0.1
    # Draw every class equally often in training (class_vae on classes of unequal size): each epoch
    # repeats the smaller classes' sketches up to the largest class's count (`BucketBatchSampler`).
    balance_classes: bool = False
    # Validate (and save last.pt / best.pt) every this many steps; >= 1.
    eval_every: int = 500
    # Also save last.pt every this many steps (0 = only at validation steps and the end).
    save_every: int = 0
    # Also save last.pt when this many minutes have passed since the last save (0 = off), so a killed
    # run loses minutes, not hours.  Ctrl-C / SIGTERM save last.pt at the current step in any case.
    save_minutes: float = 10.0
    # Write a train line to metrics.jsonl every this many steps (averages over the window); >= 1.
    log_every: int = 50
    # Evaluate on at most this many validation batches (0 = the whole split).
    eval_batches: int = 0
    # Evaluate the best checkpoint on the test split at the end of training.
    test_at_end: bool = True
    # At each validation, score this many samples (temperature 0.4) against as many validation
    # drawings with `sketchvae.evaluation.quick_score` (two-sample test; 0.5 = indistinguishable),
    # for the quality curve of `sketchvae report`; 0 = off.  100 costs about 10 s of CPU a validation.
    score_samples: int = 0
    # Seed for weights, data order, augmentation, z noise and dropout.
    seed: int = 0
    # "auto" (CUDA if available) | "cpu" | "cuda" | "cuda:N".  bf16 autocast on CUDA, float32 on CPU.
    device: str = "auto"
    # Stop after this many non-finite losses or gradients in a row (each one skips its step); >= 1.
    max_nonfinite: int = 20
    # DataLoader worker processes for batching (0 = in the training process; fine on CPU).
    num_workers: int = 0
    # torch intra-op threads on CPU (0 = torch's default).
    num_threads: int = 0
    # Stop after this many minutes of wall time (validating and saving last.pt at the step it stops
    # at); 0 = no limit.  For fixed-time runs (scripts/gpu_check.sh); `steps` still caps the run.
    max_minutes: float = 0.0

    def __post_init__(self) -> None:
        def _int(name: str, lo: int) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < lo:
                raise ValueError(f"TrainConfig.{name}={v!r} must be an integer >= {lo}")

        def _real(name: str, lo: float, hi: float, lo_open: bool = False, hi_open: bool = False) -> None:
            v = getattr(self, name)
            ok = isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
            ok = ok and (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
            if not ok:
                rng = f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
                raise ValueError(f"TrainConfig.{name}={v!r} must be a number in {rng}")

        for name, lo in (("steps", 1), ("batch_size", 1), ("eval_every", 1), ("save_every", 0),
                         ("log_every", 1), ("eval_batches", 0), ("seed", 0), ("max_nonfinite", 1),
                         ("num_workers", 0), ("num_threads", 0), ("score_samples", 0)):
            _int(name, lo)
        _real("lr", 0.0, math.inf, lo_open=True, hi_open=True)
        _real("lr_decay", 0.0, 1.0, lo_open=True)
        _real("min_lr", 0.0, math.inf, hi_open=True)
        _real("kl_weight", 0.0, math.inf, hi_open=True)
        _real("kl_eta_min", 0.0, 1.0)
        _real("kl_decay_rate", 0.0, 1.0, lo_open=True)
        _real("kl_tolerance", 0.0, math.inf, hi_open=True)
        _real("grad_clip", 0.0, math.inf, hi_open=True)
        _real("augment_scale", 0.0, 1.0, hi_open=True)
        _real("augment_drop", 0.0, 1.0, hi_open=True)
        _real("save_minutes", 0.0, math.inf, hi_open=True)
        _real("max_minutes", 0.0, math.inf, hi_open=True)
        if self.clip_mode not in CLIP_MODES:
            raise ValueError(f"TrainConfig.clip_mode={self.clip_mode!r} is not one of {CLIP_MODES}")
        if self.min_lr > self.lr:
            raise ValueError(f"TrainConfig.min_lr={self.min_lr} must not exceed lr={self.lr}")
        for name in ("test_at_end", "balance_classes"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"TrainConfig.{name}={getattr(self, name)!r} must be True or False")
        if not isinstance(self.device, str):
            raise ValueError(f"TrainConfig.device={self.device!r} must be a string: auto, cpu, cuda or cuda:N")

    @property
    def kl_schedule(self) -> KLSchedule:
        return KLSchedule(kl_weight=self.kl_weight, eta_min=self.kl_eta_min, rate=self.kl_decay_rate)

    def lr_at(self, step: int) -> float:
        return lr_at(step, self.lr, self.lr_decay, self.min_lr)


# Fields that do not change the trajectory: they may differ between a run and its resumption.
RESUMABLE_OVERRIDES = ("steps", "eval_every", "save_every", "save_minutes", "log_every", "eval_batches",
                       "test_at_end", "device", "max_nonfinite", "num_workers", "num_threads", "max_minutes",
                       "score_samples")


class TrainingDiverged(RuntimeError):
    """Too many non-finite losses or gradients in a row; `last.pt` holds the last good state."""


@dataclasses.dataclass
class FitResult:
    run_dir: str
    step: int  # optimiser steps done (total, including those before a resume)
    last_checkpoint: str
    best_checkpoint: str | None
    best_valid: dict | None  # validation metrics of best.pt
    final_valid: dict | None  # validation metrics at the last step
    test: dict | None  # test metrics of best.pt (or the final weights when there is no best.pt)
    nonfinite_skipped: int
    elapsed_s: float  # wall time of this call
    model: nn.Module | None = dataclasses.field(default=None, repr=False)  # the trained model (final weights)

    def summary(self) -> dict:
        """The result as a plain dict, without the model."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "model"}


# --------------------------------------------------------------------------------------------------
# Losses


def batch_losses(out: dict, batch, max_seq_len: int) -> dict[str, torch.Tensor]:
    """Reconstruction terms and the raw KL for one model output (scalars; `kl` is 0 without z)."""
    terms = sketch_rnn_loss(out["params"], out["pen_logits"], batch.strokes[:, 1:], batch.lengths, max_seq_len)
    if out.get("mu") is not None:
        terms["kl"] = gaussian_kl(out["mu"].float(), out["presig"].float()).mean() / out["mu"].shape[-1]
    else:
        terms["kl"] = terms["recon"].new_zeros(())
    return terms


def _objective(terms: dict, out: dict, kl_weight: float, kl_tolerance: float) -> torch.Tensor:
    if out.get("mu") is None:
        return terms["recon"]
    return terms["recon"] + kl_weight * kl_loss(out["mu"], out["presig"], kl_tolerance)


# --------------------------------------------------------------------------------------------------
# Trainer: one optimiser step


class Trainer:
    """Owns the optimiser and schedules; `train_step(batch)` does one step.

    model: the SketchRNN (trained in place).  forward_model: what to call for the forward pass
    (the DistributedDataParallel wrapper under DDP; the model otherwise).
    """

    def __init__(self, model: SketchRNN, config: TrainConfig, device: torch.device,
                 forward_model: nn.Module | None = None, world_size: int = 1):
        self.model = model
        self.forward_model = forward_model if forward_model is not None else model
        self.config = config
        self.device = device
        self.world_size = world_size
        self.kl_schedule = config.kl_schedule
        self.max_seq_len = model.config.max_seq_len
        self.class_conditional = model.config.class_conditional
        fused = device.type == "cuda"
        self.optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, **({"fused": True} if fused else {}))
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.step = 0
        self.nonfinite_streak = 0
        self.nonfinite_total = 0

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "step": self.step,
                "nonfinite_streak": self.nonfinite_streak, "nonfinite_total": self.nonfinite_total}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        self.nonfinite_streak = int(state.get("nonfinite_streak", 0))
        self.nonfinite_total = int(state.get("nonfinite_total", 0))

    def train_step(self, batch) -> dict:
        """One optimiser step on `batch` (a `Batch` on any device).  Returns floats: loss, recon,
        offset, pen, kl, kl_weight, lr, grad_norm (2-norm before clipping) and `finite` (False: the
        step was skipped because the loss or a gradient was not finite)."""
        cfg = self.config
        step = self.step
        lr = cfg.lr_at(step)
        kl_weight = self.kl_schedule.weight(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        lengths = batch.lengths.cpu()  # the encoder packs with CPU lengths; no device sync later
        strokes = batch.strokes.to(self.device, non_blocking=True)
        labels = batch.labels.to(self.device, non_blocking=True) if self.class_conditional else None
        with runtime.autocast(self.device):
            out = self.forward_model(strokes, lengths, labels)
        terms = batch_losses(out, _BatchView(strokes, lengths), self.max_seq_len)
        loss = _objective(terms, out, kl_weight, cfg.kl_tolerance)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = _total_norm(self.params)
        finite = torch.isfinite(loss.detach()) & torch.isfinite(grad_norm)
        if self.world_size > 1:  # every rank must take the same decision
            flag = finite.to(torch.int32)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
            finite = flag.bool()
        values = torch.stack([loss.detach().float(), terms["recon"].detach(), terms["offset"].detach(),
                              terms["pen"].detach(), terms["kl"].detach().float(), grad_norm.float(),
                              finite.float()]).tolist()  # one host sync per step
        ok = bool(values[6])
        if ok:
            if cfg.grad_clip > 0:
                if cfg.clip_mode == "value":
                    torch.nn.utils.clip_grad_value_(self.params, cfg.grad_clip)
                else:
                    _clip_by_norm(self.params, cfg.grad_clip, grad_norm)
            self.optimizer.step()
            self.nonfinite_streak = 0
        else:
            self.optimizer.zero_grad(set_to_none=True)
            self.nonfinite_streak += 1
            self.nonfinite_total += 1
        self.step += 1
        return {"loss": values[0], "recon": values[1], "offset": values[2], "pen": values[3], "kl": values[4],
                "grad_norm": values[5], "finite": ok, "kl_weight": kl_weight, "lr": lr}


class _BatchView:
    """strokes + lengths, the part of a Batch the losses read."""

    def __init__(self, strokes, lengths):
        self.strokes = strokes
        self.lengths = lengths


def _clip_by_norm(params: Sequence[torch.Tensor], max_norm: float, total_norm: torch.Tensor) -> None:
    """Scale gradients so their 2-norm is at most max_norm, reusing the norm already computed."""
    if hasattr(torch.nn.utils, "clip_grads_with_norm_"):
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, total_norm)
    else:
        torch.nn.utils.clip_grad_norm_(params, max_norm)


def _total_norm(params: Sequence[torch.Tensor]) -> torch.Tensor:
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    if hasattr(torch.nn.utils, "get_total_norm"):
        return torch.nn.utils.get_total_norm(grads, 2.0)
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))


# --------------------------------------------------------------------------------------------------
# Evaluation


@torch.no_grad()
def evaluate(model: SketchRNN, batches: Iterable, *, kl_weight: float = 0.5, kl_tolerance: float = 0.2,
             device: torch.device | str | None = None, seed: int = 0, max_batches: int = 0) -> dict:
    """Mean losses of `model` over `batches` (an iterable of `Batch`), weighted by sketches.

    Returns floats: `loss` = recon + kl_weight * max(kl, kl_tolerance), `recon` (L_R), `offset`
    (L_s), `pen` (L_p), `kl` (L_KL per z dimension, no floor), and `n` sketches.  z is sampled
    with a generator seeded by `seed` (the same numbers for the same weights; the global RNG is
    untouched); dropout off.  `max_batches` > 0 stops after that many batches.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    gen = torch.Generator(device=device if device.type == "cuda" else "cpu").manual_seed(seed)
    cond = model.config.class_conditional
    sums = torch.zeros(5, dtype=torch.float64)
    count = 0
    try:
        for i, batch in enumerate(batches):
            if max_batches and i >= max_batches:
                break
            lengths = batch.lengths.cpu()
            strokes = batch.strokes.to(device)
            labels = batch.labels.to(device) if cond else None
            with runtime.autocast(device):
                out = model(strokes, lengths, labels, generator=gen)
            terms = batch_losses(out, _BatchView(strokes, lengths), model.config.max_seq_len)
            loss = _objective(terms, out, kl_weight, kl_tolerance)
            bsz = strokes.shape[0]
            vals = torch.stack([loss.float(), terms["recon"], terms["offset"], terms["pen"], terms["kl"].float()])
            sums += vals.double().cpu() * bsz
            count += bsz
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("evaluate: no batches to evaluate (empty split?)")
    mean = (sums / count).tolist()
    return {"loss": mean[0], "recon": mean[1], "offset": mean[2], "pen": mean[3], "kl": mean[4], "n": count}


# --------------------------------------------------------------------------------------------------
# Data


def prepare_data(sources: Sequence[str | os.PathLike] | str | os.PathLike, run_dir: str | os.PathLike,
                 *, keep_existing: bool = False, **prepare_kwargs) -> Path:
    """Return the HDF5 cache to train on.

    sources: one prepared cache (`.h5` / `.hdf5`: used as is), or any mix of `.npz` / `.ndjson`
    files, folders of them, and Quick, Draw! class names (downloaded) - these are prepared into
    `run_dir/data.h5` by `sketchvae.data.quickdraw.prepare` (kwargs are passed to it).  An existing
    `run_dir/data.h5` is reused when it was prepared from the same files with the same options.
    keep_existing (resuming a run): an existing `run_dir/data.h5` that differs is never rebuilt;
    `DataMismatch` says how.
    """
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    sources = [str(s) for s in sources]
    if not sources:
        raise ValueError("no training data given: pass a prepared .h5 cache, .npz / .ndjson files or class names")
    if len(sources) == 1 and Path(sources[0]).suffix.lower() in (".h5", ".hdf5"):
        path = Path(sources[0])
        if not path.exists():
            raise FileNotFoundError(f"{path}: prepared cache not found")
        return path
    from sketchvae.data import quickdraw  # the data stage owns parsing and preparation

    out = Path(run_dir) / DATA_CACHE
    try:  # prepare reuses a data.h5 made from the same files with the same options
        return Path(quickdraw.prepare(sources, out, overwrite=not keep_existing, **prepare_kwargs))
    except quickdraw.CacheExistsError as err:
        raise DataMismatch(
            f"{', '.join(sources)}: not the data this run was trained on ({err}). A resumed run continues on its "
            f"own data (leave DATA out to use it); to train on these files starting from the run's weights, start "
            f"a new run: sketchvae train DATA -o NEW_RUN --init-from {out.parent / LAST_CKPT}") from None


def make_batches(cache, split: str, batch_size: int, max_len: int, *, scale_factor: float, shuffle: bool,
                 seed: int, augment: dict | None = None, rank: int = 0, world_size: int = 1, num_workers: int = 0,
                 prefetch: int = 0, pad_to: int | None = None, class_map: np.ndarray | None = None,
                 drop_last: bool | None = None, balance: bool = False):
    """`sketchvae.data.batching.make_loader` for training / evaluation (a resumable `SketchLoader`).

    Sketches longer than max_len are left out (`loader.dataset.num_too_long`).  class_map (data
    label -> model label, from `_label_map`) relabels batches for a model trained on another class list.
    balance: every class (of the data's labels) equally often per epoch (`TrainConfig.balance_classes`).
    """
    from sketchvae.data.batching import make_loader

    loader = make_loader(cache, split, batch_size, max_len, shuffle=shuffle, seed=seed, augment=augment, rank=rank,
                         world_size=world_size, num_workers=num_workers, scale_factor=scale_factor, pad_to=pad_to,
                         prefetch=prefetch, pin_memory=torch.cuda.is_available(), drop_last=drop_last,
                         balance=balance)
    return _Relabel(loader, class_map) if class_map is not None else loader


class _Relabel:
    """A loader whose batches' labels are mapped through `class_map` (everything else passes through)."""

    def __init__(self, loader, class_map: np.ndarray):
        self.loader = loader
        self.class_map = torch.from_numpy(np.asarray(class_map, dtype=np.int64))

    def __getattr__(self, name):
        return getattr(self.loader, name)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            batch.labels = self.class_map[batch.labels]
            yield batch


def _label_map(ckpt_classes: Sequence[str], data_classes: Sequence[str], source: str) -> np.ndarray | None:
    """Map data labels onto the model's label indices by class name (None: identical lists)."""
    ckpt_classes, data_classes = list(ckpt_classes), list(data_classes)
    if not ckpt_classes or ckpt_classes == data_classes:
        return None
    index = {n: i for i, n in enumerate(ckpt_classes)}
    missing = [n for n in data_classes if n not in index]
    if missing:
        raise ValueError(f"{source}: classes {missing[:5]} are unknown to the model; it knows {ckpt_classes[:20]}")
    return np.array([index[n] for n in data_classes], dtype=np.int64)


def _forever(loader) -> Iterator:
    """Batches of epoch after epoch (the loader moves to the next epoch when one is exhausted)."""
    if len(loader) == 0:
        raise ValueError(f"no batch of {loader.sampler.batch_size} sketches per process in the training split "
                         f"({len(loader.dataset.indices)} usable sketches); use a smaller batch size")
    while True:
        yield from loader


# --------------------------------------------------------------------------------------------------
# The loop


def _dist_info() -> tuple[int, int, int]:
    """(rank, world_size, local_rank), joining the process group when torchrun asks for one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank()))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        if not dist.is_available():
            raise RuntimeError("WORLD_SIZE > 1 but torch.distributed is not available in this build")
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
        return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0"))
    return 0, 1, 0


def _device_for(config: TrainConfig, world_size: int, local_rank: int) -> torch.device:
    device = runtime.resolve_device(config.device)
    if device.type == "cuda" and world_size > 1 and device.index is None:
        device = torch.device("cuda", local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def _open_cache(path):
    from sketchvae.data.cache import open_cache

    return open_cache(path)


def fit(model_config: SketchRNNConfig | dict | None, train_config: TrainConfig, data, run_dir: str | os.PathLike, *,
        resume: bool = False, callback: Callback | None = None, model: SketchRNN | None = None,
        init_from: str | os.PathLike | None = None, tensorboard: bool = False) -> FitResult:
    """Train a Sketch-RNN and return a `FitResult`; see the module docstring for the run folder.

    model_config: the model to build: a SketchRNNConfig, or a dict of its fields (None: defaults);
        in "class_vae" mode a dict without `num_classes` gets the data's class count.  Ignored on
        resume and with init_from (the checkpoint's is used).
    train_config: training options.  On resume, fields outside `RESUMABLE_OVERRIDES` must match
        the saved ones (they change the trajectory); a mismatch is a ValueError.
    data: a prepared HDF5 cache (path or open `StrokeCache`); see `prepare_data` for other inputs.
        On resume it must be the run's own data (same fingerprint), else `DataMismatch`.
    run_dir: the run folder (`sketchvae.run.RunFolder`).  Without `resume`, it must not hold a last.pt.
    resume: continue from run_dir/last.pt (exactly: same trajectory as an uninterrupted run).
    callback: `callback(event, info)` for progress and tests; events: "start", "step" (every step,
        all ranks; info has step, loss, finite, indices, epoch), "metrics" (each metrics.jsonl
        record), "checkpoint" (path, step, which), "samples" (path, step), "end" (the FitResult as
        a dict).  Raising from the callback stops training at once (no checkpoint is written),
        like a crash.
    model: an already built model to train instead of building one from model_config (not on resume).
    init_from: a Sketch-RNN checkpoint to start a NEW run from (its config, weights, scale factor and
        class names; fresh optimiser, step 0), e.g. to go on training a run on other data.
    tensorboard: also log every metrics record to run_dir/tensorboard (needs the tensorboard package).

    Ctrl-C or SIGTERM (main thread only) finishes the current step, saves last.pt and raises
    `TrainingInterrupted`; a second one stops at once.  last.pt is also saved every
    `save_minutes`.  Raises TrainingDiverged after `max_nonfinite` non-finite steps in a row
    (last.pt is kept) and `runtime.DiskFullError` when a file cannot be written for lack of space.
    """
    t_start = time.perf_counter()
    cfg = train_config
    emit = callback or (lambda event, info: None)
    rank, world_size, local_rank = _dist_info()
    device = _device_for(cfg, world_size, local_rank)
    if device.type == "cpu":
        runtime.configure_cpu()
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
    run = RunFolder(run_dir, writer=rank == 0, tensorboard=tensorboard)
    s = _Session(model_config, cfg, data, run, resume=resume, model=model, init_from=init_from, device=device,
                 rank=rank, world_size=world_size, emit=emit)
    trainer, loader = s.trainer, s.loader
    run.create()
    start_step = trainer.step
    emit("start", s.start_info())

    batches = _forever(loader)
    deadline = t_start + 60.0 * cfg.max_minutes if cfg.max_minutes > 0 else math.inf
    try:
        with runtime.StopRequests(cfg.save_minutes) as stops:
            while trainer.step < cfg.steps:
                t0 = time.perf_counter()
                epoch = loader.epoch
                batch = next(batches)
                info = trainer.train_step(batch)
                s.window.add(info, int(batch.strokes.shape[0]) * world_size, time.perf_counter() - t0)
                step = trainer.step
                emit("step", {"step": step, "loss": info["loss"], "finite": info["finite"], "epoch": epoch,
                              "indices": None if batch.indices is None else batch.indices.tolist(), "rank": rank})
                if not info["finite"]:
                    s.nonfinite_step(step)
                # every rank stops, saves and runs out of time at the same step
                stop, due, out_of_time = s.agree(stops.requested is not None, stops.save_due(),
                                                 time.perf_counter() >= deadline)
                if step % cfg.log_every == 0 or step == cfg.steps or out_of_time:
                    s.record_train(step, info)
                is_eval = step % cfg.eval_every == 0 or step == cfg.steps or out_of_time
                if is_eval:
                    s.validate()
                # No save inside a run of skipped steps: last.pt stays the last state that trained cleanly.
                if (is_eval or due or stop or (cfg.save_every and step % cfg.save_every == 0)) \
                        and trainer.nonfinite_streak == 0:
                    s.save_last(s.final_valid if is_eval else None)
                    stops.saved()
                if stop:
                    raise runtime.TrainingInterrupted(stops.requested or "a signal on another rank",
                                                      run.checkpoint_step() if s.is_main else None,
                                                      str(run.last), str(run.path))
                if out_of_time:
                    log.info("stopping at step %d: max_minutes=%g reached", step, cfg.max_minutes)
                    break
        if trainer.step == start_step and start_step >= cfg.steps:
            s.resumed_finished_run()
        test = s.test()
    finally:
        run.close()
    result = FitResult(run_dir=str(run.path), step=trainer.step, last_checkpoint=str(run.last),
                       best_checkpoint=str(run.best) if run.best.exists() else None, best_valid=s.best_valid,
                       final_valid=s.final_valid, test=test, nonfinite_skipped=trainer.nonfinite_total,
                       elapsed_s=time.perf_counter() - t_start, model=s.model)
    emit("end", result.summary())
    return result


class _Session:
    """What `fit` sets up and records: model, trainer and data (restored from last.pt on resume),
    best / final validation metrics, and the run folder it asks to record metrics, checkpoints and
    sample grids."""

    def __init__(self, model_config, cfg: TrainConfig, data, run: RunFolder, *, resume: bool,
                 model: SketchRNN | None, init_from, device: torch.device, rank: int, world_size: int,
                 emit: Callback):
        self.cfg, self.run, self.device, self.emit = cfg, run, device, emit
        self.rank, self.world_size, self.is_main = rank, world_size, rank == 0
        ckpt = self._resume_checkpoint(cfg) if resume else None
        if ckpt is None and run.has_run():
            raise ValueError(f"{run.path} already holds a run ({LAST_CKPT}); resume it or choose another run folder")
        source = ckpt  # the checkpoint whose weights, scale factor and class names the run starts from
        if init_from is not None:
            if resume or model is not None:
                raise ValueError("init_from starts a new run from a checkpoint; it cannot be combined with "
                                 "resume or a given model")
            init_from = resolve_checkpoint(init_from)  # a file, a run folder or a shipped name
            source = _init_checkpoint(init_from)
        if source is not None:
            model_config = config_from_dict(SketchRNNConfig, source["config"])

        self.cache = cache = _open_cache(data) if isinstance(data, (str, os.PathLike)) else data
        path = getattr(cache, "path", None)
        self.data_name = str(Path(path).resolve()) if path is not None else str(data)
        self.fingerprint = data_fingerprint(cache)
        if ckpt is not None:
            _check_same_data(ckpt, self.fingerprint, self.data_name, run.last)
        class_names = list(cache.class_names)
        self.scale = float(source["scale_factor"]) if source is not None else float(cache.scale_factor)
        self.class_map = None
        if source is not None:
            self.class_map = _label_map(source["class_names"], class_names, self.data_name)
            class_names = list(source["class_names"]) or class_names
        self.class_names = class_names
        if model is None:
            model_config = _model_config_for(model_config, class_names, self.data_name,
                                             int(getattr(cache, "max_sketch_len", 0)))

        runtime.seed_everything(cfg.seed)  # the same initial weights on every rank
        if model is None:
            model = SketchRNN(model_config)
        self.model, self.model_config = model, model.config
        if source is not None:
            model.load_state_dict(source["model"])
        model.to(device)
        forward_model: nn.Module = model
        if world_size > 1:
            forward_model = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None)
        self.trainer = Trainer(model, cfg, device, forward_model, world_size)
        self.extra_info = {"init_from": str(init_from.resolve())} if init_from is not None else {}

        augment = {"scale_range": cfg.augment_scale, "drop_prob": cfg.augment_drop} \
            if (cfg.augment_scale > 0 or cfg.augment_drop > 0) else None
        self.loader = make_batches(cache, "train", cfg.batch_size, self.model_config.max_seq_len,
                                   scale_factor=self.scale, shuffle=True, seed=cfg.seed, augment=augment, rank=rank,
                                   world_size=world_size, num_workers=cfg.num_workers,
                                   prefetch=2 if device.type == "cuda" and cfg.num_workers == 0 else 0,
                                   class_map=self.class_map, balance=cfg.balance_classes)
        self.window = _Window()
        self.best_valid_loss, self.best_valid, self.final_valid = math.inf, None, None
        self.saved_metrics: dict = {}
        if ckpt is not None:
            self._restore(ckpt["train_state"])
            self.saved_metrics = ckpt["extra"].get("metrics") or {}
        elif world_size > 1:
            torch.manual_seed(cfg.seed + 1000003 * rank)  # different dropout / z noise on each rank
            np.random.seed((cfg.seed + 1000003 * rank) % 2 ** 32)
        self.resumed = ckpt is not None

    # ------------------------------------------------------------------------------ setting up
    def _resume_checkpoint(self, cfg: TrainConfig) -> dict:
        last = self.run.last
        if not last.exists():
            raise FileNotFoundError(f"{last}: nothing to resume (no {LAST_CKPT} in {self.run.path})")
        ckpt = load_checkpoint(last)
        if "train_state" not in ckpt:
            raise CheckpointError(f"{last}: has no train_state; it cannot be resumed")
        _check_resume_config(ckpt["extra"].get("train_config", {}), cfg, last)
        return ckpt

    def _restore(self, ts: dict) -> None:
        last = self.run.last
        self.trainer.load_state_dict(ts)
        try:
            self.loader.load_state_dict(ts["loader"])
        except ValueError as err:  # another world size or batch size: the order cannot be repeated
            log.warning("%s: %s; starting epoch %d afresh", last, err, int(ts["loader"]["epoch"]) + 1)
            self.loader.set_epoch(int(ts["loader"]["epoch"]) + 1, 0)
        self.best_valid_loss = float(ts.get("best_valid_loss", math.inf))
        self.best_valid = ts.get("best_valid") or None
        if ts.get("window"):
            self.window.load_state_dict(ts["window"])
        rngs = ts["rng"]
        if len(rngs) == self.world_size:
            runtime.set_rng_state(rngs[self.rank])
        else:
            log.warning("%s was saved by %d processes, resuming with %d: RNG streams are reseeded, so the run "
                        "will not repeat the uninterrupted trajectory exactly", last, len(rngs), self.world_size)
            runtime.seed_everything(self.cfg.seed + 1000003 * (self.rank + 1) + self.trainer.step)
        self.run.truncate(self.trainer.step)

    def start_info(self) -> dict:
        model, loader = self.model, self.loader
        return {"device": str(self.device), "rank": self.rank, "world_size": self.world_size,
                "start_step": self.trainer.step, "steps": self.cfg.steps, "resumed": self.resumed,
                "num_params": sum(p.numel() for p in model.parameters()),
                "train_sketches": len(loader.dataset.indices), "dropped_too_long": loader.dataset.num_too_long,
                "batches_per_epoch": len(loader), "num_threads": torch.get_num_threads(),
                "epoch_sketches": loader.sampler.num_samples, "balance_classes": self.cfg.balance_classes,
                "model_config": dataclasses.asdict(self.model_config), "run_dir": str(self.run.path),
                "data": self.data_name, "data_fingerprint": self.fingerprint,
                "data_max_len": int(getattr(self.cache, "max_sketch_len", 0))}

    # ------------------------------------------------------------------------------ recording
    def _extra(self, metrics: dict | None) -> dict:
        return {"data": self.data_name, "data_fingerprint": self.fingerprint, "step": self.trainer.step,
                "metrics": metrics or {}, "train_config": dataclasses.asdict(self.cfg),
                "world_size": self.world_size, **self.extra_info}

    def _checkpoint(self, which: str, metrics: dict | None, train_state: dict | None = None) -> None:
        path = self.run.save_checkpoint(which, kind="sketch_rnn", config=self.model_config, model=self.model,
                                        class_names=self.class_names, scale_factor=self.scale,
                                        extra=self._extra(metrics), train_state=train_state)
        if path is not None:
            self.emit("checkpoint", {"path": str(path), "step": self.trainer.step, "which": which})

    def record(self, rec: dict) -> None:
        if self.is_main:
            self.run.record(rec)
            self.emit("metrics", rec)

    def record_train(self, step: int, info: dict) -> None:
        rec = self.window.record(step, info, self.trainer.nonfinite_total, self.world_size)
        if rec is not None:
            self.record(rec)

    def has_split(self, name: str) -> bool:
        return name in self.cache.splits and len(self.cache.split(name)) > 0

    def _evaluate(self, split: str, model: nn.Module | None = None, max_batches: int = 0) -> dict:
        cfg = self.cfg
        batches = make_batches(self.cache, split, cfg.batch_size, self.model_config.max_seq_len,
                               scale_factor=self.scale, shuffle=False, seed=cfg.seed, class_map=self.class_map,
                               drop_last=False)
        return evaluate(model or self.model, batches, kl_weight=cfg.kl_weight, kl_tolerance=cfg.kl_tolerance,
                        device=self.device, seed=cfg.seed, max_batches=max_batches)

    def _quick_score(self) -> dict:
        """The quality curve's point: samples against validation drawings (TrainConfig.score_samples)."""
        from sketchvae.evaluation import quick_score  # a measuring instrument, loaded only when asked for
        from sketchvae.sample import Sampler

        view = self.cache.split("valid")
        labels = None
        if self.model_config.class_conditional:
            labels = np.asarray(view.labels, dtype=np.int64)
            labels = self.class_map[labels] if self.class_map is not None else labels
        sampler = Sampler(self.model, float(self.scale), list(self.class_names))
        return quick_score(sampler, view, labels, self.cfg.score_samples, seed=self.cfg.seed)

    def validate(self) -> None:
        """Validation loss (-> metrics, best.pt) and the sample grid of this step (rank 0)."""
        if not self.is_main:
            return
        step = self.trainer.step
        if self.has_split("valid"):
            metrics = self._evaluate("valid", max_batches=self.cfg.eval_batches)
            self.record({"step": step, "split": "valid", **metrics, "kl_weight": self.cfg.kl_weight})
            if metrics["loss"] < self.best_valid_loss:
                self.best_valid_loss, self.best_valid = metrics["loss"], {**metrics, "step": step}
                self._checkpoint("best", metrics)
            self.final_valid = metrics
            if self.cfg.score_samples:
                try:
                    self.record({"step": step, "split": "score", **self._quick_score()})
                except ValueError as err:  # a validation split too small for the test: no point, no crash
                    log.warning("step %d: no sample-quality score (--score-samples): %s", step, err)
        grid = self.run.record_samples(step, self.model, self.scale, self.class_names, seed=self.cfg.seed)
        if grid is not None:
            self.emit("samples", {"path": str(grid), "step": step})

    def save_last(self, valid_metrics: dict | None) -> None:
        rngs = [runtime.rng_state()]
        if self.world_size > 1:
            gathered: list = [None] * self.world_size
            torch.distributed.all_gather_object(gathered, rngs[0])
            rngs = gathered
        if not self.is_main:
            return
        train_state = self.trainer.state_dict()
        train_state.update({"loader": self.loader.state_dict(), "rng": rngs, "best_valid_loss": self.best_valid_loss,
                            "best_valid": self.best_valid or {}, "window": self.window.state_dict()})
        self._checkpoint("last", valid_metrics, train_state)

    def agree(self, stop: bool, save_due: bool, out_of_time: bool = False) -> tuple[bool, bool, bool]:
        """Under DDP every rank must stop, save and end (max_minutes) at the same step: any rank's
        request counts."""
        if self.world_size == 1:
            return stop, save_due, out_of_time
        flags = torch.tensor([int(stop), int(save_due), int(out_of_time)], dtype=torch.int32, device=self.device)
        torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
        return bool(flags[0]), bool(flags[1]), bool(flags[2])

    def nonfinite_step(self, step: int) -> None:
        trainer, cfg = self.trainer, self.cfg
        log.warning("step %d: non-finite loss or gradient (%d in a row); step skipped", step, trainer.nonfinite_streak)
        if trainer.nonfinite_streak >= cfg.max_nonfinite:
            last = self.run.last
            where = f"{last} (step {self.run.checkpoint_step()})" if last.exists() else "none was written yet"
            raise TrainingDiverged(
                f"training stopped at step {step}: {trainer.nonfinite_streak} non-finite losses or gradients "
                f"in a row (max_nonfinite={cfg.max_nonfinite}). The last good checkpoint is {where}. "
                f"Try a lower lr, clip_mode 'norm' or a smaller grad_clip.")

    def resumed_finished_run(self) -> None:
        """A resumed run that had already finished: its final validation is in last.pt (it is not
        recorded a second time)."""
        if self.saved_metrics:
            self.final_valid = self.saved_metrics
        elif self.is_main and self.has_split("valid"):
            self.final_valid = self._evaluate("valid", max_batches=self.cfg.eval_batches)

    def test(self) -> dict | None:
        """Test metrics of best.pt (the final weights without one), recorded; rank 0 only."""
        if not (self.is_main and self.cfg.test_at_end and self.has_split("test")):
            return None
        best = self.run.best
        model = build_model(load_checkpoint(best), best).to(self.device) if best.exists() else self.model
        test = self._evaluate("test", model)
        self.record({"step": self.trainer.step, "split": "test", **test, "kl_weight": self.cfg.kl_weight,
                     "checkpoint": BEST_CKPT if best.exists() else LAST_CKPT})
        return test


class DataMismatch(ValueError):
    """`fit(resume=True)` was given data other than the run's own (different fingerprint)."""


def _check_same_data(ckpt: dict, fingerprint: str, data_name: str, last: Path) -> None:
    saved = ckpt["extra"].get("data_fingerprint")
    if saved and saved != fingerprint:
        was = ckpt["extra"].get("data", "?")
        raise DataMismatch(
            f"{data_name} is not the data this run was trained on ({last} was trained on {was}; fingerprints "
            f"{saved} and {fingerprint} differ). A resumed run continues on its own data; to train on this data "
            f"starting from these weights, start a new run from the checkpoint "
            f"(sketchvae train DATA -o NEW_RUN --init-from {last}; in Python fit(..., init_from=...))")


def _init_checkpoint(path) -> dict:
    ckpt = load_checkpoint(path)
    if ckpt["kind"] != "sketch_rnn":
        raise CheckpointError(f"{path}: a {ckpt['kind']!r} checkpoint, not a Sketch-RNN")
    return ckpt


def _model_config_for(config: SketchRNNConfig | dict | None, class_names: list[str], source: str,
                      data_max_len: int = 0) -> SketchRNNConfig:
    """A SketchRNNConfig from a config or a dict of fields; in "class_vae" mode a dict without
    `num_classes` gets the data's class count, and a config must agree with the data.

    N_max: a dict (or None) without `max_seq_len` gets `data_max_len`, the longest sketch in the
    prepared data (magenta's `utils.get_max_len` over train + valid + test), when it is > 0.  A
    SketchRNNConfig is used as given."""
    if config is None:
        config = {}
    if isinstance(config, dict):
        fields = dict(config)
        if fields.get("mode") == "class_vae" and not fields.get("num_classes"):
            fields["num_classes"] = len(class_names)
        if fields.get("max_seq_len") is None and data_max_len > 0:
            fields["max_seq_len"] = int(data_max_len)
            log.info("max_seq_len (N_max) = %d, the longest sketch in %s", data_max_len, source)
        config = config_from_dict(SketchRNNConfig, fields)
    if config.class_conditional and config.num_classes != len(class_names):
        raise ValueError(f"mode 'class_vae' with num_classes={config.num_classes}, but {source} has "
                         f"{len(class_names)} classes ({class_names[:10]}{' ...' if len(class_names) > 10 else ''})")
    return config


class _Window:
    """Running sums for a train metrics line (finite steps only)."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.sums = dict.fromkeys(("loss", "recon", "offset", "pen", "kl", "grad_norm"), 0.0)
        self.n = 0
        self.skipped = 0
        self.sketches = 0
        self.seconds = 0.0

    def state_dict(self) -> dict:
        """The partial window, saved in last.pt so that a run stopped between two train lines writes
        the same next line after resuming."""
        return {"sums": dict(self.sums), "n": self.n, "skipped": self.skipped, "sketches": self.sketches,
                "seconds": self.seconds}

    def load_state_dict(self, state: dict) -> None:
        self.sums = {k: float(state["sums"][k]) for k in self.sums}
        self.n, self.skipped, self.sketches = int(state["n"]), int(state["skipped"]), int(state["sketches"])
        self.seconds = float(state["seconds"])

    def add(self, info: dict, sketches: int, seconds: float) -> None:
        self.sketches += sketches
        self.seconds += seconds
        if info["finite"]:
            for k in self.sums:
                self.sums[k] += info[k]
            self.n += 1
        else:
            self.skipped += 1

    def record(self, step: int, info: dict, nonfinite_total: int, world_size: int) -> dict | None:
        if self.n == 0 and self.skipped == 0:
            return None
        rec = {"step": step, "split": "train"}
        for k, v in self.sums.items():
            rec[k] = v / self.n if self.n else float("nan")
        rec.update({"kl_weight": info["kl_weight"], "lr": info["lr"],
                    "sketches_per_s": self.sketches / self.seconds if self.seconds > 0 else 0.0,
                    "nonfinite_skipped": nonfinite_total, "steps_in_window": self.n + self.skipped})
        if world_size > 1:
            rec["world_size"] = world_size
        self.reset()
        return _json_safe(rec)


def _json_safe(rec: dict) -> dict:
    """NaN / inf are not JSON: write them as null."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in rec.items()}


def _check_resume_config(saved: dict, cfg: TrainConfig, path: Path) -> None:
    if not saved:
        return
    now = dataclasses.asdict(cfg)
    diff = {k: (saved[k], now[k]) for k in now if k in saved and k not in RESUMABLE_OVERRIDES and saved[k] != now[k]}
    if diff:
        shown = ", ".join(f"{k}: saved {a!r}, given {b!r}" for k, (a, b) in sorted(diff.items()))
        raise ValueError(f"{path}: cannot resume with different training options ({shown}); only "
                         f"{', '.join(RESUMABLE_OVERRIDES)} may change on resume")


def saved_train_config(run_dir: str | os.PathLike) -> TrainConfig:
    """The TrainConfig a run folder's last.pt was trained with (to resume it with the same options)."""
    path = Path(run_dir) / LAST_CKPT
    ckpt = load_checkpoint(path)
    saved = ckpt["extra"].get("train_config")
    if not saved:
        raise CheckpointError(f"{path}: no training options saved; cannot resume")
    return config_from_dict(TrainConfig, saved)


# --------------------------------------------------------------------------------------------------
# Evaluating a checkpoint


def evaluate_checkpoint(checkpoint: str | os.PathLike, data, split: str = "test", *, batch_size: int = 100,
                        device: str = "auto", seed: int = 0, max_batches: int = 0,
                        kl_weight: float | None = None, kl_tolerance: float | None = None) -> dict:
    """Evaluate a saved Sketch-RNN on a split of a prepared cache (path or StrokeCache).

    The data is normalised with the checkpoint's scale factor and its labels mapped onto the
    checkpoint's class names.  kl_weight / kl_tolerance default to those the model was trained
    with (else 0.5 / 0.2).  Sketches longer than the model's max_seq_len are left out (`skipped`).
    Returns `evaluate`'s dict plus `split`, `skipped`, `checkpoint`, `step`.
    """
    dev = runtime.resolve_device(device)
    if dev.type == "cpu":
        runtime.configure_cpu()
    ckpt = load_checkpoint(checkpoint)
    if ckpt["kind"] != "sketch_rnn":
        raise CheckpointError(f"{checkpoint}: a {ckpt['kind']!r} checkpoint, not a Sketch-RNN")
    model = build_model(ckpt, checkpoint).to(dev)
    tc = ckpt["extra"].get("train_config") or {}
    kl_weight = tc.get("kl_weight", 0.5) if kl_weight is None else kl_weight
    kl_tolerance = tc.get("kl_tolerance", 0.2) if kl_tolerance is None else kl_tolerance
    cache = _open_cache(data) if isinstance(data, (str, os.PathLike)) else data
    source = str(getattr(cache, "path", data))
    class_map = _label_map(ckpt["class_names"], cache.class_names, source) if model.config.class_conditional else None
    batches = make_batches(cache, split, batch_size, model.config.max_seq_len, scale_factor=float(ckpt["scale_factor"]),
                           shuffle=False, seed=seed, class_map=class_map, drop_last=False)
    if len(batches.dataset.indices) == 0:
        raise ValueError(f"{source}: split {split!r} has no sketches of at most {model.config.max_seq_len} points")
    metrics = evaluate(model, batches, kl_weight=kl_weight, kl_tolerance=kl_tolerance, device=dev,
                       seed=seed, max_batches=max_batches)
    return {**metrics, "split": split, "skipped": batches.dataset.num_too_long, "checkpoint": str(checkpoint),
            "step": ckpt["extra"].get("step")}


__all__ = ["TrainConfig", "Trainer", "FitResult", "TrainingDiverged", "TrainingInterrupted", "DataMismatch",
           "fit", "evaluate", "evaluate_checkpoint",
           "prepare_data", "batch_losses", "make_batches", "saved_train_config", "CLIP_MODES", "RESUMABLE_OVERRIDES"]
