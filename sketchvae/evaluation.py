"""Sample quality of a Sketch-RNN measured against held-out real drawings (`sketchvae score`).

    result = score(load("sheep"), "data/sheep.h5", split="test", n=1000, seed=0)
    result["classes"][0]["c2st"]       # {"accuracy": 0.87, "se": 0.014, ...}: 0.5 = indistinguishable

No pretrained network is needed; every instrument is trained here, on the data given:

* **Two-sample classifier test** (C2ST; Lopez-Paz & Oquab 2017, *Revisiting classifier two-sample
  tests*): m model samples and m held-out real drawings are rasterised (`rasterize`), and a small
  CNN (`sketchvae.image.classifier.DigitClassifier`, the MNIST classifier's architecture at 32 x 32)
  is trained k-fold to tell them apart; every drawing is predicted once, by the network that did not
  see it.  Accuracy 0.5: the network cannot tell the samples from real drawings; 1.0: every sample is
  recognisably fake.  Its standard error is the binomial one over the 2m predictions,
  sqrt(acc (1 - acc) / 2m) (what the paper's test uses); it leaves out the variation from training the
  network and drawing the samples, which `seed` changes (README: measured spread).
* **Control**: the same test with m drawings of the training split in place of the samples
  (real vs real at the same sizes).  It should be near 0.5; how far it strays shows the test's noise.
* **Recognised as asked** (`class_vae` models): a CNN trained on the data's training split to name
  the class (`recogniser_n` drawings per class) names the class of each sample; the fraction named as
  the class asked for, beside the same fraction for the held-out real drawings (the recogniser's own
  accuracy on that class, the ceiling).
* **Statistics** (`sketch_stats`) of samples and held-out drawings side by side: points per drawing,
  strokes per drawing, the fraction of samples that ended by themselves (drew the end state before
  the model's `max_seq_len` points), and the bounding box (data units, median).

Why a CNN on rasters, not a GRU on stroke-5: the score should judge what a person sees.  The real
data sets were simplified (Ramer-Douglas-Peucker) and the model's samples were not, so the spacing of
points alone tells them apart; a sequence model would find that tell and score every model near 1.0.
A raster, scaled to its bounding box, keeps the picture and drops the point spacing, the size and the
drawing order; the statistics report those separately.  A small CNN on 32 x 32 images also trains in
seconds on one CPU thread.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Callable, Sequence

import numpy as np
import torch

from sketchvae.distributions import check_convention
from sketchvae.image.classifier import ClassifierConfig, fit_classifier
from sketchvae.sample import Sampler, class_index, sample
from sketchvae.strokes import bounds


@dataclasses.dataclass
class ScoreConfig:
    n: int = 1000  # samples per class; the test uses m = min(n, held-out drawings of the class) of each
    temperature: float = 0.4  # sampling temperature tau > 0 (sample.py's conventions)
    convention: str | None = None  # "paper" | "magenta" | "magenta-js"; None: the checkpoint's own
    folds: int = 5  # k of the k-fold two-sample test (>= 2)
    epochs: int = 10  # training epochs of each fold's network
    image_size: int = 32  # rasters are image_size x image_size (a multiple of 4)
    recogniser_n: int = 2000  # training drawings per class for the class recogniser (class_vae)
    recogniser_epochs: int = 6
    seed: int = 0  # seeds the samples, the choice of drawings and every network

    def __post_init__(self) -> None:
        for name, lo in (("n", 1), ("folds", 2), ("epochs", 1), ("image_size", 4), ("recogniser_n", 1),
                         ("recogniser_epochs", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"ScoreConfig.{name}={v!r} must be an integer >= {lo}")
        if self.image_size % 4:
            raise ValueError(f"ScoreConfig.image_size={self.image_size} must be a multiple of 4")
        t = self.temperature
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t <= 0:
            raise ValueError(f"ScoreConfig.temperature={t!r} must be a number > 0")


# ------------------------------------------------------------------------------------------ rasters
def rasterize(sketches: Sequence[np.ndarray], size: int = 32, margin: float = 1.0) -> torch.Tensor:
    """Stroke-3 drawings -> grey images (N, size * size) float32 in [0, 1] (1 = ink), row = y.

    Each drawing is scaled to fit its bounding box into the image (aspect ratio kept, centred,
    `margin` pixels free on each side); every pen-down segment is sampled every half pixel and the
    samples splatted bilinearly, clipped at 1 (lines about 1.5 pixels wide, anti-aliased).  A drawing
    of no points is a blank image.
    """
    out = np.zeros((len(sketches), size * size), dtype=np.float32)
    for k, s3 in enumerate(sketches):
        s3 = np.asarray(s3, dtype=np.float64)
        if len(s3) == 0:
            continue
        xy = np.cumsum(s3[:, 0:2], axis=0)  # absolute points (n, 2)
        lo, hi = xy.min(0), xy.max(0)
        span = max(float((hi - lo).max()), 1e-9)
        p = (xy - (lo + hi) / 2) * ((size - 1 - 2 * margin) / span) + (size - 1) / 2
        down = s3[:-1, 2] < 0.5  # the pen stays down from point i to i + 1
        a, b = p[:-1][down], p[1:][down]
        steps = np.ceil(np.linalg.norm(b - a, axis=1) * 2).astype(np.int64) + 1  # samples per segment
        seg = np.repeat(np.arange(len(a)), steps)
        t = (np.arange(len(seg)) - np.repeat(np.cumsum(steps) - steps, steps)) / np.repeat(steps, steps)
        q = np.concatenate([a[seg] + t[:, None] * (b - a)[seg], p])  # (Q, 2): x, y in pixels
        x0, y0 = np.floor(q[:, 0]), np.floor(q[:, 1])
        fx, fy = q[:, 0] - x0, q[:, 1] - y0
        img = out[k]
        for dx, dy, w in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
            xs, ys = (x0 + dx).astype(np.int64), (y0 + dy).astype(np.int64)
            ok = (xs >= 0) & (xs < size) & (ys >= 0) & (ys < size)
            np.add.at(img, ys[ok] * size + xs[ok], w[ok])
    np.clip(out, 0.0, 1.0, out=out)
    return torch.from_numpy(out)


# ------------------------------------------------------------------------------------------ statistics
def sketch_stats(sketches: Sequence[np.ndarray], max_len: int | None = None) -> dict:
    """Simple statistics of stroke-3 drawings: `n`, `points` (mean points per drawing), `points_median`,
    `strokes` (mean pen lifts per drawing), `ended` (fraction with fewer than `max_len` points, i.e. that
    drew the end state themselves; None without max_len), `width` / `height` (median bounding box,
    data units)."""
    if not len(sketches):
        raise ValueError("no drawings to describe")
    lengths = np.array([len(s) for s in sketches], dtype=np.int64)
    strokes = np.array([int((np.asarray(s)[:, 2] > 0.5).sum()) if len(s) else 0 for s in sketches])
    boxes = np.zeros((len(sketches), 2))
    for k, s in enumerate(sketches):
        x0, x1, y0, y1 = bounds(s)
        boxes[k] = (x1 - x0, y1 - y0)
    return {"n": len(sketches), "points": float(lengths.mean()), "points_median": float(np.median(lengths)),
            "strokes": float(strokes.mean()), "ended": None if max_len is None else float((lengths < max_len).mean()),
            "width": float(np.median(boxes[:, 0])), "height": float(np.median(boxes[:, 1]))}


# ------------------------------------------------------------------------------------------ two-sample test
def _net_config(image_size: int, num_classes: int) -> ClassifierConfig:
    # the MNIST classifier's layers, narrower: conv 16 -> 32, dense 64 (trains in seconds on one thread)
    return ClassifierConfig(channels=16, hidden_size=64, dropout=0.25, num_classes=num_classes, image_size=image_size)


def two_sample_test(real: torch.Tensor, other: torch.Tensor, *, folds: int = 5, epochs: int = 10,
                    seed: int = 0) -> dict:
    """k-fold classifier two-sample test between two sets of rasters (N, s * s) and (M, s * s).

    Each set is shuffled and cut into `folds` parts (fold f: part f of each); for each fold a fresh CNN is trained
    on the other folds to say which set an image came from, and predicts the fold.  Returns `accuracy`
    (fraction of all N + M images predicted right, each by the network that did not see it), `se`
    (its binomial standard error), `fold_accuracies`, `n_real`, `n_other`.  With N = M, 0.5 means the
    sets cannot be told apart.
    """
    if len(real) < folds or len(other) < folds:
        raise ValueError(f"need at least folds={folds} images in each set, got {len(real)} and {len(other)}")
    size = int(round(real.shape[-1] ** 0.5))
    x = torch.cat([real, other]).float()
    y = torch.cat([torch.zeros(len(real), dtype=torch.int64), torch.ones(len(other), dtype=torch.int64)])
    g = torch.Generator().manual_seed(seed)
    # stratified folds: each set is cut into `folds` parts of its own, so that every fold holds the two sets
    # in the same proportion (with unequal folds a network learns the training folds' imbalance, which is
    # the held-out fold's imbalance reversed: accuracy below 0.5 on two samples of one distribution)
    parts = [torch.tensor_split(torch.randperm(len(real), generator=g), folds),
             torch.tensor_split(len(real) + torch.randperm(len(other), generator=g), folds)]
    fold_idx = [torch.cat([parts[0][f], parts[1][f]]) for f in range(folds)]
    correct = torch.zeros(len(x), dtype=torch.bool)
    fold_acc = []
    for f, test_idx in enumerate(fold_idx):
        train_idx = torch.cat([idx for j, idx in enumerate(fold_idx) if j != f])
        net = fit_classifier(_net_config(size, 2), x[train_idx], y[train_idx], epochs=epochs, batch_size=64,
                             lr=2e-3, lr_decay=0.85, max_shift=1, seed=seed * 1000 + f)
        hit = net.probabilities(x[test_idx]).argmax(-1) == y[test_idx]
        correct[test_idx] = hit
        fold_acc.append(float(hit.float().mean()))
    acc = float(correct.float().mean())
    return {"accuracy": acc, "se": math.sqrt(acc * (1 - acc) / len(x)), "fold_accuracies": fold_acc,
            "n_real": len(real), "n_other": len(other)}


# ------------------------------------------------------------------------------------------ score
def _pick(rng: np.random.Generator, pool: np.ndarray, m: int) -> np.ndarray:
    return np.sort(rng.choice(pool, size=min(m, len(pool)), replace=False))


def score(sampler: Sampler, cache, split: str = "test", config: ScoreConfig | None = None, *,
          report: Callable[[str], None] | None = None) -> dict:
    """Score a Sketch-RNN's samples against the `split` drawings of a prepared cache (path or StrokeCache).

    Unconditional and `vae` models are compared with the whole split; `class_vae` models class by
    class, for each of the model's classes that the data holds (matched by name), with the class
    recogniser (module docstring).  `report(message)` is told each stage (for a progress line).
    Returns {"split", "temperature", "convention", "seed", "max_len", "seconds", "classes": [per class:
    {"class", "m", "c2st", "control", "stats": {"model", "real"}, "recognised"?, "recognised_real"?}],
    "classes_not_in_data" (the model's classes the data lacks, not scored),
    "recogniser"?: {"classes", "train_per_class", "accuracy"}}.
    """
    from sketchvae.data.cache import open_cache

    cfg = config or ScoreConfig()
    say = report or (lambda message: None)
    t0 = time.perf_counter()
    cache = open_cache(cache) if isinstance(cache, (str, os.PathLike)) else cache
    where = str(getattr(cache, "path", "the data"))
    for name in (split, "train"):
        if name not in cache.splits:
            raise ValueError(f"{where} has no split {name!r}; it has {', '.join(cache.splits)}")
    held, train = cache.split(split), cache.split("train")
    names = list(cache.class_names)
    held_labels, train_labels = np.asarray(held.labels), np.asarray(train.labels)
    model_cfg = sampler.config
    max_len = model_cfg.max_seq_len
    rng = np.random.default_rng(cfg.seed)
    size = cfg.image_size

    if model_cfg.class_conditional:
        model_names = sampler.class_names or [str(i) for i in range(model_cfg.num_classes)]
        groups = [(c, names.index(c)) for c in model_names if c in names]
        missing = [c for c in model_names if c not in names]
        if not groups:
            raise ValueError(f"{where}: none of the model's classes ({', '.join(model_names)}) is in the data "
                             f"(it holds {', '.join(names)})")
    else:
        groups, missing = [(", ".join(names) if names else "all", None)], []

    recogniser = None
    out_classes = []
    if model_cfg.class_conditional and len(names) > 1:  # (data of one class: every drawing is "recognised")
        say(f"training the class recogniser on up to {cfg.recogniser_n} training drawings per class")
        idx = np.concatenate([_pick(rng, np.flatnonzero(train_labels == label), cfg.recogniser_n)
                              for label in range(len(names))])
        recogniser = fit_classifier(_net_config(size, len(names)), rasterize([train[i] for i in idx], size),
                                    torch.from_numpy(train_labels[idx].astype(np.int64)),
                                    epochs=cfg.recogniser_epochs, batch_size=64, lr=2e-3, lr_decay=0.8,
                                    max_shift=1, seed=cfg.seed)
    real_hits = real_seen = 0  # the recogniser on the held-out drawings the test picked

    for k, (name, label) in enumerate(groups):
        pool = np.arange(len(held)) if label is None else np.flatnonzero(held_labels == label)
        train_pool = np.arange(len(train)) if label is None else np.flatnonzero(train_labels == label)
        m = min(cfg.n, len(pool), len(train_pool))
        if m < cfg.folds:
            raise ValueError(f"{where}: class {name!r} has {len(pool)} drawings in split {split!r} and "
                             f"{len(train_pool)} in 'train'; the test needs at least folds={cfg.folds} of each")
        real = [np.asarray(held[i]) for i in _pick(rng, pool, m)]
        others = [np.asarray(train[i]) for i in _pick(rng, train_pool, m)]
        say(f"{name}: sampling {m} drawings at temperature {cfg.temperature}")
        drawn = sample(sampler, m, cfg.temperature, classes=None if label is None else class_index(sampler, name),
                       seed=cfg.seed * 7919 + k, convention=cfg.convention)
        real_img, drawn_img = rasterize(real, size), rasterize(drawn, size)
        say(f"{name}: {cfg.folds}-fold two-sample test, model vs real ({m} + {m})")
        c2st = two_sample_test(real_img, drawn_img, folds=cfg.folds, epochs=cfg.epochs, seed=cfg.seed)
        say(f"{name}: {cfg.folds}-fold two-sample test, real vs real (control)")
        control = two_sample_test(real_img, rasterize(others, size), folds=cfg.folds, epochs=cfg.epochs,
                                  seed=cfg.seed + 1)
        entry = {"class": name, "m": m, "c2st": c2st, "control": control,
                 "stats": {"model": sketch_stats(drawn, max_len), "real": sketch_stats(real)}}
        if recogniser is not None:
            entry["recognised"] = float((recogniser.probabilities(drawn_img).argmax(-1).numpy() == label).mean())
            hits = int((recogniser.probabilities(real_img).argmax(-1).numpy() == label).sum())
            entry["recognised_real"] = hits / m
            real_hits, real_seen = real_hits + hits, real_seen + m
        out_classes.append(entry)

    convention = check_convention(sampler.convention if cfg.convention is None else cfg.convention)
    result = {"split": split, "temperature": cfg.temperature, "convention": convention,
              "seed": cfg.seed, "n": cfg.n, "folds": cfg.folds, "max_len": max_len, "classes": out_classes,
              "classes_not_in_data": missing}
    if recogniser is not None:
        result["recogniser"] = {"classes": names, "train_per_class": int(cfg.recogniser_n),
                                "accuracy": real_hits / real_seen}
    result["seconds"] = time.perf_counter() - t0
    return result


def quick_score(sampler: Sampler, view, labels: np.ndarray | None = None, n: int = 100, *, seed: int = 0,
                folds: int = 5, epochs: int = 10, image_size: int = 32) -> dict:
    """The cheap score of the training loop's quality curve (`TrainConfig.score_samples`).

    m = min(n, len(view)) drawings of `view` (a cache split) are chosen with `seed`, and the model
    draws m samples at temperature 0.4, for a `class_vae` of the same classes (`labels`: the model's
    label of each drawing of the view, -1 for a class it lacks, which is left out); the two-sample test
    tells them apart.  Returns {"c2st", "c2st_se", "m", "ended", "points"}.  The same seed picks the
    same drawings and draws at every call.  The model's train/eval mode and torch's global random
    state are left as they were, so scoring does not change the training run.
    """
    model = sampler.model
    pool = np.arange(len(view)) if labels is None else np.flatnonzero(np.asarray(labels) >= 0)
    m = min(n, len(pool))
    if m < folds:
        raise ValueError(f"the score needs at least folds={folds} drawings, the split has {len(pool)}")
    was_training = model.training
    try:
        with torch.random.fork_rng(devices=[]):
            picked = _pick(np.random.default_rng(seed), pool, m)
            classes = None if labels is None or not model.config.class_conditional \
                else [int(labels[i]) for i in picked]
            drawn = sample(sampler, m, 0.4, classes=classes, seed=seed)
            real = [np.asarray(view[i]) for i in picked]
            test = two_sample_test(rasterize(real, image_size), rasterize(drawn, image_size), folds=folds,
                                   epochs=epochs, seed=seed)
    finally:
        model.train(was_training)
    st = sketch_stats(drawn, model.config.max_seq_len)
    return {"c2st": test["accuracy"], "c2st_se": test["se"], "m": m, "ended": st["ended"], "points": st["points"]}


__all__ = ["ScoreConfig", "rasterize", "sketch_stats", "two_sample_test", "score", "quick_score"]
