#!/usr/bin/env python
"""Data-loading speed and padding waste, as ratios against baselines measured in the same run.

For each data set (aaron_sheep's train split and the Quick, Draw! simplified ndjson subset by
default) this prepares a temporary HDF5 cache (``sketchvae.data.quickdraw.prepare`` when it is
there, else the ``formats`` readers + ``cache.write_cache``), then times whole epochs of
batch_size sketches (max_len 250) for:

  bucketed    ``make_loader``: length-bucketed batches, padded to the longest in the batch,
              gathered from the memory-mapped cache in one go (``collate_indices``)
  pad250      the same fast collate on random batches padded to 250 points (no bucketing),
              what a port that pads to the data set maximum pays
  items       ``collate_stroke5([dataset[i] for i in batch])``: the per-sketch dataset path
              (a torch ``Dataset`` + collate_fn), bucketed
  naive       baseline: per-sketch Python, as ports do it: slice, ``strokes.normalize``,
              ``strokes.augment`` (its Python point loop), ``strokes.to_stroke5(s, 250)``,
              prepend the start token, ``np.stack``, ``torch.from_numpy``

with and without augmentation (Sketch-RNN's defaults: scale 0.15, drop 0.1), and prints
sketches/s, each path's speed-up over ``naive``, and the padding waste (fraction of the B * T
point slots that are padding) of bucketed, random and padded-to-250 batches; ``slots`` is the
point-step count the model runs per sketch (B * T / B), the direct cost driver of the LSTMs.

    python scripts/bench_data.py                  # both data sets
    python scripts/bench_data.py --data sheep --epochs 5
    python scripts/bench_data.py --json out.json

Numbers are the median over the timed epochs (first epoch warm-up).  One thread.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
SHEEP = SHARED / "sketchrnn_datasets" / "aaron_sheep.npz"
QUICKDRAW = SHARED / "quickdraw" / "simplified_first25_per_class"
MAX_LEN = 250
AUGMENT = {"scale_range": 0.15, "drop_prob": 0.1}  # TrainConfig's defaults (magenta's)


# ------------------------------------------------------------------------------------------ data
def _write_cache_from_readers(name: str, out: Path) -> Path:
    from sketchvae import strokes
    from sketchvae.data import formats
    from sketchvae.data.cache import write_cache

    if name == "sheep":
        data = formats.load_npz(SHEEP)
        splits = {s: [(a, 0) for a in data[s]] for s in formats.SPLITS}
        classes = ["sheep"]
    else:
        files = sorted(QUICKDRAW.glob("*.ndjson"))
        classes = [f.stem for f in files]
        items = [(d.strokes, c) for c, f in enumerate(files) for d in formats.iter_ndjson(f)]
        rng = np.random.default_rng(0)
        order = rng.permutation(len(items))
        n_valid = len(items) // 20
        splits = {"train": [items[i] for i in order[2 * n_valid:]],
                  "valid": [items[i] for i in order[:n_valid]],
                  "test": [items[i] for i in order[n_valid:2 * n_valid]]}
    scale = strokes.scale_factor([s for s, _ in splits["train"] if len(s) <= MAX_LEN])
    write_cache(out, splits, classes, {"scale_factor": scale})
    return out


def prepare_cache(name: str, tmp: Path) -> tuple[Path, str]:
    source = SHEEP if name == "sheep" else QUICKDRAW
    if not source.exists():
        raise SystemExit(f"{source} not found (the shared data folder is needed)")
    out = tmp / f"{name}.h5"
    try:
        from sketchvae.data import quickdraw
        return Path(quickdraw.prepare([str(source)], out)), "quickdraw.prepare"
    except ImportError:
        return _write_cache_from_readers(name, out), "formats readers + write_cache"


# ------------------------------------------------------------------------------------------ paths
def naive_collate(split, idx, scale: float, augment: dict | None, seed: int, epoch: int) -> tuple:
    """Per-sketch Python, padded to MAX_LEN: the baseline."""
    from sketchvae import strokes
    from sketchvae.data.batching import item_rng

    rows, lengths, labels = [], [], []
    for i in idx:
        s = strokes.normalize(split[int(i)], scale)
        if augment:
            s = strokes.augment(s, item_rng(seed, epoch, int(i)), **augment)
        rows.append(np.concatenate([strokes.START_TOKEN[None], strokes.to_stroke5(s, MAX_LEN)]))
        lengths.append(len(s))
        labels.append(int(split.labels[int(i)]))
    return torch.from_numpy(np.stack(rows)), torch.tensor(lengths), torch.tensor(labels)


def time_epochs(run_epoch, epochs: int) -> tuple[float, float, float]:
    """(median, min, max) seconds per epoch over epochs - 1 timed epochs after one warm-up."""
    times = []
    for e in range(epochs):
        t0 = time.perf_counter()
        run_epoch(e)
        if e > 0 or epochs == 1:
            times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times), max(times)


def bench(name: str, args, tmp: Path) -> dict:
    from sketchvae.data.batching import BucketBatchSampler, collate_stroke5, make_loader, padding_waste
    from sketchvae.data.cache import open_cache

    t0 = time.perf_counter()
    path, how = prepare_cache(name, tmp)
    prep_s = time.perf_counter() - t0
    cache = open_cache(path)
    bs = args.batch_size
    res = {"data": name, "cache": how, "prepare_s": round(prep_s, 2)}

    probe = make_loader(cache, "train", bs, MAX_LEN, shuffle=True, seed=args.seed)
    ds = probe.dataset
    lengths, split = ds.lengths, ds.split
    res.update(sketches=int(len(ds.indices)), too_long_left_out=ds.num_too_long,
               mean_len=round(float(lengths.mean()), 1), max_len_seen=int(lengths.max()))

    # padding waste over one epoch's batches (positions into `lengths`)
    bucketed_batches = list(BucketBatchSampler(lengths, bs, seed=args.seed))
    rng = np.random.default_rng(args.seed)
    n_full = len(lengths) // bs
    random_batches = list(rng.permutation(len(lengths))[:n_full * bs].reshape(n_full, bs))
    res["padding_waste"] = {
        "bucketed": padding_waste(lengths, bucketed_batches),
        "random_pad_batch_max": padding_waste(lengths, random_batches),
        "pad250": padding_waste(lengths, random_batches, pad_to=MAX_LEN),
    }
    real = float(lengths[np.concatenate(bucketed_batches)].mean())
    res["slots_per_sketch"] = {k: real / (1 - v) for k, v in res["padding_waste"].items()}

    res["throughput"] = {}
    for aug_name, aug in (("no_augment", None), ("augment", AUGMENT)):
        loader = make_loader(cache, "train", bs, MAX_LEN, shuffle=True, seed=args.seed, augment=aug)
        pad_loader = make_loader(cache, "train", bs, MAX_LEN, shuffle=True, seed=args.seed, augment=aug,
                                 pad_to=MAX_LEN, bucket_size=bs)  # one batch per chunk: random batches
        dset = loader.dataset
        n_sk = n_full * bs

        def run_loader(e, ld=loader):
            ld.set_epoch(e)
            for _ in ld:
                pass

        def run_items(e):
            dset.set_epoch(e)
            for bt in BucketBatchSampler(lengths, bs, seed=args.seed, indices=dset.indices).epoch_batches(e):
                collate_stroke5([dset[i] for i in bt.tolist()])

        def run_naive(e):
            for bt in random_batches:
                naive_collate(split, dset.indices[bt], dset.scale_factor, aug, args.seed, e)

        paths = {"bucketed": lambda e: run_loader(e), "pad250": lambda e: run_loader(e, pad_loader),
                 "items": run_items, "naive": run_naive}
        out = {}
        for pname, fn in paths.items():
            med, lo, hi = time_epochs(fn, args.epochs if pname in ("bucketed", "pad250") else max(2, args.epochs // 2))
            out[pname] = {"sketches_per_s": n_sk / med, "ms_per_batch": 1e3 * med / n_full,
                          "spread_ms_per_batch": [1e3 * lo / n_full, 1e3 * hi / n_full]}
        for pname in out:
            out[pname]["x_naive"] = out[pname]["sketches_per_s"] / out["naive"]["sketches_per_s"]
        res["throughput"][aug_name] = out
    cache_close = getattr(cache, "close", None)
    if cache_close:
        cache_close()
    return res


def report(r: dict) -> None:
    print(f"\n== {r['data']}: {r['sketches']} train sketches (mean {r['mean_len']} points, max {r['max_len_seen']}; "
          f"{r['too_long_left_out']} over {MAX_LEN} left out), cache via {r['cache']} in {r['prepare_s']} s")
    pw, sl = r["padding_waste"], r["slots_per_sketch"]
    print("padding waste (fraction of padded point slots), point steps per sketch:")
    for k in pw:
        print(f"  {k:22s} {pw[k]:6.1%}   {sl[k]:7.1f} steps/sketch")
    print(f"  pad250 / bucketed steps: {sl['pad250'] / sl['bucketed']:.2f}x   "
          f"random-batch / bucketed: {sl['random_pad_batch_max'] / sl['bucketed']:.2f}x")
    for aug, out in r["throughput"].items():
        print(f"loader throughput, {aug}:")
        for k, v in out.items():
            lo, hi = v["spread_ms_per_batch"]
            print(f"  {k:10s} {v['sketches_per_s']:10.0f} sketches/s  {v['ms_per_batch']:7.3f} ms/batch "
                  f"({lo:.3f}..{hi:.3f})  {v['x_naive']:6.1f}x naive")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", choices=["sheep", "quickdraw", "both"], default="both")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--epochs", type=int, default=4, help="epochs per fast path (first is warm-up)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    names = ["sheep", "quickdraw"] if args.data == "both" else [args.data]
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_data_") as tmp:
        for name in names:
            r = bench(name, args, Path(tmp))
            report(r)
            results.append(r)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
