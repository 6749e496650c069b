"""Training loop for the MNIST image VAEs: epochs over a binarised tensor data set, Adam, per-epoch
test ELBO, ``best.pt`` / ``last.pt`` and ``metrics.jsonl`` in the run folder, exact resume.

Objective per image (Kingma & Welling 2014; beta-VAE, Higgins et al. 2017):

    loss = -log p(x | z) + beta * eta_step * KL(q(z | x) || p(z)),   z ~ q(z | x)

eta_step is the shared KL warm-up (`sketchvae.losses.KLSchedule`: eta_step = 1 - (1 - eta_min) R^step);
``kl_eta_min = 1`` (default) switches it off, beta = 1 is the plain ELBO.

Run folder (same layout as the Sketch-RNN trainer):

* ``last.pt``   after every epoch, every ``save_minutes`` and on Ctrl-C / SIGTERM: model, config, and
                ``train_state`` (optimizer, epoch, batches done in it, step, RNG state, best ELBO) for
                ``resume=True``; written atomically.
* ``best.pt``   the epoch with the highest ELBO on a validation set held out from the training
                images (the last ``valid_size``, default 5000). The test set is never used to choose
                a model; with ``valid_size=0`` there is no selection and best.pt is the last epoch.
* ``metrics.jsonl``  one line per epoch and split: ``step``, ``epoch``, ``split`` (train | valid | test),
                ``loss``, ``recon``, ``kl``, ``elbo`` (nats per image); train lines add ``kl_weight``,
                ``lr``, ``images_per_s``, ``seconds``.

The adversarial autoencoder (:mod:`sketchvae.image.aae`, config ``AAEConfig``) trains in the same
loop, run folder and resume: only the per-batch step, the metrics (train: ``loss``, ``recon``,
``disc``, ``gen``; valid / test: ``recon``, ``disc``) and best.pt (its last epoch) differ. A trainer
object (``_VAETrainer`` here, ``aae.AAETrainer``) holds a model's optimisers and step.

Dynamic binarisation draws epoch e's data from a generator seeded by (seed, e) and the batch order
is a function of (seed, e), so resuming - at an epoch boundary or inside an epoch, where the batches
already done are skipped - reproduces the uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from pathlib import Path
from typing import Callable

import torch

from sketchvae import runtime
from sketchvae.checkpoint import CheckpointError, build_model, config_from_dict, load_checkpoint, save_checkpoint
from sketchvae.image import aae
from sketchvae.image import data as mnist
from sketchvae.image.evaluate import evaluate
from sketchvae.image.models import KIND, ImageVAE, ImageVAEConfig, elbo_terms, vae_loss
from sketchvae.losses import KLSchedule

log = logging.getLogger(__name__)

CLASS_NAMES = [str(i) for i in range(mnist.NUM_CLASSES)]


@dataclasses.dataclass
class ImageTrainConfig:
    epochs: int = 50  # passes over the training set (counted from 0, also when resuming)
    batch_size: int = 128  # images per optimiser step, 32..1024
    lr: float = 1e-3  # Adam learning rate, 1e-4..3e-3
    beta: float = 1.0  # final KL weight (1 = ELBO; > 1 beta-VAE)
    kl_eta_min: float = 1.0  # KL warm-up: weight at step 0 as a fraction of beta (1 = no warm-up)
    kl_decay_rate: float = 0.999  # KL warm-up rate R per step (0.999: ~95% after 3000 steps)
    binarize: str = "dynamic"  # dynamic | static | grey (see sketchvae.image.data)
    seed: int = 0  # weights, data order, binarisation and z noise
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    limit: int = 0  # train on the first N images only (0 = all; for tests and quick looks)
    valid_size: int = 5000  # hold out the last N training images to select best.pt (0 = best.pt is the last epoch)
    eval_limit: int = 0  # per-epoch evaluation on the first N images of the test split (0 = all)
    eval_batch_size: int = 1000  # images per evaluation batch
    adv_lr: float = 5e-4  # AAE only: Adam lr of the discriminator and of the encoder as generator, 1e-4..lr

    def __post_init__(self) -> None:
        for name, lo in (("epochs", 0), ("batch_size", 1), ("limit", 0), ("valid_size", 0), ("eval_limit", 0),
                         ("eval_batch_size", 1)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
        for name in ("lr", "adv_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.binarize not in mnist.BINARIZE:
            raise ValueError(f"unknown binarisation {self.binarize!r}; choose from {list(mnist.BINARIZE)}")
        self.kl_schedule()  # validates beta, eta_min, rate

    def kl_schedule(self) -> KLSchedule:
        return KLSchedule(kl_weight=self.beta, eta_min=self.kl_eta_min, rate=self.kl_decay_rate)


@dataclasses.dataclass
class ImageFitResult:
    run_dir: Path
    epochs: int  # epochs completed in total
    step: int
    best_elbo: float  # on the validation split, nats per image (nan without one, and for an AAE)
    last: dict  # the last epoch's metrics per split


class _VAETrainer:
    """The VAE's optimiser and step: Adam on -ELBO with the KL warm-up weight."""

    kind = KIND
    train_keys = ("loss", "recon", "kl")

    def __init__(self, model: ImageVAE, config: ImageTrainConfig):
        self.model, self.config = model, config
        self.opt = torch.optim.Adam(model.parameters(), lr=config.lr)
        self.schedule = config.kl_schedule()

    def state_dict(self) -> dict:
        return self.opt.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.opt.load_state_dict(state)
        for group in self.opt.param_groups:
            group["lr"] = self.config.lr

    def train_batch(self, x, labels, step: int):
        terms = elbo_terms(self.model, x, labels)
        loss = vae_loss(terms, self.schedule.weight(step))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        with torch.no_grad():
            return torch.stack([loss.detach() * len(x), terms["recon"].sum(), terms["kl"].sum()])

    def train_record(self, means: dict, step: int) -> dict:
        return {**means, "elbo": -(means["recon"] + means["kl"]), "kl_weight": self.schedule.weight(step - 1),
                "lr": self.config.lr}

    def evaluate(self, data, batch_size: int) -> dict:
        m = evaluate(self.model, data, batch_size=batch_size, seed=self.config.seed)
        return {"loss": -m["elbo"], "recon": m["recon"], "kl": m["kl"], "elbo": m["elbo"]}

    @staticmethod
    def score(rec: dict, epoch: int) -> float:
        return rec["elbo"]


_MODELS = {KIND: (ImageVAEConfig, ImageVAE, _VAETrainer), aae.KIND: (aae.AAEConfig, aae.AAE, aae.AAETrainer)}


def _kind_of(model_config) -> str:
    for kind, (cfg_cls, _, _) in _MODELS.items():
        if isinstance(model_config, cfg_cls):
            return kind
    raise TypeError(f"not an image model config: {type(model_config).__name__}")


def _truncate_metrics(path: Path, epoch: int) -> None:
    """Keep lines of the first `epoch` epochs (numbered from 1): a resumed run rewrites what follows."""
    runtime.truncate_jsonl(path, lambda rec: rec.get("epoch", 0) <= epoch)


def load_run(run_dir: str | os.PathLike) -> tuple[ImageVAEConfig | aae.AAEConfig, ImageTrainConfig, str, dict]:
    """(model config, train config, data_dir, checkpoint) saved in `run_dir/last.pt`, for resuming."""
    path = Path(run_dir) / "last.pt"
    ckpt = load_checkpoint(path)
    if ckpt["kind"] not in _MODELS or "train_state" not in ckpt:
        raise CheckpointError(f"{path}: not a resumable image VAE / AAE checkpoint (kind {ckpt['kind']!r})")
    extra = ckpt["extra"]
    return (config_from_dict(_MODELS[ckpt["kind"]][0], ckpt["config"]),
            config_from_dict(ImageTrainConfig, extra["train_config"]), extra.get("data_dir", ""), ckpt)


def fit(model_config: ImageVAEConfig, config: ImageTrainConfig, data_dir: str | os.PathLike,
        run_dir: str | os.PathLike, *, resume: bool = False, progress: bool = False,
        callback: Callable[[dict], None] | None = None, save_minutes: float = 10.0) -> ImageFitResult:
    """Train (or, with `resume`, continue from ``run_dir/last.pt``) an image VAE (`model_config` an
    ``ImageVAEConfig``) or adversarial autoencoder (an ``aae.AAEConfig``).

    On resume the model comes from last.pt (`model_config` is ignored); `config` may differ from the
    saved one (e.g. more epochs). `callback(record)` gets every metrics record.  Ctrl-C / SIGTERM
    save last.pt after the current batch and raise `runtime.TrainingInterrupted` (a second one stops
    at once); last.pt is also saved every `save_minutes` (0 = only after each epoch).
    """
    with runtime.StopRequests(save_minutes) as stops:
        return _fit(model_config, config, data_dir, run_dir, resume=resume, progress=progress, callback=callback,
                    stops=stops)


def _fit(model_config: ImageVAEConfig, config: ImageTrainConfig, data_dir: str | os.PathLike,
         run_dir: str | os.PathLike, *, resume: bool, progress: bool, callback: Callable[[dict], None] | None,
         stops: runtime.StopRequests) -> ImageFitResult:
    run_dir = Path(run_dir)
    last_path, best_path, metrics_path = run_dir / "last.pt", run_dir / "best.pt", run_dir / "metrics.jsonl"
    if not resume and last_path.exists():
        raise ValueError(f"{run_dir} already holds a run (last.pt); resume it or choose another folder")
    device = runtime.resolve_device(config.device)
    runtime.seed_everything(config.seed)

    ckpt = None
    if resume:
        model_config, _, _, ckpt = load_run(run_dir)
    kind = _kind_of(model_config)
    model = _MODELS[kind][1](model_config).to(device)
    trainer = _MODELS[kind][2](model, config)
    epoch, step, best = 0, 0, -float("inf")
    skip, partial = 0, None  # batches of `epoch` already done, and their summed losses (resuming inside an epoch)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        ts = ckpt["train_state"]
        trainer.load_state_dict(ts["optimizer"])
        epoch, step, best = int(ts["epoch"]), int(ts["step"]), float(ts["best_elbo"])
        skip, partial = int(ts.get("batch", 0)), ts.get("partial")
        runtime.set_rng_state(ts["rng"])
        _truncate_metrics(metrics_path, epoch)

    # data: whole splits as tensors on the device
    images, labels = mnist.load_split(data_dir, "train", config.limit or None)
    valid = None
    if config.valid_size:
        if config.valid_size >= len(images):
            raise ValueError(f"valid_size {config.valid_size} leaves no training images (have {len(images)})")
        valid = mnist.ImageData(images[-config.valid_size:], labels[-config.valid_size:],
                                binarize=config.binarize, device=device, train=False)
        images, labels = images[:-config.valid_size], labels[:-config.valid_size]
    train = mnist.ImageData(images, labels, binarize=config.binarize, device=device, seed=config.seed)
    test = mnist.load_data(data_dir, "test", binarize=config.binarize, device=device,
                           limit=config.eval_limit or None)
    select = "valid" if valid is not None else None  # never select on test
    conditional = model_config.num_classes > 0
    run_dir.mkdir(parents=True, exist_ok=True)

    def record(rec: dict) -> None:
        with open(metrics_path, "a") as f:
            f.write(json.dumps(rec) + "\n")
        if callback is not None:
            callback(rec)

    def extra(metrics: dict) -> dict:
        return {"data_dir": str(data_dir), "binarize": config.binarize, "epoch": epoch, "step": step,
                "metrics": metrics, "train_config": dataclasses.asdict(config)}

    def save_last(batch: int, sums: torch.Tensor | None, seconds: float) -> None:
        train_state = {"optimizer": trainer.state_dict(), "epoch": epoch, "step": step, "best_elbo": best,
                       "rng": runtime.rng_state(), "batch": batch}
        if batch:
            train_state["partial"] = {"sums": sums.detach().cpu(), "seconds": seconds}
        save_checkpoint(last_path, kind=kind, config=model_config, model=model, class_names=CLASS_NAMES,
                        extra=extra(last_metrics), train_state=train_state)

    last_metrics: dict = {}
    nb = train.num_batches(config.batch_size)
    while epoch < config.epochs:
        model.train()
        t0 = time.perf_counter()
        sums = torch.zeros(len(trainer.train_keys), device=device)  # e.g. loss, recon, kl (summed over images)
        if partial is not None:
            sums, t0 = partial["sums"].to(device), t0 - float(partial["seconds"])
        partial = None
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=nb, initial=skip, desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch",
                       leave=False)
        for i, (x, y) in enumerate(train.batches(config.batch_size, epoch=epoch)):
            if i < skip:  # done before the run was stopped
                continue
            batch_sums = trainer.train_batch(x, y if conditional else None, step)
            step += 1
            sums += batch_sums
            if bar is not None:
                bar.update(1)
                if i % 50 == 0:
                    bar.set_postfix(loss=f"{batch_sums[0].item() / len(x):.2f}")
            if (stops.requested or stops.save_due()) and i + 1 < nb:
                save_last(i + 1, sums, time.perf_counter() - t0)
                stops.saved()
                if stops.requested:
                    if bar is not None:
                        bar.close()
                    raise runtime.TrainingInterrupted(stops.requested, step, str(last_path), str(run_dir))
        skip = 0
        if bar is not None:
            bar.close()
        seconds = time.perf_counter() - t0
        means = dict(zip(trainer.train_keys, (sums / len(train)).tolist()))
        train_rec = {"step": step, "epoch": epoch + 1, "split": "train", **trainer.train_record(means, step),
                     "images_per_s": len(train) / seconds, "seconds": seconds}
        epoch += 1
        record(train_rec)
        last_metrics = {"train": train_rec}
        for name, split in (("valid", valid), ("test", test)):
            if split is None:
                continue
            rec = {"step": step, "epoch": epoch, "split": name,
                   **trainer.evaluate(split, config.eval_batch_size)}
            record(rec)
            last_metrics[name] = rec
        model.train()
        sel = trainer.score(last_metrics[select], epoch) if select else float(epoch)  # no validation: latest epoch
        is_best = sel > best
        if is_best:
            best = sel
            save_checkpoint(best_path, kind=kind, config=model_config, model=model, class_names=CLASS_NAMES,
                            extra=extra(last_metrics))
        save_last(0, None, 0.0)
        stops.saved()
        if stops.requested:  # the signal came during the epoch's last batch or its evaluation
            raise runtime.TrainingInterrupted(stops.requested, step, str(last_path), str(run_dir))
    return ImageFitResult(run_dir=run_dir, epochs=epoch, step=step,
                          best_elbo=best if select and kind == KIND else float("nan"),
                          last=last_metrics)


def load_model(path: str | os.PathLike, device="cpu") -> tuple[ImageVAE | aae.AAE, dict]:
    """(model in eval mode on `device`, checkpoint dict) of an image VAE or AAE checkpoint."""
    ckpt = load_checkpoint(path)
    if ckpt["kind"] not in _MODELS:
        raise CheckpointError(f"{path}: a {ckpt['kind']!r} checkpoint, not an image VAE or AAE "
                              f"({' or '.join(map(repr, _MODELS))})")
    model = build_model(ckpt, path).to(runtime.resolve_device(str(device)) if isinstance(device, str) else device)
    return model, ckpt
