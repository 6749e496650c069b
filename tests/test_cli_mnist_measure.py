"""`sketchvae mnist train --model aae`, `classifier`, `compare`, `attribute`, `latents` and
`sample --same-style` end to end on a few hundred synthetic digits."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from PIL import Image

from test_cli_mnist import data_dir, run  # noqa: F401 (data_dir is a fixture)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_dir):
    """A 2-d VAE, 2-d AAEs (Gaussian, mixture, supervised) and a classifier, each 1-2 epochs on 300 images."""
    root = tmp_path_factory.mktemp("runs")
    common = ["--data-dir", data_dir, "--epochs", 1, "--batch-size", 100, "--device", "cpu", "--threads", 1,
              "--valid-size", 50, "--hidden", 32]
    run("train", "--model", "mlp", "-o", root / "vae", *common, "--latent", 2)
    run("train", "--model", "aae", "-o", root / "aae", *common, "--latent", 2, "--disc-hidden", 16)
    run("train", "--model", "aae", "-o", root / "mix", *common, "--latent", 2, "--prior", "mixture10",
        "--disc-hidden", 16)
    run("train", "--model", "aae", "-o", root / "sup", *common, "--latent", 3, "--supervised", "--disc-hidden", 16)
    out = run("classifier", "-o", root / "clf.pt", "--data-dir", data_dir, "--epochs", 2, "--threads", 1).output
    assert "test accuracy" in out
    return root


def test_aae_train_run_folder_resume_and_refusals(runs, data_dir, tmp_path):
    lines = [json.loads(s) for s in (runs / "aae" / "metrics.jsonl").read_text().splitlines()]
    assert [r["split"] for r in lines] == ["train", "valid", "test"] and "disc" in lines[0] and "gen" in lines[0]
    shutil.copytree(runs / "sup", tmp_path / "sup")
    out = run("train", "-o", tmp_path / "sup", "--epochs", 2, "--resume", "--data-dir", data_dir).output
    assert "done: 2 epochs" in out and "best.pt is its last epoch" in out
    r = run("train", "-o", tmp_path / "sup", "--resume", "--prior", "mixture10", ok=False)
    assert "cannot change when resuming" in r.output
    r = run("train", "--model", "conv", "--prior", "mixture10", "-o", tmp_path / "x", "--data-dir", data_dir,
            ok=False)
    assert "for --model aae" in r.output
    r = run("train", "--model", "aae", "--prior", "mixture10", "-o", tmp_path / "y", "--data-dir", data_dir,
            ok=False)
    assert "needs --latent 2" in r.output
    r = run("evaluate", runs / "aae" / "best.pt", "--data-dir", data_dir, ok=False)
    assert "mnist compare" in r.output


def test_compare_json_and_table(runs, data_dir):
    ckpts = [runs / n / "best.pt" for n in ("vae", "aae", "sup")]
    args = ["--data-dir", data_dir, "--classifier", runs / "clf.pt", "--samples", 200, "--valid", 50, "--k", 5,
            "--nll-limit", 10, "--threads", 1]
    res = json.loads(run("compare", *ckpts, *args, "--json").stdout)
    assert [r["model"] for r in res] == ["best", "best", "best"]
    vae, aae, sup = res
    for r in res:
        assert {"model", "recon", "parzen", "accuracy_as_asked", "nll"} <= set(r)
        assert r["recon"] > 0 and r["n_test"] == 100 and r["n_samples"] == 200 and len(r["histogram"]) == 10
        assert 1.0 <= r["inception_score"] <= 10.0 and abs(sum(r["histogram"]) - 1) < 1e-9
    assert vae["nll"] is not None and vae["nll_images"] == 10 and vae["elbo"] < -vae["nll"] + 5
    assert aae["nll"] is None and aae["elbo"] is None and aae["accuracy_as_asked"] is None
    assert sup["accuracy_as_asked"] is not None and sup["kind"] == "aae-gaussian-3d-supervised"
    table = run("compare", *ckpts[:2], *args).output
    assert "parzen" in table and "vae-mlp-2d" in table and "aae-gaussian-2d" in table and "histogram" in table


def test_compare_errors(runs, data_dir, tmp_path):
    r = run("compare", runs / "vae" / "best.pt", "--data-dir", data_dir, "--classifier", tmp_path / "no.pt",
            ok=False)
    assert "no.pt" in r.output and "not found" in r.output
    r = run("compare", runs / "vae" / "best.pt", "--data-dir", data_dir, "--classifier", runs / "vae" / "best.pt",
            ok=False)
    assert "not an MNIST classifier" in r.output
    r = run("compare", runs / "vae" / "best.pt", "--data-dir", data_dir, "--samples", 0, ok=False)
    assert "--samples must be >= 1" in r.output


def test_attribute_json_and_picture(runs, data_dir, tmp_path):
    out = tmp_path / "thick.png"
    res = json.loads(run("attribute", runs / "vae" / "best.pt", "--attr", "thickness", "--data-dir", data_dir,
                         "--classifier", runs / "clf.pt", "--rows", 4, "--measure", 50, "-o", out, "--json").stdout)
    assert [r["alpha"] for r in res] == [-2.0, -1.0, 0.0, 1.0, 2.0]
    assert all(set(r) == {"alpha", "attribute", "recognised"} and 0 <= r["recognised"] <= 1 for r in res)
    assert Image.open(out).size == (2 * (6 * 30 + 2), 2 * (4 * 30 + 2))  # original + 5 alphas, 4 rows
    text = run("attribute", runs / "sup" / "best.pt", "--attr", "slant", "--alphas", "-1,1", "--rows", 0,
               "--data-dir", data_dir, "--classifier", runs / "clf.pt", "--measure", 20).output
    assert "recognised" in text and "z_attr from 300 training images, quarters within each digit" in text
    text = run("attribute", runs / "vae" / "best.pt", "--attr", "width", "--pooled", "--rows", 0,
               "--data-dir", data_dir, "--classifier", runs / "clf.pt", "--measure", 20).output
    assert "pooled quarters" in text
    r = run("attribute", runs / "vae" / "best.pt", "--attr", "slant", "--alphas", "a,b", "--data-dir", data_dir,
            ok=False)
    assert "--alphas" in r.output


def test_latent_maps(runs, data_dir, tmp_path):
    out = tmp_path / "maps.png"
    run("latents", runs / "vae" / "best.pt", runs / "aae" / "best.pt", runs / "mix" / "best.pt", "-o", out,
        "--data-dir", data_dir, "--title", "VAE, 2-d", "--title", "AAE", "--title", "AAE mixture", "--prior-samples", 300)
    w, h = Image.open(out).size
    assert w > 2 * h * 0.6 and h > 300  # three columns, two rows
    r = run("latents", runs / "sup" / "best.pt", "-o", tmp_path / "x.png", "--data-dir", data_dir, ok=False)
    assert "z_size 3" in r.output and not (tmp_path / "x.png").exists()
    r = run("latents", runs / "vae" / "best.pt", "-o", tmp_path / "x.png", "--title", "a", "--title", "b",
            "--data-dir", data_dir, ok=False)
    assert "2 --title for 1 checkpoints" in r.output


def test_same_style_rows(runs, tmp_path):
    import numpy as np

    out = tmp_path / "styles.png"
    run("sample", runs / "sup" / "best.pt", "--same-style", "-n", 30, "-o", out, "--scale", 1)
    pic = np.asarray(Image.open(out))
    assert pic.shape == (3 * 30 + 2, 10 * 30 + 2)  # 3 rows of digits 0..9
    r = run("sample", runs / "vae" / "best.pt", "--same-style", "-o", tmp_path / "x.png", ok=False)
    assert "class-conditional" in r.output
    # aae sampling and interpolation go through the shared interface
    run("sample", runs / "mix" / "best.pt", "-n", 4, "-o", tmp_path / "mix.png")
    run("interpolate", runs / "aae" / "best.pt", "--from", 0, "--to", 3, "--steps", 4, "-o", tmp_path / "i.png",
        "--data-dir", runs.parent / "missing", ok=False)
