"""Latent arithmetic (`sample.analogy`, `sketchvae analogy`) and class transfer (`reconstruct(as_class=)`,
`sketchvae reconstruct --as-class`), checked against direct encode + sample computations."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from sketchvae import sample as S
from sketchvae.checkpoint import save_checkpoint
from sketchvae.cli import main
from sketchvae.models.sketch_rnn import SketchRNN, SketchRNNConfig

CLASSES = ["cat", "pig", "hot air balloon"]
NS = "{http://www.w3.org/2000/svg}"


def tiny_config(mode: str) -> SketchRNNConfig:
    return SketchRNNConfig(mode=mode, enc_rnn_size=12, dec_rnn_size=24, z_size=6, num_mixture=3, max_seq_len=30,
                           class_embed_size=4, num_classes=len(CLASSES) if mode == "class_vae" else 0)


def tiny(mode: str) -> S.Sampler:
    torch.manual_seed(0)
    model = SketchRNN(tiny_config(mode)).double().eval()
    return S.Sampler(model, 12.5, list(CLASSES) if mode == "class_vae" else [])


def sketch(seed: int, n: int = 10) -> np.ndarray:
    rng = np.random.default_rng(seed)
    s = np.zeros((n, 3), np.float32)
    s[:, 0:2] = rng.normal(0, 20, (n, 2)).round()
    s[n // 2, 2] = s[-1, 2] = 1
    return s


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def same(xs, ys) -> bool:
    return len(xs) == len(ys) and all(x.shape == y.shape and np.allclose(x, y, atol=1e-5) for x, y in zip(xs, ys))


def test_analogy_decodes_za_minus_zb_plus_zc():
    sp = tiny("vae")
    a, b, c = sketch(0), sketch(1), sketch(2)
    mu, _ = S.encode(sp, [a, b, c])
    got = S.analogy(sp, a, b, c, 5, 0.6, seed=3)
    assert same(got, S.sample(sp, 5, 0.6, z=mu[0] - mu[1] + mu[2], seed=3))
    assert not same(got, S.sample(sp, 5, 0.6, z=mu[2], seed=3))  # the arithmetic matters
    # a - a + c is c's own z
    assert same(S.analogy(sp, a, a, c, 2, greedy=True), S.sample(sp, 2, z=mu[2], greedy=True))
    assert same(sp.analogy(a, b, c, n=2, seed=1), S.analogy(sp, a, b, c, 2, seed=1))


def test_analogy_class_vae_labels():
    sp = tiny("class_vae")
    a, b, c = sketch(0), sketch(1), sketch(2)
    mu, _ = S.encode(sp, [a, b, c], ["cat", "pig", "hot air balloon"])
    z = mu[0] - mu[1] + mu[2]
    got = S.analogy(sp, a, b, c, 3, classes=["cat", "pig", "hot air balloon"], seed=2)
    assert same(got, S.sample(sp, 3, z=z, classes="hot air balloon", seed=2))  # decoded as c's class
    got = S.analogy(sp, a, b, c, 3, classes=["cat", "pig", "hot air balloon"], decode_class="pig", seed=2)
    assert same(got, S.sample(sp, 3, z=z, classes="pig", seed=2))
    with pytest.raises(ValueError, match="needs a class"):
        S.analogy(sp, a, b, c)


def test_analogy_refusals():
    a, b, c = sketch(0), sketch(1), sketch(2)
    with pytest.raises(ValueError, match="no encoder"):
        S.analogy(tiny("decoder"), a, b, c)
    with pytest.raises(ValueError, match="not class-conditional"):
        S.analogy(tiny("vae"), a, b, c, decode_class="cat")


def test_reconstruct_as_class():
    sp = tiny("class_vae")
    s = [sketch(4), sketch(5)]
    mu, _ = S.encode(sp, s, ["cat", "pig"])
    got = S.reconstruct(sp, s, 2, 0.5, classes=["cat", "pig"], as_class="hot air balloon", seed=1)
    want = S.sample(sp, 4, 0.5, z=mu.repeat_interleave(2, dim=0), classes="hot air balloon", seed=1)
    assert same(got[0] + got[1], want)
    plain = S.reconstruct(sp, s, 2, 0.5, classes=["cat", "pig"], seed=1)
    assert not same(plain[0] + plain[1], want)
    with pytest.raises(ValueError, match="not class-conditional"):
        S.reconstruct(tiny("vae"), s, as_class="cat")
    with pytest.raises(ValueError, match="unknown class 'unicorn'"):
        S.reconstruct(sp, s, classes=["cat", "pig"], as_class="unicorn")


@pytest.fixture
def files(tmp_path):
    paths = {}
    for mode in ("vae", "class_vae", "decoder"):
        sp = tiny(mode)
        paths[mode] = save_checkpoint(tmp_path / f"{mode}.pt", kind="sketch_rnn", config=sp.config,
                                      model=sp.model.float(), class_names=sp.class_names, scale_factor=12.5)
    with open(tmp_path / "d.ndjson", "w") as f:
        for k in range(4):
            s = sketch(k)
            xy = np.cumsum(s[:, :2], axis=0).astype(int)
            f.write(json.dumps({"word": CLASSES[k % 3], "drawing": [[xy[:, 0].tolist(), xy[:, 1].tolist()]]}) + "\n")
    paths["data"] = tmp_path / "d.ndjson"
    return paths


def cells(path) -> int:
    return sum(1 for g in ET.parse(path).getroot().iter(f"{NS}g") if g.get("class") == "cell")


def test_cli_analogy_and_as_class(files, tmp_path):
    run = CliRunner().invoke
    out = tmp_path / "a.svg"
    r = run(main, ["analogy", str(files["vae"]), str(files["data"]), "--a", "0", "--b", "1", "--c", "2", "-n", "3",
                   "--seed", "0", "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert cells(out) == 6 and "a - b + c" in out.read_text()
    r = run(main, ["analogy", str(files["class_vae"]), str(files["data"]), "--a", "0", "--b", "1", "--c", "3",
                   "--as-class", "pig", "-n", "2", "-o", str(out)])
    assert r.exit_code == 0, r.output
    r = run(main, ["analogy", str(files["decoder"]), str(files["data"]), "--a", "0", "--b", "1", "--c", "2",
                   "-o", str(tmp_path / "no.svg")])
    assert r.exit_code == 1 and "no encoder" in r.output and r.output.count("\n") == 1
    assert not (tmp_path / "no.svg").exists()
    r = run(main, ["reconstruct", str(files["class_vae"]), str(files["data"]), "--index", "0,1", "-n", "2",
                   "--as-class", "hot air balloon", "-o", str(out)])
    assert r.exit_code == 0 and cells(out) == 6 and "as hot air balloon" in out.read_text(), r.output
    r = run(main, ["reconstruct", str(files["vae"]), str(files["data"]), "--as-class", "pig", "-o", str(out)])
    assert r.exit_code == 1 and "not class-conditional" in r.output
    r = run(main, ["analogy", "--help"])
    assert r.exit_code == 0 and "Examples:" in r.output
