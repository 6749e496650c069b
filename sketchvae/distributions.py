"""Distributions used by Sketch-RNN and the image VAEs: bivariate Gaussian mixtures and diagonal Gaussians.

Everything here is a pure function of tensors, works for any leading batch shape and is written in
log space so that extreme parameters (|rho| -> 1, sigma -> 0, far-away offsets) give finite values and
finite gradients.

Conventions
-----------
* A mixture over the next pen offset (dx, dy) is a `MixtureParams` (Ha & Eck 2017, eq. 3): M
  bivariate normals with weights pi, means (mu_x, mu_y), standard deviations (sigma_x, sigma_y) and
  correlation rho.  Weights are stored as `log_pi` (log-softmax), standard deviations as log-sigmas;
  they are exponentiated only where needed.
* A diagonal Gaussian posterior q(z|x) = N(mu, diag(exp(presig))) is described by `mu` and `presig`
  = log sigma^2 (the names of the Sketch-RNN reference implementation; "sigma_hat" in the paper).
* Temperature: three conventions (`TEMPERATURE_CONVENTIONS`), all implemented by `temperature_scales`
  and used by every sampler of the package (see below).

Temperature conventions
-----------------------
A temperature tau > 0 changes the distribution a sampler draws from.  The three Sketch-RNN code
bases mean three different things by it; sketchvae offers all three (`convention=`, the CLI's
`--convention`).  "softmax at T" means softmax(logits / T) (for the mixture weights that is
softmax(log_pi / T)); sigma is each component's standard deviation; rho is never changed.

    convention    mixture weights pi      pen states              sigma_x, sigma_y   source
    "paper"       softmax at tau          softmax at tau          * sqrt(tau)        Ha & Eck 2017, eq. 8
    "magenta"     softmax at tau          softmax at tau          * tau              magenta sketch_rnn/model.py
    "magenta-js"  softmax at 0.5 + tau/2  softmax at 0.5 + tau/2  * sqrt(tau)        @magenta/sketch 0.2.0 getPDF

"magenta": the Python reference calls `sample_gaussian_2d(..., np.sqrt(temp))`, which multiplies each
sigma by the square of its argument, so sigma is multiplied by tau (variance by tau^2).
"magenta-js": `SketchRNN.getPDF(state, temperature)` divides the pi and pen logits by 0.5 + 0.5 * tau
(so as tau -> 0 the discrete choices tend to softmax at 0.5, not to the argmax) and multiplies sigma
by sqrt(tau).  It is the default of models converted from magenta-js (`sketchvae.interop.magenta`),
so that tau means there what it means in the magenta-js demos.  All three agree at tau = 1 (the
model's own distribution).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

# Correlations are clamped to [-1 + RHO_EPS, 1 - RHO_EPS] before the density is evaluated: tanh
# saturates to exactly +-1 in float32 for |pre-activation| > ~9, where the density is undefined.
# 1e-6 is representable in float32 (spacing near 1 is 6e-8) and barely changes any fitted density.
RHO_EPS = 1e-6
# Log standard deviations are clamped from below at LOG_SIGMA_MIN (sigma ~ 2e-9 in normalised units,
# where training offsets have std 1) so that ((x - mu) / sigma)^2 cannot overflow float32 even for
# offsets of 1e4; no fitted model comes near it, and the clamp keeps gradients finite (zero below it).
LOG_SIGMA_MIN = -20.0
_LOG_2PI = math.log(2.0 * math.pi)
TEMPERATURE_CONVENTIONS = ("paper", "magenta", "magenta-js")


class MixtureParams(NamedTuple):
    """Parameters of M bivariate normal components per position; every field has shape (..., M).

    For the decoder output the leading shape is (B, T): batch, time step.
    """

    log_pi: Tensor  # (..., M) log mixture weights, log-softmax of the logits Pi_hat (eq. 3, 6)
    mu_x: Tensor  # (..., M) component means of dx
    mu_y: Tensor  # (..., M) component means of dy
    log_sigma_x: Tensor  # (..., M) log standard deviations of dx (sigma_hat_x in eq. 6)
    log_sigma_y: Tensor  # (..., M) log standard deviations of dy
    rho: Tensor  # (..., M) correlations, tanh(rho_hat) in (-1, 1)

    def select(self, index) -> "MixtureParams":
        """Apply the same index to every field, e.g. `params.select(keep)` (rows) or
        `params.select((slice(None), -1))` (last time step)."""
        return MixtureParams(*(p[index] for p in self))

    def float(self) -> "MixtureParams":
        """A float32 copy (losses are computed in float32 even under bf16 autocast)."""
        return MixtureParams(*(p.float() for p in self))


def bivariate_normal_log_prob(x: Tensor, y: Tensor, mu_x: Tensor, mu_y: Tensor, log_sigma_x: Tensor,
                              log_sigma_y: Tensor, rho: Tensor) -> Tensor:
    """log N(x, y | mu, sigma, rho) of a bivariate normal, elementwise (all arguments broadcast).

    Graves 2013 eq. 24-25 in log space:

        log N = -log(2 pi) - log sigma_x - log sigma_y - 1/2 log(1 - rho^2) - Z / (2 (1 - rho^2)),
        Z = z_x^2 + z_y^2 - 2 rho z_x z_y,  z_x = (x - mu_x) / sigma_x,  z_y = (y - mu_y) / sigma_y.

    Z / (1 - rho^2) is evaluated as (z_x - rho z_y)^2 / ((1 - rho)(1 + rho)) + z_y^2 (the same
    quantity, never negative, no cancellation), and log(1 - rho^2) as log1p(-rho) + log1p(rho)
    (= log1p(-rho^2), accurate as |rho| -> 1).  rho is clamped to [-1 + RHO_EPS, 1 - RHO_EPS] and
    log-sigmas from below at LOG_SIGMA_MIN so the result and its gradients stay finite.
    """
    rho = rho.clamp(-1.0 + RHO_EPS, 1.0 - RHO_EPS)
    log_sigma_x = log_sigma_x.clamp(min=LOG_SIGMA_MIN)
    log_sigma_y = log_sigma_y.clamp(min=LOG_SIGMA_MIN)
    z_x = (x - mu_x) * torch.exp(-log_sigma_x)
    z_y = (y - mu_y) * torch.exp(-log_sigma_y)
    log_one_minus_rho2 = torch.log1p(-rho) + torch.log1p(rho)  # log(1 - rho^2)
    quad = (z_x - rho * z_y).square() * torch.exp(-log_one_minus_rho2) + z_y.square()  # Z / (1 - rho^2)
    return -_LOG_2PI - log_sigma_x - log_sigma_y - 0.5 * log_one_minus_rho2 - 0.5 * quad


def bivariate_mixture_log_prob(params: MixtureParams, x: Tensor, y: Tensor) -> Tensor:
    """log p(x, y) under the mixture, Ha & Eck 2017 eq. 3, via log-sum-exp (no epsilon inside a log).

    params: fields of shape (..., M); x, y: (...) e.g. (B, T).  Returns (...) e.g. (B, T).
    """
    log_n = bivariate_normal_log_prob(x.unsqueeze(-1), y.unsqueeze(-1), params.mu_x, params.mu_y,
                                      params.log_sigma_x, params.log_sigma_y, params.rho)  # (..., M)
    return torch.logsumexp(params.log_pi + log_n, dim=-1)  # (...)


def _check_temperature(temperature) -> None:
    t = torch.as_tensor(temperature)
    if not bool(torch.all(t > 0)):
        raise ValueError(f"temperature must be > 0 (use greedy=True for the most likely choice), got {temperature}")


def check_convention(convention: str) -> str:
    """`convention` if it is one of TEMPERATURE_CONVENTIONS, else ValueError listing them."""
    if convention not in TEMPERATURE_CONVENTIONS:
        raise ValueError(f"unknown temperature convention {convention!r}; choose from {TEMPERATURE_CONVENTIONS}")
    return convention


def temperature_scales(temperature, convention: str = "paper"):
    """(discrete temperature, sigma multiplier) for tau under a convention (module docstring table).

    The discrete temperature divides the mixture-weight and pen logits; the multiplier scales sigma_x
    and sigma_y.  Works for floats and tensors alike (elementwise).
    """
    check_convention(convention)
    tau = temperature
    root = math.sqrt(tau) if isinstance(tau, (int, float)) else torch.sqrt(torch.as_tensor(tau))
    if convention == "paper":
        return tau, root
    if convention == "magenta":
        return tau, tau
    return 0.5 + 0.5 * tau, root


def tempered(params: MixtureParams, pen_logits: Tensor, temperature, convention: str = "paper"
             ) -> tuple[MixtureParams, Tensor]:
    """The distribution a sampler draws from at temperature tau: (MixtureParams with tempered log_pi
    and log-sigmas, pen log-probabilities (..., 3)), per the convention's row of the module docstring.

    params: fields (..., M); pen_logits (..., 3); temperature a float > 0.  rho and mu are unchanged.
    exp(result.log_pi) and exp(pen) are what magenta-js's `getPDF` returns as `pi` and `pen`.
    """
    _check_temperature(temperature)
    t_discrete, sigma_scale = temperature_scales(float(temperature), convention)
    log_scale = math.log(sigma_scale)
    out = MixtureParams(torch.log_softmax(params.log_pi.float() / t_discrete, dim=-1), params.mu_x, params.mu_y,
                        params.log_sigma_x + log_scale, params.log_sigma_y + log_scale, params.rho)
    return out, torch.log_softmax(pen_logits.float() / t_discrete, dim=-1)


def sample_categorical(logits: Tensor, temperature: float | Tensor = 1.0, generator: torch.Generator | None = None,
                       greedy: bool = False) -> Tensor:
    """Draw an index from softmax(logits / temperature) over the last dim (Ha & Eck 2017 eq. 8).

    logits: (..., K) (log-probabilities are fine too: the softmax ignores a constant shift, so
    this equals magenta's `adjust_temp`, softmax(log(p) / tau)).  temperature: a float or a tensor
    broadcastable to (...) (one temperature per row).  greedy: take the argmax instead.
    Returns int64 (...).  Used for the mixture component and for the 3 pen states.
    """
    if greedy:
        return logits.argmax(dim=-1)
    _check_temperature(temperature)
    tau = torch.as_tensor(temperature, dtype=logits.dtype, device=logits.device)
    if tau.dim() > 0:
        tau = tau.unsqueeze(-1)  # (..., 1)
    probs = torch.softmax(logits.float() / tau, dim=-1)  # (..., K)
    flat = probs.reshape(-1, probs.shape[-1])  # (N, K)
    if generator is not None and generator.device != flat.device:
        idx = torch.multinomial(flat.to(generator.device), 1, generator=generator).to(flat.device)
    else:
        idx = torch.multinomial(flat, 1, generator=generator)
    return idx.reshape(probs.shape[:-1])


def _randn_like(ref: Tensor, generator: torch.Generator | None) -> Tensor:
    """Standard normal noise shaped like `ref`, drawn from `generator` (on the generator's device)."""
    if generator is None:
        return torch.randn(ref.shape, dtype=ref.dtype, device=ref.device)
    eps = torch.randn(ref.shape, dtype=ref.dtype, device=generator.device, generator=generator)
    return eps.to(ref.device)


def sample_bivariate_mixture(params: MixtureParams, temperature: float | Tensor = 1.0,
                             generator: torch.Generator | None = None, *, greedy: bool = False,
                             convention: str = "paper") -> tuple[Tensor, Tensor]:
    """Draw (dx, dy) from the mixture with temperature tau; fields (..., M) -> dx, dy each (...).

    Temperature, Ha & Eck 2017 eq. 8 (`convention="paper"`, the default):
        component k ~ softmax(log_pi / tau), then (dx, dy) ~ N(mu_k, Sigma_k * tau),
    i.e. sigma_x, sigma_y are multiplied by sqrt(tau) and rho is unchanged.  tau -> 0 tends to
    the most likely component's mean; tau = 1 samples the model's own distribution.
    `convention="magenta"` / `"magenta-js"`: see the module docstring's table.

    greedy=True: take the argmax component and return its mean (magenta's greedy mode).
    temperature: float > 0 or a tensor broadcastable to the leading shape (...).
    """
    check_convention(convention)
    t_discrete, scale = (temperature, 1.0) if greedy else temperature_scales(
        temperature if isinstance(temperature, (int, float)) else torch.as_tensor(temperature), convention)
    k = sample_categorical(params.log_pi, t_discrete, generator, greedy=greedy).unsqueeze(-1)  # (..., 1)
    pick = [p.gather(-1, k).squeeze(-1) for p in params]  # each (...)
    _, mu_x, mu_y, log_sx, log_sy, rho = pick
    if greedy:
        return mu_x, mu_y
    scale = torch.as_tensor(scale, dtype=mu_x.dtype, device=mu_x.device)
    sx = torch.exp(log_sx) * scale  # (...)
    sy = torch.exp(log_sy) * scale
    e1 = _randn_like(mu_x, generator)
    e2 = _randn_like(mu_x, generator)
    # Correlated pair via the Cholesky factor of [[sx^2, rho sx sy], [rho sx sy, sy^2]].
    dx = mu_x + sx * e1
    dy = mu_y + sy * (rho * e1 + torch.sqrt((1.0 - rho.square()).clamp(min=0.0)) * e2)
    return dx, dy


def reparameterize(mu: Tensor, presig: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """z = mu + exp(presig / 2) * eps, eps ~ N(0, I) (Kingma & Welling 2014, sec. 2.4; Ha & Eck sec. 3.1).

    mu, presig: (B, D) (any shape works); presig = log sigma^2.  Returns z with mu's shape.
    """
    return mu + torch.exp(0.5 * presig) * _randn_like(mu, generator)


def gaussian_kl(mu: Tensor, presig: Tensor) -> Tensor:
    """KL(N(mu, diag(exp(presig))) || N(0, I)) per sample, summed over the last dim: (B, D) -> (B,).

    Kingma & Welling 2014, appendix B:  -1/2 * sum_j (1 + log sigma_j^2 - mu_j^2 - sigma_j^2).
    """
    return -0.5 * torch.sum(1.0 + presig - mu.square() - torch.exp(presig), dim=-1)
