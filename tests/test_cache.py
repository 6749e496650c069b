"""The HDF5 cache writer: spools copied in blocks with plain reads give exactly the data appended."""

from __future__ import annotations

import numpy as np
import pytest

from sketchvae.data import cache as cache_mod
from sketchvae.data.cache import CacheWriter, open_cache


def _sketches(rng, n, classes=3):
    lens = rng.integers(1, 30, n)
    pts = np.concatenate([rng.integers(-50, 51, (int(k), 3)) for k in lens]).astype(np.int16)
    pts[:, 2] = rng.random(len(pts)) < 0.2
    return pts, lens, rng.integers(0, classes, n)


def _write(path, parts):
    with CacheWriter(path) as w:
        for split, (pts, lens, labels) in parts:
            w.append(split, pts, lens, labels)
        return w.finish(["a", "b", "c"])


def _reference(parts, split):
    """Direct computation: the appended arrays concatenated, offsets = 0 then cumulative lengths."""
    mine = [p for s, p in parts if s == split]
    pts = np.concatenate([p for p, _, _ in mine])
    lens = np.concatenate([l for _, l, _ in mine])
    labels = np.concatenate([lab for _, _, lab in mine])
    return pts, np.concatenate([[0], np.cumsum(lens)]), labels


@pytest.mark.parametrize("block", [1, 7, 1 << 22])
def test_blockwise_copy_gives_exactly_the_appended_data(tmp_path, monkeypatch, block):
    rng = np.random.default_rng(0)
    parts = [("train", _sketches(rng, 40)), ("valid", _sketches(rng, 5)), ("train", _sketches(rng, 23)),
             ("test", _sketches(rng, 1))]
    monkeypatch.setattr(cache_mod, "_COPY_ROWS", block)  # 1 and 7: many blocks, ragged last block
    with open_cache(_write(tmp_path / "c.h5", parts)) as c:
        for split in ("train", "valid", "test"):
            pts, offsets, labels = _reference(parts, split)
            v = c.split(split)
            np.testing.assert_array_equal(np.asarray(v.points), pts)
            np.testing.assert_array_equal(np.asarray(v.offsets), offsets)
            np.testing.assert_array_equal(np.asarray(v.labels), labels)
        assert c.max_sketch_len == max(int(l.max()) for _, (_, l, _) in parts)
    assert not list(tmp_path.glob("*.spool")), "spools are removed"


def test_empty_appends_empty_split_and_block_boundaries(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    pts, lens, labels = _sketches(rng, 6)
    empty = (np.zeros((0, 3), np.int16), np.zeros(0, np.int64), np.zeros(0, np.int64))
    monkeypatch.setattr(cache_mod, "_COPY_ROWS", int(lens.sum()))  # points: exactly one full block
    with open_cache(_write(tmp_path / "c.h5", [("train", empty), ("train", (pts, lens, labels)),
                                               ("test", empty)])) as c:
        np.testing.assert_array_equal(np.asarray(c.split("train").points), pts)
        np.testing.assert_array_equal(np.asarray(c.split("train").offsets), np.concatenate([[0], np.cumsum(lens)]))
        for split in ("valid", "test"):
            assert len(c.split(split)) == 0 and len(c.split(split).points) == 0


def test_spool_blocks_are_the_rows_written_and_a_truncated_spool_is_named(tmp_path):
    spool = cache_mod._Spool(tmp_path, "t", np.dtype("<i2"), 3)
    try:
        rows = np.arange(30, dtype=np.int16).reshape(10, 3)
        spool.write(rows[:4])
        spool.write(rows[4:])
        got = list(spool.blocks(3))
        assert [len(b) for b in got] == [3, 3, 3, 1]
        np.testing.assert_array_equal(np.concatenate(got), rows)
        spool.file.flush()
        with open(spool.path, "r+b") as f:
            f.truncate(5 * 3 * 2)  # 5 of the 10 rows left
        with pytest.raises(OSError, match=r"spool truncated at row 5 of 10"):
            list(spool.blocks(4))
    finally:
        spool.remove()


def test_scale_factor_summed_in_blocks_is_the_std_of_all_train_offsets(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    parts = [("train", _sketches(rng, 30)), ("valid", _sketches(rng, 9)), ("train", _sketches(rng, 11))]
    monkeypatch.setattr(cache_mod, "_STAT_ROWS", 5)  # many blocks per append
    pts, _, _ = _reference(parts, "train")
    with open_cache(_write(tmp_path / "c.h5", parts)) as c:
        assert c.scale_factor == pytest.approx(float(np.std(pts[:, 0:2].astype(np.float64))), rel=1e-12)
