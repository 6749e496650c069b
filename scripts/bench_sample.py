"""Sketches per second: batched sampling (`sketchvae.sample.sample`) vs one sketch at a time.

    python scripts/bench_sample.py                          # default model size, random weights, CPU
    python scripts/bench_sample.py --ckpt runs/sheep/best.pt --device cuda
    python scripts/bench_sample.py --sizes 1,100,1000 --seq-sketches 5 --threads 1   # quick, on CPU
    python scripts/bench_sample.py --device cuda --json out/bench_sample.json         # also write the numbers

The baseline is the one-at-a-time loop most ports use (magenta's `sample()` called n times, batch
size 1, `sketchvae.sample.sample_sequential`), measured in the same run on a few sketches and
reported per sketch; ratios are batched sketches/s divided by the baseline's.

Random weights (no --ckpt) rarely draw the end-of-sketch state, so to measure a fixed amount of work
every sketch is forced to run the full `--max-len` steps (default 250): the end state's logit is set
very low.  Sketches/s is then "sketches of max-len points per second", a lower bound for a trained
model whose sketches end earlier (and whose finished sketches leave the batch).  With --ckpt the
model samples normally (add --force-len to force full length there too).
"""

from __future__ import annotations

import argparse
import json
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


def timed(fn, device: str) -> tuple[float, object]:
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", default=None, help="checkpoint to sample from (default: random weights, enc 256 / dec 512)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--sizes", default="1,100,1000,10000", help="comma-separated n to time batched")
    p.add_argument("--skip-10000", action="store_true", help="leave n=10000 out (slow on CPU)")
    p.add_argument("--max-len", type=int, default=250)
    p.add_argument("--seq-sketches", type=int, default=5, help="sketches for the one-at-a-time baseline")
    p.add_argument("--temperature", type=float, default=0.4)
    p.add_argument("--chunk", type=int, default=4096)
    p.add_argument("--force-len", action="store_true", help="with --ckpt: force every sketch to max-len points")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    p.add_argument("--enc", type=int, default=256, help="encoder size of the random-weights model")
    p.add_argument("--dec", type=int, default=512, help="decoder size of the random-weights model")
    p.add_argument("--json", type=Path, help="also write the results to this file")
    args = p.parse_args()
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
    secs, seq = timed(lambda: sample_sequential(sampler, args.seq_sketches, **kw), dev)
    seq_rate = args.seq_sketches / secs
    seq_pts = sum(len(s) for s in seq)
    print(f"one-at-a-time: {args.seq_sketches} sketches in {secs:.2f} s -> {seq_rate:.2f} sketches/s "
          f"({seq_pts / args.seq_sketches:.0f} points/sketch)")
    print(f"{'n':>7} {'seconds':>9} {'sketches/s':>11} {'points/sketch':>14} {'x one-at-a-time':>16}")
    rows = []
    for n in sizes:
        secs, out = timed(lambda: sample(sampler, n, chunk_size=args.chunk, **kw), dev)
        rate = n / secs
        pts = sum(len(s) for s in out) / n
        print(f"{n:>7} {secs:>9.2f} {rate:>11.1f} {pts:>14.0f} {rate / seq_rate:>16.1f}")
        rows.append({"n": n, "seconds": secs, "sketches_per_s": rate, "points_per_sketch": pts,
                     "over_one_at_a_time": rate / seq_rate})
    if args.json:
        args.json.write_text(json.dumps({
            "device": dev, "gpu": torch.cuda.get_device_name() if dev.startswith("cuda") else None,
            "threads": torch.get_num_threads(), "torch": torch.__version__, "checkpoint": args.ckpt,
            "dec_rnn_size": sampler.config.dec_rnn_size, "max_len": args.max_len,
            "one_at_a_time_sketches_per_s": seq_rate, "batched": rows}, indent=1))


if __name__ == "__main__":
    main()
