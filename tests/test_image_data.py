"""MNIST data: IDX reader/writer on good and corrupt files, the real files, binarisation, download."""

from __future__ import annotations

import contextlib
import functools
import gzip
import http.server
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from sketchvae.data.quickdraw import DownloadError
from sketchvae.image import data as mnist
from sketchvae.image.data import IDXError, idx_bytes, load_split, read_idx, write_idx

torch.set_num_threads(1)

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
needs_real = pytest.mark.skipif(not (REAL / "t10k-images-idx3-ubyte.gz").exists(),
                                reason=f"real MNIST not found in {REAL}")


# ---------------------------------------------------------------- IDX round trip


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("name", ["a.idx", "a.idx.gz"])
def test_idx_round_trip(tmp_path, dtype, name):
    a = (np.arange(2 * 3 * 4) - 5).astype(dtype).reshape(2, 3, 4)
    if dtype == np.uint8:
        a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    p = write_idx(tmp_path / name, a)
    assert (p.read_bytes()[:2] == b"\x1f\x8b") == name.endswith(".gz")
    b = read_idx(p)
    assert b.dtype == a.dtype and b.dtype.isnative and np.array_equal(a, b)


def test_idx_header_layout():
    raw = idx_bytes(np.zeros((60000, 28, 28), np.uint8))
    assert raw[:4] == bytes([0, 0, 0x08, 3]) and int.from_bytes(raw[4:8], "big") == 60000


# ---------------------------------------------------------------- corrupt inputs


def _write(tmp_path, raw: bytes, name="bad.idx") -> Path:
    p = tmp_path / name
    p.write_bytes(raw)
    return p


def _good() -> bytes:
    return idx_bytes(np.zeros((5, 28, 28), np.uint8))


@pytest.mark.parametrize("raw, words", [
    (b"\x01\x00\x08\x03" + _good()[4:], ["bad magic", "0x01000803"]),
    (b"PK\x03\x04" + _good()[4:], ["bad magic"]),
    (b"\x00\x00\x07\x03" + _good()[4:], ["unknown IDX dtype code 0x07"]),
    (b"\x00\x00", ["only 2 bytes"]),
    (_good()[:10], ["truncated header"]),
    (_good()[:-1], ["truncated", "3935 bytes", "needs 3936"]),
    (_good() + b"\x00", ["trailing bytes"]),
    (b"\x00\x00\x08\x00", ["0 dimensions"]),
], ids=["magic", "zip", "dtype", "tiny", "header", "truncated", "trailing", "ndim0"])
def test_corrupt_idx_names_file_and_problem(tmp_path, raw, words):
    p = _write(tmp_path, raw)
    with pytest.raises(IDXError) as err:
        read_idx(p)
    msg = str(err.value)
    assert str(p) in msg
    for w in words:
        assert w in msg


def test_truncated_gzip(tmp_path):
    gz = gzip.compress(_good())
    p = _write(tmp_path, gz[: len(gz) // 2], "cut.idx.gz")
    with pytest.raises(IDXError, match="gzip") as err:
        read_idx(p)
    assert str(p) in str(err.value)


def test_wrong_dims(tmp_path):
    p = _write(tmp_path, idx_bytes(np.zeros((5, 28), np.uint8)))
    with pytest.raises(IDXError, match="has 2 dimensions, expected 3"):
        read_idx(p, ndim=3)
    p = _write(tmp_path, idx_bytes(np.zeros((5, 27, 28), np.uint8)), "b.idx")
    with pytest.raises(IDXError, match="dimension 1 is 27, expected 28"):
        read_idx(p, ndim=3, shape=(None, 28, 28))


def _fake_dir(tmp_path, n_train=30, n_test=10) -> Path:
    return mnist.write_synthetic(tmp_path / "mnist", n_train, n_test)


def test_load_split_checks_consistency(tmp_path):
    d = _fake_dir(tmp_path)
    images, labels = load_split(d, "train")
    assert images.shape == (30, 28, 28) and images.dtype == np.uint8 and labels.dtype == np.int64
    assert load_split(d, "test", limit=4)[0].shape == (4, 28, 28)
    write_idx(d / "t10k-labels-idx1-ubyte.gz", np.zeros(9, np.uint8))
    with pytest.raises(IDXError, match="10 images but t10k-labels-idx1-ubyte.gz has 9 labels"):
        load_split(d, "test")
    write_idx(d / "t10k-labels-idx1-ubyte.gz", np.full(10, 12, np.uint8))
    with pytest.raises(IDXError, match="label 12 out of range"):
        load_split(d, "test")
    write_idx(d / "t10k-images-idx3-ubyte.gz", np.zeros((10, 28, 28), np.int16))
    with pytest.raises(IDXError, match="uint8"):
        load_split(d, "test")
    with pytest.raises(ValueError, match="unknown MNIST split 'valid'"):
        load_split(d, "valid")


def test_uncompressed_files_are_found(tmp_path):
    d = _fake_dir(tmp_path)
    for name in mnist.FILES["test"]:
        (d / name.removesuffix(".gz")).write_bytes(gzip.decompress((d / name).read_bytes()))
        (d / name).unlink()
    assert load_split(d, "test")[0].shape == (10, 28, 28)


def test_missing_files_say_how_to_get_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="sketchvae mnist download"):
        load_split(tmp_path, "train")


# ---------------------------------------------------------------- the real files


@needs_real
def test_real_test_split_matches_readme():
    images, labels = load_split(REAL, "test")
    assert images.shape == (10000, 28, 28)
    assert np.bincount(labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert images.mean() == pytest.approx(33.7912, abs=1e-4)


@needs_real
def test_real_files_have_canonical_checksums():
    for name, md5 in mnist.MD5.items():
        mnist.verify_file(REAL / name, md5)


# ---------------------------------------------------------------- binarisation


def _data(n=200, **kw):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 28, 28)).astype(np.uint8)
    return mnist.ImageData(images, np.arange(n), **kw), images


def test_dynamic_binarisation_fresh_per_epoch():
    data, images = _data(seed=3)
    a, b, a2 = data.targets(0), data.targets(1), data.targets(0)
    assert set(a.unique().tolist()) <= {0.0, 1.0}
    assert not torch.equal(a, b) and torch.equal(a, a2)
    # a Bernoulli sample of the grey levels: the mean over many epochs approaches them
    mean = torch.stack([data.targets(e) for e in range(50)]).mean(0)
    assert (mean - torch.from_numpy(images).view(200, -1) / 255).abs().mean() < 0.06


def test_static_and_grey_and_eval_sets_are_fixed():
    static, _ = _data(binarize="static")
    assert torch.equal(static.targets(0), static.targets(5))
    grey, images = _data(binarize="grey")
    assert torch.allclose(grey.targets(3), torch.from_numpy(images).view(200, -1).float() / 255)
    test, _ = _data(train=False)
    assert torch.equal(test.targets(0), test.targets(1))
    with pytest.raises(ValueError, match="unknown binarisation 'bw'"):
        _data(binarize="bw")


def test_batches_are_a_permutation_each_epoch():
    data, _ = _data(seed=1)
    orders = []
    for epoch in (0, 1):
        labels = torch.cat([y for _, y in data.batches(64, epoch=epoch)])
        assert sorted(labels.tolist()) == list(range(200))
        orders.append(labels)
    assert not torch.equal(*orders)
    sizes = [len(x) for x, _ in data.batches(64, drop_last=True)]
    assert sizes == [64, 64, 64] and data.num_batches(64) == 4
    x, y = next(data.batches(64, shuffle=False))
    assert torch.equal(y, torch.arange(64)) and x.shape == (64, 784) and x.dtype == torch.float32


# ---------------------------------------------------------------- download from a local server


@contextlib.contextmanager
def serve(folder: Path):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def _checksums(folder: Path) -> dict[str, str]:
    return {name: mnist.md5_of_content(folder / name) for name in mnist.MD5}


def test_download_verifies_and_keeps_present_files(tmp_path):
    src = _fake_dir(tmp_path)
    out = tmp_path / "out"
    with serve(src) as url:
        got = mnist.download(out, base_url=url, checksums=_checksums(src))
        assert [g.status for g in got] == ["downloaded"] * 4
        assert all((out / name).read_bytes() == (src / name).read_bytes() for name in mnist.MD5)
        again = mnist.download(out, base_url=url, checksums=_checksums(src))
        assert [g.status for g in again] == ["present"] * 4
    assert load_split(out, "test")[0].shape == (10, 28, 28)


def test_download_checksum_mismatch_removes_file(tmp_path):
    src = _fake_dir(tmp_path)
    out = tmp_path / "out"
    sums = _checksums(src)
    sums["t10k-images-idx3-ubyte.gz"] = "0" * 32
    with serve(src) as url, pytest.raises(DownloadError, match="checksum mismatch") as err:
        mnist.download(out, base_url=url, checksums=sums, retries=0)
    assert "t10k-images-idx3-ubyte.gz" in str(err.value)
    assert not (out / "t10k-images-idx3-ubyte.gz").exists()
    assert not (out / "t10k-images-idx3-ubyte.gz.part").exists()
    assert (out / "train-images-idx3-ubyte.gz").exists()  # the files before it were fine


def test_download_missing_file_is_clear(tmp_path):
    src = _fake_dir(tmp_path)
    (src / "train-labels-idx1-ubyte.gz").unlink()
    with serve(src) as url, pytest.raises(DownloadError, match="404"):
        mnist.download(tmp_path / "out", base_url=url, checksums=_checksums(_fake_dir(tmp_path / "x")),
                       retries=0)
