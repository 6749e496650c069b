"""Training loop: config, one step, non-finite guard, run folder, exact resume, evaluation, CLI."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from sketchvae import train as train_mod
from sketchvae.checkpoint import build_model, load_checkpoint
from sketchvae.losses import KLSchedule, lr_at
from sketchvae.models.sketch_rnn import SketchRNN, SketchRNNConfig
from sketchvae.train import (TrainConfig, Trainer, TrainingDiverged, evaluate, evaluate_checkpoint, fit,
                             make_batches)

SHEEP = Path(__file__).resolve().parents[2] / "shared" / "data" / "sketchrnn_datasets" / "aaron_sheep.npz"
CLASSES = ["box", "zigzag", "dots"]


# ---------------------------------------------------------------- fixtures
def synthetic_sketch(rng: np.random.Generator, label: int) -> np.ndarray:
    """A small stroke-3 sketch (int16) whose shape depends on the class label."""
    n = int(rng.integers(6, 30))
    t = np.arange(n)
    if label == 0:  # a wobbly square-ish loop
        ang = 2 * np.pi * t / n
        dx, dy = -np.sin(ang) * 6, np.cos(ang) * 6
    elif label == 1:  # zigzag
        dx, dy = np.full(n, 4.0), np.where(t % 2 == 0, 5.0, -5.0)
    else:  # short separate dots
        dx, dy = rng.normal(0, 8, n), rng.normal(0, 8, n)
    s3 = np.zeros((n, 3), dtype=np.int16)
    s3[:, 0] = np.round(dx + rng.normal(0, 1, n))
    s3[:, 1] = np.round(dy + rng.normal(0, 1, n))
    if label == 2:
        s3[::2, 2] = 1
    s3[n // 2, 2] = 1
    s3[-1, 2] = 1
    return s3


def write_synthetic_cache(path: Path, counts=(48, 12, 12), seed=0) -> Path:
    from sketchvae.data.cache import write_cache
    from sketchvae.strokes import scale_factor

    rng = np.random.default_rng(seed)
    splits = {}
    for name, count in zip(("train", "valid", "test"), counts):
        splits[name] = [(synthetic_sketch(rng, i % len(CLASSES)), i % len(CLASSES)) for i in range(count)]
    scale = scale_factor([s for s, _ in splits["train"]])
    write_cache(path, splits, CLASSES, {"scale_factor": scale})
    return path


@pytest.fixture(scope="module")
def cache_path(tmp_path_factory) -> Path:
    return write_synthetic_cache(tmp_path_factory.mktemp("data") / "tiny.h5")


def tiny_model(mode="vae", **kw) -> SketchRNNConfig:
    base = dict(mode=mode, enc_rnn_size=16, dec_rnn_size=32, z_size=8, num_mixture=3, max_seq_len=40,
                class_embed_size=4, num_classes=len(CLASSES) if mode == "class_vae" else 0)
    base.update(kw)
    return SketchRNNConfig(**base)


def tiny_train(**kw) -> TrainConfig:
    base = dict(steps=6, batch_size=8, eval_every=3, log_every=2, device="cpu", seed=1)
    base.update(kw)
    return TrainConfig(**base)


def read_metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------- config
def test_train_config_defaults_are_the_reference_ones():
    c = TrainConfig()
    assert (c.batch_size, c.lr, c.lr_decay, c.min_lr) == (100, 1e-3, 0.9999, 1e-5)
    assert (c.kl_weight, c.kl_eta_min, c.kl_decay_rate, c.kl_tolerance) == (0.5, 0.01, 0.99995, 0.2)
    assert (c.grad_clip, c.clip_mode, c.augment_scale, c.augment_drop) == (1.0, "value", 0.15, 0.1)


@pytest.mark.parametrize("kwargs,words", [
    (dict(clip_mode="max"), ["clip_mode='max'", "value", "norm"]),
    (dict(steps=0), ["steps=0", ">= 1"]),
    (dict(batch_size=2.5), ["batch_size=2.5", "integer"]),
    (dict(lr=-1.0), ["lr=-1.0"]),
    (dict(lr_decay=1.5), ["lr_decay=1.5"]),
    (dict(kl_eta_min=2.0), ["kl_eta_min=2.0", "[0.0, 1.0]"]),
    (dict(augment_drop=1.0), ["augment_drop=1.0"]),
    (dict(min_lr=1.0), ["min_lr=1.0", "lr="]),
    (dict(lr=float("nan")), ["lr=nan"]),
])
def test_train_config_rejects_bad_values(kwargs, words):
    with pytest.raises(ValueError) as err:
        TrainConfig(**kwargs)
    for w in words:
        assert w in str(err.value)


def test_cli_options_cover_every_field_with_the_right_default():
    from sketchvae.cli.train import _MODEL_OPTIONS, _TRAIN_OPTIONS, SHOWN_DEFAULTS

    train_fields = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    model_fields = {f.name: f.default for f in dataclasses.fields(SketchRNNConfig) if f.name != "num_classes"}
    assert {o[1] for o in _TRAIN_OPTIONS} == set(train_fields)
    assert {o[1] for o in _MODEL_OPTIONS} == set(model_fields)
    assert SHOWN_DEFAULTS == {**train_fields, **model_fields}


# ---------------------------------------------------------------- one step
def _batches(cache_path, n=2, batch_size=8, seed=0, augment=None):
    from sketchvae.data.cache import open_cache

    cache = open_cache(cache_path)
    loader = make_batches(cache, "train", batch_size, 40, scale_factor=float(cache.scale_factor), shuffle=True,
                          seed=seed, augment=augment)
    return list(loader)[:n]


def test_train_step_uses_the_schedules_and_lowers_the_loss(cache_path):
    torch.manual_seed(0)
    model = SketchRNN(tiny_model())
    cfg = tiny_train(lr=3e-3)
    trainer = Trainer(model, cfg, torch.device("cpu"))
    (batch,) = _batches(cache_path, 1)
    infos = [trainer.train_step(batch) for _ in range(30)]
    assert trainer.step == 30
    assert all(i["finite"] for i in infos)
    assert infos[5]["lr"] == pytest.approx(lr_at(5, 3e-3, 0.9999, 1e-5))
    assert infos[7]["kl_weight"] == pytest.approx(KLSchedule(0.5, 0.01, 0.99995).weight(7))
    assert infos[-1]["recon"] < infos[0]["recon"] - 0.1  # overfits one batch
    assert infos[0]["loss"] == pytest.approx(infos[0]["recon"] + infos[0]["kl_weight"] * max(infos[0]["kl"], 0.2),
                                             rel=1e-5)


@pytest.mark.parametrize("mode", ["value", "norm"])
def test_gradient_clipping(cache_path, mode, monkeypatch):
    torch.manual_seed(0)
    model = SketchRNN(tiny_model())
    trainer = Trainer(model, tiny_train(grad_clip=1e-3, clip_mode=mode), torch.device("cpu"))
    seen = {}

    def fake_step(*a, **k):
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        seen["max"] = max(float(g.abs().max()) for g in grads)
        seen["norm"] = float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])))

    monkeypatch.setattr(trainer.optimizer, "step", fake_step)
    (batch,) = _batches(cache_path, 1)
    info = trainer.train_step(batch)
    assert info["grad_norm"] > 1e-2  # the unclipped norm is reported
    if mode == "value":
        assert seen["max"] <= 1e-3 + 1e-9
        assert seen["norm"] > 1.5e-3  # many elements at the threshold: the norm is not 1e-3
    else:
        assert seen["norm"] == pytest.approx(1e-3, rel=1e-3)


def _nan_loss_after(monkeypatch, first_bad_call: int, last_bad_call: int = 10 ** 9):
    """Make `sketch_rnn_loss` return NaN on calls [first_bad_call, last_bad_call] (0-based)."""
    real = train_mod.sketch_rnn_loss
    calls = {"n": 0}

    def patched(*args, **kwargs):
        terms = real(*args, **kwargs)
        n = calls["n"]
        calls["n"] += 1
        if first_bad_call <= n <= last_bad_call:
            terms["recon"] = terms["recon"] * float("nan")
        return terms

    monkeypatch.setattr(train_mod, "sketch_rnn_loss", patched)


def test_nonfinite_step_is_skipped(cache_path, monkeypatch):
    torch.manual_seed(0)
    model = SketchRNN(tiny_model())
    trainer = Trainer(model, tiny_train(), torch.device("cpu"))
    batch_a, batch_b = _batches(cache_path, 2)
    trainer.train_step(batch_a)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt_before = trainer.optimizer.state_dict()["state"][0]["exp_avg"].clone()
    _nan_loss_after(monkeypatch, 0)
    info = trainer.train_step(batch_b)
    assert not info["finite"]
    assert trainer.nonfinite_streak == 1 and trainer.nonfinite_total == 1 and trainer.step == 2
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert torch.equal(trainer.optimizer.state_dict()["state"][0]["exp_avg"], opt_before)


def test_fit_skips_a_few_nonfinite_steps_and_goes_on(tmp_path, cache_path, monkeypatch):
    _nan_loss_after(monkeypatch, 2, 3)  # training calls 2 and 3 (steps 3, 4)
    result = fit(tiny_model(), tiny_train(steps=6, eval_every=6, max_nonfinite=3, test_at_end=False), cache_path,
                 tmp_path / "run")
    assert result.step == 6 and result.nonfinite_skipped == 2
    train_lines = [r for r in read_metrics(tmp_path / "run") if r["split"] == "train"]
    assert train_lines[-1]["nonfinite_skipped"] == 2


def test_many_nonfinite_steps_stop_with_a_clear_error(tmp_path, cache_path, monkeypatch):
    run = tmp_path / "run"
    # steps 1-3 fine (validation at 3 calls the loss too: valid batches), then NaN forever
    calls_before_nan = 3 + math.ceil(12 / 8)  # 3 train steps + 2 validation batches
    _nan_loss_after(monkeypatch, calls_before_nan)
    with pytest.raises(TrainingDiverged) as err:
        fit(tiny_model(), tiny_train(steps=20, max_nonfinite=4), cache_path, run)
    msg = str(err.value)
    assert "4 non-finite" in msg and "step 7" in msg and "last.pt" in msg and "(step 3)" in msg
    ckpt = load_checkpoint(run / "last.pt")
    assert ckpt["extra"]["step"] == 3
    model = build_model(ckpt, run / "last.pt")
    assert all(torch.isfinite(p).all() for p in model.parameters())


# ---------------------------------------------------------------- run folder
def test_fit_writes_the_run_folder(tmp_path, cache_path):
    run = tmp_path / "run"
    events = []
    result = fit(tiny_model("class_vae"), tiny_train(), cache_path, run, callback=lambda e, i: events.append((e, i)))
    assert (run / "last.pt").exists() and (run / "best.pt").exists()
    assert not list(run.glob("*.tmp")) and not list(run.glob(".*.tmp"))
    lines = read_metrics(run)
    for rec in lines:
        assert {"step", "split", "loss", "recon", "kl"} <= set(rec)
    train_lines = [r for r in lines if r["split"] == "train"]
    assert [r["step"] for r in train_lines] == [2, 4, 6]
    for r in train_lines:
        assert {"kl_weight", "lr", "sketches_per_s", "grad_norm"} <= set(r)
        assert r["lr"] == pytest.approx(lr_at(r["step"] - 1))
    assert [r["step"] for r in lines if r["split"] == "valid"] == [3, 6]
    assert [r["split"] for r in lines][-1] == "test"
    assert result.test is not None and result.step == 6
    assert result.best_valid["loss"] == min(r["loss"] for r in lines if r["split"] == "valid")

    last = load_checkpoint(run / "last.pt")
    assert last["class_names"] == CLASSES and last["config"]["num_classes"] == 3
    assert last["extra"]["step"] == 6 and last["train_state"]["step"] == 6
    assert last["extra"]["train_config"]["batch_size"] == 8
    best = load_checkpoint(run / "best.pt")
    assert "train_state" not in best
    assert build_model(best, run / "best.pt").config.mode == "class_vae"

    names = [e for e, _ in events]
    assert names[0] == "start" and names[-1] == "end" and names.count("step") == 6
    start = events[0][1]
    assert start["device"] == "cpu" and start["train_sketches"] == 48 and start["start_step"] == 0

    with pytest.raises(ValueError, match="already holds a run"):
        fit(tiny_model(), tiny_train(), cache_path, run)


def test_fit_decoder_mode_has_no_kl(tmp_path, cache_path):
    result = fit(tiny_model("decoder"), tiny_train(steps=2, eval_every=2), cache_path, tmp_path / "run")
    assert result.final_valid["kl"] == 0.0
    assert result.final_valid["loss"] == pytest.approx(result.final_valid["recon"])


# ---------------------------------------------------------------- exact resume
class Killed(Exception):
    pass


def _kill_at(step):
    def callback(event, info):
        if event == "step" and info["step"] == step:
            raise Killed(step)
    return callback


def _resume_config():
    # augmentation, dropout and class labels on: every RNG and the data position must be restored
    return (tiny_model("class_vae", input_dropout=0.1, output_dropout=0.1),
            tiny_train(steps=11, eval_every=4, log_every=1, augment_scale=0.2, augment_drop=0.2))


def test_resumed_run_matches_an_uninterrupted_one(tmp_path, cache_path):
    mcfg, tcfg = _resume_config()  # 48 train sketches / 8 = 6 batches per epoch: crosses epochs
    straight = fit(mcfg, tcfg, cache_path, tmp_path / "straight")
    run = tmp_path / "killed"
    with pytest.raises(Killed):
        fit(mcfg, tcfg, cache_path, run, callback=_kill_at(6))  # last.pt at step 4, killed at 6
    assert load_checkpoint(run / "last.pt")["extra"]["step"] == 4
    with pytest.raises(Killed):  # killed again, after one more save at step 8
        fit(None, tcfg, cache_path, run, resume=True, callback=_kill_at(9))
    seen = []
    resumed = fit(None, tcfg, cache_path, run, resume=True,
                  callback=lambda e, i: seen.append(i["step"]) if e == "step" else None)
    assert seen[0] == 9 and resumed.step == 11

    a, b = load_checkpoint(tmp_path / "straight" / "last.pt"), load_checkpoint(run / "last.pt")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    opt_a, opt_b = a["train_state"]["optimizer"]["state"], b["train_state"]["optimizer"]["state"]
    for i in opt_a:
        for k in opt_a[i]:
            assert torch.equal(opt_a[i][k], opt_b[i][k])
    # the metrics files agree line for line (timing aside) and the killed steps are not duplicated
    strip = lambda rs: [{k: v for k, v in r.items() if k != "sketches_per_s"} for r in rs]  # noqa: E731
    assert strip(read_metrics(tmp_path / "straight")) == strip(read_metrics(run))
    assert straight.test == resumed.test


def test_resume_refuses_changed_options_and_missing_runs(tmp_path, cache_path):
    mcfg, tcfg = tiny_model(), tiny_train(steps=3)
    fit(mcfg, tcfg, cache_path, tmp_path / "run")
    with pytest.raises(ValueError, match="lr: saved 0.001, given 0.002"):
        fit(None, dataclasses.replace(tcfg, lr=2e-3, steps=5), cache_path, tmp_path / "run", resume=True)
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        fit(None, tcfg, cache_path, tmp_path / "none", resume=True)
    longer = fit(None, dataclasses.replace(tcfg, steps=5), cache_path, tmp_path / "run", resume=True)
    assert longer.step == 5


def test_balance_classes_repeats_the_small_classes(tmp_path):
    from sketchvae.data.cache import write_cache
    from sketchvae.strokes import scale_factor

    rng = np.random.default_rng(5)
    labels = [0] * 30 + [1] * 6 + [2] * 6  # class 0 is five times the others
    splits = {"train": [(synthetic_sketch(rng, c), c) for c in labels],
              "valid": [(synthetic_sketch(rng, c), c) for c in (0, 1, 2)],
              "test": [(synthetic_sketch(rng, c), c) for c in (0, 1, 2)]}
    path = write_cache(tmp_path / "unequal.h5", splits, CLASSES,
                       {"scale_factor": scale_factor([x for x, _ in splits["train"]])})
    mcfg = tiny_model("class_vae")
    starts = {}
    for balance in (False, True):
        fit(mcfg, tiny_train(steps=2, eval_every=2, balance_classes=balance), path, tmp_path / f"run{balance}",
            callback=lambda e, info, b=balance: starts.__setitem__(b, info) if e == "start" else None)
    assert starts[False]["batches_per_epoch"] == 42 // 8 and starts[True]["batches_per_epoch"] == 90 // 8
    assert (starts[False]["epoch_sketches"], starts[True]["epoch_sketches"]) == (42, 90)
    saved = load_checkpoint(tmp_path / "runTrue" / "last.pt")["extra"]["train_config"]
    assert saved["balance_classes"] is True
    with pytest.raises(ValueError, match="balance_classes: saved True, given False"):
        fit(None, tiny_train(steps=3, eval_every=2), path, tmp_path / "runTrue", resume=True)


# ---------------------------------------------------------------- evaluation
def test_evaluate_is_deterministic_and_leaves_the_global_rng_alone(cache_path):
    from sketchvae.data.cache import open_cache

    torch.manual_seed(0)
    model = SketchRNN(tiny_model())
    cache = open_cache(cache_path)

    def run():
        return evaluate(model, make_batches(cache, "valid", 5, 40, scale_factor=float(cache.scale_factor),
                                            shuffle=False, seed=0), seed=3)

    state = torch.get_rng_state()
    first, second = run(), run()
    assert torch.equal(state, torch.get_rng_state())
    assert first == second and first["n"] == 12
    assert first["loss"] == pytest.approx(first["recon"] + 0.5 * max(first["kl"], 0.2))
    assert model.training  # mode restored


def test_evaluate_checkpoint_maps_class_names(tmp_path, cache_path):
    run = tmp_path / "run"
    fit(tiny_model("class_vae"), tiny_train(steps=2, eval_every=2, test_at_end=False), cache_path, run)
    base = evaluate_checkpoint(run / "best.pt", cache_path, "test", batch_size=5)
    assert base["n"] == 12 and base["split"] == "test" and base["step"] == 2
    # the same sketches in a cache whose class list is in another order give the same numbers
    from sketchvae.data.cache import open_cache, write_cache

    cache = open_cache(cache_path)
    order = [2, 0, 1]  # new index -> old class
    old_to_new = {old: new for new, old in enumerate(order)}
    test = cache.split("test")
    splits = {"test": [(np.asarray(test[i]), old_to_new[int(test.labels[i])]) for i in range(len(test))]}
    other = write_cache(tmp_path / "other.h5", splits, [CLASSES[i] for i in order],
                        {"scale_factor": float(cache.scale_factor)}) or tmp_path / "other.h5"
    again = evaluate_checkpoint(run / "best.pt", tmp_path / "other.h5", "test", batch_size=5)
    assert again["loss"] == pytest.approx(base["loss"], rel=1e-6)
    with pytest.raises(ValueError, match="split 'valid'"):
        evaluate_checkpoint(run / "best.pt", tmp_path / "other.h5", "valid")


# ---------------------------------------------------------------- CLI end to end
def test_cli_train_evaluate_resume(tmp_path, cache_path):
    from click.testing import CliRunner

    from sketchvae.cli import main

    run = tmp_path / "run"
    tiny = ["--enc-rnn-size", "16", "--dec-rnn-size", "32", "--z-size", "8", "--num-mixture", "3",
            "--max-seq-len", "40", "--batch-size", "8", "--device", "cpu", "--eval-every", "2", "--log-every", "1"]
    runner = CliRunner()
    res = runner.invoke(main, ["train", str(cache_path), "-o", str(run), "--steps", "2", "--no-progress",
                               "--mode", "class_vae", *tiny])
    assert res.exit_code == 0, res.output
    assert "device: cpu" in res.output and "best valid" in res.output
    assert load_checkpoint(run / "last.pt")["config"]["mode"] == "class_vae"

    res = runner.invoke(main, ["evaluate", str(run), str(cache_path), "--split", "valid", "--json"])
    assert res.exit_code == 0, res.output
    metrics = json.loads(res.output.strip().splitlines()[-1])
    assert metrics["split"] == "valid" and metrics["n"] == 12 and {"loss", "recon", "kl"} <= set(metrics)

    res = runner.invoke(main, ["train", "-o", str(run), "--resume", "--steps", "4", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "resuming at step 2" in res.output
    assert load_checkpoint(run / "last.pt")["extra"]["step"] == 4

    res = runner.invoke(main, ["train", "-o", str(run), "--resume", "--lr", "0.1"])
    assert res.exit_code != 0 and "--lr" in res.output and "Traceback" not in res.output
    res = runner.invoke(main, ["train", str(cache_path), "-o", str(run), "--steps", "2"])
    assert res.exit_code != 0 and "already holds a run" in res.output
    res = runner.invoke(main, ["train", str(tmp_path / "missing.h5"), "-o", str(tmp_path / "r2")])
    assert res.exit_code != 0 and "not found" in res.output and res.exception is None or \
        isinstance(res.exception, SystemExit)
    res = runner.invoke(main, ["evaluate", str(tmp_path / "nope.pt"), str(cache_path)])
    assert res.exit_code != 0 and "checkpoint not found" in res.output


# ---------------------------------------------------------------- real data
@pytest.mark.slow
@pytest.mark.skipif(not SHEEP.exists(), reason="needs ../shared/data/sketchrnn_datasets/aaron_sheep.npz")
def test_training_on_aaron_sheep_lowers_validation_loss(tmp_path):
    torch.set_num_threads(1)
    cache = train_mod.prepare_data([str(SHEEP)], tmp_path)
    mcfg = SketchRNNConfig(enc_rnn_size=32, dec_rnn_size=64, z_size=16, num_mixture=5)
    tcfg = TrainConfig(steps=40, batch_size=32, eval_every=40, eval_batches=2, lr=3e-3, device="cpu",
                       test_at_end=False, augment_drop=0.0)
    result = fit(mcfg, tcfg, cache, tmp_path / "run")
    torch.manual_seed(0)
    from sketchvae.data.cache import open_cache

    c = open_cache(cache)
    untrained = evaluate(SketchRNN(mcfg), make_batches(c, "valid", 32, 250, scale_factor=float(c.scale_factor),
                                                       shuffle=False, seed=0), max_batches=2)
    assert result.final_valid["recon"] < untrained["recon"] - 0.15
