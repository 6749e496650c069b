"""Batching: stroke-5 collate (layout, round trip, fast path vs per-item reference), augmentation
(matches strokes.augment, deterministic, keeps pen structure), the bucketed sampler (coverage,
determinism, padding, rank sharding, resume) and the loader (exact mid-epoch resume, workers)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sketchvae import strokes as S
from sketchvae.data import batching as B

CLASSES = ["a", "b", "c"]
MAX_LEN = 60


def random_sketch(rng: np.random.Generator, n: int) -> np.ndarray:
    """int16 stroke-3 with strokes of a few points (long pen-down runs, so drops happen)."""
    s3 = np.zeros((n, 3), dtype=np.int16)
    s3[:, 0:2] = rng.integers(-40, 41, size=(n, 2))
    s3[:, 2] = rng.random(n) < 0.15
    s3[-1, 2] = 1
    return s3


def make_splits(seed=0, counts=(300, 40, 40), long_every=37):
    rng = np.random.default_rng(seed)
    splits = {}
    for name, count in zip(("train", "valid", "test"), counts):
        items = []
        for i in range(count):
            # skewed lengths like Quick, Draw! (many short, few long); some over MAX_LEN
            n = int(min(rng.gamma(2.0, 10.0) + 1, MAX_LEN)) if i % long_every else MAX_LEN + 1 + i % 20
            items.append((random_sketch(rng, n), i % len(CLASSES)))
        splits[name] = items
    return splits


@pytest.fixture(scope="module")
def splits():
    return make_splits()


@pytest.fixture(scope="module")
def cache(splits, tmp_path_factory):
    from sketchvae.data.cache import open_cache, write_cache

    path = tmp_path_factory.mktemp("cache") / "tiny.h5"
    scale = S.scale_factor([s for s, _ in splits["train"]])
    write_cache(path, splits, CLASSES, {"scale_factor": scale})
    return open_cache(path)


@pytest.fixture(scope="module")
def train(cache):
    return cache.split("train")


def raw_sketch(split, i: int) -> np.ndarray:
    return np.asarray(split[i])


def assert_batches_equal(a: B.Batch, b: B.Batch) -> None:
    assert torch.equal(a.strokes, b.strokes)
    assert torch.equal(a.lengths, b.lengths)
    assert torch.equal(a.labels, b.labels)


AUGMENTS = [None, {"scale_range": 0.15}, {"drop_prob": 0.1}, {"scale_range": 0.2, "drop_prob": 0.9}]


# ---------------------------------------------------------------- collate
def test_collate_layout(train, cache):
    ds = B.SketchDataset(train, cache.scale_factor, MAX_LEN)
    idx = ds.indices[:9]
    batch = ds.collate(idx)
    lens = train.lengths[idx]
    t = int(lens.max())
    assert batch.strokes.shape == (9, t + 1, 5) and batch.strokes.dtype == torch.float32
    assert batch.lengths.dtype == torch.int64 and batch.labels.dtype == torch.int64
    assert batch.lengths.tolist() == lens.tolist()
    assert batch.labels.tolist() == train.labels[idx].tolist()
    assert batch.indices.tolist() == idx.tolist()
    s = batch.strokes.numpy()
    np.testing.assert_array_equal(s[:, 0], np.tile(S.START_TOKEN, (9, 1)))
    for k, n in enumerate(lens):
        np.testing.assert_array_equal(s[k, n + 1:], np.tile(S.END_ROW, (t - n, 1)))
        assert np.all(s[k, 1:n + 1, 4] == 0) and np.all(s[k, 1:, 2:].sum(axis=1) == 1)
    assert 0 <= batch.padding_fraction < 1


@pytest.mark.parametrize("pad", [None, MAX_LEN])
def test_collate_round_trip_to_stroke3(train, cache, pad):
    scale = float(cache.scale_factor)
    ds = B.SketchDataset(train, scale, MAX_LEN)
    idx = ds.indices[::7]
    batch = ds.collate(idx, pad_to=pad)
    if pad:
        assert batch.max_len == pad
    for k, i in enumerate(idx):
        s3 = S.denormalize(S.to_stroke3(batch.strokes[k, 1:].numpy()), scale)
        np.testing.assert_array_equal(np.rint(s3).astype(np.int16), raw_sketch(train, i))


def test_collate_stroke5_matches_to_stroke5(train, cache):
    ds = B.SketchDataset(train, cache.scale_factor, MAX_LEN)
    items = [ds[i] for i in ds.indices[:6]]
    batch = B.collate_stroke5(items, max_len=MAX_LEN)
    for k, (s3, label) in enumerate(items):
        np.testing.assert_array_equal(batch.strokes[k, 1:].numpy(), S.to_stroke5(s3, MAX_LEN))
        assert batch.labels[k] == label


def test_collate_errors(train, cache):
    ds = B.SketchDataset(train, cache.scale_factor, MAX_LEN)
    with pytest.raises(ValueError, match="empty batch"):
        B.collate_stroke5([])
    with pytest.raises(ValueError, match="more than max_len=3"):
        ds.collate(ds.indices[:4], pad_to=3)
    with pytest.raises(IndexError, match="out of range"):
        B.collate_indices(train, [len(train)], 1.0)
    with pytest.raises(ValueError, match="scale_factor"):
        B.collate_indices(train, [0], 0.0)


# ---------------------------------------------------------------- dataset: filtering, normalisation
def test_dataset_leaves_out_long_sketches(train, cache, splits):
    ds = B.SketchDataset(train, cache.scale_factor, MAX_LEN)
    lengths = np.array([len(s) for s, _ in splits["train"]])
    assert ds.num_too_long == int((lengths > MAX_LEN).sum()) > 0 and ds.num_empty == 0
    np.testing.assert_array_equal(ds.indices, np.flatnonzero(lengths <= MAX_LEN))
    np.testing.assert_array_equal(ds.lengths, lengths[ds.indices])
    assert len(ds) == len(train)
    bad = int(np.flatnonzero(lengths > MAX_LEN)[0])
    with pytest.raises(ValueError, match=f"sketch {bad} has {lengths[bad]} points, more than max_len={MAX_LEN}"):
        ds[bad]
    with pytest.raises(ValueError, match="left out"):
        ds.collate([int(ds.indices[0]), bad])


def test_dataset_item_is_normalised(train):
    ds = B.SketchDataset(train, 4.0, MAX_LEN)
    i = int(ds.indices[3])
    s3, label = ds[i]
    assert s3.dtype == np.float32 and label == int(train.labels[i])
    np.testing.assert_array_equal(s3, S.normalize(raw_sketch(train, i), 4.0))


def test_dataset_validates_arguments(train):
    with pytest.raises(ValueError, match="scale_factor"):
        B.SketchDataset(train, -1.0, MAX_LEN)
    with pytest.raises(ValueError, match="max_len"):
        B.SketchDataset(train, 1.0, 0)
    with pytest.raises(ValueError, match=r"unknown augmentation option\(s\) \['scale'\]"):
        B.SketchDataset(train, 1.0, MAX_LEN, augment={"scale": 0.1})
    with pytest.raises(ValueError, match=r"must be a number in \[0, 1\)"):
        B.SketchDataset(train, 1.0, MAX_LEN, augment={"drop_prob": 1.0})


# ---------------------------------------------------------------- augmentation
def test_item_rng_rekeyed_streams_are_item_rng():
    rekey = B._Rekeyed(7, 3)
    for i in (5, 0, 123456, 5):
        np.testing.assert_array_equal(rekey(i).random(9), B.item_rng(7, 3, i).random(9))
    assert not np.array_equal(B.item_rng(7, 3, 1).random(4), B.item_rng(7, 3, 2).random(4))
    assert not np.array_equal(B.item_rng(7, 3, 1).random(4), B.item_rng(7, 4, 1).random(4))
    assert not np.array_equal(B.item_rng(7, 3, 1).random(4), B.item_rng(8, 3, 1).random(4))


@pytest.mark.parametrize("augment", AUGMENTS)
def test_fast_path_matches_per_item_reference(train, cache, augment):
    """collate_indices == collate_stroke5 of dataset items == strokes.augment with item_rng."""
    scale = float(cache.scale_factor)
    ds = B.SketchDataset(train, scale, MAX_LEN, augment=augment, seed=11)
    ds.set_epoch(2)
    idx = ds.indices[5:45]
    fast = ds.collate(idx)
    assert_batches_equal(fast, B.collate_stroke5([ds[i] for i in idx]))
    for k, i in enumerate(idx.tolist()):
        ref = S.normalize(raw_sketch(train, i), scale)
        if augment:
            ref = S.augment(ref, B.item_rng(11, 2, i), **augment)
        n = int(fast.lengths[k])
        assert n == len(ref)
        got = fast.strokes[k, 1:n + 1].numpy()
        np.testing.assert_allclose(got[:, 0:2], ref[:, 0:2], rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(got[:, 3], ref[:, 2])


def test_augmentation_drops_points_and_keeps_pen_structure(train, cache):
    ds = B.SketchDataset(train, 1.0, MAX_LEN, augment={"scale_range": 0.0, "drop_prob": 0.5}, seed=3)
    idx = ds.indices
    batch = ds.collate(idx)
    assert int(batch.lengths.sum()) < int(ds.lengths.sum())  # points were dropped
    for k, i in enumerate(idx.tolist()):
        raw = raw_sketch(train, i)
        got = batch.strokes[k, 1:int(batch.lengths[k]) + 1].numpy()
        assert int(got[:, 3].sum()) == int(raw[:, 2].sum())  # same number of strokes
        # every stroke keeps its endpoints: absolute positions at the pen lifts are unchanged
        ends_raw = np.cumsum(raw[:, 0:2], axis=0)[raw[:, 2] == 1]
        ends_got = np.cumsum(got[:, 0:2].astype(np.float64), axis=0)[got[:, 3] == 1]
        np.testing.assert_allclose(ends_got, ends_raw, atol=1e-3)


def test_augmentation_is_deterministic_and_epoch_dependent(train, cache):
    aug = {"scale_range": 0.15, "drop_prob": 0.1}
    a = B.SketchDataset(train, cache.scale_factor, MAX_LEN, augment=aug, seed=5)
    b = B.SketchDataset(train, cache.scale_factor, MAX_LEN, augment=aug, seed=5)
    c = B.SketchDataset(train, cache.scale_factor, MAX_LEN, augment=aug, seed=6)
    idx = a.indices[:20]
    assert_batches_equal(a.collate(idx, epoch=1), b.collate(idx, epoch=1))
    # an item does not depend on its batch-mates (resume, sharding and workers rely on it)
    one = a.collate(idx[3:4], epoch=1)
    full = a.collate(idx, epoch=1)
    n = int(one.lengths[0])
    assert n == int(full.lengths[3])
    assert torch.equal(one.strokes[0, :n + 1], full.strokes[3, :n + 1])
    assert not torch.equal(a.collate(idx, epoch=1).strokes, a.collate(idx, epoch=2).strokes)
    assert not torch.equal(a.collate(idx, epoch=1).strokes, c.collate(idx, epoch=1).strokes)


# ---------------------------------------------------------------- sampler
def skewed_lengths(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    return np.minimum(rng.gamma(2.0, 25.0, n).astype(np.int64) + 1, 250)


def flat(batches):
    return np.concatenate([np.asarray(b) for b in batches]) if batches else np.zeros(0, dtype=np.int64)


def test_sampler_covers_each_index_at_most_once():
    lengths = skewed_lengths(1003)
    s = B.BucketBatchSampler(lengths, 32, seed=1)
    batches = list(s)
    assert len(batches) == len(s) == 1003 // 32 and all(len(b) == 32 for b in batches)
    seen = flat(batches)
    assert len(np.unique(seen)) == len(seen) == 1003 - 1003 % 32
    s_all = B.BucketBatchSampler(lengths, 32, seed=1, drop_last=False)
    assert len(list(s_all)) == len(s_all) == 32
    assert sorted(flat(list(s_all)).tolist()) == list(range(1003))


def test_sampler_is_seeded_and_changes_per_epoch():
    lengths = skewed_lengths(800)
    a, b = B.BucketBatchSampler(lengths, 16, seed=4), B.BucketBatchSampler(lengths, 16, seed=4)
    assert list(a) == list(b)
    e0 = list(a)
    a.set_epoch(1)
    assert list(a) != e0
    assert list(B.BucketBatchSampler(lengths, 16, seed=5)) != e0
    # shuffle=False: the same (length-sorted) order every epoch
    c = B.BucketBatchSampler(lengths, 16, shuffle=False, drop_last=False)
    first = list(c)
    c.set_epoch(3)
    assert list(c) == first


@pytest.mark.parametrize("top", [250, 600, 70000, 5_000_000_000])  # keys: uint8, uint16, uint32, int64
@pytest.mark.parametrize("world_size, drop_last", [(1, True), (3, False)])
def test_sampler_narrow_sort_keys_give_the_int64_order(monkeypatch, top, world_size, drop_last):
    """The per-epoch length sort on narrow keys (radix sort) yields exactly the batches of int64 keys."""
    rng = np.random.default_rng(top)
    lengths = np.concatenate([rng.integers(1, 60, 2000), rng.integers(1, top + 1, 37), [top]]).astype(np.int64)
    rng.shuffle(lengths)
    kw = dict(batch_size=16, seed=3, world_size=world_size, drop_last=drop_last, bucket_size=200)
    fast = [B.BucketBatchSampler(lengths, rank=r, **kw) for r in range(world_size)]
    assert fast[0]._keys.dtype.itemsize == {250: 1, 600: 2, 70000: 4}.get(top, 8)
    monkeypatch.setattr(B, "_sort_keys", lambda x: x)  # the reference: sort on the int64 lengths
    ref = [B.BucketBatchSampler(lengths, rank=r, **kw) for r in range(world_size)]
    assert ref[0]._keys.dtype == np.int64
    for epoch in (0, 1, 5):
        for f, r in zip(fast, ref):
            got, want = f.epoch_batches(epoch), r.epoch_batches(epoch)
            assert len(got) == len(want) and all(np.array_equal(g, w) for g, w in zip(got, want))


def test_bucketing_pads_less_than_random_batches():
    lengths = skewed_lengths(4000)
    s = B.BucketBatchSampler(lengths, 100, seed=0)
    rng = np.random.default_rng(0)
    random_batches = rng.permutation(4000).reshape(40, 100)
    bucketed, random_ = B.padding_waste(lengths, list(s)), B.padding_waste(lengths, random_batches)
    assert bucketed < 0.1 < 0.4 < random_
    assert B.padding_waste(lengths, list(s), pad_to=250) > random_


def test_leftovers_are_random_not_the_longest():
    lengths = np.arange(1, 1051)  # 1050 = 10 batches of 100 + 50 left over
    s = B.BucketBatchSampler(lengths, 100, seed=0)
    dropped = np.setdiff1d(np.arange(1050), flat(list(s)))
    assert len(dropped) == 50 and dropped.min() < 900  # not the 50 longest


@pytest.mark.parametrize("drop_last", [True, False])
def test_rank_sharding_disjoint_equal_and_covering(drop_last):
    lengths = skewed_lengths(1037)
    ranks = [B.BucketBatchSampler(lengths, 20, seed=3, rank=r, world_size=2, drop_last=drop_last) for r in (0, 1)]
    for s in ranks:
        s.set_epoch(2)
    b0, b1 = list(ranks[0]), list(ranks[1])
    assert len(b0) == len(b1) == len(ranks[0])
    f0, f1 = flat(b0), flat(b1)
    assert len(np.intersect1d(f0, f1)) == 0 and len(np.unique(f0)) == len(f0)
    union = np.union1d(f0, f1)
    if drop_last:
        assert len(union) == 1037 - 1037 % 40
    else:
        assert len(union) == 1037
    # the ranks of one step get neighbouring lengths (no rank waits for a much longer batch)
    step_max = np.array([[lengths[b].max() for b in bs[:-1]] for bs in (b0, b1)])
    assert np.median(np.abs(step_max[0] - step_max[1])) <= 0.1 * np.median(step_max)


def test_rank_sharding_with_fewer_leftovers_than_ranks():
    s = [B.BucketBatchSampler(np.ones(9, dtype=np.int64), 4, rank=r, world_size=4, drop_last=False) for r in range(4)]
    out = [list(x) for x in s]
    assert [len(o) for o in out] == [1, 1, 1, 1] and all(len(o[0]) >= 1 for o in out)
    assert sorted(set(flat([b for o in out for b in o]).tolist())) == list(range(9))


def test_sampler_resume_from_mid_epoch():
    lengths = skewed_lengths(900)
    s = B.BucketBatchSampler(lengths, 25, seed=9)
    s.set_epoch(3)
    full = list(s)
    s.set_epoch(3, batch_index=7)
    assert list(s) == full[7:]
    state = s.state_dict()
    other = B.BucketBatchSampler(lengths, 25, seed=9)
    other.load_state_dict(state)
    assert (other.epoch, other.batch_index) == (3, 7) and list(other) == full[7:]
    with pytest.raises(ValueError, match="seed: saved 9, now 10"):
        B.BucketBatchSampler(lengths, 25, seed=10).load_state_dict(state)


def test_sampler_validates_arguments():
    with pytest.raises(ValueError, match="rank=2"):
        B.BucketBatchSampler(np.ones(10), 2, rank=2, world_size=2)
    with pytest.raises(ValueError, match="batch_size=0"):
        B.BucketBatchSampler(np.ones(10), 0)
    with pytest.raises(ValueError, match="indices has shape"):
        B.BucketBatchSampler(np.ones(10), 2, indices=np.arange(3))


def test_balanced_sampler_draws_every_class_equally_often():
    labels = np.array([0] * 120 + [1] * 25 + [2] * 7)  # 120 / 25 / 7 sketches
    lengths = skewed_lengths(len(labels))
    s = B.BucketBatchSampler(lengths, 9, seed=3, labels=labels, balance=True, drop_last=False)
    assert s.num_samples == 3 * 120 and len(s) == -(-360 // 9)
    for epoch in (0, 1):
        s.set_epoch(epoch)
        seen = flat(list(s))
        assert np.bincount(labels[seen]).tolist() == [120, 120, 120]
        counts = np.bincount(seen, minlength=len(labels))
        assert (counts[:120] == 1).all()  # the largest class: each sketch once
        # 120 = 4 * 25 + 20: every sketch 4 times, 20 of them a fifth; 120 = 17 * 7 + 1
        assert sorted(set(counts[120:145].tolist())) == [4, 5] and (counts[120:145] == 5).sum() == 20
        assert sorted(set(counts[145:].tolist())) == [17, 18] and (counts[145:] == 18).sum() == 1
    fifth = [np.flatnonzero(np.bincount(flat(s.epoch_batches(e)), minlength=len(labels))[120:145] == 5)
             for e in (0, 1)]
    assert not np.array_equal(*fifth)  # a different subset of the repeats each epoch
    again = B.BucketBatchSampler(lengths, 9, seed=3, labels=labels, balance=True, drop_last=False)
    assert list(again) == list(B.BucketBatchSampler(lengths, 9, seed=3, labels=labels, balance=True,
                                                    drop_last=False))
    # without balance the classes come as they are
    plain = flat(list(B.BucketBatchSampler(lengths, 9, seed=3, drop_last=False)))
    assert np.bincount(labels[plain]).tolist() == [120, 25, 7]


def test_balanced_sampler_state_and_errors():
    labels = np.array([0] * 30 + [1] * 10)
    lengths = skewed_lengths(40)
    state = B.BucketBatchSampler(lengths, 5, labels=labels, balance=True).state_dict()
    with pytest.raises(ValueError, match="balance: saved True, now False"):
        B.BucketBatchSampler(lengths, 5).load_state_dict(state)
    with pytest.raises(ValueError, match="needs the sketches' labels"):
        B.BucketBatchSampler(lengths, 5, balance=True)
    with pytest.raises(ValueError, match="labels has shape"):
        B.BucketBatchSampler(lengths, 5, labels=labels[:5], balance=True)


def test_balanced_loader_uses_split_labels(cache):
    plain = B.make_loader(cache, "train", 10, MAX_LEN, seed=1)
    loader = B.make_loader(cache, "train", 10, MAX_LEN, seed=1, balance=True)
    per_class = np.bincount(np.asarray(cache.split("train").labels)[loader.dataset.indices])
    assert len(loader) == len(CLASSES) * per_class.max() // 10 and len(loader) >= len(plain)
    labels = np.concatenate([b.labels.numpy() for b in loader])
    assert np.bincount(labels).max() - np.bincount(labels).min() < 10  # equal up to the dropped remainder


# ---------------------------------------------------------------- loader
def test_loader_epochs_and_exact_resume(cache):
    aug = {"scale_range": 0.15, "drop_prob": 0.2}
    loader = B.make_loader(cache, "train", 16, MAX_LEN, shuffle=True, seed=2, augment=aug)
    n = len(loader)
    assert n == (len(loader.dataset.indices)) // 16
    run = [b for _ in range(2) for b in loader]  # two epochs, position advances by itself
    assert len(run) == 2 * n and loader.state_dict()["epoch"] == 2
    assert all(set(b.indices.tolist()) <= set(loader.dataset.indices.tolist()) for b in run)
    # stop after batch k + 1 of epoch 1, save, resume in a fresh loader
    fresh = B.make_loader(cache, "train", 16, MAX_LEN, shuffle=True, seed=2, augment=aug)
    fresh.set_epoch(1)
    it = iter(fresh)
    k = 3
    for _ in range(k + 1):
        next(it)
    state = fresh.state_dict()
    assert (state["epoch"], state["batch_index"]) == (1, k + 1)
    resumed = B.make_loader(cache, "train", 16, MAX_LEN, shuffle=True, seed=2, augment=aug)
    resumed.load_state_dict(state)
    rest = list(resumed) + list(resumed)  # rest of epoch 1, then epoch 2
    assert len(rest) == n - k - 1 + n
    for a, b in zip(rest[: n - k - 1], run[n + k + 1:]):
        assert_batches_equal(a, b)
    args = dict(shuffle=True, seed=2, augment=aug, epoch=1, batch_index=k + 1)
    assert_batches_equal(next(iter(B.make_loader(cache, "train", 16, MAX_LEN, **args))), run[n + k + 1])


def test_loader_eval_covers_split_once(cache):
    loader = B.make_loader(cache, "valid", 7, MAX_LEN, shuffle=False)
    batches = list(loader)
    seen = np.concatenate([b.indices.numpy() for b in batches])
    assert sorted(seen.tolist()) == loader.dataset.indices.tolist()


def test_loader_prefetch_and_workers_give_the_same_batches(cache):
    kw = dict(shuffle=True, seed=1, augment={"scale_range": 0.1, "drop_prob": 0.1})
    plain = list(B.make_loader(cache, "train", 32, MAX_LEN, **kw))
    threaded = B.make_loader(cache, "train", 32, MAX_LEN, prefetch=2, **kw)
    batches = list(threaded)
    assert len(batches) == len(plain) and threaded.state_dict()["epoch"] == 1
    for a, b in zip(plain, batches):
        assert_batches_equal(a, b)
    workers = list(B.make_loader(cache, "train", 32, MAX_LEN, num_workers=1, **kw))
    assert len(workers) == len(plain)
    for a, b in zip(plain, workers):
        assert_batches_equal(a, b)


_CTRL_C_SCRIPT = """
import os, signal, sys, time
from sketchvae.data import batching as B
caught = []
loader = B.make_loader(sys.argv[1], "train", 8, 60, num_workers=1)
count = 0
for batch in loader:
    if count == 0:  # the workers run by now; the trainer's handler (note it, go on) comes after them
        signal.signal(signal.SIGINT, lambda *a: caught.append(1))
        os.killpg(os.getpgrp(), signal.SIGINT)  # a terminal's Ctrl-C reaches the whole process group
        time.sleep(0.5)
    count += 1
print("batches", count, "caught", len(caught))
"""


def test_loader_workers_leave_ctrl_c_to_the_main_process(cache):
    """A terminal's Ctrl-C must not kill the workers under a trainer that saves last.pt on it."""
    import subprocess
    import sys

    expected = len(B.make_loader(cache, "train", 8, MAX_LEN))
    proc = subprocess.run([sys.executable, "-c", _CTRL_C_SCRIPT, str(cache.path)], capture_output=True,
                          text=True, timeout=120, start_new_session=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["batches", str(expected), "caught", "1"]


def test_loader_prefetch_stops_when_abandoned(cache):
    loader = B.make_loader(cache, "train", 8, MAX_LEN, prefetch=2)
    it = iter(loader)
    first = next(it)
    it.close()  # the background thread must end, not hang the test
    assert len(first) == 8 and loader.state_dict()["batch_index"] == 1


def test_make_loader_options(cache, tmp_path):
    loader = B.make_loader(cache, "train", 10, MAX_LEN, scale_factor=2.0, pad_to=MAX_LEN, drop_last=False)
    batch = next(iter(loader))
    assert batch.max_len == MAX_LEN and loader.dataset.scale_factor == 2.0
    with pytest.raises(ValueError, match="no split 'dev'"):
        B.make_loader(cache, "dev", 10, MAX_LEN)
    with pytest.raises(ValueError, match="num_workers"):
        B.make_loader(cache, "train", 10, MAX_LEN, num_workers=-1)


# ---------------------------------------------------------------- vectorised augmentation, edge cases
class _ArraySplit:
    """The part of a SplitView that collate_indices reads, over in-memory arrays."""

    def __init__(self, sketches):
        self.offsets = np.concatenate([[0], np.cumsum([len(s) for s in sketches])]).astype(np.int64)
        self.points = np.concatenate(sketches).astype(np.int16) if sketches else np.zeros((0, 3), np.int16)
        self.labels = np.zeros(len(sketches), dtype=np.int32)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 12), min_size=1, max_size=8), st.integers(0, 2**32), st.floats(0.0, 0.95),
       st.booleans())
def test_batched_augment_matches_strokes_augment_on_edge_cases(ns, seed, drop, lifted_end):
    """Tiny sketches (1-2 points draw nothing), single long strokes (long drop runs), sketches
    that do not end with a pen lift: the batch result equals strokes.augment sketch by sketch."""
    rng = np.random.default_rng(seed)
    sketches = []
    for n in ns:
        s = np.zeros((n, 3), dtype=np.int16)
        s[:, 0:2] = rng.integers(-9, 10, (n, 2))
        s[:, 2] = rng.random(n) < 0.2
        s[-1, 2] = int(lifted_end)
        sketches.append(s)
    split = _ArraySplit(sketches)
    aug = {"scale_range": 0.1, "drop_prob": drop}
    batch = B.collate_indices(split, np.arange(len(ns)), 3.0, augment=aug, seed=seed % 1000, epoch=1)
    for k, s in enumerate(sketches):
        ref = S.augment(S.normalize(s, 3.0), B.item_rng(seed % 1000, 1, k), **aug)
        n = int(batch.lengths[k])
        assert n == len(ref)
        got = batch.strokes[k, 1:n + 1].numpy()
        np.testing.assert_allclose(got[:, 0:2], ref[:, 0:2], rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(got[:, 3], ref[:, 2])


def test_dataset_pickles_small_for_spawned_workers(cache):
    import pickle

    ds = B.SketchDataset(cache.split("train"), cache.scale_factor, MAX_LEN, augment={"drop_prob": 0.3}, seed=4)
    ds.set_epoch(3)
    blob = pickle.dumps(ds)
    assert len(blob) < 2000  # the split reopens from its path; no arrays in the pickle
    back = pickle.loads(blob)
    np.testing.assert_array_equal(back.indices, ds.indices)
    assert_batches_equal(back.collate(ds.indices[:10]), ds.collate(ds.indices[:10]))
