"""End to end: `sketchvae sample | reconstruct | interpolate | complete` on tiny models trained here."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from sketchvae.cli import main
from sketchvae.strokes import to_polylines
from sketchvae.train import TrainConfig, fit

CLASSES = ["box", "zigzag", "dots"]
NS = "{http://www.w3.org/2000/svg}"
SHEEP = Path(__file__).resolve().parents[2] / "shared" / "data" / "sketchrnn_datasets" / "aaron_sheep.npz"


def synthetic_sketch(rng: np.random.Generator, label: int) -> np.ndarray:
    n = int(rng.integers(6, 24))
    t = np.arange(n)
    if label == 0:
        ang = 2 * np.pi * t / n
        dx, dy = -np.sin(ang) * 6, np.cos(ang) * 6
    elif label == 1:
        dx, dy = np.full(n, 4.0), np.where(t % 2 == 0, 5.0, -5.0)
    else:
        dx, dy = rng.normal(0, 8, n), rng.normal(0, 8, n)
    s3 = np.zeros((n, 3), dtype=np.int16)
    s3[:, 0] = np.round(dx + rng.normal(0, 1, n))
    s3[:, 1] = np.round(dy + rng.normal(0, 1, n))
    s3[n // 3, 2] = s3[2 * n // 3, 2] = s3[-1, 2] = 1
    return s3


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A small cache, the same sketches as .npz and .ndjson, and two tiny trained models."""
    from sketchvae.data.cache import write_cache
    from sketchvae.strokes import scale_factor

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("gen")
    rng = np.random.default_rng(0)
    splits = {name: [(synthetic_sketch(rng, i % 3), i % 3) for i in range(count)]
              for name, count in (("train", 24), ("valid", 8), ("test", 8))}
    cache = write_cache(root / "tiny.h5", splits, CLASSES,
                        {"scale_factor": scale_factor([s for s, _ in splits["train"]])})
    arr = np.empty(len(splits["test"]), dtype=object)
    arr[:] = [s for s, _ in splits["test"]]
    np.savez(root / "tiny.npz", train=arr, valid=arr, test=arr)
    with open(root / "tiny.ndjson", "w") as f:
        for s, label in splits["test"]:
            polys = to_polylines(s)
            drawing = [[p[:, 0].astype(int).tolist(), p[:, 1].astype(int).tolist()] for p in polys]
            f.write(json.dumps({"word": CLASSES[label], "drawing": drawing}) + "\n")
    ckpts = {}
    for mode in ("vae", "class_vae"):
        cfg = dict(mode=mode, enc_rnn_size=12, dec_rnn_size=24, z_size=6, num_mixture=3, max_seq_len=30,
                   class_embed_size=4)
        tcfg = TrainConfig(steps=2, batch_size=8, eval_every=2, log_every=1, device="cpu", seed=1,
                           eval_batches=1, test_at_end=False)
        fit(cfg, tcfg, cache, root / mode)
        ckpts[mode] = root / mode / "best.pt"
    return {"root": root, "h5": cache, "npz": root / "tiny.npz", "ndjson": root / "tiny.ndjson", **ckpts}


def run(args):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result


def svg_cells(path: Path) -> list:
    root = ET.parse(path).getroot()
    assert root.tag == f"{NS}svg"
    return [g for g in root.iter(f"{NS}g") if g.get("class") == "cell"]


def test_sample(files, tmp_path):
    out = tmp_path / "s.svg"
    r = run(["sample", files["vae"], "-n", 6, "-t", 0.5, "--seed", 1, "--cols", 3, "-o", out])
    assert r.exit_code == 0, r.output
    assert str(out) in r.output
    assert len(svg_cells(out)) == 6
    again = tmp_path / "s2.svg"
    run(["sample", files["vae"], "-n", 6, "-t", 0.5, "--seed", 1, "--cols", 3, "-o", again])
    assert again.read_text() == out.read_text()
    r = run(["sample", files["class_vae"], "-n", 3, "--class", "zigzag", "--greedy", "-o", out])
    assert r.exit_code == 0, r.output


def test_sample_progress_bar_for_large_n(files, tmp_path):
    r = run(["sample", files["vae"], "-n", 300, "--max-len", 3, "--seed", 0, "-o", tmp_path / "p.svg"])
    assert r.exit_code == 0, r.output
    assert len(svg_cells(tmp_path / "p.svg")) == 300


def test_sample_errors(files, tmp_path):
    out = tmp_path / "x.svg"
    r = run(["sample", files["class_vae"], "--class", "unicorn", "-o", out])
    assert r.exit_code != 0 and "unicorn" in r.output and all(c in r.output for c in CLASSES)
    assert "Traceback" not in r.output
    r = run(["sample", files["vae"], "--class", "box", "-o", out])
    assert r.exit_code != 0 and "not class-conditional" in r.output
    for bad in (["-t", "0"], ["-t", "-1"], ["-n", "0"], ["-n", "-2"]):
        r = run(["sample", files["vae"], *bad, "-o", out])
        assert r.exit_code == 2, (bad, r.output)  # usage error
    corrupt = tmp_path / "bad.pt"
    corrupt.write_bytes(b"\x00garbage" * 10)
    r = run(["sample", corrupt, "-o", out])
    assert r.exit_code == 1 and "bad.pt" in r.output and "Traceback" not in r.output
    truncated = tmp_path / "cut.pt"
    data = Path(files["vae"]).read_bytes()
    truncated.write_bytes(data[: len(data) // 3])
    r = run(["sample", truncated, "-o", out])
    assert r.exit_code == 1 and "cut.pt" in r.output
    assert not out.exists()


def test_sample_default_checkpoint(monkeypatch, tmp_path):
    from sketchvae.cli import generate

    monkeypatch.setattr(generate, "default_checkpoint", lambda: tmp_path / "checkpoints" / "sheep.pt")
    r = run(["sample", "-o", tmp_path / "x.svg"])
    assert r.exit_code == 1 and "sheep.pt" in r.output and "missing" in r.output
    real = Path(__import__("sketchvae").__file__).resolve().parents[1] / "checkpoints" / "sheep.pt"
    monkeypatch.undo()
    assert generate.default_checkpoint() == real


@pytest.mark.parametrize("fmt", ["h5", "npz", "ndjson"])
def test_reconstruct(files, tmp_path, fmt):
    out = tmp_path / "r.svg"
    r = run(["reconstruct", files["vae"], files[fmt], "--index", "0,3,7", "-n", 2, "--seed", 0, "-o", out])
    assert r.exit_code == 0, r.output
    cells = svg_cells(out)
    assert len(cells) == 9  # 3 rows: original + 2 reconstructions
    captions = [t.text for t in ET.parse(out).getroot().iter(f"{NS}text")]
    assert captions[0] == "#0 original" and captions[3] == "#3 original"


def test_reconstruct_class_vae_uses_the_sketch_label_or_asks(files, tmp_path):
    out = tmp_path / "r.svg"
    assert run(["reconstruct", files["class_vae"], files["h5"], "--index", "1", "-o", out]).exit_code == 0
    assert run(["reconstruct", files["class_vae"], files["ndjson"], "--index", "1", "-o", out]).exit_code == 0
    r = run(["reconstruct", files["class_vae"], files["npz"], "--index", "1", "-o", out])  # stem "tiny": unknown
    assert r.exit_code == 1 and "--class" in r.output
    assert run(["reconstruct", files["class_vae"], files["npz"], "--index", "1", "--class", "dots",
                "-o", out]).exit_code == 0


def test_reconstruct_bad_index_and_split(files, tmp_path):
    out = tmp_path / "r.svg"
    r = run(["reconstruct", files["vae"], files["h5"], "--index", "99", "-o", out])
    assert r.exit_code == 2 and "8 sketches" in r.output
    r = run(["reconstruct", files["vae"], files["h5"], "--index", "a,b", "-o", out])
    assert r.exit_code == 2
    r = run(["reconstruct", files["vae"], files["h5"], "--split", "nope", "-o", out])
    assert r.exit_code == 2 and "nope" in r.output


@pytest.mark.parametrize("method", ["slerp", "lerp"])
def test_interpolate(files, tmp_path, method):
    out = tmp_path / "i.svg"
    r = run(["interpolate", files["vae"], files["h5"], "--from", 0, "--to", 4, "--steps", 5, "--method", method,
             "--seed", 2, "-o", out])
    assert r.exit_code == 0, r.output
    assert len(svg_cells(out)) == 7  # the two sketches + 5 steps


def test_complete(files, tmp_path):
    out = tmp_path / "c.svg"
    r = run(["complete", files["vae"], files["ndjson"], "--index", 2, "-n", 4, "--seed", 0, "-o", out])
    assert r.exit_code == 0, r.output
    assert "first 1 of 3 strokes" in r.output
    cells = svg_cells(out)
    assert len(cells) == 5  # the given strokes + 4 completions
    for c in cells:
        given = [e for e in c.iter(f"{NS}polyline") if "given" in (e.get("class") or "")]
        given += [e for e in c.iter(f"{NS}circle") if "given" in (e.get("class") or "")]
        assert len(given) == 1
    r = run(["complete", files["class_vae"], files["h5"], "--strokes", 2, "-n", 2, "-o", out])
    assert r.exit_code == 0, r.output
    r = run(["complete", files["vae"], files["h5"], "--strokes", 9, "-o", out])
    assert r.exit_code == 2 and "strokes" in r.output


@pytest.mark.skipif(not SHEEP.exists(), reason=f"real data not available at {SHEEP}")
def test_reconstruct_real_sheep_data(files, tmp_path):
    """The tiny model is not a sheep model; this checks reading the real .npz end to end."""
    out = tmp_path / "sheep.svg"
    r = run(["reconstruct", files["vae"], SHEEP, "--index", "0,1", "--max-len", 5, "-o", out])
    assert r.exit_code == 0, r.output
    assert len(svg_cells(out)) == 4
