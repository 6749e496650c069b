"""Image VAEs for 28x28 digits: MLP (Kingma & Welling 2014), convolutional, and class-conditional.

All variants share one interface (used by training, evaluation and the CLI):

* ``encode(x, labels=None) -> (mu, presig)``   x: (B, 784) or (B, 1, 28, 28); presig = log sigma^2, (B, D)
* ``decode(z, labels=None) -> logits``          (B, 784) Bernoulli logits of the pixels
* ``log_likelihood(x, z, labels=None) -> (B,)`` log p(x | z) = -sum BCE-with-logits over pixels
* ``forward(x, labels=None, generator=None) -> dict(logits, mu, presig, z)``

A class-conditional model (``num_classes > 0``, Sohn et al. 2015) appends the one-hot label to the
encoder's features and to the decoder's input; labels may be int (B,) or float one-hot rows (B, C)
(blends of classes, for interpolation). Models never read files.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sketchvae.checkpoint import register_model_kind
from sketchvae.distributions import gaussian_kl, reparameterize

ARCHS = ("mlp", "conv")
KIND = "image_vae"


@dataclasses.dataclass
class ImageVAEConfig:
    arch: str = "mlp"  # "mlp" (784-400-z, Kingma & Welling) | "conv" (2 strided convs each way)
    z_size: int = 20  # latent dimensions D; 2 for a drawable manifold, 10..64 typical
    hidden_size: int = 400  # MLP hidden units / conv fully connected units, 100..1024
    num_classes: int = 0  # 0 = unconditional; 10 for the MNIST class-conditional VAE (CVAE)
    channels: int = 32  # conv: channels of the first conv layer (the second has twice as many)
    image_size: int = 28  # square images; conv needs a multiple of 4

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"unknown image VAE arch {self.arch!r}; choose from {list(ARCHS)}")
        for name, lo in (("z_size", 1), ("hidden_size", 1), ("num_classes", 0), ("channels", 1),
                         ("image_size", 4)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
        if self.arch == "conv" and self.image_size % 4:
            raise ValueError(f"the conv VAE needs image_size divisible by 4, got {self.image_size}")

    @property
    def num_pixels(self) -> int:
        return self.image_size * self.image_size


def onehot_labels(labels: Tensor | None, k: int, batch: int, ref: Tensor, what: str = "model") -> Tensor | None:
    """Labels (int (B,) or float one-hot / blend rows (B, k)) -> (B, k) rows in `ref`'s dtype and device;
    None for an unconditional model (k = 0), which must not be given labels."""
    if k == 0:
        if labels is not None:
            raise ValueError(f"labels given to an unconditional image {what} (num_classes=0)")
        return None
    if labels is None:
        raise ValueError(f"this class-conditional {what} needs labels (0..{k - 1})")
    labels = torch.as_tensor(labels, device=ref.device)
    if labels.dtype.is_floating_point and labels.dim() == 2:
        y = labels.to(ref.dtype)  # (B, C) one-hot or blend
    else:
        labels = labels.long()
        if labels.numel() and (labels.min() < 0 or labels.max() >= k):
            raise ValueError(f"labels must be in 0..{k - 1}, got {labels.min().item()}..{labels.max().item()}")
        y = F.one_hot(labels, k).to(ref.dtype)
    if y.shape != (batch, k):
        raise ValueError(f"labels of shape {tuple(y.shape)} do not fit a batch of {batch} and {k} classes")
    return y


def bernoulli_nll(logits: Tensor, x: Tensor) -> Tensor:
    """-log p(x | logits) per image under the Bernoulli decoder, summed over pixels: (B,) nats
    (``binary_cross_entropy_with_logits``: stable for any logit; x in [0, 1], any image shape)."""
    return F.binary_cross_entropy_with_logits(logits, x.reshape(len(x), -1).float(), reduction="none").sum(-1)


class ImageVAE(nn.Module):
    def __init__(self, config: ImageVAEConfig):
        super().__init__()
        self.config = config
        c, h, d, k = config.channels, config.hidden_size, config.z_size, config.num_classes
        if config.arch == "mlp":
            self.enc_body = nn.Sequential(nn.Linear(config.num_pixels, h), nn.ReLU())
            feat = h
            self.dec_body = nn.Sequential(nn.Linear(d + k, h), nn.ReLU(), nn.Linear(h, config.num_pixels))
        else:
            s = config.image_size // 4
            self.enc_body = nn.Sequential(
                nn.Conv2d(1, c, 4, 2, 1), nn.ReLU(),  # (B, c, 14, 14)
                nn.Conv2d(c, 2 * c, 4, 2, 1), nn.ReLU(),  # (B, 2c, 7, 7)
                nn.Flatten(),
            )
            feat = 2 * c * s * s
            self.dec_body = nn.Sequential(
                nn.Linear(d + k, h), nn.ReLU(),
                nn.Linear(h, 2 * c * s * s), nn.ReLU(),
                nn.Unflatten(1, (2 * c, s, s)),
                nn.ConvTranspose2d(2 * c, c, 4, 2, 1), nn.ReLU(),  # (B, c, 14, 14)
                nn.ConvTranspose2d(c, 1, 4, 2, 1),  # (B, 1, 28, 28) logits
                nn.Flatten(),
            )
        # conv: a hidden layer between the conv features (+ label) and (mu, presig)
        self.enc_fc = nn.Sequential(nn.Linear(feat + k, h), nn.ReLU()) if config.arch == "conv" else None
        head_in = h if config.arch == "conv" else feat + k
        self.mu = nn.Linear(head_in, d)
        self.presig = nn.Linear(head_in, d)

    # ---- helpers
    def _onehot(self, labels: Tensor | None, batch: int, ref: Tensor) -> Tensor | None:
        return onehot_labels(labels, self.config.num_classes, batch, ref, "VAE")

    def _flat(self, x: Tensor) -> Tensor:
        return x.reshape(len(x), -1)

    # ---- interface
    def encode(self, x: Tensor, labels: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x = self._flat(x).float()  # (B, 784)
        y = self._onehot(labels, len(x), x)
        if self.config.arch == "mlp":
            hid = self.enc_body(x)
            if y is not None:
                hid = torch.cat([hid, y], dim=-1)  # label joins the encoder after its first layer
        else:
            s = self.config.image_size
            feat = self.enc_body(x.view(-1, 1, s, s))
            hid = self.enc_fc(feat if y is None else torch.cat([feat, y], dim=-1))
        return self.mu(hid), self.presig(hid)

    def code(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        """The point code of an image (B, D): the posterior mean mu (what latent maps, interpolation and
        attribute vectors use; an adversarial autoencoder's `code` is its deterministic z)."""
        return self.encode(x, labels)[0]

    def decode(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        y = self._onehot(labels, len(z), z)
        if y is not None:
            z = torch.cat([z, y], dim=-1)
        return self.dec_body(z)  # (B, 784) logits

    def log_likelihood(self, x: Tensor, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """log p(x | z) under the Bernoulli decoder, summed over pixels: (B,) nats."""
        return -bernoulli_nll(self.decode(z, labels), x)

    def forward(self, x: Tensor, labels: Tensor | None = None, generator: torch.Generator | None = None) -> dict:
        mu, presig = self.encode(x, labels)
        z = reparameterize(mu, presig, generator)  # Kingma & Welling 2014, sec. 2.4
        return {"logits": self.decode(z, labels), "mu": mu, "presig": presig, "z": z}

    def sample_latents(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n draws of z from the prior N(0, I), (n, z_size), on the model's device."""
        dev = next(self.parameters()).device
        return torch.randn(n, self.config.z_size, generator=generator).to(dev)  # CPU generator: device-independent

    @torch.no_grad()
    def sample(self, n: int, labels: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        """n images from the prior: Bernoulli means (probabilities) (n, 784)."""
        return torch.sigmoid(self.decode(self.sample_latents(n, generator), labels))


def elbo_terms(model: ImageVAE, x: Tensor, labels: Tensor | None = None,
               generator: torch.Generator | None = None) -> dict[str, Tensor]:
    """One-sample ELBO pieces per image, in nats: recon = -log p(x|z) (B,), kl = KL(q(z|x) || p(z)) (B,).

    ELBO = -(recon + kl). The KL is analytic (Kingma & Welling 2014, appendix B); the reconstruction
    term is the Bernoulli log-likelihood via ``binary_cross_entropy_with_logits`` (stable for any logit).
    """
    out = model(x, labels, generator)
    return {"recon": bernoulli_nll(out["logits"], x), "kl": gaussian_kl(out["mu"], out["presig"]), "mu": out["mu"], "presig": out["presig"]}


def vae_loss(terms: dict[str, Tensor], kl_weight: float = 1.0) -> Tensor:
    """Mean over the batch of recon + kl_weight * kl (kl_weight = beta, times the warm-up factor)."""
    return (terms["recon"] + kl_weight * terms["kl"]).mean()


def build_image_vae(config: ImageVAEConfig) -> ImageVAE:
    return ImageVAE(config)


# ---- latent paths for drawing


def interpolate_latents(z_a: Tensor, z_b: Tensor, steps: int) -> Tensor:
    """Linear path from z_a to z_b (both (D,)), endpoints included: (steps, D)."""
    if steps < 2:
        raise ValueError(f"steps must be >= 2, got {steps}")
    t = torch.linspace(0, 1, steps, device=z_a.device, dtype=z_a.dtype)[:, None]
    return (1 - t) * z_a + t * z_b


def manifold_latents(n: int, lo: float = 0.05, hi: float = 0.95) -> Tensor:
    """An n x n grid of 2-d latents at prior quantiles (Kingma & Welling 2014, fig. 4): (n*n, 2),
    row-major with z_1 along columns and z_2 decreasing down the rows."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    q = torch.special.ndtri(torch.linspace(lo, hi, n, dtype=torch.float64)).float()
    z1 = q.repeat(n)
    z2 = q.flip(0).repeat_interleave(n)
    return torch.stack([z1, z2], dim=1)


register_model_kind(KIND, ImageVAEConfig, build_image_vae)
