"""sketchvae.evaluation (`sketchvae score`): the rasteriser and statistics against direct computations, the
two-sample test on cases with a known answer, and `score` / the CLI end to end on a tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from sketchvae.evaluation import ScoreConfig, rasterize, score, sketch_stats, two_sample_test

SHEEP = Path(__file__).resolve().parents[2] / "shared" / "data" / "sketchrnn_datasets" / "aaron_sheep.npz"


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------- synthetic drawings
def _ring(cx: float, cy: float, r: float, points: int) -> np.ndarray:
    a = np.linspace(0, 2 * np.pi, points)
    return np.stack([cx + r * np.cos(a), cy + r * np.sin(a)], 1)


def face(rng: np.random.Generator) -> np.ndarray:
    """A stroke-3 face (head, two eyes, a mouth), sizes and places varying a little."""
    r = rng.uniform(40, 60)
    eye_y, eye_dx, eye_r = -r * rng.uniform(0.2, 0.4), r * rng.uniform(0.3, 0.5), r * rng.uniform(0.1, 0.2)
    mouth_y, mouth_w = r * rng.uniform(0.3, 0.5), r * rng.uniform(0.3, 0.6)
    polys = [_ring(0, 0, r, int(rng.integers(14, 20))), _ring(-eye_dx, eye_y, eye_r, 6), _ring(eye_dx, eye_y, eye_r, 6),
             np.array([[-mouth_w, mouth_y], [0, mouth_y + r * rng.uniform(0.05, 0.2)], [mouth_w, mouth_y]])]
    from sketchvae.strokes import from_polylines

    return np.round(from_polylines(polys)).astype(np.float32)


def shuffle_strokes(s3: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The same strokes in another order; each keeps its offsets, so strokes land elsewhere."""
    ends = np.flatnonzero(s3[:, 2] > 0.5) + 1
    strokes = np.split(s3, ends[:-1])
    order = rng.permutation(len(strokes))
    if len(strokes) > 1 and (order == np.arange(len(strokes))).all():
        order = np.roll(order, 1)
    return np.concatenate([strokes[i] for i in order])


def jitter(s3: np.ndarray, rng: np.random.Generator, sd: float) -> np.ndarray:
    out = np.array(s3, dtype=np.float32)
    out[:, 0:2] += rng.normal(0, sd, (len(out), 2))
    return out


# ---------------------------------------------------------------- rasterize, statistics
def test_rasterize_draws_pen_down_segments_only():
    # a 10-unit horizontal line, a pen-up move down by 10, a one-point stroke: fitted to 16 x 16
    s3 = np.array([[0, 0, 0], [10, 0, 1], [-10, 10, 1]], dtype=np.float32)
    img = rasterize([s3], size=16, margin=1.0)[0].reshape(16, 16)
    assert img.shape == (16, 16) and float(img.min()) >= 0 and float(img.max()) <= 1
    # the 10 x 10 box spans pixels 1..14; the line is row 1, the dot at (row 14, column 1)
    assert float(img[1, 1:15].min()) > 0.9
    assert float(img[14, 1]) > 0.9
    assert float(img[5:11, :].sum()) == 0  # nothing between: the pen-up move is not drawn
    assert float(img[14, 4:].sum()) == 0
    # scale-free: the same drawing 7 times larger gives the same picture
    assert torch.allclose(rasterize([s3 * np.array([7, 7, 1], np.float32)], 16), rasterize([s3], 16), atol=1e-5)
    assert float(rasterize([np.zeros((0, 3), np.float32)], 8).sum()) == 0  # an empty drawing: blank


def test_sketch_stats_against_direct_computation():
    rng = np.random.default_rng(0)
    drawings = [face(rng) for _ in range(9)] + [np.array([[3, 4, 1]] * 250, np.float32)]
    st = sketch_stats(drawings, max_len=250)
    assert st["n"] == 10
    assert st["points"] == pytest.approx(np.mean([len(d) for d in drawings]))
    assert st["strokes"] == pytest.approx(np.mean([d[:, 2].sum() for d in drawings]))
    assert st["ended"] == pytest.approx(0.9)  # the 250-point one reached the limit
    widths = [np.ptp(np.cumsum(d[:, 0])) for d in drawings]
    heights = [np.ptp(np.cumsum(d[:, 1])) for d in drawings]
    assert st["width"] == pytest.approx(np.median(widths)) and st["height"] == pytest.approx(np.median(heights))
    assert sketch_stats(drawings)["ended"] is None


# ---------------------------------------------------------------- the two-sample test: known answers
def _faces(seed: int, count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [face(rng) for _ in range(count)]


def _within(result: dict, lo: float, hi: float) -> None:
    assert lo <= result["accuracy"] <= hi, result


def test_two_sample_test_same_distribution_is_near_half():
    result = two_sample_test(rasterize(_faces(1, 200)), rasterize(_faces(2, 200)), folds=5, epochs=6, seed=0)
    assert result["n_real"] == result["n_other"] == 200 and len(result["fold_accuracies"]) == 5
    assert result["se"] == pytest.approx(np.sqrt(result["accuracy"] * (1 - result["accuracy"]) / 400))
    _within(result, 0.5 - 4 * 0.025, 0.5 + 4 * 0.025)  # 0.025: the standard error of 400 coin flips


def test_two_sample_test_tells_shuffled_and_jittered_strokes():
    real = rasterize(_faces(1, 200))
    rng = np.random.default_rng(3)
    shuffled = rasterize([shuffle_strokes(f, rng) for f in _faces(2, 200)])
    jittered = rasterize([jitter(f, rng, 6.0) for f in _faces(2, 200)])
    _within(two_sample_test(real, shuffled, folds=5, epochs=6, seed=0), 0.9, 1.0)
    _within(two_sample_test(real, jittered, folds=5, epochs=6, seed=0), 0.9, 1.0)


def test_two_sample_test_refuses_too_few():
    with pytest.raises(ValueError, match="folds=5"):
        two_sample_test(rasterize(_faces(1, 3)), rasterize(_faces(2, 10)), folds=5)


@pytest.mark.skipif(not SHEEP.exists(), reason=f"{SHEEP} not found (the real data sets live in ../shared/data)")
def test_two_sample_test_on_real_sheep():
    from sketchvae.data.formats import load_npz

    data = load_npz(SHEEP, ("train", "test"))
    test, train = data["test"][:150], data["train"][:150]
    rng = np.random.default_rng(0)
    _within(two_sample_test(rasterize(test), rasterize(train), folds=5, epochs=6, seed=0), 0.5 - 0.14, 0.5 + 0.14)
    shuffled = rasterize([shuffle_strokes(s, rng) for s in train])
    # sheep are drawn in many short strokes, some of which land near where they were: less clear-cut than
    # the faces (300 + 300 drawings, 10 epochs: 0.82), still far above the control
    _within(two_sample_test(rasterize(test), shuffled, folds=5, epochs=6, seed=0), 0.7, 1.0)


# ---------------------------------------------------------------- score end to end
CLASSES = ["face", "box"]


def _box(rng: np.random.Generator) -> np.ndarray:
    w, h = rng.uniform(30, 60, 2)
    from sketchvae.strokes import from_polylines

    return np.round(from_polylines([np.array([[0, 0], [w, 0], [w, h], [0, h], [0, 0]])])).astype(np.float32)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A cache of faces and boxes, the faces alone as faces.npz (class "faces"), and untrained tiny models."""
    from sketchvae.checkpoint import save_checkpoint
    from sketchvae.data.cache import write_cache
    from sketchvae.models.sketch_rnn import SketchRNN, SketchRNNConfig
    from sketchvae.strokes import scale_factor

    root = tmp_path_factory.mktemp("score")
    rng = np.random.default_rng(0)
    draw = (face, _box)
    splits = {name: [(draw[i % 2](rng).astype(np.int16), i % 2) for i in range(count)]
              for name, count in (("train", 160), ("valid", 10), ("test", 40))}
    scale = scale_factor([s for s, _ in splits["train"]])
    cache = write_cache(root / "tiny.h5", splits, CLASSES, {"scale_factor": scale})
    faces = {name: [s for s, label in items if label == 0] for name, items in splits.items()}
    arrays = {}
    for name, items in faces.items():
        arrays[name] = np.empty(len(items), dtype=object)
        arrays[name][:] = items
    np.savez(root / "faces.npz", **arrays)
    np.savez(root / "face.npz", **arrays)  # class "face": one of the class_vae model's two classes
    paths = {}
    for mode in ("vae", "class_vae"):
        torch.manual_seed(0)
        cfg = SketchRNNConfig(mode=mode, enc_rnn_size=8, dec_rnn_size=16, z_size=4, num_mixture=2, max_seq_len=40,
                              num_classes=2 if mode == "class_vae" else 0, class_embed_size=4)
        paths[mode] = save_checkpoint(root / f"{mode}.pt", kind="sketch_rnn", config=cfg, model=SketchRNN(cfg),
                                      class_names=CLASSES if mode == "class_vae" else ["face"], scale_factor=scale)
    return {"cache": cache, "npz": root / "faces.npz", "face_npz": root / "face.npz", **paths}


def test_score_class_vae(tiny):
    from sketchvae.sample import load

    messages = []
    result = score(load(tiny["class_vae"]), tiny["cache"], "test", ScoreConfig(n=15, epochs=2, recogniser_epochs=10),
                   report=messages.append)
    assert messages and [c["class"] for c in result["classes"]] == CLASSES
    assert result["recogniser"]["classes"] == CLASSES and result["convention"] == "paper"
    for c in result["classes"]:
        assert c["m"] == 15
        assert c["stats"]["model"]["n"] == c["stats"]["real"]["n"] == 15
        assert 0 <= c["stats"]["model"]["ended"] <= 1 and c["stats"]["real"]["ended"] is None
        assert 0 <= c["recognised"] <= 1 and 0 <= c["recognised_real"] <= 1
        t = c["c2st"]  # 30 drawings in 5 folds of 6: the accuracy is the mean over the folds
        assert t["accuracy"] == pytest.approx(np.mean(t["fold_accuracies"])) and t["n_real"] == t["n_other"] == 15
    # the recogniser tells faces from boxes in the held-out drawings
    assert result["recogniser"]["accuracy"] >= 0.9


def test_score_is_reproducible_and_limits_m(tiny):
    from sketchvae.sample import load

    cfg = ScoreConfig(n=1000, epochs=2, seed=3)
    a = score(load(tiny["vae"]), tiny["cache"], "test", cfg)
    b = score(load(tiny["vae"]), tiny["cache"], "test", cfg)
    assert a["classes"][0]["m"] == 40  # all 40 test drawings (faces and boxes: the model is unconditional)
    assert a["classes"][0]["c2st"] == b["classes"][0]["c2st"]
    assert a["classes"][0]["stats"] == b["classes"][0]["stats"]
    assert "recogniser" not in a


def test_score_config_errors():
    with pytest.raises(ValueError, match="folds"):
        ScoreConfig(folds=1)
    with pytest.raises(ValueError, match="temperature"):
        ScoreConfig(temperature=0)


def _cli(*args):
    from sketchvae.cli import main

    return CliRunner().invoke(main, ["score", *map(str, args)])


def test_cli_score(tiny):
    result = _cli(tiny["vae"], tiny["npz"], "-n", 10, "--epochs", 2, "--no-progress")
    assert result.exit_code == 0, result.output
    assert "model vs real" in result.output and "real vs real" in result.output and "ended" in result.output
    result = _cli(tiny["class_vae"], tiny["cache"], "-n", 10, "--epochs", 2, "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert [c["class"] for c in out["classes"]] == CLASSES and out["checkpoint"] == str(tiny["class_vae"])
    assert out["classes"][0]["m"] == 10 and out["classes_not_in_data"] == []


def test_cli_score_class_missing_from_data(tiny):
    result = _cli(tiny["class_vae"], tiny["face_npz"], "-n", 10, "--epochs", 1)
    assert result.exit_code == 0, result.output
    assert "not scored (not in DATA): box" in result.output
    rows = [line.split() for line in result.output.splitlines() if line.strip().startswith(("face ", "box "))]
    assert [r[0] for r in rows] == ["face"] and "recognised" not in result.output  # one class: no recogniser


def test_cli_score_errors(tiny, tmp_path):
    result = _cli(tiny["class_vae"], tiny["npz"], "--epochs", 1)  # faces.npz: one class, "faces"
    assert result.exit_code != 0 and "none of the model's classes" in result.output
    result = _cli(tiny["vae"], tiny["cache"], "--folds", 50)
    assert result.exit_code != 0 and "--folds" in result.output
    result = _cli(tmp_path / "missing.pt", tiny["cache"])
    assert result.exit_code != 0 and "missing.pt" in result.output
    assert "Examples" in _cli("--help").output


# ---------------------------------------------------------------- the quality curve of a training run
def test_training_records_a_quality_curve_without_changing_the_run(tmp_path):
    from test_train import read_metrics, tiny_model, tiny_train, write_synthetic_cache

    from sketchvae.run import RunFolder
    from sketchvae.train import fit

    cache = write_synthetic_cache(tmp_path / "tiny.h5")
    for mode in ("vae", "class_vae"):
        plain, scored = tmp_path / f"plain_{mode}", tmp_path / f"scored_{mode}"
        fit(tiny_model(mode), tiny_train(steps=4, eval_every=2, log_every=1, test_at_end=False), cache, plain)
        fit(tiny_model(mode), tiny_train(steps=4, eval_every=2, log_every=1, test_at_end=False, score_samples=10),
            cache, scored)
        rows = read_metrics(scored)
        scores = [r for r in rows if r["split"] == "score"]
        assert [r["step"] for r in scores] == [2, 4]
        for r in scores:
            assert r["m"] == 10 and 0 <= r["c2st"] <= 1 and 0 <= r["ended"] <= 1 and r["c2st_se"] > 0
        # scoring draws from its own generators and restores the model's mode: the same trajectory
        losses = [(r["step"], r["split"], r["loss"]) for r in rows if r["split"] in ("train", "valid")]
        assert losses == [(r["step"], r["split"], r["loss"]) for r in read_metrics(plain)
                          if r["split"] in ("train", "valid")]
        html = RunFolder(scored).write_report().read_text()
        assert "Sample quality" in html and "Sample quality" not in RunFolder(plain).write_report().read_text()
