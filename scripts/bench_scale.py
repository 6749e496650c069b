#!/usr/bin/env python
"""`prepare` and the training batch iterator on the full Quick, Draw! (synthetic, same shape), at
1/100, 1/10 and full size, so that the growth of time and memory is visible.

The real per-class Sketch-RNN files (345 classes x 70,000 train / 2,500 valid / 2,500 test
drawings, about 50M drawings with the ndjson) are not on this machine, so this writes files of
the same shape: for each class, the class's real simplified drawings in
``../shared/data/quickdraw/simplified_first25_per_class`` (real lengths, mean about 45 points)
are drawn with replacement and jittered (every dx, dy moved by -1, 0 or +1, a per-sketch scale
of 0.9..1.1), then saved as the official files are laid out: an ``.npz`` of three pickled object
arrays of int16 stroke-3 (uncompressed; the official files are deflated, which adds a
decompression pass to reading). The 345th class reuses the first class's drawings.

For each size, in separate processes (so that each peak RSS is that job's alone, read with
``os.wait4``):

  prepare    ``sketchvae.data.quickdraw.prepare(folder, cache.h5)``: wall time, peak RSS
  baseline   a process that imports what ``prepare`` and the loader import and does nothing:
             its peak RSS is the floor both are compared with
  iterate    ``make_loader(cache, "train", 100, 250, augment=training's)``: opening the cache,
             building the epoch's batch order (the per-epoch shuffle: permutation, length
             sort inside chunks, batch order; the faster of two epochs, and again sorting on int64
             lengths as the sampler did before it used narrow keys), then one pass over all
             training batches: sketches/s, peak RSS (memory-mapped cache pages included; the
             private part, RssAnon, is printed too)
  train      once, on the smallest cache: ``Trainer.train_step`` of the default class-conditional
             model (256/512 LSTMs, recurrent dropout 0.1, 345 classes) on the same batches, one
             thread: sketches/s, the rate the iterator must exceed (goal >= 10x)

    python scripts/bench_scale.py                          # 1/100 and 1/10 (a few minutes)
    python scripts/bench_scale.py --sizes 0.01 0.1 1 --tmp /tmp/bench_scale --json scale.json
    python scripts/bench_scale.py --sizes 1 --keep         # keep the files for another look

The synthetic files, spools and caches go under --tmp (full size: 7.8 GB of .npz, then 7 GB of
spools and 7 GB of cache: up to 22 GB at once; about 20 minutes on 2 busy cores) and are deleted
as soon as they are no longer needed, unless --keep.  One thread.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
QUICKDRAW = REPO.parent / "shared" / "data" / "quickdraw" / "simplified_first25_per_class"
FULL = {"train": 70_000, "valid": 2_500, "test": 2_500}  # drawings per class of the official files
BATCH, MAX_LEN = 100, 250
AUGMENT = {"scale_range": 0.15, "drop_prob": 0.1}  # TrainConfig's defaults (magenta's)
README_TRAIN_RATE = 20_000 * 100 / (10 * 3600)  # README: default model, 20,000 steps of 100 in ~10 h on CPU


# ------------------------------------------------------------------------------------- synthetic data
def load_bases() -> list[tuple[np.ndarray, np.ndarray]]:
    """Per real class: (flat int16 points (N, 3), lengths (S,)) of its simplified drawings."""
    from sketchvae.data import formats

    files = sorted(QUICKDRAW.glob("*.ndjson"))
    if not files:
        raise SystemExit(f"{QUICKDRAW}: no .ndjson files (the shared data folder is needed)")
    bases = []
    for f in files:
        sk = [d.strokes for d in formats.iter_ndjson(f)]
        bases.append((np.concatenate(sk), np.array([len(s) for s in sk], dtype=np.int64)))
    return bases


def jittered(points: np.ndarray, lengths: np.ndarray, n: int, rng: np.random.Generator) -> tuple:
    """n drawings drawn from (points, lengths) with replacement, jittered; (flat int16 (N, 3), lengths)."""
    pick = rng.integers(0, len(lengths), n)
    starts = np.cumsum(lengths) - lengths
    lens = lengths[pick]
    total = int(lens.sum())
    rows = np.arange(total) + np.repeat(starts[pick] - (np.cumsum(lens) - lens), lens)
    out = points[rows]  # (N, 3) int16, a copy
    scale = rng.uniform(0.9, 1.1, (n, 2)).astype(np.float32)
    xy = out[:, 0:2] * np.repeat(scale, lens, axis=0) + rng.integers(-1, 2, (total, 2))
    out[:, 0:2] = np.rint(xy)
    return out, lens


def object_array(points: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The official layout: a 1-D object array of (n, 3) int16 arrays."""
    arr = np.empty(len(lengths), dtype=object)
    for i, a in enumerate(np.split(points, np.cumsum(lengths)[:-1])):
        arr[i] = a
    return arr


def generate(folder: Path, frac: float, seed: int) -> dict:
    """Write 345 class files of round(frac * FULL) drawings per split into `folder`."""
    from sketchvae.data.quickdraw import CLASS_NAMES

    folder.mkdir(parents=True, exist_ok=True)
    bases = load_bases()
    counts = {s: max(1, round(frac * n)) for s, n in FULL.items()}
    t0 = time.perf_counter()
    sketches = points = 0
    for c, name in enumerate(CLASS_NAMES):
        rng = np.random.default_rng([seed, c])
        base_pts, base_lens = bases[c % len(bases)]
        arrays = {}
        for split, n in counts.items():
            pts, lens = jittered(base_pts, base_lens, n, rng)
            arrays[split] = object_array(pts, lens)
            sketches += n
            points += len(pts)
        np.savez(folder / f"{name}.npz", **arrays)
    size = sum(f.stat().st_size for f in folder.glob("*.npz"))
    return {"classes": len(CLASS_NAMES), "per_class": counts, "sketches": sketches, "points": points,
            "npz_bytes": size, "generate_s": time.perf_counter() - t0}


# ------------------------------------------------------------------------------------- child jobs
def _proc_memory() -> dict:
    """This process's VmHWM (peak RSS), RssAnon and RssFile from /proc, in bytes (Linux)."""
    out = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmHWM", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0]) * 1024
    except OSError:
        pass
    return out


class _PeakSampler:
    """Polls /proc/self/status in a thread: the largest RssAnon (private memory) and RssFile
    (mapped file pages: the cache's page cache, shared and reclaimable) seen."""

    def __init__(self, every: float = 0.1):
        import threading

        self.peak = {"RssAnon": 0, "RssFile": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every,), daemon=True)

    def _run(self, every: float) -> None:
        while not self._stop.wait(every):
            for k, v in _proc_memory().items():
                if k in self.peak:
                    self.peak[k] = max(self.peak[k], v)

    def __enter__(self) -> "_PeakSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def child_baseline(what: str) -> dict:
    """Import what the `what` job imports ("prepare" or "iterate"), and nothing else."""
    import h5py  # noqa: F401  (opening or writing a cache)

    import sketchvae.data.cache  # noqa: F401
    import sketchvae.data.quickdraw  # noqa: F401
    if what == "iterate":
        import sketchvae.data.batching  # noqa: F401  (and torch)
    return {}


def child_prepare(src: str, out: str) -> dict:
    from sketchvae.data.quickdraw import prepare

    t0 = time.perf_counter()
    rep = prepare([src], out, force=True)
    return {"prepare_s": time.perf_counter() - t0, "kept": rep.kept, "points": rep.points,
            "cache_bytes": Path(out).stat().st_size, "scale_factor": rep.scale_factor}


def child_iterate(cache_path: str) -> dict:
    import torch

    from sketchvae.data.batching import make_loader
    from sketchvae.data.cache import open_cache

    torch.set_num_threads(1)
    with _PeakSampler() as mem:
        t0 = time.perf_counter()
        cache = open_cache(cache_path)
        loader = make_loader(cache, "train", BATCH, MAX_LEN, shuffle=True, seed=0, augment=AUGMENT)
        open_s = time.perf_counter() - t0
        order_s, order_int64_s = [], []
        sampler = loader.sampler
        for epoch in (1, 2):
            t0 = time.perf_counter()
            sampler.epoch_batches(epoch)
            order_s.append(time.perf_counter() - t0)
            keys, sampler._keys = sampler._keys, sampler.lengths  # baseline: sorting on int64 lengths
            t0 = time.perf_counter()
            sampler.epoch_batches(epoch)
            order_int64_s.append(time.perf_counter() - t0)
            sampler._keys = keys
        n = 0
        t0 = time.perf_counter()
        for batch in loader:
            n += len(batch)
        pass_s = time.perf_counter() - t0
    return {"open_s": open_s, "epoch_order_s": order_s, "epoch_order_int64_s": order_int64_s, "pass_s": pass_s,
            "pass_sketches": n, "batches": len(loader), "sketches_per_s": n / pass_s,
            "peak_anon_bytes": mem.peak["RssAnon"], "peak_file_bytes": mem.peak["RssFile"]}


def child_train(cache_path: str, steps: int, warmup: int) -> dict:
    import torch

    from sketchvae.data.cache import open_cache
    from sketchvae.models.sketch_rnn import SketchRNN, SketchRNNConfig
    from sketchvae.train import TrainConfig, Trainer, make_batches

    torch.set_num_threads(1)
    torch.manual_seed(0)
    cache = open_cache(cache_path)
    mcfg = SketchRNNConfig(mode="class_vae", num_classes=len(cache.class_names))  # defaults otherwise
    tcfg = TrainConfig(batch_size=BATCH, device="cpu", seed=0)
    trainer = Trainer(SketchRNN(mcfg), tcfg, torch.device("cpu"))
    loader = make_batches(cache, "train", BATCH, mcfg.max_seq_len, scale_factor=float(cache.scale_factor),
                          shuffle=True, seed=0, augment=AUGMENT)
    times = []
    for i, batch in zip(range(warmup + steps), loader):
        t0 = time.perf_counter()
        trainer.train_step(batch)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {"steps": steps, "median_step_s": med, "sketches_per_s": BATCH / med,
            "spread_s": [min(times), max(times)]}


CHILDREN = {"baseline": child_baseline, "prepare": child_prepare, "iterate": child_iterate, "train": child_train}


def run_child(job: str, *args) -> dict:
    """Run a child job in a fresh interpreter; its JSON result plus its peak RSS (os.wait4)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", job, *map(str, args)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    t0 = time.perf_counter()
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env) as proc:
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"child job {job} failed with exit code {proc.returncode}")
    res = json.loads(out.strip().splitlines()[-1])
    res["wall_s"] = time.perf_counter() - t0
    res["peak_rss_bytes"] = usage.ru_maxrss * 1024  # Linux: kilobytes
    return res


# ------------------------------------------------------------------------------------- driver
def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB"


def bench_size(frac: float, tmp: Path, args, baseline: dict) -> dict:
    folder = tmp / f"npz_{frac:g}"
    cache = tmp / f"cache_{frac:g}.h5"
    gen = generate(folder, frac, args.seed)
    print(f"[{frac:g}] generated {gen['sketches']:,} drawings, {gen['points']:,} points, "
          f"{_gb(gen['npz_bytes'])} of .npz in {gen['generate_s']:.0f} s", flush=True)
    prep = run_child("prepare", folder, cache)
    print(f"[{frac:g}] prepare {prep['prepare_s']:.1f} s, peak RSS {_gb(prep['peak_rss_bytes'])} "
          f"(baseline {_gb(baseline['prepare']['peak_rss_bytes'])}), cache {_gb(prep['cache_bytes'])}", flush=True)
    if not args.keep:
        shutil.rmtree(folder)
    it = run_child("iterate", cache)
    print(f"[{frac:g}] iterate: open {it['open_s']:.2f} s, epoch order {min(it['epoch_order_s']):.2f} s "
          f"(sorting int64 keys: {min(it['epoch_order_int64_s']):.2f} s), "
          f"one pass {it['pass_s']:.0f} s = {it['sketches_per_s']:,.0f} sketches/s, peak RSS "
          f"{_gb(it['peak_rss_bytes'])}: private {_gb(it['peak_anon_bytes'])}, file-backed (libraries, cache pages) "
          f"{_gb(it['peak_file_bytes'])} at most (baseline {_gb(baseline['iterate']['peak_rss_bytes'])})", flush=True)
    return {"fraction": frac, "generate": gen, "prepare": prep, "iterate": it, "cache": str(cache)}


def report(results: list[dict], baseline: dict, train: dict | None) -> None:
    print("\n| size | drawings | points | .npz | prepare | prepare peak RSS | cache | open | "
          "epoch order | one pass | iterator | iterator peak RSS |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        g, p, it = r["generate"], r["prepare"], r["iterate"]
        name = {0.01: "1/100", 0.1: "1/10", 1.0: "full"}.get(r["fraction"], f"{r['fraction']:g}")
        print(f"| {name} | {g['sketches']:,} | {g['points'] / 1e6:,.0f}M | {_gb(g['npz_bytes'])} | "
              f"{p['prepare_s']:.0f} s | {_gb(p['peak_rss_bytes'])} | {_gb(p['cache_bytes'])} | {it['open_s']:.1f} s | "
              f"{min(it['epoch_order_s']):.2f} s | {it['pass_s']:.0f} s | {it['sketches_per_s']:,.0f}/s | "
              f"{_gb(it['peak_rss_bytes'])} ({_gb(it['peak_anon_bytes'])} private) |")
    print(f"baseline processes (imports only): peak RSS {_gb(baseline['prepare']['peak_rss_bytes'])} (prepare's), "
          f"{_gb(baseline['iterate']['peak_rss_bytes'])} (the iterator's)")
    rate = train["sketches_per_s"] if train else README_TRAIN_RATE
    how = "measured here" if train else "README's 20,000 steps in ~10 h"
    print(f"training (default class-conditional model, CPU, 1 thread, {how}): {rate:.0f} sketches/s")
    for r in results:
        print(f"  iterator / training at {r['fraction']:g}: {r['iterate']['sketches_per_s'] / rate:,.0f}x (goal >= 10x)")


def main(argv=None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["--child"]:
        job, *rest = argv[1:]
        fn = CHILDREN[job]
        res = fn(*[int(a) if a.isdigit() else a for a in rest])
        res.update(_proc_memory())
        print(json.dumps(res))
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=float, nargs="+", default=[0.01, 0.1], help="fractions of the full size")
    p.add_argument("--tmp", type=Path, default=Path("/tmp/bench_scale"), help="scratch folder (deleted unless --keep)")
    p.add_argument("--train-steps", type=int, default=6, help="timed training steps (0: use the README's rate)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep", action="store_true", help="keep the generated files and caches")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    args.tmp.mkdir(parents=True, exist_ok=True)
    results, train = [], None
    try:
        baseline = {what: run_child("baseline", what) for what in ("prepare", "iterate")}
        for frac in sorted(args.sizes):
            results.append(bench_size(frac, args.tmp, args, baseline))
            if train is None and args.train_steps > 0:
                train = run_child("train", results[0]["cache"], args.train_steps, 2)
                print(f"training: {train['sketches_per_s']:.0f} sketches/s ({train['median_step_s']:.2f} s/step)",
                      flush=True)
            if not args.keep:
                Path(results[-1]["cache"]).unlink()
    finally:
        if not args.keep:
            shutil.rmtree(args.tmp, ignore_errors=True)
    report(results, baseline, train)
    if args.json:
        args.json.write_text(json.dumps({"baseline": baseline, "train": train, "sizes": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
