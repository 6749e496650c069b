"""`sketchvae mnist ...` end to end on a few hundred synthetic digits (and the real files when present)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from sketchvae.cli import main
from sketchvae.image import data as mnist

from test_image_data import REAL, needs_real, serve

torch.set_num_threads(1)


def run(*args, ok=True):
    result = CliRunner().invoke(main, ["mnist", *map(str, args)])
    if ok:
        assert result.exit_code == 0, result.output + repr(result.exception)
    else:
        assert result.exit_code != 0, result.output
        assert "Traceback" not in result.output and not isinstance(result.exception, (ValueError, TypeError))
    return result


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return mnist.write_synthetic(tmp_path_factory.mktemp("mnist"), n_train=300, n_test=100)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_dir):
    """One trained run per model kind (1 epoch on 300 images); cvae and a 2-d MLP too."""
    root = tmp_path_factory.mktemp("runs")
    common = ["--data-dir", data_dir, "--epochs", 1, "--batch-size", 100, "--device", "cpu", "--threads", 1,
              "--valid-size", 50]
    run("train", "--model", "mlp", "-o", root / "mlp", *common, "--hidden", 64)
    run("train", "--model", "conv", "-o", root / "conv", *common, "--hidden", 32)
    run("train", "--model", "cvae", "-o", root / "cvae", *common, "--hidden", 64, "--latent", 2,
        "--binarize", "static")
    return root


def test_help_lists_the_commands():
    out = run("--help").output
    for cmd in ("download", "train", "evaluate", "sample", "interpolate", "manifold"):
        assert cmd in out


def test_train_writes_run_folder(runs):
    for name in ("mlp", "conv", "cvae"):
        folder = runs / name
        assert (folder / "best.pt").exists() and (folder / "last.pt").exists()
        lines = [json.loads(s) for s in (folder / "metrics.jsonl").read_text().splitlines()]
        assert [r["split"] for r in lines] == ["train", "valid", "test"] and lines[0]["step"] == 3


def test_train_resume_and_refusals(runs, data_dir, tmp_path):
    shutil.copytree(runs / "mlp", tmp_path / "mlp")
    out = run("train", "-o", tmp_path / "mlp", "--epochs", 2, "--resume", "--data-dir", data_dir).output
    assert "done: 2 epochs" in out
    assert len((tmp_path / "mlp" / "metrics.jsonl").read_text().splitlines()) == 6
    r = run("train", "-o", tmp_path / "mlp", "--data-dir", data_dir, ok=False)
    assert "already holds a run" in r.output
    r = run("train", "-o", tmp_path / "mlp", "--resume", "--latent", 3, ok=False)
    assert "cannot change when resuming" in r.output
    r = run("train", "-o", tmp_path / "new", "--data-dir", tmp_path / "nothing", ok=False)
    assert "sketchvae mnist download" in r.output
    r = run("train", "-o", tmp_path / "new2", "--data-dir", data_dir, "--batch-size", 0, ok=False)
    assert "--batch-size must be an integer >= 1" in r.output and "batch_size" not in r.output
    assert not (tmp_path / "new2").exists()  # a failed start leaves no run folder


def test_train_conv_cvae(data_dir, tmp_path):
    """--model cvae-conv: the convolutional VAE given the digit (encoder and decoder), drawn by --digit."""
    from sketchvae.image.train import load_model

    r = run("train", "--model", "cvae-conv", "-o", tmp_path / "run", "--data-dir", data_dir, "--epochs", 1,
            "--batch-size", 100, "--device", "cpu", "--threads", 1, "--valid-size", 50, "--hidden", 32, "--latent", 4)
    assert "model cvae-conv (z_size 4, classes 10)" in r.output
    model, _ = load_model(tmp_path / "run" / "best.pt")
    assert (model.config.arch, model.config.num_classes, model.config.z_size) == ("conv", 10, 4)
    z = torch.zeros(2, 4)
    with torch.no_grad():  # the label steers the decoder
        assert not torch.allclose(model.decode(z, torch.tensor([0, 0])), model.decode(z, torch.tensor([0, 9])))
    run("sample", tmp_path / "run", "-n", 6, "--digit", 2, "-o", tmp_path / "twos.png", "--scale", 1)
    assert Image.open(tmp_path / "twos.png").size == (3 * 30 + 2, 2 * 30 + 2)
    r = run("train", "--model", "cvae-conv", "-o", tmp_path / "run", "--resume", "--data-dir", data_dir, ok=False)
    assert "cannot change when resuming" in r.output


def test_evaluate_prints_nll_elbo_and_binarisation(runs, data_dir):
    out = run("evaluate", runs / "mlp" / "best.pt", "--k", 20, "--limit", 50, "--data-dir", data_dir).output
    assert "binarize    dynamic" in out and "nll " in out and "elbo " in out and "images      50" in out
    m = json.loads(run("evaluate", runs / "cvae" / "best.pt", "--k", 10, "--limit", 20, "--data-dir", data_dir,
                       "--json").stdout)
    assert m["binarize"] == "static" and m["n"] == 20 and 0 < m["nll"] < -m["elbo"]


def test_evaluate_errors(tmp_path, data_dir):
    r = run("evaluate", tmp_path / "missing.pt", "--data-dir", data_dir, ok=False)
    assert "checkpoint not found" in r.output
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    r = run("evaluate", tmp_path / "junk.pt", "--data-dir", data_dir, ok=False)
    assert "junk.pt" in r.output


def test_sample_grids(runs, tmp_path):
    run("sample", runs / "conv" / "best.pt", "-n", 16, "-o", tmp_path / "g.png", "--scale", 1)
    assert Image.open(tmp_path / "g.png").size == (4 * 30 + 2, 4 * 30 + 2)
    run("sample", runs / "cvae" / "best.pt", "-n", 8, "--digit", 3, "-o", tmp_path / "three.png")
    run("sample", runs / "cvae" / "best.pt", "-n", 20, "-o", tmp_path / "all.png", "--scale", 1)
    assert Image.open(tmp_path / "all.png").size == (10 * 30 + 2, 2 * 30 + 2)  # a row per 0..9
    r = run("sample", runs / "mlp" / "best.pt", "--digit", 3, "-o", tmp_path / "x.png", ok=False)
    assert "class-conditional" in r.output


def test_interpolate_strip(runs, data_dir, tmp_path):
    for name in ("mlp", "cvae"):
        run("interpolate", runs / name / "best.pt", "--from", 0, "--to", 5, "--steps", 6, "-o",
            tmp_path / f"{name}.png", "--data-dir", data_dir, "--scale", 1)
        assert Image.open(tmp_path / f"{name}.png").size == (8 * 30 + 2, 30 + 2)  # originals at both ends
    r = run("interpolate", runs / "mlp" / "best.pt", "--from", 0, "--to", 100, "-o", tmp_path / "x.png",
            "--data-dir", data_dir, ok=False)
    assert "not a test image index (0..99)" in r.output


def test_manifold(runs, tmp_path):
    run("manifold", runs / "cvae" / "best.pt", "--digit", 7, "-n", 5, "-o", tmp_path / "m.png")
    assert Image.open(tmp_path / "m.png").size == (5 * 28, 5 * 28)
    r = run("manifold", runs / "mlp" / "best.pt", "-o", tmp_path / "x.png", ok=False)
    assert "2-d latent space" in r.output and "z_size 20" in r.output
    assert not (tmp_path / "x.png").exists()


def test_download_checksum_mismatch(tmp_path):
    src = mnist.write_synthetic(tmp_path / "src", 10, 10)  # not MNIST: its checksums cannot match
    with serve(src) as url:
        r = run("download", "--data-dir", tmp_path / "out", "--base-url", url, ok=False)
    assert "checksum mismatch" in r.output and "train-images-idx3-ubyte.gz" in r.output
    assert not list((tmp_path / "out").glob("*.gz*"))


@needs_real
def test_download_the_real_files_from_a_local_mirror(tmp_path):
    with serve(REAL) as url:
        out = run("download", "--data-dir", tmp_path / "out", "--base-url", url).output
        assert out.count("downloaded") == 4
        assert run("download", "--data-dir", tmp_path / "out", "--base-url", url).output.count("present") == 4
    assert mnist.load_split(tmp_path / "out", "test", limit=3)[1].tolist() == [7, 2, 1]


def test_help_defaults_match_the_dataclasses():
    import dataclasses

    from sketchvae.image.models import ImageVAEConfig
    from sketchvae.image.train import ImageTrainConfig

    shown = {"epochs": "50", "batch_size": "128", "lr": "1e-3", "beta": "1.0", "kl_eta_min": "1.0",
             "kl_decay_rate": "0.999", "binarize": "dynamic", "seed": "0", "device": "auto", "limit": "0",
             "valid_size": "5000"}
    defaults = {f.name: f.default for f in dataclasses.fields(ImageTrainConfig)}
    for name, text in shown.items():
        assert str(defaults[name]) == text or float(defaults[name]) == float(text), name
    help_text = " ".join(run("train", "--help").output.split())
    for text in shown.values():
        assert f"[{text}" in help_text or f"{text}]" in help_text or f"[{text} " in help_text
    assert ImageVAEConfig().z_size == 20 and "[20]" in help_text and ImageVAEConfig().hidden_size == 400
