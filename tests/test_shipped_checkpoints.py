"""The shipped checkpoints load, draw what they should, and still measure what checkpoints/README.md says.

The last group re-evaluates each model on the real test data (when ../shared/data is beside the
checkout) and compares with the numbers written in checkpoints/README.md, so the README cannot drift
from the files: retraining a checkpoint without updating its README fails here.
"""

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from sketchvae import sample as sk
from sketchvae.cli import main

ROOT = Path(__file__).resolve().parents[1]
CKPTS = ROOT / "checkpoints"
SHARED = ROOT.parent / "shared" / "data"
SKETCHRNN = SHARED / "sketchrnn_datasets"
MNIST = SHARED / "mnist"
NS = "{http://www.w3.org/2000/svg}"
MULTICLASS_SOURCES = ("aaron_sheep", "omniglot", "short_kanji")


def _section(name: str) -> str:
    text = (CKPTS / "README.md").read_text(encoding="utf-8")
    m = re.search(rf"^## `{re.escape(name)}`.*?(?=^## |\Z)", text, re.S | re.M)
    assert m, f"checkpoints/README.md has no section for {name}"
    return m.group(0)


def _recorded_sketch_test(name: str) -> dict[str, float]:
    m = re.search(r"^\| test[^|]*\| loss (-?[\d.]+), recon (-?[\d.]+), kl (-?[\d.]+)", _section(name), re.M)
    assert m, f"checkpoints/README.md: no '| test ... | loss L, recon R, kl K' row for {name}"
    return dict(zip(("loss", "recon", "kl"), map(float, m.groups())))


def _recorded_mnist_elbo(name: str) -> float:
    m = re.search(r"^\| test ELBO, all 10000 test images \| (-?[\d.]+)", _section(name), re.M)
    assert m, f"checkpoints/README.md: no test ELBO row for {name}"
    return float(m.group(1))


@pytest.mark.parametrize("name", ["sheep.pt", "multiclass.pt", "mnist_conv.pt", "mnist_cvae.pt", "mnist_aae.pt",
                                  "mnist_classifier.pt"])
def test_every_shipped_checkpoint_is_documented(name):
    assert (CKPTS / name).is_file(), f"checkpoints/{name} is missing"
    assert (CKPTS / name).stat().st_size < 20_000_000
    _section(name)


def test_readme_main_job_draws_sheep_that_end(tmp_path):
    """`sketchvae sample -n 16 -o sheep.svg` (no checkpoint given) uses checkpoints/sheep.pt."""
    out = tmp_path / "sheep.svg"
    r = CliRunner().invoke(main, ["sample", "-n", "16", "--seed", "0", "-o", str(out)])
    assert r.exit_code == 0, r.output
    cells = [g for g in ET.parse(out).getroot().iter(f"{NS}g") if g.get("class") == "cell"]
    assert len(cells) == 16
    model = sk.load(CKPTS / "sheep.pt")
    assert model.config.mode == "vae" and model.config.max_seq_len == 250
    drawings = sk.sample(model, 64, temperature=1.0, seed=0)
    lengths = np.array([len(d) for d in drawings])
    # Sampled from its own distribution (tau = 1) a trained model mostly stops by itself, near the
    # data's lengths (aaron_sheep: mean 158 points); an untrained one runs to the 250-point limit.
    # (At tau 0.4 the end state, drawn once per sketch, is sharpened away more often.)
    assert (lengths < 250).mean() >= 0.7, lengths
    assert 80 < np.median(lengths) < 230, lengths
    assert all(np.isfinite(d).all() and d[-1, 2] == 1 for d in drawings)
    # The drawings are sheep-sized: the data's own units (aaron_sheep spans about 100-250 units).
    widths = np.array([np.ptp(np.cumsum(d[:, 0])) for d in drawings])
    assert 20 < np.median(widths) < 600, widths


def test_multiclass_knows_its_classes(tmp_path):
    model = sk.load(CKPTS / "multiclass.pt")
    assert model.config.mode == "class_vae" and model.class_names == list(MULTICLASS_SOURCES)
    r = CliRunner().invoke(main, ["sample", str(CKPTS / "multiclass.pt"), "--class", "penguin",
                                  "-o", str(tmp_path / "x.svg")])
    assert r.exit_code != 0 and "short_kanji" in r.output and not (tmp_path / "x.svg").exists()


needs_sketch_data = pytest.mark.skipif(not (SKETCHRNN / "aaron_sheep.npz").exists(),
                                       reason="needs ../shared/data/sketchrnn_datasets (real data beside the checkout)")
needs_mnist = pytest.mark.skipif(not (MNIST / "t10k-images-idx3-ubyte.gz").exists(),
                                 reason="needs ../shared/data/mnist (real data beside the checkout)")


@needs_sketch_data
def test_sheep_test_loss_is_what_the_readme_says(tmp_path):
    from sketchvae.data.quickdraw import prepare
    from sketchvae.train import evaluate_checkpoint

    cache = prepare([SKETCHRNN / "aaron_sheep.npz"], tmp_path / "sheep.h5")
    got = evaluate_checkpoint(CKPTS / "sheep.pt", cache.path, "test", device="cpu")
    want = _recorded_sketch_test("sheep.pt")
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=0.006), (key, got, want)


@needs_sketch_data
def test_multiclass_test_loss_is_what_the_readme_says(tmp_path):
    from sketchvae.data.quickdraw import prepare
    from sketchvae.train import evaluate_checkpoint

    cache = prepare([SKETCHRNN / f"{c}.npz" for c in MULTICLASS_SOURCES], tmp_path / "multi.h5")
    got = evaluate_checkpoint(CKPTS / "multiclass.pt", cache.path, "test", device="cpu")
    want = _recorded_sketch_test("multiclass.pt")
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=0.006), (key, got, want)


@needs_mnist
@pytest.mark.parametrize("name", ["mnist_conv.pt", "mnist_cvae.pt"])
def test_mnist_test_elbo_is_what_the_readme_says(name):
    from sketchvae.image.data import load_data
    from sketchvae.image.evaluate import evaluate
    from sketchvae.image.train import load_model

    model, _ = load_model(CKPTS / name)
    data = load_data(MNIST, "test", binarize="dynamic", seed=0, train=False)
    got = evaluate(model, data, k=0, seed=0)
    assert got["n"] == 10000
    assert got["elbo"] == pytest.approx(_recorded_mnist_elbo(name), abs=0.02)


def _recorded(name: str, row: str) -> float:
    m = re.search(rf"^\| {re.escape(row)} \| (-?[\d.]+)", _section(name), re.M)
    assert m, f"checkpoints/README.md: no '| {row} | ...' row for {name}"
    return float(m.group(1))


@needs_mnist
def test_mnist_classifier_accuracy_is_what_the_readme_says():
    import torch

    from sketchvae.image.classifier import accuracy, load_classifier
    from sketchvae.image.data import load_split

    model, ckpt = load_classifier(CKPTS / "mnist_classifier.pt")
    images, labels = load_split(MNIST, "test")
    acc = accuracy(model, torch.from_numpy(images).reshape(-1, 784).float() / 255, torch.from_numpy(labels))
    assert acc >= 0.99  # the requirement for the measuring instrument
    assert 100 * acc == pytest.approx(_recorded("mnist_classifier.pt", "test accuracy, all 10000 test images"),
                                      abs=0.006)
    assert ckpt["extra"]["test_accuracy"] == pytest.approx(acc)


@needs_mnist
def test_mnist_aae_reconstruction_and_samples_are_what_the_readme_says():
    """The AAE's test reconstruction (all 10000 images, deterministic) and, on a subset, that its samples are
    digits the classifier recognises, of every class (a broken or untrained decoder fails both)."""
    import torch

    from sketchvae.image.classifier import load_classifier
    from sketchvae.image.data import load_data
    from sketchvae.image.measure import classifier_scores, draw_samples, reconstruction
    from sketchvae.image.train import load_model

    model, _ = load_model(CKPTS / "mnist_aae.pt")
    assert model.config.z_size == 8 and model.config.prior == "gaussian"
    data = load_data(MNIST, "test", binarize="dynamic", seed=0, train=False)
    recon = reconstruction(model, data.targets(), data.labels).double().mean().item()
    assert recon == pytest.approx(_recorded("mnist_aae.pt", "test reconstruction, all 10000 test images"), abs=0.02)
    clf, _ = load_classifier(CKPTS / "mnist_classifier.pt")
    samples, _ = draw_samples(model, 1000, seed=0)
    scores = classifier_scores(clf.probabilities(samples))
    assert min(scores["histogram"]) > 0.04 and scores["inception_score"] > 4.5  # measured: 0.076, 5.58 (10000)


@needs_mnist
def test_mnist_cvae_draws_the_digit_asked():
    """The class-conditional VAE's samples from the prior, asked for 0..9 in turn, are the digits asked: the
    classifier's fraction on the first 2000 of `mnist compare`'s 10000 samples (seed 0) is the recorded one and
    at least the issue's 95 % (the MLP CVAE shipped before drew 88.1 %)."""
    from sketchvae.image.classifier import load_classifier
    from sketchvae.image.measure import classifier_scores, draw_samples
    from sketchvae.image.train import load_model

    model, _ = load_model(CKPTS / "mnist_cvae.pt")
    clf, _ = load_classifier(CKPTS / "mnist_classifier.pt")
    samples, asked = draw_samples(model, 2000, seed=0)
    acc = classifier_scores(clf.probabilities(samples), asked)["accuracy_as_asked"]
    assert 100 * acc == pytest.approx(_recorded("mnist_cvae.pt", "recognised as asked, first 2000 samples"), abs=0.1)
    assert acc >= 0.95
