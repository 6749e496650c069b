"""Measuring image models the same way: reconstruction, Parzen-window log-likelihood, classifier scores,
and attribute vectors. Used by ``sketchvae mnist compare`` and ``sketchvae mnist attribute``.

Every model here (VAE, CVAE, AAE) offers ``code(x, labels)`` (the point code: a VAE's posterior
mean, an AAE's z), ``decode(z, labels)`` (Bernoulli logits) and ``sample(n, labels, generator)``;
the classifier (:mod:`sketchvae.image.classifier`) is the measuring instrument, never part of a model.

Parzen-window estimate (Breuleux et al. 2011; the protocol of the GAN paper, Goodfellow et al. 2014,
and of the AAE paper, Makhzani et al. 2015, table 1): fit an isotropic Gaussian kernel density to
n samples s_i of the model (grey Bernoulli means, 784-d),

    log p(x) ~ logsumexp_i( -|x - s_i|^2 / (2 sigma^2) ) - log n - (d / 2) log(2 pi sigma^2),

choose sigma by the mean log-likelihood of a validation split, report the mean over the (grey)
test images. How uncertain it is: the standard error over test points (``parzen_se``) only covers
the choice of test images. The estimator itself is **biased** and has a large variance in the
sample set: with n = 10^4 samples in 784 dimensions the kernel density is far from the model's
density, the mean of log p-hat is biased low (Jensen: E log p-hat <= log E p-hat) and the estimate
keeps rising with n; Theis, van den Oord & Bethge (2016, *A note on the evaluation of generative
models*) show it can rank models wrongly and that it is not a log-likelihood of the model. It is
reported to compare with the papers' numbers, next to the VAE's proper bounds (ELBO, IWAE).

Classifier scores over n samples: the class histogram; for class-conditional models the fraction
recognised as the class asked for; and the Inception-style score (Salimans et al. 2016) with the MNIST
classifier, ``exp(E_x KL(p(y | x) || p(y)))``, between 1 and 10 (10: every sample confidently one
digit and all digits equally often).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

ATTRIBUTES = ("thickness", "slant", "width")
# The GAN paper's grid of window widths was numpy.logspace(-1, 0, 10); this one is twice as fine.
DEFAULT_SIGMAS = tuple(np.logspace(-1.0, 0.0, 19).tolist())


# ---------------------------------------------------------------- Parzen window


@torch.no_grad()
def parzen_log_likelihood(samples: Tensor, x: Tensor, sigmas, *, chunk: int = 1000,
                          dtype: torch.dtype = torch.float64) -> Tensor:
    """log p(x_j) under Gaussian kernel densities of width sigma centred at `samples`: (len(x), len(sigmas)).

    samples: (n, d), x: (m, d). Squared distances come from one matrix product per chunk of `chunk`
    points of x (|x|^2 + |s|^2 - 2 x.s, clamped at 0) and are shared by all sigmas; the sum over samples
    is a log-sum-exp, so nothing under- or overflows.
    """
    s = samples.reshape(len(samples), -1).to(dtype)
    x = x.reshape(len(x), -1).to(dtype)
    if s.shape[1] != x.shape[1]:
        raise ValueError(f"samples have {s.shape[1]} dimensions, the points {x.shape[1]}")
    if len(s) == 0:
        raise ValueError("no samples for the Parzen window")
    sig = torch.as_tensor(list(sigmas), dtype=dtype)
    if (sig <= 0).any():
        raise ValueError(f"window widths must be > 0, got {sig.tolist()}")
    n, d = s.shape
    s_sq = s.square().sum(-1)  # (n,)
    norm = math.log(n) + 0.5 * d * torch.log(2 * math.pi * sig.square())  # (S,)
    out = []
    for i in range(0, len(x), chunk):
        xc = x[i:i + chunk]
        d2 = (xc.square().sum(-1, keepdim=True) + s_sq - 2.0 * xc @ s.T).clamp_min_(0.0)  # (c, n)
        lse = torch.stack([torch.logsumexp(-d2 / (2 * v * v), dim=1) for v in sig.tolist()], dim=1)  # (c, S)
        out.append(lse - norm)
    return torch.cat(out).float() if dtype != torch.float64 else torch.cat(out)


def parzen_estimate(samples: Tensor, test: Tensor, valid: Tensor, sigmas=DEFAULT_SIGMAS, *,
                    chunk: int = 1000) -> dict:
    """Choose sigma on `valid`, then the mean test log-likelihood with its standard error over test points.

    Returns ``parzen`` (nats, mean over test), ``parzen_se``, ``sigma``, ``sigma_on_grid_edge`` (True when
    the best sigma is the grid's smallest or largest: widen the grid), ``valid_ll`` and the counts.
    """
    sigmas = list(sigmas)
    v = parzen_log_likelihood(samples, valid, sigmas, chunk=chunk).mean(0)  # (S,)
    best = int(torch.argmax(v))
    ll = parzen_log_likelihood(samples, test, [sigmas[best]], chunk=chunk)[:, 0]
    n = len(ll)
    se = ll.std(unbiased=True).item() / math.sqrt(n) if n > 1 else float("nan")
    return {"parzen": ll.mean().item(), "parzen_se": se, "sigma": sigmas[best],
            "sigma_on_grid_edge": best in (0, len(sigmas) - 1), "valid_ll": v[best].item(),
            "n_samples": len(samples), "n_test": n, "n_valid": len(valid)}


# ---------------------------------------------------------------- classifier scores


def classifier_scores(probs: Tensor, asked: Tensor | None = None) -> dict:
    """Scores of samples from their classifier probabilities p(y | x) (n, C).

    ``histogram``: fraction of samples whose most probable class is c, per c; ``inception_score``:
    exp(mean_x KL(p(y | x) || p(y))) with p(y) the mean of p(y | x) over the samples;
    ``accuracy_as_asked``: fraction whose most probable class is `asked` (None without `asked`).
    """
    probs = probs.double()
    n, c = probs.shape
    pred = probs.argmax(-1)
    hist = torch.bincount(pred, minlength=c).double() / n
    py = probs.mean(0)
    plogp = torch.where(probs > 0, probs * torch.log(probs.clamp_min(1e-300)), torch.zeros_like(probs))
    kl = plogp.sum(-1) - (probs * torch.log(py.clamp_min(1e-300))).sum(-1)  # (n,)
    out = {"histogram": hist.tolist(), "inception_score": math.exp(kl.mean().item()), "accuracy_as_asked": None}
    if asked is not None:
        out["accuracy_as_asked"] = (pred == asked.to(pred.device).long()).double().mean().item()
    return out


# ---------------------------------------------------------------- models on test images


def is_conditional(model) -> bool:
    return getattr(model.config, "num_classes", 0) > 0


@torch.no_grad()
def reconstruction(model, x: Tensor, labels: Tensor, batch_size: int = 1000) -> Tensor:
    """-log p(x | z) per image (nats, (N,)) with z = the model's point code of x (VAE: mu; AAE: q(x))."""
    from sketchvae.image.aae import recon_loss

    model.eval()
    cond = is_conditional(model)
    out = []
    for i in range(0, len(x), batch_size):
        xb, yb = x[i:i + batch_size], labels[i:i + batch_size] if cond else None
        out.append(recon_loss(model.decode(model.code(xb, yb), yb), xb))
    return torch.cat(out)


@torch.no_grad()
def draw_samples(model, n: int, seed: int = 0, batch_size: int = 1000) -> tuple[Tensor, Tensor | None]:
    """n samples (Bernoulli means, (n, 784)) from the prior; a conditional model is asked for 0..9 in
    turn (n / 10 of each). Returns (samples, labels asked or None)."""
    g = torch.Generator().manual_seed(seed)
    k = getattr(model.config, "num_classes", 0)
    asked = torch.arange(n) % k if k else None
    out = [model.sample(min(batch_size, n - i), None if asked is None else asked[i:i + batch_size], generator=g)
           for i in range(0, n, batch_size)]
    return torch.cat(out).cpu(), asked


# ---------------------------------------------------------------- attributes of digits


def measure_attribute(images, attr: str) -> np.ndarray:
    """An attribute per grey image (N, 28, 28) or (N, 784), values in [0, 1]: (N,) float64.

    * ``thickness``: ink, the sum of grey levels (pixels' worth of full black); thicker strokes, more ink.
    * ``slant``: the intensity-weighted second-moment shear cov(x, y) / var(y), with x to the right and
      y upwards: > 0 leans right (like /), < 0 leans left.
    * ``width``: width of the bounding box of pixels above 0.5, in pixels (0 for an empty image).
    """
    if attr not in ATTRIBUTES:
        raise ValueError(f"unknown attribute {attr!r}; choose from {list(ATTRIBUTES)}")
    a = np.asarray(images, dtype=np.float64)
    side = int(round(math.sqrt(a.shape[-1]))) if a.ndim == 2 else a.shape[-1]
    a = a.reshape(len(a), side, side)
    if attr == "thickness":
        return a.sum(axis=(1, 2))
    if attr == "width":
        cols = (a > 0.5).any(axis=1)  # (N, W)
        has = cols.any(axis=1)
        first = np.argmax(cols, axis=1)
        last = side - 1 - np.argmax(cols[:, ::-1], axis=1)
        return np.where(has, last - first + 1, 0).astype(np.float64)
    xs = np.arange(side, dtype=np.float64)[None, None, :]  # column: x to the right
    ys = -np.arange(side, dtype=np.float64)[None, :, None]  # row: y upwards
    mass = a.sum(axis=(1, 2)) + 1e-12
    mx = (a * xs).sum(axis=(1, 2)) / mass
    my = (a * ys).sum(axis=(1, 2)) / mass
    dx, dy = xs - mx[:, None, None], ys - my[:, None, None]
    cov = (a * dx * dy).sum(axis=(1, 2)) / mass
    var = (a * dy * dy).sum(axis=(1, 2)) / mass
    return cov / np.maximum(var, 1e-12)


def attribute_vector(codes: Tensor, values, fraction: float = 0.25, groups=None) -> Tensor:
    """z_attr = mean code of the images with the top `fraction` of attribute values minus the mean code of
    the bottom `fraction` (White 2016 / DFC-VAE attribute vectors): (D,).

    With `groups` (e.g. the digit labels, (N,)), the quarters are taken within each group and the
    groups' differences averaged with equal weight. On MNIST this matters: over the pooled training set
    the most ink belongs to 0s and 8s and the least to 1s, so the pooled thickness vector mostly turns
    digits into 0s or 1s; within each digit it changes the stroke and keeps the digit.
    """
    values = torch.as_tensor(np.asarray(values), dtype=torch.float64)
    if len(values) != len(codes):
        raise ValueError(f"{len(codes)} codes but {len(values)} attribute values")
    if not 0 < fraction <= 0.5:
        raise ValueError(f"fraction must be in (0, 0.5], got {fraction}")
    if groups is not None:
        groups = torch.as_tensor(np.asarray(groups))
        if len(groups) != len(codes):
            raise ValueError(f"{len(codes)} codes but {len(groups)} group labels")
        diffs = [attribute_vector(codes[groups == g], values[groups == g], fraction) for g in torch.unique(groups)]
        return torch.stack(diffs).mean(0)
    q = max(1, int(len(values) * fraction))
    order = torch.argsort(values, stable=True)
    return codes[order[-q:]].mean(0) - codes[order[:q]].mean(0)


@torch.no_grad()
def attribute_sweep(model, classifier, x: Tensor, labels: Tensor, z_attr: Tensor, alphas, attr: str,
                    batch_size: int = 1000) -> tuple[list[dict], Tensor]:
    """Decode z + alpha * z_attr for every image of `x` and alpha; measure the result.

    Returns ([{"alpha", "attribute" (mean over images), "attribute_se", "recognised" (fraction the
    classifier still calls the original digit)}], decoded Bernoulli means (len(alphas), N, 784)).
    A class-conditional model decodes with the image's own label.
    """
    model.eval()
    cond = is_conditional(model)
    z = torch.cat([model.code(x[i:i + batch_size], labels[i:i + batch_size] if cond else None)
                   for i in range(0, len(x), batch_size)])
    rows, images = [], []
    for a in alphas:
        za = z + float(a) * z_attr.to(z.dtype)
        dec = torch.cat([torch.sigmoid(model.decode(za[i:i + batch_size], labels[i:i + batch_size] if cond else None))
                         for i in range(0, len(za), batch_size)])
        vals = measure_attribute(dec.cpu().numpy(), attr)
        pred = classifier.probabilities(dec).argmax(-1)
        rows.append({"alpha": float(a), "attribute": float(vals.mean()),
                     "attribute_se": float(vals.std(ddof=1) / math.sqrt(len(vals))) if len(vals) > 1 else float("nan"),
                     "recognised": (pred == labels.cpu()).double().mean().item()})
        images.append(dec.cpu())
    return rows, torch.stack(images)


# ---------------------------------------------------------------- one model, every measure


class _Fixed:
    """Fixed (x, labels) tensors served in order, as ``ImageData.batches(shuffle=False)`` does."""

    def __init__(self, x: Tensor, labels: Tensor):
        self.x, self.labels = x, labels

    def __len__(self) -> int:
        return len(self.x)

    def batches(self, batch_size: int, shuffle: bool = False):
        for i in range(0, len(self.x), batch_size):
            yield self.x[i:i + batch_size], self.labels[i:i + batch_size]


def describe(model) -> str:
    """Short name of a model's kind: vae-mlp, vae-conv, cvae, aae-gaussian-8d, aae-supervised-..."""
    c = model.config
    if hasattr(c, "prior"):
        return f"aae-{c.prior}-{c.z_size}d" + ("-supervised" if c.num_classes else "")
    return (f"cvae-{c.arch}" if c.num_classes else f"vae-{c.arch}") + f"-{c.z_size}d"


def compare_model(model, *, test, test_grey: Tensor, valid_grey: Tensor, classifier, n_samples: int = 10000,
                  k: int = 0, nll_limit: int | None = None, seed: int = 0, sigmas=DEFAULT_SIGMAS,
                  progress=None) -> dict:
    """Every measure of `compare` for one model.

    test: the binarised test split (``ImageData``, targets of recon / ELBO / IWAE); test_grey, valid_grey:
    grey images (N, 784) for the Parzen window (test points, and the split that chooses sigma).
    `k` > 0 adds the IWAE bound (first `nll_limit` test images) for models that define it (VAEs).
    `progress(text)` is told what is being measured.
    """
    from sketchvae.image.evaluate import evaluate

    say = progress or (lambda text: None)
    model.eval()
    cond = is_conditional(model)
    x, y = test.targets(), test.labels
    out: dict = {"kind": describe(model), "conditional": cond, "n_test": len(x)}
    say("reconstruction")
    r = reconstruction(model, x, y).double()
    out["recon"] = r.mean().item()
    out["recon_se"] = r.std().item() / math.sqrt(len(r)) if len(r) > 1 else float("nan")
    out.update(elbo=None, elbo_se=None, nll=None, nll_se=None, nll_k=None, nll_images=None)
    if hasattr(model, "presig"):  # a VAE: Gaussian q(z | x), so ELBO and IWAE are defined
        say("ELBO")
        m = evaluate(model, test, k=0, seed=seed)
        out.update(elbo=m["elbo"], elbo_se=m["elbo_se"])
        if k > 0:
            say(f"IWAE bound, k={k}")
            n = len(x) if nll_limit is None else min(nll_limit, len(x))
            m = evaluate(model, _Fixed(x[:n], y[:n]), k=k, seed=seed)  # the same binary images as above
            out.update(nll=m["nll"], nll_se=m["nll_se"], nll_k=k, nll_images=m["n"])
    out["nll_conditional_on_label"] = cond and out["nll"] is not None
    say(f"{n_samples} samples")
    samples, asked = draw_samples(model, n_samples, seed=seed)
    say("Parzen window")
    out.update(parzen_estimate(samples, test_grey, valid_grey, sigmas))
    say("classifier")
    out.update(classifier_scores(classifier.probabilities(samples), asked))
    return out
