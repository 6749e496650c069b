"""Reconstruction loss against a per-point reference loop; KL floor, annealing and learning-rate schedules."""

import math

import pytest
import torch
from scipy.stats import multivariate_normal

from sketchvae.distributions import MixtureParams
from sketchvae.losses import KLSchedule, kl_loss, length_mask, lr_at, sketch_rnn_loss

PEN_PAD = (0.0, 0.0, 0.0, 0.0, 1.0)


def make_batch(gen, lengths, steps, m=4, dtype=torch.float64):
    """Random decoder outputs (B, T, .) and stroke-5 targets padded after each length."""
    bsz = len(lengths)
    size = (bsz, steps, m)
    params = MixtureParams(
        log_pi=torch.log_softmax(torch.randn(size, generator=gen, dtype=dtype), -1),
        mu_x=torch.randn(size, generator=gen, dtype=dtype),
        mu_y=torch.randn(size, generator=gen, dtype=dtype),
        log_sigma_x=0.3 * torch.randn(size, generator=gen, dtype=dtype),
        log_sigma_y=0.3 * torch.randn(size, generator=gen, dtype=dtype),
        rho=0.9 * torch.tanh(torch.randn(size, generator=gen, dtype=dtype)),
    )
    pen_logits = torch.randn(bsz, steps, 3, generator=gen, dtype=dtype)
    targets = torch.tensor(PEN_PAD, dtype=dtype).repeat(bsz, steps, 1)
    for b, n in enumerate(lengths):
        targets[b, :n, :2] = torch.randn(n, 2, generator=gen, dtype=dtype)
        lift = torch.rand(n, generator=gen) < 0.3
        targets[b, :n, 2:] = 0
        targets[b, :n, 2] = (~lift).to(dtype)
        targets[b, :n, 3] = lift.to(dtype)
    return params, pen_logits, targets, torch.tensor(lengths)


def reference_loss(params, pen_logits, targets, lengths, n_max, eval_mode=False):
    """Ha & Eck eq. 9 written point by point with scipy densities."""
    bsz, steps, m = params.log_pi.shape
    offset = pen = 0.0
    for b in range(bsz):
        for t in range(steps):
            real = t < int(lengths[b])
            if real:
                dens = 0.0
                for k in range(m):
                    sx, sy = math.exp(params.log_sigma_x[b, t, k]), math.exp(params.log_sigma_y[b, t, k])
                    r = float(params.rho[b, t, k])
                    dens += math.exp(params.log_pi[b, t, k]) * multivariate_normal.pdf(
                        [float(targets[b, t, 0]), float(targets[b, t, 1])],
                        mean=[float(params.mu_x[b, t, k]), float(params.mu_y[b, t, k])],
                        cov=[[sx * sx, r * sx * sy], [r * sx * sy, sy * sy]])
                offset -= math.log(dens)
            if real or not eval_mode:
                logits = [float(v) for v in pen_logits[b, t]]
                log_z = math.log(sum(math.exp(v) for v in logits))
                k = int(torch.argmax(targets[b, t, 2:]))
                pen -= logits[k] - log_z
    return offset / (bsz * n_max), pen / (bsz * n_max)


@pytest.mark.parametrize("eval_mode", [False, True])
def test_loss_matches_per_point_reference(eval_mode):
    gen = torch.Generator().manual_seed(0)
    params, pen_logits, targets, lengths = make_batch(gen, [5, 2, 7], steps=7)
    got = sketch_rnn_loss(params, pen_logits, targets, lengths, max_seq_len=9, eval_mode=eval_mode)
    want_offset, want_pen = reference_loss(params, pen_logits, targets, lengths, 9, eval_mode)
    assert float(got["offset"]) == pytest.approx(want_offset, rel=1e-6)
    assert float(got["pen"]) == pytest.approx(want_pen, rel=1e-6)
    assert float(got["recon"]) == pytest.approx(want_offset + want_pen, rel=1e-6)


def test_loss_ignores_padding_offsets_and_scales_with_n_max():
    gen = torch.Generator().manual_seed(1)
    params, pen_logits, targets, lengths = make_batch(gen, [3, 6], steps=6, dtype=torch.float32)
    base = sketch_rnn_loss(params, pen_logits, targets, lengths, 6)
    junk = targets.clone()
    junk[0, 3:, :2] = 1e6  # offsets on padding rows are never scored
    params_junk = params._replace(mu_x=params.mu_x.clone())
    params_junk.mu_x[0, 3:] = float("nan")  # nor the mixture predicted there
    again = sketch_rnn_loss(params_junk, pen_logits, junk, lengths, 6)
    for key in ("recon", "offset", "pen"):
        torch.testing.assert_close(again[key], base[key])
    doubled = sketch_rnn_loss(params, pen_logits, targets, lengths, 12)
    torch.testing.assert_close(doubled["recon"], base["recon"] / 2)


def test_pen_loss_covers_padding_unless_eval_mode():
    gen = torch.Generator().manual_seed(2)
    params, pen_logits, targets, lengths = make_batch(gen, [2], steps=5, dtype=torch.float32)
    train = sketch_rnn_loss(params, pen_logits, targets, lengths, 5)
    ev = sketch_rnn_loss(params, pen_logits, targets, lengths, 5, eval_mode=True)
    assert float(train["pen"]) > float(ev["pen"])  # padding rows (target p_end) count in training
    torch.testing.assert_close(train["offset"], ev["offset"])


def test_extreme_decoder_outputs_give_finite_loss_and_gradients():
    gen = torch.Generator().manual_seed(3)
    bsz, steps, m = 2, 4, 3
    raw = torch.randn(bsz, steps, 6 * m + 3, generator=gen)
    raw[..., 3 + 5 * m:] = torch.tensor([30.0, -30.0, 8.0])  # rho_hat: tanh -> +-1 exactly, 0.9999999
    raw[..., 3 + 3 * m:3 + 5 * m] = math.log(1e-6)  # tiny sigmas
    raw.requires_grad_(True)
    pi_hat, mu_x, mu_y, lsx, lsy, rho_hat = raw[..., 3:].chunk(6, -1)
    params = MixtureParams(torch.log_softmax(pi_hat, -1), mu_x, mu_y, lsx, lsy, torch.tanh(rho_hat))
    targets = torch.tensor(PEN_PAD).repeat(bsz, steps, 1)
    targets[:, :3, :2] = 1e4  # huge offsets
    targets[:, :3, 2:] = torch.tensor([1.0, 0.0, 0.0])
    out = sketch_rnn_loss(params, raw[..., :3], targets, torch.tensor([3, 2]), 10)
    assert all(torch.isfinite(v) for v in out.values())
    out["recon"].backward()
    assert torch.isfinite(raw.grad).all()


def test_loss_is_float32_under_low_precision_inputs_and_checks_shapes():
    gen = torch.Generator().manual_seed(4)
    params, pen_logits, targets, lengths = make_batch(gen, [3, 1], steps=3, dtype=torch.float32)
    half = MixtureParams(*(p.bfloat16() for p in params))
    out = sketch_rnn_loss(half, pen_logits.bfloat16(), targets, lengths, 3)
    assert out["recon"].dtype == torch.float32
    with pytest.raises(ValueError, match="max_seq_len"):
        sketch_rnn_loss(params, pen_logits, targets, lengths, 2)
    with pytest.raises(ValueError, match="shape mismatch"):
        sketch_rnn_loss(params, pen_logits[:, :2], targets, lengths, 3)


def test_length_mask():
    assert length_mask(torch.tensor([0, 2, 3]), 3).tolist() == [[False] * 3, [True, True, False], [True] * 3]


def test_kl_loss_is_mean_per_dimension_with_floor():
    gen = torch.Generator().manual_seed(5)
    mu = torch.randn(8, 16, generator=gen)
    presig = torch.randn(8, 16, generator=gen)
    q = torch.distributions.Normal(mu, torch.exp(0.5 * presig))
    want = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).mean()
    torch.testing.assert_close(kl_loss(mu, presig, kl_min=0.0), want)
    torch.testing.assert_close(kl_loss(mu, presig, kl_min=0.2), torch.clamp(want, min=0.2))
    mu0 = torch.full((4, 16), 0.1, requires_grad=True)
    small = kl_loss(mu0, torch.zeros(4, 16), kl_min=0.2)
    small.backward()
    assert float(small.detach()) == pytest.approx(0.2)
    assert torch.all(mu0.grad == 0)  # floored: no gradient pushes the KL below kl_min


def test_kl_schedule_follows_the_paper():
    s = KLSchedule(kl_weight=0.5)
    assert s.weight(0) == pytest.approx(0.5 * 0.01)
    assert s.weight(10_000) == pytest.approx(0.5 * (1 - 0.99 * 0.99995 ** 10_000))
    assert s.weight(10_000_000) == pytest.approx(0.5)
    ws = [s.weight(k) for k in range(0, 200_000, 5_000)]
    assert ws == sorted(ws)
    assert KLSchedule(1.0, eta_min=1.0).weight(0) == 1.0
    for bad in (dict(kl_weight=-1.0), dict(eta_min=1.5), dict(rate=0.0), dict(rate=1.01)):
        with pytest.raises(ValueError, match=list(bad)[0].split("_")[0]):
            KLSchedule(**bad)


def test_lr_at_matches_reference():
    assert lr_at(0) == pytest.approx(1e-3)
    assert lr_at(1000) == pytest.approx((1e-3 - 1e-5) * 0.9999 ** 1000 + 1e-5)
    assert lr_at(10_000_000) == pytest.approx(1e-5)
    assert lr_at(5, lr=0.1, decay=0.5, min_lr=0.0) == pytest.approx(0.1 / 32)
