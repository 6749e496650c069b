"""Bivariate mixture density / sampling, reparameterisation and Gaussian KL against independent references."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from sketchvae.distributions import (MixtureParams, bivariate_mixture_log_prob, bivariate_normal_log_prob,
                                     gaussian_kl, reparameterize, sample_bivariate_mixture, sample_categorical)


def random_params(shape, m, gen, dtype=torch.float64, rho_scale=3.0):
    """Random MixtureParams with fields shape + (m,), like a decoder's output after eq. 6."""
    size = (*shape, m)
    return MixtureParams(
        log_pi=torch.log_softmax(torch.randn(size, generator=gen, dtype=dtype), -1),
        mu_x=torch.randn(size, generator=gen, dtype=dtype),
        mu_y=torch.randn(size, generator=gen, dtype=dtype),
        log_sigma_x=0.5 * torch.randn(size, generator=gen, dtype=dtype),
        log_sigma_y=0.5 * torch.randn(size, generator=gen, dtype=dtype),
        rho=torch.tanh(rho_scale * torch.randn(size, generator=gen, dtype=dtype)) * 0.999,
    )


def scipy_mixture_logpdf(params, b, t, x, y):
    total = 0.0
    for k in range(params.log_pi.shape[-1]):
        sx = math.exp(params.log_sigma_x[b, t, k]); sy = math.exp(params.log_sigma_y[b, t, k])
        r = float(params.rho[b, t, k])
        cov = [[sx * sx, r * sx * sy], [r * sx * sy, sy * sy]]
        mean = [float(params.mu_x[b, t, k]), float(params.mu_y[b, t, k])]
        total += math.exp(params.log_pi[b, t, k]) * multivariate_normal.pdf([x, y], mean=mean, cov=cov)
    return math.log(total)


def test_mixture_log_prob_matches_scipy():
    gen = torch.Generator().manual_seed(0)
    params = random_params((3, 4), 5, gen)
    x = 1.5 * torch.randn(3, 4, generator=gen, dtype=torch.float64)
    y = 1.5 * torch.randn(3, 4, generator=gen, dtype=torch.float64)
    got = bivariate_mixture_log_prob(params, x, y)
    assert got.shape == (3, 4)
    want = torch.tensor([[scipy_mixture_logpdf(params, b, t, float(x[b, t]), float(y[b, t])) for t in range(4)]
                         for b in range(3)], dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("rho", [-0.99999, -0.5, 0.0, 0.7, 0.99999])
def test_single_normal_matches_scipy_including_strong_correlation(rho):
    x, y, mx, my, lsx, lsy = 0.3, -0.2, 0.1, 0.05, math.log(0.4), math.log(1.3)
    got = bivariate_normal_log_prob(*(torch.tensor(v, dtype=torch.float64) for v in (x, y, mx, my, lsx, lsy, rho)))
    sx, sy = math.exp(lsx), math.exp(lsy)
    cov = [[sx * sx, rho * sx * sy], [rho * sx * sy, sy * sy]]
    want = multivariate_normal.logpdf([x, y], mean=[mx, my], cov=cov)
    assert float(got) == pytest.approx(want, rel=1e-7, abs=1e-7)


def test_log_prob_stays_finite_where_a_naive_density_underflows():
    # 40 standard deviations away: exp(-800) underflows, log-sum-exp does not.
    p = MixtureParams(*(torch.zeros(1, 1, 2) for _ in range(6)))._replace(
        log_pi=torch.log(torch.tensor([[[0.5, 0.5]]])))
    lp = bivariate_mixture_log_prob(p, torch.tensor([[40.0]]), torch.tensor([[0.0]]))
    assert torch.isfinite(lp).all()
    assert float(lp) == pytest.approx(-math.log(2 * math.pi) - 800.0, rel=1e-6)


@pytest.mark.parametrize("pre_rho", [-30.0, -8.0, 8.0, 30.0])  # tanh -> +-0.9999999 and exactly +-1.0 in float32
@pytest.mark.parametrize("log_sigma", [math.log(1e-6), -40.0, 0.0])
@pytest.mark.parametrize("offset", [0.0, 1e4])
def test_extreme_parameters_give_finite_values_and_gradients(pre_rho, log_sigma, offset):
    pre = torch.tensor([[[pre_rho, 0.0]]], requires_grad=True)  # (1, 1, 2) raw decoder outputs
    ls = torch.full((1, 1, 2), log_sigma, requires_grad=True)
    mu = torch.zeros(1, 1, 2, requires_grad=True)
    logits = torch.zeros(1, 1, 2, requires_grad=True)
    p = MixtureParams(torch.log_softmax(logits, -1), mu, mu * 2, ls, ls + 0.1, torch.tanh(pre))
    lp = bivariate_mixture_log_prob(p, torch.tensor([[offset]]), torch.tensor([[-offset]]))
    assert torch.isfinite(lp).all()
    (-lp.sum()).backward()
    for t in (pre, ls, mu, logits):
        assert torch.isfinite(t.grad).all()


def test_categorical_temperature_follows_eq_8():
    gen = torch.Generator().manual_seed(1)
    logits = torch.tensor([1.0, 0.0, -1.0, 0.5])
    for tau in (0.3, 1.0, 2.0):
        n = 40_000
        idx = sample_categorical(logits.expand(n, 4), tau, gen)
        freq = torch.bincount(idx, minlength=4).double() / n
        want = torch.softmax(logits.double() / tau, -1)
        assert torch.allclose(freq, want, atol=4 * math.sqrt(0.25 / n)), (tau, freq, want)
    assert torch.equal(sample_categorical(logits, greedy=True), torch.tensor(0))
    with pytest.raises(ValueError, match="temperature"):
        sample_categorical(logits, 0.0, gen)


def mixture_moments(params, tau, sigma_scale):
    """Mean and covariance of the tempered mixture (single position, float64)."""
    w = torch.softmax(params.log_pi / tau, -1)
    mus = torch.stack([params.mu_x, params.mu_y], -1)  # (M, 2)
    sx, sy = params.log_sigma_x.exp() * sigma_scale, params.log_sigma_y.exp() * sigma_scale
    covs = torch.stack([torch.stack([sx * sx, params.rho * sx * sy], -1),
                        torch.stack([params.rho * sx * sy, sy * sy], -1)], -2)  # (M, 2, 2)
    mean = (w[:, None] * mus).sum(0)
    second = (w[:, None, None] * (covs + mus[:, :, None] * mus[:, None, :])).sum(0)
    return mean, second - mean[:, None] * mean[None, :]


@pytest.mark.parametrize("tau,convention", [(1.0, "paper"), (0.5, "paper"), (0.5, "magenta")])
def test_sampled_moments_match_the_tempered_mixture(tau, convention):
    gen = torch.Generator().manual_seed(2)
    base = random_params((), 3, gen, rho_scale=1.0)
    n = 100_000
    params = MixtureParams(*(p.expand(n, 3) for p in base))
    dx, dy = sample_bivariate_mixture(params, tau, gen, convention=convention)
    assert dx.shape == dy.shape == (n,)
    samples = torch.stack([dx, dy], -1)
    scale = math.sqrt(tau) if convention == "paper" else tau
    mean, cov = mixture_moments(base, tau, scale)
    emp_cov = torch.cov(samples.T)
    std = cov.diagonal().sqrt()
    assert torch.allclose(samples.mean(0), mean, atol=float(5 * std.max() / math.sqrt(n)))
    assert torch.allclose(emp_cov, cov, atol=float(0.03 * cov.abs().max()))


def test_sampling_per_row_temperature_greedy_and_reproducibility():
    gen = torch.Generator().manual_seed(3)
    p = random_params((4, 1), 5, gen, dtype=torch.float32)
    a = sample_bivariate_mixture(p, torch.tensor([[0.1], [0.5], [1.0], [2.0]]), torch.Generator().manual_seed(9))
    b = sample_bivariate_mixture(p, torch.tensor([[0.1], [0.5], [1.0], [2.0]]), torch.Generator().manual_seed(9))
    assert a[0].shape == (4, 1) and torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    gx, gy = sample_bivariate_mixture(p, greedy=True)
    k = p.log_pi.argmax(-1, keepdim=True)
    assert torch.equal(gx, p.mu_x.gather(-1, k).squeeze(-1)) and torch.equal(gy, p.mu_y.gather(-1, k).squeeze(-1))
    with pytest.raises(ValueError, match="convention"):
        sample_bivariate_mixture(p, 1.0, gen, convention="other")


def test_gaussian_kl_matches_torch_distributions_and_monte_carlo():
    gen = torch.Generator().manual_seed(4)
    mu = torch.randn(6, 3, generator=gen, dtype=torch.float64)
    presig = torch.randn(6, 3, generator=gen, dtype=torch.float64)
    kl = gaussian_kl(mu, presig)
    assert kl.shape == (6,)
    q = torch.distributions.Normal(mu, torch.exp(0.5 * presig))
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    torch.testing.assert_close(kl, torch.distributions.kl_divergence(q, p).sum(-1))
    # Monte-Carlo estimate E_q[log q(z) - log p(z)] for the first row.
    q0 = torch.distributions.Normal(mu[0], torch.exp(0.5 * presig[0]))
    z = q0.sample((200_000,))  # (N, 3)
    mc = (q0.log_prob(z) - torch.distributions.Normal(0.0, 1.0).log_prob(z)).sum(-1).mean()
    assert float(mc) == pytest.approx(float(kl[0]), abs=0.05)
    assert torch.all(gaussian_kl(torch.zeros(2, 5), torch.zeros(2, 5)) == 0)


def test_reparameterize_statistics_and_generator():
    mu = torch.tensor([[1.0, -2.0]]).expand(100_000, 2)
    presig = torch.log(torch.tensor([[0.25, 4.0]])).expand(100_000, 2)
    z = reparameterize(mu, presig, torch.Generator().manual_seed(5))
    torch.testing.assert_close(z.mean(0), torch.tensor([1.0, -2.0]), atol=0.03, rtol=0)
    torch.testing.assert_close(z.std(0), torch.tensor([0.5, 2.0]), atol=0.03, rtol=0)
    z2 = reparameterize(mu, presig, torch.Generator().manual_seed(5))
    assert torch.equal(z, z2)
    np.testing.assert_array_equal(reparameterize(mu[:3], presig[:3] - 1e9).numpy(), mu[:3].numpy())
