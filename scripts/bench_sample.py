"""Sketches per second: batched sampling (`sketchvae.sample.sample`) vs one sketch at a time.

    python scripts/bench_sample.py                          # default model size, random weights, CPU
    python scripts/bench_sample.py --ckpt runs/sheep/best.pt --device cuda
    python scripts/bench_sample.py --sizes 1,100,1000 --seq-sketches 5 --threads 1   # quick, on CPU
    python scripts/bench_sample.py --device cuda --json out/bench_sample.json         # also write the numbers

The baseline is the one-at-a-time loop most ports use (magenta's `sample()` called n times, batch
size 1, `sketchvae.sample.sample_sequential`), measured in the same run on a few sketches and
reported per sketch; ratios are batched sketches/s divided by the baseline's.

On a shared machine the ratio is noisy: the baseline and the batched call run seconds apart, and
another process taking a core during one of them moves the ratio (one thread, same code, same
machine: 44x to 72x; two threads on a loaded 2-core machine: 19x to 84x).  So the baseline and
the batched sizes are measured `--repeats` times (default 3), interleaved, and the script reports
the median of each, with the ratio of wall-clock rates and the ratio of CPU-time rates (this
process's CPU seconds, `time.process_time`: time the process spent waiting for a core does not
count).  Quote the CPU-time ratio with `--threads 1` when the machine is shared.

Random weights (no --ckpt) rarely draw the end-of-sketch state, so to measure a fixed amount of work
every sketch is forced to run the full `--max-len` steps (default 250): the end state's logit is set
very low.  Sketches/s is then "sketches of max-len points per second", a lower bound for a trained
model whose sketches end earlier (and whose finished sketches leave the batch).  With --ckpt the
model samples normally (add --force-len to force full length there too).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch


def build(args):
    from sketchvae.models.sketch_rnn import SketchRNN, SketchRNNConfig
    from sketchvae.sample import Sampler, load

    if args.ckpt:
        sampler = load(args.ckpt, device=args.device)
    else:
        torch.manual_seed(0)
        cfg = SketchRNNConfig(enc_rnn_size=args.enc, dec_rnn_size=args.dec, max_seq_len=args.max_len)
        sampler = Sampler(SketchRNN(cfg).to(args.device).eval(), 1.0, [])
    if args.force_len or not args.ckpt:
        with torch.no_grad():  # pen logits are output[:3]: make p_end (index 2) never drawn
            sampler.model.output.bias[2] = -1e4
    return sampler


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str) -> tuple[float, float, object]:
    """(wall seconds, this process's CPU seconds, fn())."""
    sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, time.process_time() - c0, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", default=None, help="checkpoint to sample from (default: random weights, enc 256 / dec 512)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--sizes", default="1,100,1000,10000", help="comma-separated n to time batched")
    p.add_argument("--skip-10000", action="store_true", help="leave n=10000 out (slow on CPU)")
    p.add_argument("--max-len", type=int, default=250)
    p.add_argument("--seq-sketches", type=int, default=5, help="sketches for the one-at-a-time baseline")
    p.add_argument("--temperature", type=float, default=0.4)
    p.add_argument("--repeats", type=int, default=3, help="interleaved measurements of each; medians reported")
    p.add_argument("--chunk", type=int, default=4096)
    p.add_argument("--force-len", action="store_true", help="with --ckpt: force every sketch to max-len points")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    p.add_argument("--enc", type=int, default=256, help="encoder size of the random-weights model")
    p.add_argument("--dec", type=int, default=512, help="decoder size of the random-weights model")
    p.add_argument("--json", type=Path, help="also write the results to this file")
    args = p.parse_args()
    if args.repeats < 1 or args.seq_sketches < 1:
        p.error("--repeats and --seq-sketches must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    from sketchvae.sample import sample, sample_sequential

    sampler = build(args)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    if args.skip_10000:
        sizes = [s for s in sizes if s < 10000]
    kw = dict(temperature=args.temperature, max_len=args.max_len, seed=0)
    dev = str(sampler.device)
    print(f"device {dev}, threads {torch.get_num_threads()}, model dec {sampler.config.dec_rnn_size} "
          f"enc {sampler.config.enc_rnn_size} M {sampler.config.num_mixture}, max_len {args.max_len}, "
          f"{'checkpoint ' + args.ckpt if args.ckpt else 'random weights (forced full length)'}")
    sample(sampler, 2, **kw)  # warm-up
    seq_wall, seq_cpu, batched = [], [], {n: ([], []) for n in sizes}
    seq_pts, pts = 0, {}
    for _ in range(args.repeats):  # interleaved, so that a busy spell of the machine hits both sides
        wall, cpu, seq = timed(lambda: sample_sequential(sampler, args.seq_sketches, **kw), dev)
        seq_wall.append(wall)
        seq_cpu.append(cpu)
        seq_pts = sum(len(s) for s in seq) / args.seq_sketches
        for n in sizes:
            wall, cpu, out = timed(lambda: sample(sampler, n, chunk_size=args.chunk, **kw), dev)
            batched[n][0].append(wall)
            batched[n][1].append(cpu)
            pts[n] = sum(len(s) for s in out) / n
    med = statistics.median
    seq_rate, seq_cpu_rate = args.seq_sketches / med(seq_wall), args.seq_sketches / med(seq_cpu)
    print(f"one-at-a-time: {args.seq_sketches} sketches in {med(seq_wall):.2f} s (CPU {med(seq_cpu):.2f} s) -> "
          f"{seq_rate:.2f} sketches/s ({seq_pts:.0f} points/sketch); median of {args.repeats}: "
          f"{' '.join(f'{w:.2f}' for w in seq_wall)} s")
    print(f"{'n':>7} {'seconds':>9} {'CPU s':>8} {'sketches/s':>11} {'points/sketch':>14} {'x one-at-a-time':>16} "
          f"{'x (CPU time)':>13}  ratios of each repeat (wall)")
    rows = []
    for n in sizes:
        walls, cpus = batched[n]
        rate, ratio, cpu_ratio = n / med(walls), (n / med(walls)) / seq_rate, (n / med(cpus)) / seq_cpu_rate
        each = " ".join(f"{(n / w) / (args.seq_sketches / s):.1f}" for w, s in zip(walls, seq_wall))
        print(f"{n:>7} {med(walls):>9.2f} {med(cpus):>8.2f} {rate:>11.1f} {pts[n]:>14.0f} {ratio:>16.1f} "
              f"{cpu_ratio:>13.1f}  {each}")
        rows.append({"n": n, "seconds": med(walls), "cpu_seconds": med(cpus), "sketches_per_s": rate,
                     "points_per_sketch": pts[n], "over_one_at_a_time": ratio, "over_one_at_a_time_cpu": cpu_ratio,
                     "seconds_each": walls})
    if args.json:
        args.json.write_text(json.dumps({
            "device": dev, "gpu": torch.cuda.get_device_name() if dev.startswith("cuda") else None,
            "threads": torch.get_num_threads(), "torch": torch.__version__, "checkpoint": args.ckpt,
            "dec_rnn_size": sampler.config.dec_rnn_size, "max_len": args.max_len,
            "one_at_a_time_sketches_per_s": seq_rate, "repeats": args.repeats, "batched": rows}, indent=1))


if __name__ == "__main__":
    main()
