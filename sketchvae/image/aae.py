"""Adversarial autoencoder (Makhzani et al. 2015, *Adversarial Autoencoders*) for 28x28 digits.

A deterministic encoder z = q(x), a Bernoulli decoder p(x | z) and a discriminator D(z) that tells
codes of training images from samples of the prior p(z). Instead of a VAE's KL term, the
discriminator makes the *aggregate* posterior q(z) = E_x q(z | x) match p(z) (paper, sec. 2).
Each mini-batch runs the paper's two phases (sec. 2, "Training"):

1. reconstruction: encoder and decoder minimise the cross-entropy -log p(x | z = q(x));
2. regularisation: the discriminator learns codes (label 0) from prior samples (label 1),
   then the encoder, as the generator, learns to fool it (non-saturating loss, label 1).

Priors (``prior``): ``gaussian`` = N(0, I) in any dimension; ``mixture10`` = ten elongated 2-d
Gaussians on a circle, one per digit's worth of mass (the paper's fig. 2 / 4 prior, unlabelled).
``num_classes = 10`` is the *supervised* AAE (paper sec. 5, fig. 7): the one-hot label joins the
decoder's input only, so z is pushed to hold the style and not the digit.

Interface shared with :class:`sketchvae.image.models.ImageVAE` (so sampling, interpolation,
latent maps and the measures work on both): ``code(x, labels) -> z``, ``decode(z, labels) ->
logits``, ``sample(n, labels, generator) -> probabilities``, ``config.z_size``,
``config.num_classes``, ``config.image_size``. An AAE defines no likelihood bound (no ELBO, no
IWAE): its generative log-likelihood is measured by the Parzen window (:mod:`sketchvae.image.measure`).
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sketchvae.checkpoint import register_model_kind
from sketchvae.image.models import bernoulli_nll, onehot_labels

KIND = "image_aae"
PRIORS = ("gaussian", "mixture10")
# mixture10: component c has its mean at radius MIX_RADIUS, angle 2 pi c / 10, a standard deviation
# of MIX_RADIAL_STD along the radius and MIX_TANGENT_STD across it (elongated spokes, as the paper's fig. 2)
MIX_COMPONENTS, MIX_RADIUS, MIX_RADIAL_STD, MIX_TANGENT_STD = 10, 2.0, 0.5, 0.1


@dataclasses.dataclass
class AAEConfig:
    z_size: int = 8  # latent dimensions; 8 as the paper's MNIST likelihood experiment, 2 for latent maps
    hidden_size: int = 1000  # units in each of the two hidden layers of encoder and decoder (paper: 1000)
    disc_hidden_size: int = 1000  # units in each of the discriminator's two hidden layers (paper: 1000)
    num_classes: int = 0  # 0 = unsupervised; 10 = supervised AAE (one-hot label into the decoder)
    prior: str = "gaussian"  # gaussian (N(0, I)) | mixture10 (ten 2-d Gaussians on a circle; z_size 2)
    image_size: int = 28  # square images

    def __post_init__(self) -> None:
        for name, lo in (("z_size", 1), ("hidden_size", 1), ("disc_hidden_size", 1), ("num_classes", 0),
                         ("image_size", 1)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
        if self.prior not in PRIORS:
            raise ValueError(f"unknown AAE prior {self.prior!r}; choose from {list(PRIORS)}")
        if self.prior == "mixture10" and self.z_size != 2:
            raise ValueError(f"the mixture10 prior is 2-d: it needs z_size 2, got {self.z_size}")

    @property
    def num_pixels(self) -> int:
        return self.image_size * self.image_size


def sample_prior(n: int, config: AAEConfig, generator: torch.Generator | None = None) -> Tensor:
    """n draws from the AAE's prior p(z): (n, z_size), on the generator's device (CPU by default)."""
    dev = generator.device if generator is not None else torch.device("cpu")
    if config.prior == "gaussian":
        return torch.randn(n, config.z_size, generator=generator, device=dev)
    comp = torch.randint(MIX_COMPONENTS, (n,), generator=generator, device=dev)
    eps = torch.randn(n, 2, generator=generator, device=dev)
    r = MIX_RADIUS + MIX_RADIAL_STD * eps[:, 0]  # along the spoke
    t = MIX_TANGENT_STD * eps[:, 1]  # across it
    angle = 2 * math.pi * comp.float() / MIX_COMPONENTS
    c, s = torch.cos(angle), torch.sin(angle)
    return torch.stack([r * c - t * s, r * s + t * c], dim=1)


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class AAE(nn.Module):
    def __init__(self, config: AAEConfig):
        super().__init__()
        self.config = config
        h, d, k, hd = config.hidden_size, config.z_size, config.num_classes, config.disc_hidden_size
        self.encoder = _mlp([config.num_pixels, h, h, d])  # x -> z, deterministic
        self.decoder = _mlp([d + k, h, h, config.num_pixels])  # (z, label) -> Bernoulli logits
        self.discriminator = _mlp([d, hd, hd, 1])  # z -> logit of "drawn from the prior"

    def code(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        """z = q(x): (B, D). `labels` are accepted for a uniform interface and unused: the encoder never
        sees the label (in the supervised AAE only the decoder does)."""
        return self.encoder(x.reshape(len(x), -1).float())

    encode = code

    def decode(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        y = onehot_labels(labels, self.config.num_classes, len(z), z, "AAE")
        if y is not None:
            z = torch.cat([z, y], dim=-1)
        return self.decoder(z)  # (B, 784) logits

    def log_likelihood(self, x: Tensor, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """log p(x | z) under the Bernoulli decoder, summed over pixels: (B,) nats."""
        return -bernoulli_nll(self.decode(z, labels), x)

    def forward(self, x: Tensor, labels: Tensor | None = None) -> dict:
        z = self.code(x)
        return {"logits": self.decode(z, labels), "z": z}

    def sample_latents(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n draws of z from this model's prior, (n, z_size), on the model's device."""
        return sample_prior(n, self.config, generator).to(next(self.parameters()).device)

    @torch.no_grad()
    def sample(self, n: int, labels: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        """n images from the prior: Bernoulli means (probabilities) (n, 784)."""
        z = self.sample_latents(n, generator)  # CPU generator: device-independent
        return torch.sigmoid(self.decode(z, labels))


# ---- losses (pure functions of the model's outputs)


recon_loss = bernoulli_nll  # -log p(x | z) per image, nats (B,): the VAEs' Bernoulli cross-entropy


def discriminator_loss(d_prior: Tensor, d_code: Tensor) -> Tensor:
    """Mean binary cross-entropy of D: prior samples are 'real' (1), encoder codes 'fake' (0)."""
    return (F.binary_cross_entropy_with_logits(d_prior, torch.ones_like(d_prior))
            + F.binary_cross_entropy_with_logits(d_code, torch.zeros_like(d_code)))


def generator_loss(d_code: Tensor) -> Tensor:
    """The encoder as generator: -log D(q(x)), the non-saturating form (Goodfellow et al. 2014, sec. 3)."""
    return F.binary_cross_entropy_with_logits(d_code, torch.ones_like(d_code))


class AAETrainer:
    """The AAE's optimisers and per-batch step, plugged into :func:`sketchvae.image.train.fit`.

    Three Adam optimisers, one per phase: reconstruction (encoder + decoder, ``lr``), discriminator and
    generator (encoder only), both at ``adv_lr`` with beta1 = 0.5 (the usual choice for adversarial
    games; the paper used SGD with momentum).
    """

    kind = KIND
    train_keys = ("loss", "recon", "disc", "gen")  # per-image means in metrics.jsonl (loss = recon)

    def __init__(self, model: AAE, config):
        self.model, self.config = model, config
        m = model
        self.opt_ae = torch.optim.Adam([*m.encoder.parameters(), *m.decoder.parameters()], lr=config.lr)
        self.opt_d = torch.optim.Adam(m.discriminator.parameters(), lr=config.adv_lr, betas=(0.5, 0.999))
        self.opt_g = torch.optim.Adam(m.encoder.parameters(), lr=config.adv_lr, betas=(0.5, 0.999))

    def state_dict(self) -> dict:
        return {"ae": self.opt_ae.state_dict(), "disc": self.opt_d.state_dict(), "gen": self.opt_g.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.opt_ae.load_state_dict(state["ae"])
        self.opt_d.load_state_dict(state["disc"])
        self.opt_g.load_state_dict(state["gen"])
        for opt, lr in ((self.opt_ae, self.config.lr), (self.opt_d, self.config.adv_lr),
                        (self.opt_g, self.config.adv_lr)):
            for group in opt.param_groups:
                group["lr"] = lr

    def train_batch(self, x: Tensor, labels: Tensor | None, step: int) -> Tensor:
        """One mini-batch, both phases; returns the sums over the batch of (loss, recon, disc, gen)."""
        m = self.model
        # phase 1: reconstruction
        recon = recon_loss(m.decode(m.code(x), labels), x)  # (B,)
        self.opt_ae.zero_grad(set_to_none=True)
        recon.mean().backward()
        self.opt_ae.step()
        # phase 2a: the discriminator, on fresh codes of the updated encoder and prior samples
        with torch.no_grad():
            z_code = m.code(x)
        z_prior = sample_prior(len(x), m.config).to(x.device)  # global RNG: saved and restored on resume
        d_loss = discriminator_loss(m.discriminator(z_prior), m.discriminator(z_code))
        self.opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        self.opt_d.step()
        # phase 2b: the encoder as generator, against the updated discriminator
        m.discriminator.requires_grad_(False)  # D is fixed in this phase: no gradients for its weights
        g_loss = generator_loss(m.discriminator(m.code(x)))
        self.opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        self.opt_g.step()
        m.discriminator.requires_grad_(True)
        n = len(x)
        r = recon.detach().sum()
        return torch.stack([r, r, d_loss.detach() * n, g_loss.detach() * n])

    def train_record(self, means: dict, step: int) -> dict:
        return {**means, "lr": self.config.lr, "adv_lr": self.config.adv_lr}

    @torch.no_grad()
    def evaluate(self, data, batch_size: int) -> dict:
        """Mean reconstruction cross-entropy of a split (decoding q(x)), and the discriminator's loss on
        its codes against as many prior samples (drawn from a fixed generator, so repeatable)."""
        m = self.model
        m.eval()
        g = torch.Generator().manual_seed(0)
        recon = disc = 0.0
        n = 0
        conditional = m.config.num_classes > 0
        for x, y in data.batches(batch_size, shuffle=False):
            z = m.code(x)
            recon += recon_loss(m.decode(z, y if conditional else None), x).sum().item()
            zp = sample_prior(len(x), m.config, g).to(x.device)
            disc += discriminator_loss(m.discriminator(zp), m.discriminator(z)).item() * len(x)
            n += len(x)
        return {"loss": recon / n, "recon": recon / n, "disc": disc / n}

    @staticmethod
    def score(rec: dict, epoch: int) -> float:
        """Which epoch is best.pt: an AAE has no likelihood bound to select on, and its reconstruction
        improves while the prior match may not; best.pt is the latest epoch."""
        return float(epoch)


def build_aae(config: AAEConfig) -> AAE:
    return AAE(config)


register_model_kind(KIND, AAEConfig, build_aae)
