"""The run folder (sketchvae/run.py), sample grids, report.html, TensorBoard, and no lost work:
Ctrl-C / SIGTERM, periodic saves, resume on the run's own data only, a full disk."""

from __future__ import annotations

import base64
import dataclasses
import errno
import io
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from sketchvae import runtime
from sketchvae.checkpoint import load_checkpoint
from sketchvae.cli import main
from sketchvae.run import RunFolder, data_fingerprint
from sketchvae.train import DataMismatch, TrainingInterrupted, fit

from test_train import CLASSES, read_metrics, tiny_model, tiny_train, write_synthetic_cache

REPO = Path(__file__).resolve().parents[1]
TINY_CLI = ["--enc-rnn-size", "16", "--dec-rnn-size", "32", "--z-size", "8", "--num-mixture", "3",
            "--max-seq-len", "40", "--batch-size", "8", "--device", "cpu"]


@pytest.fixture(scope="module")
def cache_path(tmp_path_factory) -> Path:
    return write_synthetic_cache(tmp_path_factory.mktemp("data") / "tiny.h5")


@pytest.fixture(scope="module")
def other_cache(tmp_path_factory) -> Path:
    return write_synthetic_cache(tmp_path_factory.mktemp("other") / "other.h5", seed=5)


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def weights(path: Path) -> dict:
    return load_checkpoint(path)["model"]


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def no_timing(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "sketches_per_s"} for r in records]


# ---------------------------------------------------------------- the run folder object
def test_run_folder_records_truncates_and_reads_back(tmp_path):
    run = RunFolder(tmp_path / "run")
    assert not run.has_run() and run.metrics() == [] and run.sample_grids() == []
    for step in (2, 4, 6):
        run.record({"step": step, "split": "train", "loss": float(step)})
    run.record({"step": 6, "split": "test", "loss": 1.0})
    for step in (4, 8):
        run.sample_path(step).parent.mkdir(parents=True, exist_ok=True)
        run.sample_path(step).write_text("<svg/>")
    with open(run.metrics_path, "a") as f:
        f.write('{"step": 7, "spl')  # a line cut short by a crash
    assert [r["step"] for r in run.metrics()] == [2, 4, 6, 6]
    assert [s for s, _ in run.sample_grids()] == [4, 8]
    assert run.sample_path(8).name == "step_000008.svg"
    run.truncate(4)
    assert [(r["step"], r["split"]) for r in run.metrics()] == [(2, "train"), (4, "train")]
    assert [s for s, _ in run.sample_grids()] == [4]
    quiet = RunFolder(tmp_path / "rank1", writer=False)  # DDP ranks other than 0 write nothing
    quiet.record({"step": 1, "split": "train"})
    assert not (tmp_path / "rank1").exists()


def test_data_fingerprint_tells_data_apart(tmp_path, cache_path, other_cache):
    from sketchvae.data.cache import open_cache

    same = write_synthetic_cache(tmp_path / "same.h5")  # written again from the same sketches
    a, b, c = (data_fingerprint(open_cache(p)) for p in (cache_path, same, other_cache))
    assert a == b and a != c and a.startswith("sha256:")


# ---------------------------------------------------------------- sample grids at every validation
def test_every_validation_draws_a_fixed_z_grid(tmp_path, cache_path):
    run = tmp_path / "run"
    events = []
    fit(tiny_model(), tiny_train(steps=6, eval_every=3, test_at_end=False), cache_path, run,
        callback=lambda e, i: events.append((e, i)))
    grids = RunFolder(run).sample_grids()
    assert [s for s, _ in grids] == [3, 6]
    assert [i["step"] for e, i in events if e == "samples"] == [3, 6]
    svg3, svg6 = (p.read_text() for _, p in grids)
    assert svg3.count('class="cell"') == 10 and svg3 != svg6  # the weights changed between the grids
    # the same weights and seed draw the same grid again, and drawing leaves the global RNGs alone
    from sketchvae.run import draw_grid
    from sketchvae.sample import load

    sampler = load(run / "last.pt")
    state = torch.get_rng_state()
    first, _, _ = draw_grid(sampler.model, sampler.scale_factor, sampler.class_names, seed=1)
    second, _, _ = draw_grid(sampler.model, sampler.scale_factor, sampler.class_names, seed=1)
    assert torch.equal(state, torch.get_rng_state())
    assert len(first) == 10 and all(np.array_equal(x, y) for x, y in zip(first, second))
    assert RunFolder(tmp_path / "again").record_samples(6, sampler.model, sampler.scale_factor, [], seed=1)\
        .read_text() == svg6


def test_class_models_draw_one_row_per_class(tmp_path, cache_path):
    run = tmp_path / "run"
    fit(tiny_model("class_vae"), tiny_train(steps=2, eval_every=2, test_at_end=False), cache_path, run)
    (_, path), = RunFolder(run).sample_grids()
    captions = re.findall(r'<text[^>]*class="caption"[^>]*>([^<]*)</text>', path.read_text())
    assert captions == [c for c in CLASSES for _ in range(4)]


# ---------------------------------------------------------------- report.html
def test_report_has_curves_grids_and_config(tmp_path, cache_path):
    from PIL import Image

    run = tmp_path / "run"
    fit(tiny_model(), tiny_train(steps=6, eval_every=2, log_every=1), cache_path, run)
    res = cli("report", run)
    assert res.exit_code == 0, res.output
    page = (run / "report.html").read_text()
    png = re.search(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page)
    img = Image.open(io.BytesIO(base64.b64decode(png.group(1))))
    assert img.format == "PNG" and img.size[0] >= 800
    grids = re.findall(r"data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)", page)
    assert len(grids) == 3  # steps 2, 4, 6
    assert base64.b64decode(grids[-1]).decode() == (run / "samples" / "step_000006.svg").read_text()
    for text in ("step 2", "step 6", "kl_weight", "enc_rnn_size", "best valid", "L_KL", "data_fingerprint"):
        assert text in page, text
    # a second location, and clean errors
    res = cli("report", run, "-o", tmp_path / "elsewhere.html")
    assert res.exit_code == 0 and (tmp_path / "elsewhere.html").exists()
    res = cli("report", tmp_path / "missing")
    assert res.exit_code != 0 and "run folder not found" in res.output and "Traceback" not in res.output
    (tmp_path / "empty").mkdir()
    res = cli("report", tmp_path / "empty")
    assert res.exit_code != 0 and "not a run folder" in res.output


def test_report_of_a_run_without_grids_or_checkpoint(tmp_path):
    run = RunFolder(tmp_path / "run")
    run.record({"step": 1, "split": "train", "loss": 2.0, "recon": 1.5, "kl": 1.0})
    page = run.write_report().read_text()
    assert "no sample grids" in page and "no readable checkpoint" in page and "image/png" in page


def test_tensorboard_logging(tmp_path, cache_path, monkeypatch):
    import sketchvae.run as run_mod

    monkeypatch.setattr(run_mod, "tensorboard_available", lambda: False)
    res = cli("train", cache_path, "-o", tmp_path / "tb0", "--steps", "1", "--tensorboard", *TINY_CLI)
    assert res.exit_code != 0 and "pip install 'sketchvae[tensorboard]'" in res.output
    assert not (tmp_path / "tb0").exists()
    with pytest.raises(ImportError, match="tensorboard"):
        RunFolder(tmp_path / "tb1", tensorboard=True)
    monkeypatch.undo()
    pytest.importorskip("tensorboard", reason="tensorboard is an optional extra (pip install 'sketchvae[tensorboard]')")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "tb"
    fit(tiny_model(), tiny_train(steps=4, eval_every=2, log_every=2, test_at_end=False), cache_path, run,
        tensorboard=True)
    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert {"loss/train", "loss/valid", "recon/valid", "kl/train"} <= set(tags)
    valid = [r for r in read_metrics(run) if r["split"] == "valid"]
    got = [(e.step, e.value) for e in acc.Scalars("loss/valid")]
    assert got == [(r["step"], pytest.approx(r["loss"], rel=1e-6)) for r in valid]


# ---------------------------------------------------------------- Ctrl-C, SIGTERM, periodic saves
def test_stop_requests_first_signal_asks_second_stops(monkeypatch):
    clock = [0.0]
    stops = runtime.StopRequests(save_minutes=2, clock=lambda: clock[0])
    before = signal.getsignal(signal.SIGINT)
    with stops:
        assert not stops.save_due()
        clock[0] = 119.0
        assert not stops.save_due()
        clock[0] = 120.0
        assert stops.save_due()
        stops.saved()
        assert not stops.save_due()
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)
        assert stops.requested == "SIGINT"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.5)
    assert signal.getsignal(signal.SIGINT) is before
    assert not runtime.StopRequests(0).save_due()


def _signal_at(step: int, sig=signal.SIGINT):
    def callback(event, info):
        if event == "step" and info["step"] == step:
            os.kill(os.getpid(), sig)
    return callback


def test_interrupted_run_saves_the_current_step_and_resumes_exactly(tmp_path, cache_path):
    mcfg = tiny_model("class_vae", input_dropout=0.1)
    tcfg = tiny_train(steps=11, eval_every=4, log_every=2, augment_scale=0.2, augment_drop=0.2)
    fit(mcfg, tcfg, cache_path, tmp_path / "straight")
    run = tmp_path / "run"
    with pytest.raises(TrainingInterrupted) as err:
        fit(mcfg, tcfg, cache_path, run, callback=_signal_at(7))  # inside a logging window (6..8)
    assert err.value.step == 7 and err.value.signal_name == "SIGINT" and err.value.exit_code == 130
    assert load_checkpoint(run / "last.pt")["extra"]["step"] == 7
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored
    with pytest.raises(TrainingInterrupted) as err:
        fit(None, tcfg, cache_path, run, resume=True, callback=_signal_at(8, signal.SIGTERM))  # an eval step
    assert err.value.step == 8 and err.value.exit_code == 143
    fit(None, tcfg, cache_path, run, resume=True)
    assert_same_weights(weights(tmp_path / "straight" / "last.pt"), weights(run / "last.pt"))
    assert no_timing(read_metrics(tmp_path / "straight")) == no_timing(read_metrics(run))


def test_periodic_saves(tmp_path, cache_path):
    def saves(run, **kw):
        seen = []
        fit(tiny_model(), tiny_train(steps=4, eval_every=4, test_at_end=False, **kw), cache_path, tmp_path / run,
            callback=lambda e, i: seen.append(i["step"]) if e == "checkpoint" and i["which"] == "last" else None)
        return seen

    assert saves("off", save_minutes=0) == [4]
    assert saves("always", save_minutes=1e-9) == [1, 2, 3, 4]  # due after every step


def _wait_for(predicate, proc, timeout=120.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(f"exited early: {proc.communicate()}")
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("timed out")


def _train_lines(run: Path) -> int:
    try:
        return sum('"split": "train"' in line for line in (run / "metrics.jsonl").read_text().splitlines())
    except FileNotFoundError:
        return 0


@pytest.mark.slow
def test_cli_train_stops_on_ctrl_c_and_resumes_exactly(tmp_path, cache_path):
    """A real process: Ctrl-C saves last.pt at the current step, the message gives the resume
    command, and resuming continues the uninterrupted trajectory (SIGTERM: tested in-process above)."""
    sig = signal.SIGINT
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "sketchvae", "train", str(cache_path), "-o", str(run), *TINY_CLI, "--steps", "100000",
           "--eval-every", "100000", "--log-every", "2", "--seed", "3", "--no-progress", "--threads", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    _wait_for(lambda: _train_lines(run) >= 2, proc)
    proc.send_signal(sig)
    out, errout = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, out + errout
    assert "Traceback" not in errout and f"stopped by {signal.Signals(sig).name}" in errout
    assert f"sketchvae train -o {run} --resume" in errout
    step = load_checkpoint(run / "last.pt")["extra"]["step"]
    assert f"holds step {step}" in errout and step >= 4

    res = cli("train", "-o", run, "--resume", "--steps", step + 3, "--no-progress")
    assert res.exit_code == 0, res.output
    tcfg = tiny_train(steps=step + 3, eval_every=100000, log_every=2, seed=3, num_threads=1)
    fit(tiny_model(), tcfg, cache_path, tmp_path / "straight")
    assert_same_weights(weights(tmp_path / "straight" / "last.pt"), weights(run / "last.pt"))
    train = lambda p: no_timing([r for r in read_metrics(p) if r["split"] == "train"])  # noqa: E731
    assert train(tmp_path / "straight") == train(run)


# ---------------------------------------------------------------- resume: the run's data, the same options
def test_resume_on_other_data_is_refused_and_init_from_starts_a_new_run(tmp_path, cache_path, other_cache):
    run = tmp_path / "run"
    tcfg = tiny_train(steps=2, eval_every=2, test_at_end=False)
    fit(tiny_model(), tcfg, cache_path, run)
    before = (run / "last.pt").read_bytes()
    with pytest.raises(DataMismatch, match="not the data this run was trained on") as err:
        fit(None, dataclasses.replace(tcfg, steps=4), other_cache, run, resume=True)
    assert "--init-from" in str(err.value) and (run / "last.pt").read_bytes() == before
    res = cli("train", other_cache, "-o", run, "--resume", "--steps", 4)
    assert res.exit_code != 0 and "not the data this run was trained on" in res.output
    assert "--init-from" in res.output and "Traceback" not in res.output

    res = cli("train", other_cache, "-o", tmp_path / "new", "--init-from", run / "last.pt", "--steps", 2,
              "--batch-size", 8, "--device", "cpu", "--no-progress")
    assert res.exit_code == 0, res.output
    new = load_checkpoint(tmp_path / "new" / "last.pt")
    assert new["extra"]["step"] == 2 and new["extra"]["init_from"] == str((run / "last.pt").resolve())
    assert new["config"] == load_checkpoint(run / "last.pt")["config"]
    assert new["scale_factor"] == load_checkpoint(run / "last.pt")["scale_factor"]
    res = cli("train", other_cache, "-o", tmp_path / "new2", "--init-from", run, "--z-size", 4)
    assert res.exit_code != 0 and "--z-size 4 (the run's: 8)" in res.output


def _npz(path: Path, seed: int) -> Path:
    r = np.random.default_rng(seed)
    sketches = np.empty(40, dtype=object)
    for i in range(40):
        sketches[i] = np.column_stack([r.integers(-9, 9, (12, 2)), np.r_[np.zeros(11), 1]]).astype(np.int16)
    np.savez(path, train=sketches, valid=sketches[:10], test=sketches[:10])
    return path


def test_resume_with_raw_files_never_rebuilds_the_runs_data(tmp_path):
    a, b = _npz(tmp_path / "a.npz", 0), _npz(tmp_path / "b.npz", 1)
    run = tmp_path / "run"
    opts = [*TINY_CLI, "--eval-every", 2, "--no-progress", "--no-test-at-end"]
    res = cli("train", a, "-o", run, "--steps", 2, *opts)
    assert res.exit_code == 0, res.output
    cache_before = (run / "data.h5").read_bytes()
    res = cli("train", b, "-o", run, "--resume", "--steps", 4)
    assert res.exit_code != 0 and "not the data this run was trained on" in res.output
    assert "--init-from" in res.output and (run / "data.h5").read_bytes() == cache_before
    # the very same command again with --resume added (and more steps): not refused
    res = cli("train", a, "-o", run, "--steps", 4, *opts, "--resume")
    assert res.exit_code == 0, res.output
    assert load_checkpoint(run / "last.pt")["extra"]["step"] == 4


def test_resume_accepts_the_same_values_and_names_the_ones_that_differ(tmp_path, cache_path):
    run = tmp_path / "run"
    first = ["train", cache_path, "-o", run, *TINY_CLI, "--steps", 2, "--eval-every", 2, "--seed", 4, "--lr", "0.002",
             "--no-progress"]
    assert cli(*first).exit_code == 0
    res = cli(*first[:-1], "--resume", "--no-progress")  # the same command with --resume added
    assert res.exit_code == 0, res.output
    res = cli(*[a if a != 2 else 4 for a in first], "--resume")
    assert res.exit_code == 0, res.output  # --steps / --eval-every may change
    assert load_checkpoint(run / "last.pt")["extra"]["step"] == 4
    res = cli("train", "-o", run, "--resume", "--lr", "0.003", "--batch-size", 8, "--z-size", 16)
    assert res.exit_code != 0 and "Traceback" not in res.output
    assert "--lr 0.003 (the run's: 0.002)" in res.output and "--z-size 16 (the run's: 8)" in res.output
    assert "--batch-size" not in res.output.split("differ from it:")[1].split("(allowed")[0]


def test_resume_from_another_directory_with_a_relative_data_path(tmp_path, cache_path, monkeypatch):
    import shutil

    work = tmp_path / "work"
    (work / "data").mkdir(parents=True)
    shutil.copy(cache_path, work / "data" / "tiny.h5")
    monkeypatch.chdir(work)
    res = cli("train", "data/tiny.h5", "-o", "runs/a", *TINY_CLI, "--steps", 2, "--eval-every", 2, "--no-progress")
    assert res.exit_code == 0, res.output
    assert load_checkpoint(work / "runs/a/last.pt")["extra"]["data"] == str((work / "data/tiny.h5").resolve())
    monkeypatch.chdir(tmp_path)
    res = cli("train", "-o", "work/runs/a", "--resume", "--steps", 3, "--no-progress")
    assert res.exit_code == 0, res.output
    # a run recorded with a relative path (older versions) asks for DATA again instead of failing oddly
    ckpt = load_checkpoint(work / "runs/a/last.pt")
    ckpt["extra"]["data"] = "data/tiny.h5"
    torch.save(ckpt, work / "runs/a/last.pt")
    res = cli("train", "-o", "work/runs/a", "--resume", "--steps", 4)
    assert res.exit_code != 0 and "pass DATA again" in res.output


def test_resuming_a_finished_run_records_nothing_twice(tmp_path, cache_path):
    run = tmp_path / "run"
    tcfg = tiny_train(steps=3, eval_every=3)
    first = fit(tiny_model(), tcfg, cache_path, run)
    lines = read_metrics(run)
    again = fit(None, tcfg, cache_path, run, resume=True)
    assert read_metrics(run) == lines
    assert [r["split"] for r in lines].count("valid") == 1 and [r["split"] for r in lines].count("test") == 1
    assert again.final_valid == first.final_valid and again.step == 3


# ---------------------------------------------------------------- a full disk
def _disk_full_after(monkeypatch, saves_ok: int):
    """torch.save writes part of the file and fails with ENOSPC from the (saves_ok + 1)-th save on."""
    import sketchvae.checkpoint as ckpt_mod

    real = ckpt_mod.torch.save
    calls = {"n": 0}

    def save(obj, f, *a, **k):
        calls["n"] += 1
        if calls["n"] > saves_ok:
            f.write(b"PK\x03\x04 partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(obj, f, *a, **k)

    monkeypatch.setattr(ckpt_mod.torch, "save", save)


def test_full_disk_stops_cleanly_and_keeps_the_last_good_checkpoint(tmp_path, cache_path, monkeypatch):
    run = tmp_path / "run"
    _disk_full_after(monkeypatch, 2)  # step 3: best.pt and last.pt; step 6: best.pt or last.pt fails
    with pytest.raises(runtime.DiskFullError) as err:
        fit(tiny_model(), tiny_train(steps=6, eval_every=3), cache_path, run)
    msg = str(err.value)
    assert "disk is full" in msg and str(run) in msg and re.search(r"(best|last)\.pt: could not be written", msg)
    assert "is unchanged" in msg
    assert load_checkpoint(run / "last.pt")["extra"]["step"] == 3
    assert not list(run.glob(".*.tmp"))

    monkeypatch.undo()
    _disk_full_after(monkeypatch, 0)
    res = cli("train", cache_path, "-o", tmp_path / "cli", *TINY_CLI, "--steps", 2, "--eval-every", 2, "--no-progress")
    assert res.exit_code == 1 and "Traceback" not in res.output
    (line,) = [s for s in res.output.splitlines() if s.startswith("Error:")]
    assert "could not be written: the disk is full" in line


# ---------------------------------------------------------------- mnist train: the same mechanism
def test_mnist_interrupt_inside_an_epoch_resumes_exactly(tmp_path, monkeypatch):
    from sketchvae.image import data as mnist
    from sketchvae.image import train as image_train
    from sketchvae.image.models import ImageVAEConfig

    data_dir = mnist.write_synthetic(tmp_path / "mnist", n_train=200, n_test=50)
    mcfg = ImageVAEConfig(arch="mlp", z_size=4, hidden_size=32)
    cfg = image_train.ImageTrainConfig(epochs=2, batch_size=40, valid_size=40, device="cpu", seed=2)
    image_train.fit(mcfg, cfg, data_dir, tmp_path / "straight")

    real = image_train.elbo_terms
    calls = {"n": 0}

    def terms(*a, **k):  # Ctrl-C during the 6th batch (epoch 2, batch 2 of 4)
        calls["n"] += 1
        if calls["n"] == 6:
            os.kill(os.getpid(), signal.SIGINT)
        return real(*a, **k)

    monkeypatch.setattr(image_train, "elbo_terms", terms)
    with pytest.raises(TrainingInterrupted) as err:
        image_train.fit(mcfg, cfg, data_dir, tmp_path / "run")
    assert err.value.step == 6
    ts = load_checkpoint(tmp_path / "run" / "last.pt")["train_state"]
    assert (ts["epoch"], ts["batch"], ts["step"]) == (1, 2, 6)
    monkeypatch.undo()
    image_train.fit(mcfg, cfg, data_dir, tmp_path / "run", resume=True)
    assert_same_weights(weights(tmp_path / "straight" / "last.pt"), weights(tmp_path / "run" / "last.pt"))
    strip = lambda p: [{k: v for k, v in r.items() if k not in ("images_per_s", "seconds")}  # noqa: E731
                       for r in read_metrics(p)]
    assert strip(tmp_path / "straight") == strip(tmp_path / "run")


@pytest.mark.slow
def test_cli_mnist_train_stops_on_sigterm(tmp_path):
    from sketchvae.image import data as mnist

    data_dir = mnist.write_synthetic(tmp_path / "mnist", n_train=3000, n_test=50)
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "sketchvae", "mnist", "train", "-o", str(run), "--data-dir", str(data_dir),
           "--epochs", "1000", "--batch-size", "10", "--hidden", "32", "--valid-size", "100", "--device", "cpu",
           "--threads", "1", "--save-minutes", "0.0005"]  # a save about every 30 ms: last.pt appears quickly
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    _wait_for(lambda: (run / "last.pt").exists(), proc)
    proc.send_signal(signal.SIGTERM)
    out, errout = proc.communicate(timeout=60)
    assert proc.returncode == 143, out + errout
    assert "Traceback" not in errout and f"sketchvae mnist train -o {run} --resume" in errout
    step = load_checkpoint(run / "last.pt")["train_state"]["step"]
    assert f"holds step {step}" in errout
