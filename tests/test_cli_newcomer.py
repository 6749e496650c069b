"""A new user's pass over the command line (issue 14): every class of problem they met has a test here.

Output paths that cannot be created, messages naming flags the user never typed, `mnist train`'s
edge cases, damaged caches, `prepare` overwriting, help examples, progress bars, run folders and
shipped names as checkpoints, output extensions, class names, bad raw data, and a sweep of bad
input over every command that must never end in a traceback.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import socket
from pathlib import Path

import click
import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from sketchvae.checkpoint import CheckpointError, shipped_checkpoints, shipped_checkpoints_dir
from sketchvae.cli import common, main
from sketchvae.data.cache import open_cache, write_cache
from sketchvae.data.formats import DataError
from sketchvae.image import data as mnist

from test_cli_generate import synthetic_sketch

SHEEP = shipped_checkpoints_dir() / "sheep.pt"
needs_sheep = pytest.mark.skipif(not SHEEP.exists(), reason="checkpoints/sheep.pt is not in this checkout")


def invoke(*args, env=None):
    return CliRunner().invoke(main, [str(a) for a in args], env=env)


def clean_error(result) -> str:
    """The command failed with a click error (no traceback, no stray exception); its output."""
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    return result.output


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A small cache, a .npz of it, synthetic MNIST files, a file standing where a folder should be."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("newcomer")
    rng = np.random.default_rng(0)
    names = ["box", "zigzag", "dots"]
    splits = {s: [(synthetic_sketch(rng, i % 3), i % 3) for i in range(n)]
              for s, n in (("train", 12), ("valid", 6), ("test", 6))}
    write_cache(root / "tiny.h5", splits, names, {"scale_factor": 5.0})
    arr = np.empty(6, dtype=object)
    arr[:] = [s for s, _ in splits["test"]]
    np.savez(root / "tiny.npz", train=arr, valid=arr, test=arr)
    (root / "afile").write_text("I am a file\n")
    (root / "notes.pt").write_text("hello, this is not a checkpoint\n")
    mnist.write_synthetic(root / "mnist", n_train=300, n_test=50)
    return root


# ------------------------------------------------------------------------ output paths
def test_output_checks_name_the_path_and_reason(world, monkeypatch):
    blocked = world / "afile" / "sub" / "out.svg"
    with pytest.raises(click.ClickException, match="afile is a file, not a folder"):
        common.output_file(blocked, (".svg",))
    with pytest.raises(click.ClickException, match="it is a folder"):
        common.output_file(world, None)
    with pytest.raises(click.ClickException, match="it is a file, not a folder"):
        common.output_dir(world / "afile")
    monkeypatch.setattr(common.os, "access", lambda *a, **k: False)  # as a non-root user without permission
    with pytest.raises(click.ClickException, match="no permission to write in|read-only file system"):
        common.output_file(world / "new" / "x.svg")
    with pytest.raises(click.ClickException, match="cannot write in the run folder"):
        common.output_dir(world, "run folder")


@needs_sheep
@pytest.mark.parametrize("args", [
    ["sample", "-n", 1, "-o", "{bad}/x.svg"],
    ["reconstruct", "sheep", "{w}/tiny.npz", "-o", "{bad}/x.svg"],
    ["interpolate", "sheep", "{w}/tiny.npz", "--from", 0, "--to", 1, "-o", "{bad}/x.svg"],
    ["complete", "sheep", "{w}/tiny.npz", "-o", "{bad}/x.svg"],
    ["prepare", "{w}/tiny.npz", "-o", "{bad}/x.h5"],
    ["train", "{w}/tiny.h5", "-o", "{bad}/run"],
    ["download", "cat", "--data-dir", "{bad}/qd"],
    ["mnist", "download", "--data-dir", "{bad}/m"],
    ["mnist", "train", "-o", "{bad}/run", "--data-dir", "{w}/mnist"],
    ["mnist", "sample", "mnist_conv", "-o", "{bad}/x.png"],
    ["mnist", "interpolate", "mnist_conv", "--from", 0, "--to", 1, "-o", "{bad}/x.png", "--data-dir", "{w}/mnist"],
    ["mnist", "manifold", "mnist_cvae", "--digit", 1, "-o", "{bad}/x.png"],
])
def test_every_command_refuses_an_output_under_a_file_in_one_line(world, args):
    args = [str(a).format(w=world, bad=world / "afile") for a in args]
    if args[:2] == ["mnist", "manifold"] and shipped_checkpoints().get("mnist_cvae") is None:
        pytest.skip("no shipped mnist_cvae")
    out = clean_error(invoke(*args))
    assert "afile is a file, not a folder" in out and len(out.strip().splitlines()) == 1, out


def test_a_failed_start_leaves_no_run_folder(world, tmp_path):
    r = invoke("train", world / "tiny.h5", "-o", tmp_path / "a" / "run", "--steps", 0)
    assert "--steps 0" in clean_error(r)
    assert not (tmp_path / "a").exists()
    r = invoke("mnist", "train", "-o", tmp_path / "m", "--data-dir", tmp_path / "nothing")
    assert "sketchvae mnist download" in clean_error(r)
    assert not (tmp_path / "m").exists()


def test_an_unexpected_os_error_is_one_line_naming_the_file(world, tmp_path, monkeypatch):
    from sketchvae import render

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x.svg"))

    monkeypatch.setattr(render, "grid_svg", full)
    out = clean_error(invoke("sample", "-n", 1, "--max-len", 5, "-o", tmp_path / "x.svg"))
    assert out.strip() == f"Error: {tmp_path / 'x.svg'}: no space left on the device (the disk is full)"


def test_atomic_write_names_the_target_not_its_temporary_file(tmp_path, monkeypatch):
    from sketchvae.runtime import atomic_write

    def fail(tmp):
        raise PermissionError(errno.EACCES, "Permission denied", tmp)

    with pytest.raises(PermissionError) as err:
        atomic_write(tmp_path / "out.bin", fail)
    assert err.value.filename == str(tmp_path / "out.bin")
    assert os.listdir(tmp_path) == []  # the temporary file is gone


def test_a_bug_keeps_its_traceback_with_a_note(monkeypatch, tmp_path):
    from sketchvae import render

    def bug(*a, **k):
        raise KeyError("oops")

    monkeypatch.setattr(render, "grid_svg", bug)
    r = invoke("sample", "-n", 1, "--max-len", 5, "-o", tmp_path / "x.svg")
    assert isinstance(r.exception, KeyError)
    assert any("please report it" in n for n in getattr(r.exception, "__notes__", []))


# ------------------------------------------------------------------------ messages name the flags
def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.mark.parametrize("args, says, never", [
    (["train", "{w}/tiny.h5", "-o", "{t}/r", "--steps", 0], "--steps 0", "TrainConfig"),
    (["train", "{w}/tiny.h5", "-o", "{t}/r", "--z-size", 0], "--z-size 0", "SketchRNNConfig"),
    (["train", "{w}/tiny.h5", "-o", "{t}/r", "--threads", -1], "--threads -1", "num_threads"),
    (["mnist", "train", "-o", "{t}/m", "--latent", 0, "--data-dir", "{w}/mnist"], "--latent", "z_size"),
    (["sample", "-n", 1, "-t", "inf", "-o", "{t}/x.svg"], "--temperature", "greedy=True"),
    (["interpolate", "sheep", "{w}/tiny.npz", "--from", 0, "--to", 99, "-o", "{t}/x.svg"], "--to", "--index"),
    (["evaluate", "sheep", "{w}/tiny.npz", "--split", "bogus"], "'bogus' is not one of", "/tmp"),
    (["sample", "{w}/notes.pt", "-o", "{t}/x.svg"], "text file", ": 101"),
])
def test_messages_name_what_the_user_typed(world, tmp_path, args, says, never):
    if "sheep" in args and not SHEEP.exists():
        pytest.skip("no shipped sheep.pt")
    out = clean_error(invoke(*[str(a).format(w=world, t=tmp_path) for a in args]))
    assert says in out and never not in out, out


def test_mnist_download_names_the_mnist_mirror_variable(tmp_path):
    r = invoke("mnist", "download", "--data-dir", tmp_path / "m", "--base-url", f"http://127.0.0.1:{_closed_port()}/")
    out = clean_error(r)
    assert "SKETCHVAE_MNIST_URL" in out and "QUICKDRAW" not in out


def test_flag_message_rewrites_fields():
    assert common.flag_message("TrainConfig.steps=0 must be an integer >= 1", {"steps": "--steps"}) == \
        "--steps 0 must be an integer >= 1"
    assert common.flag_message("z_size must be >= 1", {"z_size": "--latent"}) == "--latent must be >= 1"
    assert common.flag_message("use greedy=True", {"greedy=True": "--greedy"}) == "use --greedy"
    assert common.flag_message("max_len_x stays", {"max_len": "--max-len"}) == "max_len_x stays"


# ------------------------------------------------------------------------ mnist train edge cases
def test_mnist_epochs_zero_is_refused_and_a_small_limit_gets_a_small_holdout(world, tmp_path):
    r = invoke("mnist", "train", "-o", tmp_path / "z", "--epochs", 0, "--data-dir", world / "mnist")
    assert "--epochs" in clean_error(r) and not (tmp_path / "z").exists()
    r = invoke("mnist", "train", "-o", tmp_path / "l", "--limit", 200, "--epochs", 1, "--hidden", 16,
               "--batch-size", 50, "--device", "cpu", "--data-dir", world / "mnist")
    assert r.exit_code == 0, r.output + repr(r.exception)
    assert "holding out the last 20 of the first 200" in r.output
    assert (tmp_path / "l" / "best.pt").exists() and str(tmp_path / "l" / "best.pt") in r.output


# ------------------------------------------------------------------------ damaged caches
@pytest.mark.parametrize("damage, says", [
    ("offsets", "offsets decrease at sketch"),
    ("labels", "has label 7, but the file names 3 class(es)"),
    ("pen", "pen value 2; pen values must be 0 or 1"),
])
def test_a_damaged_cache_is_refused_when_opened(world, tmp_path, damage, says):
    path = tmp_path / "bad.h5"
    shutil.copy(world / "tiny.h5", path)
    with h5py.File(path, "r+") as f:
        g = f["valid"]
        if damage == "offsets":
            o = g["offsets"][:]
            o[2] = o[4]
            g["offsets"][:] = o
        elif damage == "labels":
            lab = g["labels"][:]
            lab[1] = 7
            g["labels"][:] = lab
        else:
            p = g["points"][:]
            p[3, 2] = 2
            g["points"][:] = p
    with pytest.raises(DataError, match=re.escape(says)) as err:
        open_cache(path)
    assert str(err.value).startswith(f"{path}: valid: ")
    out = clean_error(invoke("info", path))
    assert says in out and len(out.strip().splitlines()) == 1


def test_the_pen_scan_of_a_huge_cache_is_bounded():
    from sketchvae.data.cache import SplitView, validate_split

    n = 3 << 20
    points = np.zeros((n, 3), np.int16)
    points[-1, 2] = 5  # past the first block of 2**20 points
    view = SplitView(Path("big.h5"), "train", points, np.array([0, n // 2, n]), np.zeros(2, np.int64))
    with pytest.raises(DataError, match="big.h5: train: point 3145727 \\(sketch 1\\) has pen value 5"):
        validate_split(view, 1, max_pen_rows=None)
    validate_split(view, 1, max_pen_rows=1 << 20)  # bounded: one block read, the bad point not among it


# ------------------------------------------------------------------------ prepare
def test_prepare_never_overwrites_another_cache_without_force(world, tmp_path):
    out = tmp_path / "d.h5"
    assert invoke("prepare", world / "tiny.npz", "-o", out, "--no-progress").exit_code == 0
    again = invoke("prepare", world / "tiny.npz", "-o", out, "--no-progress")
    assert again.exit_code == 0 and "up to date, reused" in again.output
    before = out.read_bytes()
    r = invoke("prepare", world / "tiny.npz", "-o", out, "--max-len", 20, "--no-progress")
    assert "other options (max_len)" in clean_error(r) and "--force" in r.output
    assert out.read_bytes() == before
    other = tmp_path / "other.npz"
    shutil.copy(world / "tiny.npz", other)
    r = invoke("prepare", other, "-o", out, "--no-progress")
    assert "other sources (tiny.npz)" in clean_error(r)
    (tmp_path / "text.h5").write_text("not a cache")
    assert "is not a prepared cache" in clean_error(invoke("prepare", other, "-o", tmp_path / "text.h5"))
    r = invoke("prepare", other, "-o", out, "--force", "--no-progress")
    assert r.exit_code == 0 and open_cache(out).attrs["source_checksums"].keys() == {"other.npz"}


def test_prepare_finds_a_class_ndjson_and_suggests_close_names(world, tmp_path):
    from sketchvae.strokes import to_polylines

    qd = tmp_path / "qd"
    qd.mkdir()
    with open(qd / "cat.ndjson", "w") as f:
        for i in range(10):
            polys = to_polylines(synthetic_sketch(np.random.default_rng(i), 0))
            drawing = [[p[:, 0].astype(int).tolist(), p[:, 1].astype(int).tolist()] for p in polys]
            f.write('{"word": "cat", "key_id": "%d", "drawing": %s}\n' % (i, drawing))
    r = invoke("prepare", "cat", "-o", tmp_path / "cat.h5", "--data-dir", qd, "--no-download", "--no-progress")
    assert r.exit_code == 0, r.output
    assert open_cache(tmp_path / "cat.h5").class_names == ["cat"]
    out = clean_error(invoke("prepare", "catt", "-o", tmp_path / "x.h5", "--data-dir", qd, "--no-download"))
    assert "'cat'" in out and "zebra" not in out and len(out) < 300


def test_train_on_bad_raw_data_points_at_skip_bad(world, tmp_path):
    from sketchvae.strokes import to_polylines

    lines = []
    for i in range(40):
        polys = to_polylines(synthetic_sketch(np.random.default_rng(i), 0))
        drawing = [[p[:, 0].astype(int).tolist(), p[:, 1].astype(int).tolist()] for p in polys]
        lines.append('{"word": "cat", "key_id": "%d", "drawing": %s}' % (i, drawing))
    lines.insert(5, "{not json")
    (tmp_path / "cat.ndjson").write_text("\n".join(lines) + "\n")
    r = invoke("train", tmp_path / "cat.ndjson", "-o", tmp_path / "run", "--steps", 1)
    out = clean_error(r)
    assert "line 6" in out and "--skip-bad" in out
    r = invoke("train", tmp_path / "cat.ndjson", "-o", tmp_path / "run", "--skip-bad", "--steps", 1,
               "--batch-size", 4, "--enc-rnn-size", 8, "--dec-rnn-size", 8, "--z-size", 4, "--num-mixture", 2,
               "--eval-every", 1, "--no-test-at-end", "--device", "cpu")
    assert r.exit_code == 0, r.output + repr(r.exception)
    assert (tmp_path / "run" / "best.pt").exists()


# ------------------------------------------------------------------------ help examples
def _commands(group=main, prefix=()):
    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, prefix + (name,))
        else:
            yield prefix + (name,)


def test_every_command_help_has_an_example():
    commands = list(_commands())
    assert ("sample",) in commands and ("mnist", "evaluate") in commands
    for cmd in commands:
        r = invoke(*cmd, "--help")
        assert r.exit_code == 0, r.output
        examples = common.example_lines(r.output)
        assert any(line.startswith(f"sketchvae {' '.join(cmd)}") for line in examples), \
            f"`sketchvae {' '.join(cmd)} --help` has no example line (an indented `sketchvae {' '.join(cmd)} ...`)"


# ------------------------------------------------------------------------ progress bars
def test_progress_bars_only_on_a_terminal_unless_asked(world, tmp_path, monkeypatch):
    assert common.show_progress(True) and not common.show_progress(False)
    monkeypatch.setattr(common.sys, "stderr", open(os.devnull, "w"))
    assert not common.show_progress(None)
    monkeypatch.undo()
    quiet = invoke("prepare", world / "tiny.npz", "-o", tmp_path / "a.h5")
    loud = invoke("prepare", world / "tiny.npz", "-o", tmp_path / "b.h5", "--progress")
    assert quiet.exit_code == loud.exit_code == 0
    assert "file/s" not in quiet.output and "prepare:" not in quiet.output
    assert "prepare:" in loud.output or "file/s" in loud.output


# ------------------------------------------------------------------------ checkpoints by run folder and name
@needs_sheep
def test_a_run_folder_or_a_shipped_name_is_a_checkpoint(tmp_path):
    from sketchvae import sample as sk

    run = tmp_path / "runs" / "sheep"
    run.mkdir(parents=True)
    shutil.copy(SHEEP, run / "best.pt")
    assert sk.load(run).path == run / "best.pt"
    os.chdir(tmp_path)
    try:
        assert sk.load("sheep").path == SHEEP and sk.load("sheep.pt").path == SHEEP
        with pytest.raises(CheckpointError, match="not the name of a shipped checkpoint.*sheep"):
            sk.load("sheepx")
        with pytest.raises(CheckpointError, match="a folder without best.pt"):
            sk.load(tmp_path / "runs")
    finally:
        os.chdir(Path(__file__).resolve().parents[1])
    r = invoke("sample", run, "-n", 2, "--max-len", 10, "--seed", 0, "-o", tmp_path / "a.svg")
    assert r.exit_code == 0, r.output
    r2 = invoke("sample", "sheep", "-n", 2, "--max-len", 10, "--seed", 0, "-o", tmp_path / "b.svg")
    assert r2.exit_code == 0 and (tmp_path / "a.svg").read_bytes() == (tmp_path / "b.svg").read_bytes()


# ------------------------------------------------------------------------ output extensions
def test_outputs_are_what_the_extension_says(tmp_path):
    out = clean_error(invoke("sample", "-n", 1, "-o", tmp_path / "x.png"))
    assert "writes SVG" in out and ".svg" in out and not (tmp_path / "x.png").exists()
    out = clean_error(invoke("mnist", "sample", "mnist_conv", "-o", tmp_path / "x.svg"))
    assert "writes PNG" in out


# ------------------------------------------------------------------------ the sweep: no traceback anywhere
BAD = [
    ["sample", "nothing.pt", "-o", "{t}/x.svg"], ["sample", "{w}", "-o", "{t}/x.svg"],
    ["sample", "{w}/tiny.h5", "-o", "{t}/x.svg"], ["sample", "-n", 0, "-o", "{t}/x.svg"],
    ["sample", "-t", "nan", "-o", "{t}/x.svg"], ["sample", "--class", "cat", "-n", 1, "-o", "{t}/x.svg"],
    ["sample", "mnist_conv", "-o", "{t}/x.svg"], ["sample", "-o", "{t}"],
    ["reconstruct", "sheep", "{w}/missing.npz", "-o", "{t}/x.svg"],
    ["reconstruct", "sheep", "{w}/notes.pt", "-o", "{t}/x.svg"],
    ["reconstruct", "sheep", "{w}/tiny.npz", "--index", "a,b", "-o", "{t}/x.svg"],
    ["reconstruct", "sheep", "{w}/tiny.npz", "--index", "99", "-o", "{t}/x.svg"],
    ["reconstruct", "sheep", "{w}/tiny.h5", "--split", "nope", "-o", "{t}/x.svg"],
    ["interpolate", "sheep", "{w}/tiny.npz", "--from", -1, "--to", 1, "-o", "{t}/x.svg"],
    ["complete", "sheep", "{w}/tiny.npz", "--strokes", 99, "-o", "{t}/x.svg"],
    ["complete", "sheep", "{w}/afile", "-o", "{t}/x.svg"],
    ["prepare", "-o", "{t}/x.h5"], ["prepare", "{w}/notes.pt", "-o", "{t}/x.h5"],
    ["prepare", "{w}/tiny.npz", "-o", "{t}/x.txt"], ["prepare", "{w}/tiny.npz", "-o", "{w}"],
    ["prepare", "{w}/afile", "-o", "{t}/x.h5"],
    ["info", "{w}/notes.pt"], ["info", "{w}/missing.h5"],
    ["download"], ["download", "notaclass"],
    ["train", "-o", "{t}/r"], ["train", "{w}/missing.h5", "-o", "{t}/r"],
    ["train", "{w}/tiny.h5", "-o", "{w}/afile"], ["train", "-o", "{t}/none", "--resume"],
    ["train", "{w}/tiny.h5", "-o", "{t}/r", "--mode", "class_vae", "--recurrent-dropout", 1.5],
    ["evaluate", "{w}/notes.pt", "{w}/tiny.h5"], ["evaluate", "sheep", "{w}/missing.npz"],
    ["mnist", "evaluate", "{w}/notes.pt", "--data-dir", "{w}/mnist"],
    ["mnist", "evaluate", "sheep", "--data-dir", "{w}/mnist"],
    ["mnist", "evaluate", "mnist_conv", "--data-dir", "{t}/none"],
    ["mnist", "sample", "sheep", "-o", "{t}/x.png"], ["mnist", "sample", "mnist_conv", "-n", 0, "-o", "{t}/x.png"],
    ["mnist", "interpolate", "mnist_conv", "--from", 0, "--to", 9999, "-o", "{t}/x.png", "--data-dir", "{w}/mnist"],
    ["mnist", "manifold", "mnist_conv", "-o", "{t}/x.png"],
    ["mnist", "train", "-o", "{t}/m", "--limit", 5, "--valid-size", 10, "--data-dir", "{w}/mnist"],
    ["mnist", "train", "-o", "{t}/m", "--resume", "--data-dir", "{w}/mnist"],
]


@pytest.mark.parametrize("args", BAD, ids=lambda a: " ".join(map(str, a))[:60])
def test_bad_input_never_ends_in_a_traceback(world, tmp_path, args):
    args = [str(a).format(w=world, t=tmp_path) for a in args]
    if any(a in ("sheep", "mnist_conv") for a in args) and not SHEEP.exists():
        pytest.skip("no shipped checkpoints")
    out = clean_error(invoke(*args))
    assert out.startswith(("Error:", "Usage:")), out
