"""Test-set ELBO and the importance-weighted estimate of log p(x) (Burda et al. 2016, IWAE bound).

    log p(x) >= L_k = E[ log 1/k sum_i p(x, z_i) / q(z_i | x) ],  z_i ~ q(z | x) i.i.d.

L_1 is the ELBO, L_k increases with k and tends to log p(x) (Burda et al., theorem 1). We report
``nll = -L_k`` with k = 5000 as the IWAE paper, in nats per image, and ``elbo`` from the analytic-KL
one-sample estimate, averaged over the test set.

`iwae_bound` is generic: any `model` with

    encode(x, labels) -> (mu, presig)            diagonal Gaussian q(z | x), presig = log sigma^2
    log_likelihood(x, z, labels) -> (B,)         log p(x | z), with a standard normal prior p(z)

works (the tests use a linear-Gaussian model whose log p(x) is known in closed form). Samples are
processed in chunks (``max_rows`` decoder rows at a time) and combined with a running log-sum-exp,
so k = 5000 never holds k x B decoder outputs at once.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from sketchvae.image.models import elbo_terms

_LOG_2PI = math.log(2 * math.pi)


def _repeat(t: Tensor | None, m: int) -> Tensor | None:
    """(B, ...) -> (m * B, ...), sample-major (rows i*B .. i*B+B-1 are the batch again)."""
    if t is None:
        return None
    return t.unsqueeze(0).expand(m, *t.shape).reshape(m * t.shape[0], *t.shape[1:])


@torch.no_grad()
def log_weights(model, x: Tensor, labels: Tensor | None, mu: Tensor, presig: Tensor, m: int,
                generator: torch.Generator | None = None) -> Tensor:
    """m importance log-weights log p(x, z_i) - log q(z_i | x) per example: (m, B)."""
    B, D = mu.shape
    dev = mu.device if generator is None else generator.device
    eps = torch.randn(m, B, D, generator=generator, device=dev, dtype=mu.dtype).to(mu.device)
    z = mu + torch.exp(0.5 * presig) * eps  # (m, B, D)
    log_q = -0.5 * (eps.square() + presig + _LOG_2PI).sum(-1)  # log N(z; mu, sigma^2), (m, B)
    log_pz = -0.5 * (z.square() + _LOG_2PI).sum(-1)  # log N(z; 0, I), (m, B)
    log_px = model.log_likelihood(_repeat(x, m), z.reshape(m * B, D), _repeat(labels, m)).view(m, B)
    return log_px + log_pz - log_q


@torch.no_grad()
def iwae_bound(model, x: Tensor, labels: Tensor | None = None, k: int = 5000, *, max_rows: int = 16384,
               generator: torch.Generator | None = None) -> Tensor:
    """L_k per example (B,) in nats: logsumexp_i(log w_i) - log k, over k samples drawn in chunks."""
    if k < 1:
        raise ValueError(f"k (importance samples) must be >= 1, got {k}")
    mu, presig = model.encode(x, labels)
    if mu.dtype in (torch.float16, torch.bfloat16):
        mu, presig = mu.float(), presig.float()
    chunk = max(1, min(k, max_rows // max(1, len(x))))
    total = torch.full((len(x),), -math.inf, device=mu.device, dtype=mu.dtype)
    done = 0
    while done < k:
        m = min(chunk, k - done)
        lw = log_weights(model, x, labels, mu, presig, m, generator)
        total = torch.logaddexp(total, torch.logsumexp(lw, dim=0))
        done += m
    return total - math.log(k)


@torch.no_grad()
def _standard_error(mean_sq: float, mean: float, n: int) -> float:
    """Standard error of a mean from the mean of squares (sample variance, n - 1)."""
    if n < 2:
        return float("nan")
    var = max(mean_sq - mean * mean, 0.0) * n / (n - 1)
    return math.sqrt(var / n)


def evaluate(model, data, *, k: int = 0, batch_size: int = 500, seed: int = 0, max_rows: int = 16384,
             progress: Callable[[int], None] | None = None) -> dict:
    """Mean test metrics per image over an ``ImageData`` split, in nats.

    Returns ``elbo`` (analytic KL, one z per image), ``recon`` (-log p(x|z)), ``kl``, ``n`` and, when
    k > 0, ``nll`` = -L_k, each mean with its standard error over images (``elbo_se``, ``nll_se``:
    what a subset of the test set, ``--limit``, leaves uncertain). For a class-conditional model
    both are conditional on the label: log p(x | y), not comparable with unconditional log p(x).
    `progress(images_done)` is called after each batch.
    """
    model.eval()
    dev = next(model.parameters()).device
    g = torch.Generator(device=dev).manual_seed(seed)
    conditional = getattr(getattr(model, "config", None), "num_classes", 0) > 0
    sums = {"recon": 0.0, "kl": 0.0, "nll": 0.0, "elbo_sq": 0.0, "nll_sq": 0.0}
    n = 0
    for x, y in data.batches(batch_size, shuffle=False):
        x, y = x.to(dev), y.to(dev)
        labels = y if conditional else None
        t = elbo_terms(model, x, labels, generator=g)
        sums["recon"] += t["recon"].sum().item()
        sums["kl"] += t["kl"].sum().item()
        sums["elbo_sq"] += (t["recon"] + t["kl"]).double().square().sum().item()
        if k > 0:
            bound = iwae_bound(model, x, labels, k, max_rows=max_rows, generator=g).double()
            sums["nll"] -= bound.sum().item()
            sums["nll_sq"] += bound.square().sum().item()
        n += len(x)
        if progress is not None:
            progress(len(x))
    if n == 0:
        raise ValueError("nothing to evaluate: the split is empty")
    out = {"recon": sums["recon"] / n, "kl": sums["kl"] / n, "n": n}
    out["elbo"] = -(out["recon"] + out["kl"])
    out["elbo_se"] = _standard_error(sums["elbo_sq"] / n, out["elbo"], n)
    if k > 0:
        out["nll"] = sums["nll"] / n
        out["nll_se"] = _standard_error(sums["nll_sq"] / n, out["nll"], n)
        out["k"] = k
    return out
