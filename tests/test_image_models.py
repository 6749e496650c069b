"""Image VAEs: shapes, labels, losses, checkpoint round trip, the IWAE estimator against a linear-Gaussian
model with a closed-form marginal likelihood, training and exact resume."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sketchvae.checkpoint import build_model, load_checkpoint, save_checkpoint
from sketchvae.distributions import gaussian_kl
from sketchvae.image import data as mnist
from sketchvae.image.evaluate import evaluate, iwae_bound
from sketchvae.image.models import (ImageVAE, ImageVAEConfig, elbo_terms, interpolate_latents, manifold_latents,
                                   vae_loss)
from sketchvae.image.render import image_grid, save_grid
from sketchvae.image.train import ImageTrainConfig, fit, load_model

torch.set_num_threads(1)

VARIANTS = [("mlp", 0), ("mlp", 10), ("conv", 0), ("conv", 10)]


def _tiny(arch="mlp", k=0, z=4):
    torch.manual_seed(0)
    return ImageVAE(ImageVAEConfig(arch=arch, z_size=z, hidden_size=32, num_classes=k, channels=4))


# ---------------------------------------------------------------- model


@pytest.mark.parametrize("arch, k", VARIANTS)
def test_shapes(arch, k):
    model = _tiny(arch, k)
    x = torch.rand(3, 1, 28, 28).bernoulli()
    y = torch.tensor([0, 3, 9]) if k else None
    mu, presig = model.encode(x, y)
    assert mu.shape == presig.shape == (3, 4)
    out = model(x.view(3, 784), y)
    assert out["logits"].shape == (3, 784) and out["z"].shape == (3, 4)
    assert model.log_likelihood(x, out["z"], y).shape == (3,)
    assert model.sample(5, torch.arange(5) if k else None).shape == (5, 784)


def test_label_checks():
    cvae, vae = _tiny("mlp", 10), _tiny("mlp", 0)
    x = torch.zeros(2, 784)
    with pytest.raises(ValueError, match="needs labels"):
        cvae.encode(x)
    with pytest.raises(ValueError, match="labels given to an unconditional"):
        vae.encode(x, torch.tensor([1, 2]))
    with pytest.raises(ValueError, match=r"labels must be in 0..9"):
        cvae.encode(x, torch.tensor([1, 10]))
    # labels change a class-conditional decoder's output; blends of one-hots are accepted
    z = torch.zeros(2, 4)
    assert not torch.allclose(cvae.decode(z, torch.tensor([0, 0])), cvae.decode(z, torch.tensor([0, 1])))
    blend = F.one_hot(torch.tensor([0, 1]), 10).float()
    assert torch.allclose(cvae.decode(z, blend), cvae.decode(z, torch.tensor([0, 1])))


@pytest.mark.parametrize("bad", [dict(arch="rnn"), dict(z_size=0), dict(num_classes=-1), dict(arch="conv", image_size=30)])
def test_config_validation(bad):
    with pytest.raises(ValueError):
        ImageVAEConfig(**bad)


def test_elbo_terms_are_bernoulli_nll_and_analytic_kl():
    model = _tiny()
    x = torch.rand(6, 784).bernoulli()
    g = torch.Generator().manual_seed(0)
    t = elbo_terms(model, x, generator=g)
    z = model(x, generator=torch.Generator().manual_seed(0))["z"]
    p = torch.sigmoid(model.decode(z))
    recon = -(x * torch.log(p) + (1 - x) * torch.log1p(-p)).sum(-1)
    assert torch.allclose(t["recon"], recon, rtol=1e-4)
    assert torch.allclose(t["kl"], gaussian_kl(t["mu"], t["presig"]))
    assert torch.isclose(vae_loss(t, 0.5), (t["recon"] + 0.5 * t["kl"]).mean())


@pytest.mark.parametrize("arch, k", VARIANTS)
def test_checkpoint_round_trip(tmp_path, arch, k):
    model = _tiny(arch, k)
    path = save_checkpoint(tmp_path / "m.pt", kind="image_vae", config=model.config, model=model)
    ckpt = load_checkpoint(path)
    again = build_model(ckpt, path)
    z = torch.randn(3, 4)
    y = torch.tensor([1, 2, 3]) if k else None
    assert torch.equal(model.decode(z, y), again.decode(z, y))
    assert again.config == model.config


def test_latent_paths():
    z = interpolate_latents(torch.zeros(3), torch.ones(3), 5)
    assert z.shape == (5, 3) and torch.allclose(z[2], torch.full((3,), 0.5))
    grid = manifold_latents(4)
    assert grid.shape == (16, 2)
    assert torch.allclose(grid[0], torch.tensor([-1.6449, 1.6449]), atol=1e-3)  # Phi^-1(0.05), top left
    assert torch.allclose(grid[-1], torch.tensor([1.6449, -1.6449]), atol=1e-3)


def test_image_grid_layout(tmp_path):
    imgs = np.zeros((5, 28, 28), np.float32)
    imgs[1] = 1.0
    pic = image_grid(imgs, 3, padding=2)
    assert pic.shape == (2 * 30 + 2, 3 * 30 + 2) and pic.dtype == np.uint8
    assert pic[2:30, 32:60].max() == 0 and pic[2:30, 2:30].min() == 255  # black digit on white
    from PIL import Image

    p = save_grid(tmp_path / "g.png", imgs, 3, scale=2)
    assert Image.open(p).size == (2 * (3 * 30 + 2), 2 * (2 * 30 + 2))


# ---------------------------------------------------------------- IWAE on a linear-Gaussian model


class LinearGaussian:
    """p(z) = N(0, I), p(x | z) = N(W z + b, s^2 I), so p(x) = N(b, W W^T + s^2 I) exactly.

    W has orthogonal columns, so the true posterior N(m(x), S) has a diagonal S and a diagonal q can
    be exact (shift=0, scale=1) or deliberately off (mean shifted, std scaled).
    """

    def __init__(self, shift=0.0, scale=1.0, dz=2, dx=5, seed=0):
        g = torch.Generator().manual_seed(seed)
        q, _ = torch.linalg.qr(torch.randn(dx, dz, generator=g, dtype=torch.float64))
        self.W = q * torch.tensor([2.0, 0.7], dtype=torch.float64)[:dz]
        self.b = torch.randn(dx, generator=g, dtype=torch.float64)
        self.s = 0.5
        self.S = torch.linalg.inv(torch.eye(dz, dtype=torch.float64) + self.W.T @ self.W / self.s ** 2)
        self.shift, self.scale = shift, scale

    def encode(self, x, labels=None):
        m = (x - self.b) @ self.W @ self.S / self.s ** 2
        var = torch.diagonal(self.S) * self.scale ** 2
        return m + self.shift, torch.log(var).expand_as(m)

    def log_likelihood(self, x, z, labels=None):
        return torch.distributions.Normal(z @ self.W.T + self.b, self.s).log_prob(x).sum(-1)

    def log_marginal(self, x):
        cov = self.W @ self.W.T + self.s ** 2 * torch.eye(len(self.b), dtype=torch.float64)
        return torch.distributions.MultivariateNormal(self.b, cov).log_prob(x)

    def elbo(self, x):
        """Closed-form ELBO of the (diagonal) q: E_q log p(x|z) - KL(q || p)."""
        mu, presig = self.encode(x)
        resid = x - mu @ self.W.T - self.b
        trace = (self.W.square().sum(0) * presig.exp()).sum(-1)  # tr(W diag(v) W^T)
        dx = x.shape[-1]
        e_loglik = -0.5 * dx * math.log(2 * math.pi * self.s ** 2) - (resid.square().sum(-1) + trace) / (2 * self.s ** 2)
        return e_loglik - gaussian_kl(mu, presig)

    def data(self, n, seed=1):
        g = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.W.shape[1], generator=g, dtype=torch.float64)
        return z @ self.W.T + self.b + self.s * torch.randn(n, len(self.b), generator=g, dtype=torch.float64)


def test_iwae_is_exact_with_the_true_posterior():
    model = LinearGaussian()
    x = model.data(20)
    g = torch.Generator().manual_seed(0)
    for k in (1, 7, 5000):
        est = iwae_bound(model, x, k=k, max_rows=9999, generator=g)  # chunks of 499, the last one partial
        assert torch.allclose(est, model.log_marginal(x), atol=1e-9)


def test_iwae_k1_equals_elbo_in_expectation():
    model = LinearGaussian(shift=0.3, scale=0.8)
    x = model.data(10)
    reps = 4000
    est = iwae_bound(model, x.repeat(reps, 1), k=1, generator=torch.Generator().manual_seed(0)).view(reps, 10)
    mean, se = est.mean(0), est.std(0) / math.sqrt(reps)
    assert ((mean - model.elbo(x)).abs() < 4 * se + 1e-6).all()
    assert (model.elbo(x) < model.log_marginal(x)).all()


def test_iwae_increases_with_k_towards_log_px():
    model = LinearGaussian(shift=0.3, scale=0.8)
    x = model.data(200)
    g = torch.Generator().manual_seed(0)
    log_px = model.log_marginal(x).mean().item()
    bounds = {k: iwae_bound(model, x, k=k, generator=g).mean().item() for k in (1, 10, 100, 5000)}
    assert bounds[1] < bounds[10] - 0.2 < bounds[100] - 0.4 < bounds[5000] - 0.4  # gaps ~0.54, 0.30, 0.06
    assert bounds[5000] <= log_px + 0.01
    assert abs(bounds[5000] - log_px) < 0.05


def test_iwae_chunks_stay_under_max_rows():
    model = _tiny()
    seen = []
    orig = model.log_likelihood

    def spy(x, z, labels=None):
        seen.append(len(z))
        return orig(x, z, labels)

    model.log_likelihood = spy
    x = torch.rand(8, 784).bernoulli()
    est = iwae_bound(model, x, k=50, max_rows=100)
    assert est.shape == (8,) and max(seen) <= 100 and sum(seen) == 8 * 50


# ---------------------------------------------------------------- evaluation and training


@pytest.fixture(scope="module")
def fake_mnist(tmp_path_factory):
    return mnist.write_synthetic(tmp_path_factory.mktemp("mnist"), n_train=256, n_test=64)


def test_evaluate_reports_nats_per_image(fake_mnist):
    model = _tiny()
    data = mnist.load_data(fake_mnist, "test", limit=40)
    m = evaluate(model, data, k=20, batch_size=16)
    assert m["n"] == 40 and m["k"] == 20
    assert m["elbo"] == pytest.approx(-(m["recon"] + m["kl"]))
    assert 0 < m["nll"] < -m["elbo"]  # the k=20 bound is tighter than the ELBO


def _cfg(**kw):
    return ImageTrainConfig(**{"epochs": 2, "batch_size": 64, "device": "cpu", "seed": 3, "valid_size": 32, **kw})


def test_fit_writes_run_folder_and_learns(tmp_path, fake_mnist):
    mc = ImageVAEConfig(z_size=4, hidden_size=64)
    res = fit(mc, _cfg(epochs=3, lr=3e-3), fake_mnist, tmp_path / "run")
    assert res.epochs == 3 and res.step == 3 * 4
    lines = [json.loads(s) for s in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["split"]) for r in lines] == [(e, s) for e in (1, 2, 3) for s in ("train", "valid", "test")]
    tests = [r["elbo"] for r in lines if r["split"] == "test"]
    assert tests[-1] > tests[0]
    model, ckpt = load_model(tmp_path / "run" / "best.pt")
    assert ckpt["extra"]["binarize"] == "dynamic" and model.config == mc and not model.training
    with pytest.raises(ValueError, match="already holds a run"):
        fit(mc, _cfg(), fake_mnist, tmp_path / "run")


def assert_resume_reproduces_the_uninterrupted_run(tmp_path, data_dir, model_config, cfg) -> dict:
    """Train 2 epochs straight, and 1 epoch then resumed to 2: same weights and metrics (times aside).
    Returns the straight run's last.pt."""
    fit(model_config, cfg(epochs=2), data_dir, tmp_path / "straight")
    fit(model_config, cfg(epochs=1), data_dir, tmp_path / "resumed")
    fit(None, cfg(epochs=2), data_dir, tmp_path / "resumed", resume=True)
    a = load_checkpoint(tmp_path / "straight" / "last.pt")
    b = load_checkpoint(tmp_path / "resumed" / "last.pt")
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    strip = lambda p: [{k: v for k, v in json.loads(s).items() if k not in ("seconds", "images_per_s")}
                       for s in p.read_text().splitlines()]
    assert strip(tmp_path / "straight" / "metrics.jsonl") == strip(tmp_path / "resumed" / "metrics.jsonl")
    return a


def test_resume_reproduces_the_uninterrupted_run(tmp_path, fake_mnist):
    assert_resume_reproduces_the_uninterrupted_run(tmp_path, fake_mnist,
                                                   ImageVAEConfig(z_size=4, hidden_size=32, num_classes=10), _cfg)


@pytest.mark.parametrize("binarize", ["static", "grey"])
def test_fit_other_binarisations_and_warmup(tmp_path, fake_mnist, binarize):
    res = fit(ImageVAEConfig(arch="conv", z_size=2, hidden_size=16, channels=4),
              _cfg(epochs=1, binarize=binarize, beta=2.0, kl_eta_min=0.1, kl_decay_rate=0.9, valid_size=64),
              fake_mnist, tmp_path / "run")
    assert set(res.last) == {"train", "valid", "test"}
    assert 0.2 < res.last["train"]["kl_weight"] < 2.0  # 2 * (1 - 0.9 * 0.9^2)


def test_standard_error_matches_numpy():
    from sketchvae.image.evaluate import _standard_error

    v = np.random.default_rng(0).normal(90.0, 5.0, size=37)
    se = _standard_error(float(np.mean(v ** 2)), float(v.mean()), len(v))
    assert se == pytest.approx(v.std(ddof=1) / np.sqrt(len(v)), rel=1e-9)
