"""`sketchvae download / prepare / info` end to end with click's CliRunner."""

from __future__ import annotations

import functools
import http.server
import json
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from sketchvae.cli import main
from sketchvae.data.cache import open_cache
from sketchvae.data.quickdraw import CLASS_NAMES

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
NPZ_DIR = SHARED / "sketchrnn_datasets"
QD_SIMPLIFIED = SHARED / "quickdraw" / "simplified_first25_per_class"
QD_RAW = SHARED / "quickdraw" / "raw_subset_per_class"


def run(*args, **kw):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False, **kw)
    return result


def object_array(items):
    arr = np.empty(len(items), dtype=object)
    for i, a in enumerate(items):
        arr[i] = a
    return arr


def sketches(k, n=6, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(k):
        s = np.zeros((n, 3), np.int16)
        s[:, :2] = rng.integers(-30, 31, size=(n, 2))
        s[-1, 2] = 1
        out.append(s)
    return out


def write_npz(path, counts=(12, 3, 3), n=6, seed=0):
    np.savez(path, **{s: object_array(sketches(c, n=n, seed=seed + i))
                      for i, (s, c) in enumerate(zip(("train", "valid", "test"), counts))})
    return path


def write_ndjson(path, n, word, start=0, extra_lines=()):
    rng = np.random.default_rng(len(word))
    with open(path, "w") as f:
        for k in range(start, start + n):
            xs, ys = rng.integers(0, 256, 6).tolist(), rng.integers(0, 256, 6).tolist()
            f.write(json.dumps({"word": word, "key_id": f"{word}{k}", "drawing": [[xs, ys]]}) + "\n")
        for line in extra_lines:
            f.write(line + "\n")
    return path


@pytest.fixture
def http_dir(tmp_path):
    """A plain HTTP server (http.server) over tmp_path/www."""
    www = tmp_path / "www"
    (www / "sketchrnn").mkdir(parents=True)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(www)))
    srv.daemon_threads = True
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield www, f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


# --------------------------------------------------------------------------------------------------
# help


@pytest.mark.parametrize("cmd", ["download", "prepare", "info"])
def test_help_has_examples(cmd):
    r = run(cmd, "--help")
    assert r.exit_code == 0 and "Examples:" in r.output and f"sketchvae {cmd}" in r.output


def test_group_help_lists_data_commands():
    r = run("--help")
    for cmd in ("download", "prepare", "info"):
        assert cmd in r.output


# --------------------------------------------------------------------------------------------------
# download


def test_download_end_to_end(tmp_path, http_dir):
    www, url = http_dir
    write_npz(www / "sketchrnn" / "cat.npz")
    write_npz(www / "sketchrnn" / "ice cream.npz", seed=5)
    data = tmp_path / "data"
    r = run("download", "cat", "Ice Cream", "--data-dir", data, "--base-url", url, "--no-progress")
    assert r.exit_code == 0, r.output
    assert (data / "cat.npz").exists() and (data / "ice cream.npz").exists()
    assert "2 file(s) downloaded" in r.output and "ice cream" in r.output
    again = run("download", "cat", "--data-dir", data, "--base-url", url, "--no-progress")
    assert again.exit_code == 0 and "already there" in again.output


def test_download_unknown_class_suggests_close_matches(tmp_path):
    r = run("download", "catt", "hous", "--data-dir", tmp_path)
    assert r.exit_code == 2
    assert "'catt'" in r.output and "did you mean" in r.output and "'cat'" in r.output and "'house'" in r.output
    assert "Traceback" not in r.output and not list(tmp_path.iterdir())


def test_download_offline_message(tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    r = run("download", "cat", "--data-dir", tmp_path, "--base-url", f"http://127.0.0.1:{port}", "--retries", 0,
            "--no-progress")
    assert r.exit_code == 1
    assert "offline" in r.output and "SKETCHVAE_QUICKDRAW_URL" in r.output and "Traceback" not in r.output


def test_download_corrupt_file_is_an_error(tmp_path, http_dir):
    www, url = http_dir
    (www / "sketchrnn" / "cat.npz").write_bytes(b"not a zip file at all")
    r = run("download", "cat", "--data-dir", tmp_path / "d", "--base-url", url, "--no-progress")
    assert r.exit_code == 1 and "failed verification" in r.output
    assert not (tmp_path / "d" / "cat.npz").exists()


def test_download_list_and_usage_errors():
    r = run("download", "--list")
    assert r.exit_code == 0 and r.output.splitlines() == list(CLASS_NAMES)
    assert run("download").exit_code == 2
    assert run("download", "cat", "--no-npz").exit_code == 2


# --------------------------------------------------------------------------------------------------
# prepare + info


@pytest.fixture
def fixtures(tmp_path):
    src = tmp_path / "src"
    (src / "qd").mkdir(parents=True)
    write_npz(src / "sheep.npz", counts=(20, 4, 4))
    write_npz(src / "long.npz", counts=(5, 2, 2), n=30, seed=9)
    write_ndjson(src / "qd" / "cat.ndjson", 20, "cat", extra_lines=["{not json"])
    write_ndjson(src / "qd" / "ice cream.ndjson", 10, "ice cream")
    return src


def test_prepare_and_info_end_to_end(tmp_path, fixtures):
    out = tmp_path / "data" / "mix.h5"
    args = ["prepare", fixtures / "sheep.npz", fixtures / "long.npz", fixtures / "qd", "-o", out, "--skip-bad",
            "--max-len", 25, "--valid-frac", 0.1, "--test-frac", 0.1, "--no-progress"]
    r = run(*args)
    assert r.exit_code == 0, r.output
    out_text = r.output
    assert "written" in out_text and "4 class(es)" in out_text
    for name in ("sheep", "long", "cat", "ice cream", "TOTAL"):
        assert name in out_text
    assert "input 68 sketches: kept 58, skipped 10" in out_text
    assert "longer than max_len=25" in out_text and "invalid JSON" in out_text
    assert "cat.ndjson: line 21" in out_text  # the example of a skipped line names file and line
    with open_cache(out) as c:
        assert c.class_names == ["sheep", "long", "cat", "ice cream"]
        assert len(c.split("train")) + len(c.split("valid")) + len(c.split("test")) == 58
        assert c.split("train").class_counts(4).tolist() == [20, 0, 16, 8]

    again = run(*args)
    assert again.exit_code == 0 and "up to date, reused" in again.output

    info = run("info", out)
    assert info.exit_code == 0, info.output
    text = info.output
    assert "4 class(es), 58 sketches, scale factor" in text
    assert "ice cream" in text and "median" in text and "p95" in text
    assert "max_len=25" in text and "skipped when prepared" in text
    js = json.loads(run("info", out, "--json").output)
    assert js["class_names"] == ["sheep", "long", "cat", "ice cream"]
    assert js["counts"]["train"] == {"sheep": 20, "long": 0, "cat": 16, "ice cream": 8}
    assert js["lengths"]["train"]["max"] == 6 and js["scale_factor"] > 0


def test_prepare_bad_input_is_a_clean_error(tmp_path, fixtures):
    r = run("prepare", fixtures / "qd" / "cat.ndjson", "-o", tmp_path / "x.h5", "--no-progress")
    assert r.exit_code == 1 and "cat.ndjson: line 21: invalid JSON" in r.output and "Traceback" not in r.output
    r = run("prepare", tmp_path / "missing.npz", "-o", tmp_path / "x.h5", "--no-progress")
    assert r.exit_code == 1 and "no such file" in r.output
    r = run("prepare", fixtures / "sheep.npz", "-o", tmp_path / "x.h5", "--min-len", 10, "--max-len", 5)
    assert r.exit_code == 2
    r = run("prepare", fixtures / "sheep.npz", "-o", tmp_path / "x.h5", "--valid-frac", 0.6, "--test-frac", 0.5)
    assert r.exit_code == 2
    r = run("prepare", "notaclass", "-o", tmp_path / "x.h5", "--data-dir", tmp_path / "qd", "--no-download")
    assert r.exit_code == 1 and "not a Quick, Draw! class name" in r.output
    r = run("prepare", "-o", tmp_path / "x.h5")
    assert r.exit_code == 2


def test_prepare_class_name_is_downloaded(tmp_path, http_dir):
    www, url = http_dir
    write_npz(www / "sketchrnn" / "The Eiffel Tower.npz")
    r = run("prepare", "the eiffel tower", "-o", tmp_path / "t.h5", "--data-dir", tmp_path / "qd", "--base-url", url,
            "--no-progress")
    assert r.exit_code == 0, r.output
    assert "The Eiffel Tower" in r.output and (tmp_path / "qd" / "The Eiffel Tower.npz").exists()


def test_info_errors(tmp_path):
    r = run("info", tmp_path / "nope.h5")
    assert r.exit_code == 1 and "not found" in r.output
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"no hdf5 here")
    r = run("info", junk)
    assert r.exit_code == 1 and "junk.h5" in r.output and "Traceback" not in r.output


# --------------------------------------------------------------------------------------------------
# real data


needs_shared = pytest.mark.skipif(not (NPZ_DIR.is_dir() and QD_SIMPLIFIED.is_dir() and QD_RAW.is_dir()),
                                  reason=f"shared data not found under {SHARED}")


@needs_shared
def test_prepare_real_sheep_and_one_quickdraw_class(tmp_path):
    """Fast real-data check: aaron_sheep + cat (simplified and raw merged, duplicates once)."""
    out = tmp_path / "real.h5"
    r = run("prepare", NPZ_DIR / "aaron_sheep.npz", QD_SIMPLIFIED / "cat.ndjson", QD_RAW / "cat.ndjson",
            "-o", out, "--no-progress")
    assert r.exit_code == 0, r.output
    with open_cache(out) as c:
        assert c.class_names == ["aaron_sheep", "cat"]
        counts = {s: c.split(s).class_counts(2).tolist() for s in c.splits}
    assert [counts[s][0] for s in ("train", "valid", "test")] == [7400, 300, 300]
    # cat: 25 simplified + the raw drawings whose key_id is not among them
    assert sum(counts[s][1] for s in counts) == 25 and "25 duplicate key_id" in r.output


@needs_shared
@pytest.mark.slow
def test_prepare_all_real_data(tmp_path):
    out = tmp_path / "all.h5"
    sources = [NPZ_DIR / "aaron_sheep.npz", NPZ_DIR / "omniglot.npz", NPZ_DIR / "short_kanji.npz",
               QD_SIMPLIFIED, QD_RAW]
    r = run("prepare", *sources, "-o", out, "--no-progress", "--skip-bad")
    assert r.exit_code == 0, r.output
    n_simplified = sum(1 for p in QD_SIMPLIFIED.glob("*.ndjson") for line in open(p, "rb") if line.strip())
    n_raw = sum(1 for p in QD_RAW.glob("*.ndjson") for line in open(p, "rb") if line.strip())
    n_input = 8000 + 32000 + 11100 + n_simplified + n_raw
    assert f"input {n_input} sketches" in r.output
    with open_cache(out) as c:
        names = c.class_names
        counts = np.stack([c.split(s).class_counts(len(names)) for s in ("train", "valid", "test")], axis=1)
        assert (np.diff(np.asarray(c.split("train").offsets)) <= 250).all()
    assert names[:3] == ["aaron_sheep", "omniglot", "short_kanji"]
    assert len(names) == 3 + 345  # 344 simplified classes + zigzag (raw only)
    assert counts[0].tolist() == [7400, 300, 300]
    assert counts[1].tolist() == [30000, 1000, 1000]
    assert counts[2].tolist() == [10000, 600, 500]
    kept = int(counts.sum())
    skipped = n_input - kept
    assert f"kept {kept}, skipped {skipped}" in r.output
    # every kept Quick, Draw! drawing is a distinct key_id: simplified ones + raw-only ones, minus too long
    assert "duplicate key_id" in r.output and "longer than max_len=250" in r.output
