"""Measures of image models: Parzen window (against scipy), classifier scores, attributes of digits,
attribute vectors, and the classifier itself."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.special import logsumexp

from sketchvae.image import data as mnist
from sketchvae.image.classifier import ClassifierConfig, DigitClassifier, accuracy, fit_classifier
from sketchvae.image.measure import (attribute_sweep, attribute_vector, classifier_scores, measure_attribute,
                                     parzen_estimate, parzen_log_likelihood, reconstruction)

torch.set_num_threads(1)


# ---------------------------------------------------------------- Parzen window


def _scipy_parzen(samples, x, sigma):
    """log (1/n) sum_i N(x; s_i, sigma^2 I), one point and one sample at a time."""
    d = samples.shape[1]
    return np.array([logsumexp([stats.multivariate_normal.logpdf(xj, mean=si, cov=sigma ** 2 * np.eye(d))
                                for si in samples]) - math.log(len(samples)) for xj in x])


def test_parzen_matches_scipy():
    rng = np.random.default_rng(0)
    samples, x = rng.random((40, 6)), rng.random((13, 6))
    sigmas = [0.05, 0.2, 1.0]
    got = parzen_log_likelihood(torch.from_numpy(samples), torch.from_numpy(x), sigmas, chunk=4)  # 4 chunks
    assert got.shape == (13, 3)
    for j, s in enumerate(sigmas):
        np.testing.assert_allclose(got[:, j].numpy(), _scipy_parzen(samples, x, s), rtol=1e-9, atol=1e-9)


def test_parzen_far_points_do_not_underflow():
    """Points hundreds of sigmas away: every kernel underflows in float64 one at a time, the
    log-sum-exp still returns the exact value (dominated by the nearest sample)."""
    samples = torch.tensor([[0.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    x = torch.tensor([[30.0, 0.0]], dtype=torch.float64)
    sigma = 0.05
    got = parzen_log_likelihood(samples, x, [sigma])[0, 0].item()
    want = -(29.0 ** 2) / (2 * sigma ** 2) + math.log(0.5) - math.log(2 * math.pi * sigma ** 2)
    assert math.isfinite(got) and got == pytest.approx(want, rel=1e-12)


def test_parzen_estimate_chooses_the_width_on_validation_and_reports_its_error():
    """Samples and points from N(0, I) in 3-d: the chosen sigma is interior and the estimate is close to
    the true mean log-density (the kernel density of 4000 samples is a good one in 3-d)."""
    g = torch.Generator().manual_seed(0)
    d = 3
    samples, test, valid = (torch.randn(n, d, generator=g, dtype=torch.float64) for n in (4000, 2000, 500))
    sigmas = np.logspace(-1.5, 0.5, 17)
    est = parzen_estimate(samples, test, valid, sigmas)
    assert not est["sigma_on_grid_edge"] and 0.1 < est["sigma"] < 1.0
    true = stats.multivariate_normal(np.zeros(d), np.eye(d)).logpdf(test.numpy())
    assert est["parzen"] == pytest.approx(true.mean(), abs=0.15)
    assert est["parzen"] < true.mean()  # the kernel density is too wide: biased low
    ll = parzen_log_likelihood(samples, test, [est["sigma"]])[:, 0].numpy()
    assert est["parzen_se"] == pytest.approx(ll.std(ddof=1) / math.sqrt(len(ll)), rel=1e-9)
    assert est["n_samples"] == 4000 and est["n_test"] == 2000 and est["n_valid"] == 500


def test_parzen_errors():
    with pytest.raises(ValueError, match="dimensions"):
        parzen_log_likelihood(torch.zeros(3, 4), torch.zeros(2, 5), [0.1])
    with pytest.raises(ValueError, match="> 0"):
        parzen_log_likelihood(torch.zeros(3, 4), torch.zeros(2, 4), [0.0])


# ---------------------------------------------------------------- classifier scores


def test_classifier_scores_against_a_direct_computation():
    rng = np.random.default_rng(1)
    p = rng.dirichlet(np.ones(10) * 0.3, size=200)
    asked = torch.from_numpy(rng.integers(0, 10, 200))
    s = classifier_scores(torch.from_numpy(p), asked)
    py = p.mean(0)
    is_ref = math.exp(np.mean([stats.entropy(pi, py) for pi in p]))  # scipy KL(p(y|x) || p(y))
    assert s["inception_score"] == pytest.approx(is_ref, rel=1e-9)
    assert s["histogram"] == pytest.approx(np.bincount(p.argmax(1), minlength=10) / 200)
    assert s["accuracy_as_asked"] == pytest.approx(np.mean(p.argmax(1) == asked.numpy()))
    assert classifier_scores(torch.from_numpy(p))["accuracy_as_asked"] is None


def test_inception_score_extremes():
    confident_all = torch.eye(10).repeat(5, 1)  # every class, each sample certain
    assert classifier_scores(confident_all)["inception_score"] == pytest.approx(10.0)
    one_class = torch.zeros(30, 10)
    one_class[:, 3] = 1.0
    s = classifier_scores(one_class)
    assert s["inception_score"] == pytest.approx(1.0) and s["histogram"][3] == 1.0
    assert classifier_scores(torch.full((7, 10), 0.1))["inception_score"] == pytest.approx(1.0)


# ---------------------------------------------------------------- attributes


def _bar(width=1, slant=0.0, x0=14, rows=range(4, 24)):
    """A vertical stroke `width` pixels wide, shifted by `slant` pixels per row upwards."""
    img = np.zeros((28, 28))
    for r in rows:
        c = int(round(x0 + slant * (14 - r)))
        img[r, c:c + width] = 1.0
    return img


def test_attributes_of_drawn_strokes():
    thin, thick = _bar(1), _bar(3)
    assert measure_attribute(np.stack([thin, thick]), "thickness").tolist() == [20.0, 60.0]
    assert measure_attribute(np.stack([thin, thick]), "width").tolist() == [1.0, 3.0]
    right, upright, left = _bar(slant=0.4), _bar(slant=0.0), _bar(slant=-0.4)
    s = measure_attribute(np.stack([right, upright, left]).reshape(3, 784), "slant")  # flat rows work too
    assert s[0] == pytest.approx(0.4, abs=0.03) and s[1] == pytest.approx(0.0, abs=1e-9)
    assert s[2] == pytest.approx(-0.4, abs=0.03)
    assert measure_attribute(np.zeros((1, 28, 28)), "width").tolist() == [0.0]
    with pytest.raises(ValueError, match="thickness"):
        measure_attribute(thin[None], "colour")


def test_attribute_vector_is_top_minus_bottom_quarter():
    codes = torch.arange(16, dtype=torch.float64)[:, None] * torch.tensor([[1.0, -2.0]], dtype=torch.float64)
    values = np.arange(16)[::-1].copy()  # code i has value 15 - i
    v = attribute_vector(codes, values)
    # top quarter (values 15..12) are codes 0..3, bottom (0..3) are codes 12..15
    assert torch.allclose(v, codes[:4].mean(0) - codes[12:].mean(0))
    with pytest.raises(ValueError, match="attribute values"):
        attribute_vector(codes, values[:5])


def test_attribute_vector_within_groups_removes_the_group_confound():
    """Two groups whose codes differ by a large offset along dim 0 and whose attribute differs with the group
    too; within each group the attribute follows dim 1. Pooled quarters pick up the group offset, the
    within-group vector only dim 1."""
    rng = np.random.default_rng(0)
    n = 400
    groups = np.repeat([0, 1], n // 2)
    t = rng.random(n)
    codes = torch.from_numpy(np.stack([10.0 * groups, t], axis=1))
    values = t + 5.0 * groups  # group 1 has far more of the attribute
    pooled = attribute_vector(codes, values)
    within = attribute_vector(codes, values, groups=groups)
    assert pooled[0] == pytest.approx(10.0)  # the top quarter is all group 1, the bottom all group 0
    assert within[0] == pytest.approx(0.0) and within[1] > 0.6
    per_group = [attribute_vector(codes[groups == g], values[groups == g]) for g in (0, 1)]
    assert torch.allclose(within, (per_group[0] + per_group[1]) / 2)


class _Shift(torch.nn.Module):
    """A toy 'model' whose code is (ink, 0) and whose decoder draws a bar of the code's width."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.config = type("C", (), {"num_classes": 0, "z_size": 2, "image_size": 28})()

    def code(self, x, labels=None):
        return torch.stack([x.sum(-1) / 20.0, torch.zeros(len(x))], dim=1)

    def decode(self, z, labels=None):
        out = torch.full((len(z), 28, 28), -20.0)
        for i, w in enumerate(z[:, 0].round().clamp(0, 10).long().tolist()):
            out[i, 4:24, 10:10 + w] = 20.0
        return out.view(len(z), 784)


class _AlwaysOne(torch.nn.Module):
    def probabilities(self, x):
        p = torch.zeros(len(x), 10)
        p[:, 1] = 1.0
        return p


def test_attribute_sweep_measures_decoded_images():
    model = _Shift()
    x = torch.from_numpy(np.stack([_bar(2), _bar(3)]).reshape(2, 784)).float()
    labels = torch.tensor([1, 7])
    rows, images = attribute_sweep(model, _AlwaysOne(), x, labels, torch.tensor([1.0, 0.0]), [-1, 0, 1],
                                   "thickness")
    assert images.shape == (3, 2, 784)
    assert [r["alpha"] for r in rows] == [-1.0, 0.0, 1.0]
    assert [r["attribute"] for r in rows] == pytest.approx([30.0, 50.0, 70.0], abs=0.01)  # widths 1..4 x 20 rows
    assert all(r["recognised"] == 0.5 for r in rows)  # the classifier only ever says 1


# ---------------------------------------------------------------- the classifier


def test_classifier_learns_synthetic_digits(tmp_path):
    d = mnist.write_synthetic(tmp_path, n_train=300, n_test=100)
    xs, ys = mnist.load_split(d, "train")
    xt, yt = mnist.load_split(d, "test")
    grey = lambda a: torch.from_numpy(a).reshape(len(a), -1).float() / 255  # noqa: E731
    cfg = ClassifierConfig(channels=8, hidden_size=32, dropout=0.0)
    seen = []
    model = fit_classifier(cfg, grey(xs), torch.from_numpy(ys), epochs=6, batch_size=30, lr=3e-3, lr_decay=1.0, max_shift=0,
                           callback=seen.append)
    assert [r["epoch"] for r in seen] == list(range(1, 7)) and seen[-1]["loss"] < seen[0]["loss"]
    assert accuracy(model, grey(xt), torch.from_numpy(yt)) > 0.9
    p = model.probabilities(grey(xt), batch_size=7)
    assert p.shape == (100, 10) and torch.allclose(p.sum(-1), torch.ones(100), atol=1e-5)
    assert not model.training


def test_reconstruction_is_the_bernoulli_cross_entropy_at_the_point_code():
    from sketchvae.image.models import ImageVAE, ImageVAEConfig

    torch.manual_seed(0)
    model = ImageVAE(ImageVAEConfig(z_size=3, hidden_size=16, num_classes=10))
    x, y = torch.rand(5, 784).bernoulli(), torch.arange(5)
    p = torch.sigmoid(model.decode(model.encode(x, y)[0], y))
    want = -(x * p.log() + (1 - x) * (1 - p).log()).sum(-1)
    assert torch.allclose(reconstruction(model, x, y, batch_size=2), want, rtol=1e-4)


def test_random_shift_moves_whole_images_by_at_most_the_limit():
    from sketchvae.image.classifier import random_shift

    x = torch.zeros(400, 784)
    x.view(400, 28, 28)[:, 13, 14] = 1.0
    y = random_shift(x, 2, torch.Generator().manual_seed(0))
    pos = (y.view(400, 28, 28) == 1).nonzero()[:, 1:]  # one pixel per image survives
    assert len(pos) == 400 and torch.equal(y.sum(1), torch.ones(400))
    d = pos - torch.tensor([13, 14])
    assert d.abs().max() == 2 and {tuple(v) for v in d.tolist()} == {(a, b) for a in range(-2, 3) for b in range(-2, 3)}
    assert torch.equal(random_shift(x, 0), x)
