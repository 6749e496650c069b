"""Adversarial autoencoder: priors, shapes, the two training phases, run folder and exact resume."""

from __future__ import annotations

import json
import math

import pytest
import torch

from sketchvae.checkpoint import build_model, load_checkpoint, save_checkpoint
from sketchvae.image import data as mnist
from sketchvae.image.aae import (AAE, MIX_COMPONENTS, MIX_RADIUS, AAEConfig, AAETrainer, discriminator_loss,
                                 generator_loss, recon_loss, sample_prior)
from sketchvae.image.train import ImageTrainConfig, fit, load_model

from test_image_models import assert_resume_reproduces_the_uninterrupted_run

torch.set_num_threads(1)


def _tiny(**kw):
    torch.manual_seed(0)
    return AAE(AAEConfig(**{"z_size": 4, "hidden_size": 32, "disc_hidden_size": 16, **kw}))


@pytest.mark.parametrize("bad", [dict(prior="uniform"), dict(prior="mixture10", z_size=3), dict(z_size=0),
                                 dict(num_classes=-1), dict(hidden_size=1.5)])
def test_config_validation(bad):
    with pytest.raises(ValueError):
        AAEConfig(**bad)


def test_gaussian_prior_is_standard_normal():
    z = sample_prior(20000, AAEConfig(z_size=3), torch.Generator().manual_seed(0))
    assert z.shape == (20000, 3)
    assert z.mean(0).abs().max() < 0.03 and (z.std(0) - 1).abs().max() < 0.03


def test_mixture10_prior_has_ten_elongated_spokes():
    z = sample_prior(50000, AAEConfig(z_size=2, prior="mixture10"), torch.Generator().manual_seed(0))
    r, angle = z.norm(dim=1), torch.atan2(z[:, 1], z[:, 0])
    assert abs(r.mean().item() - MIX_RADIUS) < 0.05
    # every sample lies near one of the ten spokes (angles 2 pi c / 10), and all spokes are used equally
    spoke = torch.round(angle / (2 * math.pi / MIX_COMPONENTS)) % MIX_COMPONENTS
    off = torch.remainder(angle - spoke * 2 * math.pi / MIX_COMPONENTS + math.pi, 2 * math.pi) - math.pi
    assert (off.abs() * r < 0.5).float().mean() > 0.999  # tangential std 0.1: 5 sigma
    counts = torch.bincount(spoke.long(), minlength=10).float() / len(z)
    assert (counts - 0.1).abs().max() < 0.01
    # elongated along the spoke: radial spread much larger than tangential
    assert (r - MIX_RADIUS).std() > 3 * (off * r).std()


@pytest.mark.parametrize("k", [0, 10])
def test_shapes_labels_and_checkpoint_round_trip(tmp_path, k):
    model = _tiny(num_classes=k)
    x = torch.rand(3, 784).bernoulli()
    y = torch.tensor([0, 3, 9]) if k else None
    z = model.code(x, y)
    assert z.shape == (3, 4) and torch.equal(model.code(x), z)  # the encoder never sees the label
    assert model.decode(z, y).shape == (3, 784) and model.log_likelihood(x, z, y).shape == (3,)
    assert model.sample(5, torch.arange(5) if k else None, torch.Generator().manual_seed(0)).shape == (5, 784)
    if k:
        with pytest.raises(ValueError, match="needs labels"):
            model.decode(z)
        assert not torch.allclose(model.decode(z, torch.tensor([0, 0, 0])), model.decode(z, torch.tensor([1, 1, 1])))
    path = save_checkpoint(tmp_path / "a.pt", kind="image_aae", config=model.config, model=model)
    again = build_model(load_checkpoint(path), path)
    assert again.config == model.config and torch.equal(again.decode(z, y), model.decode(z, y))


def test_losses_are_the_papers_cross_entropies():
    logits, x = torch.randn(4, 784), torch.rand(4, 784).bernoulli()
    p = torch.sigmoid(logits)
    assert torch.allclose(recon_loss(logits, x), -(x * p.log() + (1 - x) * (1 - p).log()).sum(-1), rtol=1e-4)
    dp, dc = torch.randn(5, 1), torch.randn(5, 1)
    want = -(torch.sigmoid(dp).log().mean() + (1 - torch.sigmoid(dc)).log().mean())
    assert torch.isclose(discriminator_loss(dp, dc), want, rtol=1e-5)
    assert torch.isclose(generator_loss(dc), -torch.sigmoid(dc).log().mean(), rtol=1e-5)


def test_each_phase_updates_only_its_networks():
    """Reconstruction moves encoder + decoder; the discriminator phase only D; the generator phase only
    the encoder (checked by running the trainer's step with the other optimisers' lr at zero)."""
    x = torch.rand(16, 784).bernoulli()
    for active in ("ae", "disc", "gen"):
        model = _tiny()
        cfg = ImageTrainConfig(lr=1e-2 if active == "ae" else 1e-30, adv_lr=1e-2)
        tr = AAETrainer(model, cfg)
        if active == "disc":
            tr.opt_g.param_groups[0]["lr"] = 0.0
        if active == "gen":
            tr.opt_d.param_groups[0]["lr"] = 0.0
        if active == "ae":
            for o in (tr.opt_d, tr.opt_g):
                o.param_groups[0]["lr"] = 0.0
        before = {k: v.clone() for k, v in model.state_dict().items()}
        sums = tr.train_batch(x, None, 0)
        assert sums.shape == (4,) and torch.isfinite(sums).all()
        moved = {k.split(".")[0] for k, v in model.state_dict().items() if not torch.allclose(v, before[k], atol=1e-12)}
        assert moved == {"ae": {"encoder", "decoder"}, "disc": {"discriminator"}, "gen": {"encoder"}}[active]


def test_discriminator_learns_to_separate_shifted_codes():
    """With a frozen encoder whose codes are far from the prior, the discriminator phase alone drives
    its loss well below log 4 (chance)."""
    model = _tiny()
    with torch.no_grad():
        model.encoder[-1].bias.fill_(3.0)
    tr = AAETrainer(model, ImageTrainConfig(lr=1e-30, adv_lr=1e-2))
    tr.opt_g.param_groups[0]["lr"] = 0.0
    x = torch.rand(64, 784).bernoulli()
    torch.manual_seed(0)
    for _ in range(60):
        d = tr.train_batch(x, None, 0)[2].item() / 64
    assert d < 0.3 < math.log(4)


@pytest.fixture(scope="module")
def fake_mnist(tmp_path_factory):
    return mnist.write_synthetic(tmp_path_factory.mktemp("mnist"), n_train=256, n_test=64)


def _cfg(**kw):
    return ImageTrainConfig(**{"epochs": 2, "batch_size": 64, "device": "cpu", "seed": 3, "valid_size": 32,
                               "lr": 3e-3, **kw})


def test_fit_writes_aae_run_folder_and_learns(tmp_path, fake_mnist):
    mc = AAEConfig(z_size=2, hidden_size=64, disc_hidden_size=16, prior="mixture10", num_classes=10)
    res = fit(mc, _cfg(epochs=4), fake_mnist, tmp_path / "run")
    assert res.epochs == 4 and res.step == 4 * 4 and math.isnan(res.best_elbo)
    lines = [json.loads(s) for s in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["split"]) for r in lines] == [(e, s) for e in (1, 2, 3, 4) for s in ("train", "valid", "test")]
    assert {"recon", "disc", "gen", "adv_lr"} <= set(lines[0]) and "elbo" not in lines[0]
    tests = [r["recon"] for r in lines if r["split"] == "test"]
    assert tests[-1] < tests[0]
    model, ckpt = load_model(tmp_path / "run" / "best.pt")
    assert isinstance(model, AAE) and model.config == mc and ckpt["kind"] == "image_aae"
    assert ckpt["extra"]["epoch"] == 4  # an AAE's best.pt is its last epoch


def test_aae_resume_reproduces_the_uninterrupted_run(tmp_path, fake_mnist):
    mc = AAEConfig(z_size=3, hidden_size=32, disc_hidden_size=16)
    a = assert_resume_reproduces_the_uninterrupted_run(tmp_path, fake_mnist, mc, _cfg)
    assert set(a["train_state"]["optimizer"]) == {"ae", "disc", "gen"}
