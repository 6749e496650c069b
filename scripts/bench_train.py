#!/usr/bin/env python
"""Training-step speed of Sketch-RNN, as ratios against a bare baseline measured in the same run.

For each data set (real Quick, Draw! drawings and aaron_sheep by default) this times, over the
same batches (length-bucketed, padded to the longest sketch in each batch):

  baseline   a bare model: nn.LSTM bidirectional encoder (5 -> enc), a linear layer to (mu,
             presig), nn.LSTM decoder (5 + z -> dec) and a linear head (dec -> 6M + 3);
             forward and backward only, on batches already in memory
  full       the real training step (`sketchvae.train.Trainer.train_step`): batching from the
             HDF5 cache (normalise, augment, stroke-5 collate), SketchRNN forward, GMM + pen + KL
             loss, backward, gradient norm, clipping, Adam step
  pad250     the full step on the same sketches padded to 250 points (what ports without length
             bucketing pay)
  rdrop      with --recurrent-dropout P: the full step of the same model (same weights) with
             recurrent dropout P in encoder and decoder (`DropoutLSTM`, magenta's default model),
             timed alternately with `full`; `rdrop/full` is its cost against nn.LSTM
  cells      with --cells A B ...: the full step with each cell in encoder and decoder (same sizes,
             same batches, recurrent dropout --cell-dropout, the training default 0.1), timed
             alternately; each cell's step time is printed as a ratio against the first cell's

and prints sketches/second, full / baseline (target <= 1.2), pad250 / full and rdrop / full.  Reference point:
the fastest existing PyTorch port does about 35 sketches/s on 2 CPU cores with denormals flushed
(9 without); targets: >= 2x that on CPU, >= 5x on real Quick, Draw! batches and >= 2x on
aaron_sheep on a GPU.

    python scripts/bench_train.py                      # 2 threads, CPU, default model size
    python scripts/bench_train.py --device cuda --batches 20
    python scripts/bench_train.py --data sheep --batches 3 --no-pad250
    python scripts/bench_train.py --data sheep --recurrent-dropout 0.1 --threads 1 --enc 128 --dec 256
    python scripts/bench_train.py --data quickdraw --cells lstm layer_norm hyper --no-pad250 --threads 1 --cpu-time

Numbers are medians over the timed batches (after warm-up); run it on an otherwise idle machine
and report the spread (printed as min..max).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
def _shared_data() -> Path:
    """$SKETCHVAE_SHARED_DATA, else ../shared/data beside the repository, else shared/data inside it."""
    import os

    if os.environ.get("SKETCHVAE_SHARED_DATA"):
        return Path(os.environ["SKETCHVAE_SHARED_DATA"])
    beside = REPO.parent / "shared" / "data"
    return beside if beside.exists() else REPO / "shared" / "data"


SHARED = _shared_data()
SHEEP = SHARED / "sketchrnn_datasets" / "aaron_sheep.npz"
QUICKDRAW = SHARED / "quickdraw" / "simplified_first25_per_class"
PORT_CPU_SKETCHES_PER_S = 35.0  # fastest existing PyTorch port, 2 CPU cores, denormals flushed
_clock = time.perf_counter  # time.process_time with --cpu-time


class BareBaseline(nn.Module):
    """The least a Sketch-RNN step can cost with plain nn.LSTM: no masking, no mixture loss."""

    def __init__(self, enc: int = 256, dec: int = 512, z: int = 128, num_mixture: int = 20):
        super().__init__()
        self.encoder = nn.LSTM(5, enc, batch_first=True, bidirectional=True)
        self.to_z = nn.Linear(2 * enc, 2 * z)
        self.decoder = nn.LSTM(5 + z, dec, batch_first=True)
        self.head = nn.Linear(dec, 6 * num_mixture + 3)

    def forward(self, strokes: torch.Tensor) -> torch.Tensor:
        steps = strokes.shape[1] - 1
        _, (h, _) = self.encoder(strokes[:, 1:])  # (2, B, enc)
        mu, presig = self.to_z(torch.cat([h[0], h[1]], dim=-1)).chunk(2, dim=-1)
        z = mu + torch.exp(presig / 2) * torch.randn_like(mu)  # (B, z)
        x = torch.cat([strokes[:, :-1], z.unsqueeze(1).expand(-1, steps, -1)], dim=-1)  # (B, T, 5 + z)
        out, _ = self.decoder(x)
        return self.head(out)  # (B, T, 6M + 3)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def prepare_cache(name: str, tmp: Path) -> Path:
    from sketchvae.train import prepare_data

    if name == "sheep":
        if not SHEEP.exists():
            raise SystemExit(f"{SHEEP} not found (the shared data folder is needed)")
        return prepare_data([str(SHEEP)], tmp / "sheep")
    if name == "quickdraw":
        if not QUICKDRAW.exists():
            raise SystemExit(f"{QUICKDRAW} not found (the shared data folder is needed)")
        return prepare_data([str(QUICKDRAW)], tmp / "quickdraw")
    return prepare_data([name], tmp / Path(name).stem)


def time_baseline(baseline: nn.Module, batches: list, device: torch.device, warmup: int) -> list[float]:
    times = []
    for i, batch in enumerate(batches):
        strokes = batch.strokes.to(device)
        _sync(device)
        t0 = _clock()
        baseline.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out = baseline(strokes)
        out.float().square().mean().backward()
        _sync(device)
        if i >= warmup:
            times.append(_clock() - t0)
    return times


def time_full(trainer, loader, n: int, device: torch.device, warmup: int) -> list[float]:
    times = []
    it = iter(loader)
    for i in range(n):
        _sync(device)
        t0 = _clock()
        batch = next(it)  # batching from the cache (gather, normalise, augment, collate) is part of the step
        trainer.train_step(batch)
        _sync(device)
        if i >= warmup:
            times.append(_clock() - t0)
    return times


def bench_dataset(name: str, args, device: torch.device, tmp: Path) -> dict:
    from sketchvae.data.cache import open_cache
    from sketchvae.models.sketch_rnn import SketchRNN, SketchRNNConfig
    from sketchvae.train import TrainConfig, Trainer, make_batches

    cache = open_cache(prepare_cache(name, tmp))
    mcfg = SketchRNNConfig(enc_rnn_size=args.enc, dec_rnn_size=args.dec, z_size=args.z, num_mixture=args.mixture,
                           cell=args.cell, recurrent_dropout=0.0)  # `full`: nn.LSTM; `rdrop`: with dropout
    tcfg = TrainConfig(batch_size=args.batch_size, device=str(device), seed=args.seed)
    augment = {"scale_range": tcfg.augment_scale, "drop_prob": tcfg.augment_drop}
    n = args.warmup + args.batches

    def loader(pad_to=None):
        return make_batches(cache, "train", args.batch_size, mcfg.max_seq_len, scale_factor=float(cache.scale_factor),
                            shuffle=True, seed=args.seed, augment=augment, pad_to=pad_to)

    batches = []
    for batch in loader():  # the first n batches of epoch 0: the same ones every measurement sees
        batches.append(batch)
        if len(batches) == n:
            break
    torch.manual_seed(args.seed)
    baseline = BareBaseline(args.enc, args.dec, args.z, args.mixture).to(device)
    model = SketchRNN(mcfg).to(device)
    trainer = Trainer(model, tcfg, device)
    result = {"data": name, "batch_size": args.batch_size, "batches": args.batches,
              "mean_T": statistics.mean(b.strokes.shape[1] - 1 for b in batches[args.warmup:]),
              "mean_len": statistics.mean(float(b.lengths.float().mean()) for b in batches[args.warmup:])}
    # Alternate the two measurements so load changes on a shared machine hit both alike.
    rdrop_trainer = None
    if args.recurrent_dropout > 0:
        rmodel = SketchRNN(dataclasses.replace(mcfg, recurrent_dropout=args.recurrent_dropout))
        rmodel.load_state_dict(model.state_dict())  # same weights: nn.LSTM and DropoutLSTM share the layout
        rmodel.set_rnn_backend(args.rnn_backend).to(device)
        rdrop_trainer = Trainer(rmodel, tcfg, device)
    cell_trainers = {}
    for cell in args.cells:
        torch.manual_seed(args.seed)
        cmodel = SketchRNN(dataclasses.replace(mcfg, cell=cell, recurrent_dropout=args.cell_dropout))
        cell_trainers[cell] = Trainer(cmodel.set_rnn_backend(args.rnn_backend).to(device), tcfg, device)
    base_t, full_t, rdrop_t = [], [], []
    cell_t = {cell: [] for cell in args.cells}
    for _ in range(args.repeats):
        base_t += time_baseline(baseline, batches, device, args.warmup)
        full_t += time_full(trainer, loader(), n, device, args.warmup)
        if rdrop_trainer is not None:
            rdrop_t += time_full(rdrop_trainer, loader(), n, device, args.warmup)
        for cell, cell_trainer in cell_trainers.items():
            cell_t[cell] += time_full(cell_trainer, loader(), n, device, args.warmup)
    if cell_t:
        result["cell_dropout"] = args.cell_dropout
        result["cells"] = {cell: _summ(t, args.batch_size) for cell, t in cell_t.items()}
        first = result["cells"][args.cells[0]]["median_s"]
        result["cell_over_first"] = {cell: r["median_s"] / first for cell, r in result["cells"].items()}
    result["baseline"] = _summ(base_t, args.batch_size)
    result["full"] = _summ(full_t, args.batch_size)
    result["full_over_baseline"] = result["full"]["median_s"] / result["baseline"]["median_s"]
    if rdrop_t:
        result["recurrent_dropout"] = args.recurrent_dropout
        result["rdrop"] = _summ(rdrop_t, args.batch_size)
        result["rdrop_over_full"] = result["rdrop"]["median_s"] / result["full"]["median_s"]
    if args.pad250:
        pad_t = time_full(trainer, loader(pad_to=mcfg.max_seq_len), n, device, args.warmup)
        result["pad250"] = _summ(pad_t, args.batch_size)
        result["pad250_over_full"] = result["pad250"]["median_s"] / result["full"]["median_s"]
    if device.type == "cpu":
        result["full_over_port"] = result["full"]["sketches_per_s"] / PORT_CPU_SKETCHES_PER_S
    return result


def _summ(times: list[float], batch_size: int) -> dict:
    med = statistics.median(times)
    return {"median_s": med, "min_s": min(times), "max_s": max(times), "sketches_per_s": batch_size / med}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", nargs="+", default=["quickdraw", "sheep"],
                   help="quickdraw (real simplified drawings, 344 classes), sheep (aaron_sheep.npz) or a path")
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    p.add_argument("--threads", type=int, default=2, help="torch threads on CPU (default 2)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--batches", type=int, default=4, help="timed batches per measurement")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=1, help="alternate baseline / full this many times")
    p.add_argument("--enc", type=int, default=256)
    p.add_argument("--dec", type=int, default=512)
    p.add_argument("--z", type=int, default=128)
    p.add_argument("--mixture", type=int, default=20)
    p.add_argument("--cell", default="lstm", choices=["lstm", "layer_norm", "hyper"])
    p.add_argument("--cells", nargs="+", default=[], choices=["lstm", "layer_norm", "hyper"],
                   help="also time the full step with each of these cells; ratios against the first")
    p.add_argument("--cell-dropout", type=float, default=0.1, help="recurrent dropout of the --cells models")
    p.add_argument("--recurrent-dropout", type=float, default=0.0,
                   help="also time the full step with this recurrent dropout (ratio against the same step without)")
    p.add_argument("--rnn-backend", default="script", choices=["script", "eager", "compile"],
                   help="how the recurrent-dropout LSTM and the layer-norm / hyper cells run "
                        "(see sketchvae/models/layers.py)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-pad250", dest="pad250", action="store_false")
    p.add_argument("--no-flush-denormal", dest="flush", action="store_false",
                   help="leave denormals on (to see what flushing buys)")
    p.add_argument("--cpu-time", action="store_true",
                   help="time with this process's CPU time instead of the wall clock: on a shared, loaded CPU "
                        "machine with --threads 1 that is the step's own cost (not for --device cuda)")
    p.add_argument("--json", type=Path, help="also write the results to this file")
    args = p.parse_args(argv)
    global _clock
    _clock = time.process_time if args.cpu_time else time.perf_counter

    from sketchvae import runtime

    device = runtime.resolve_device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
        if args.flush:
            runtime.configure_cpu()
    print(f"device {device}, threads {torch.get_num_threads()}, flush denormals {args.flush}, "
          f"clock {'process CPU time' if args.cpu_time else 'wall'}, "
          f"torch {torch.__version__}, model enc {args.enc} dec {args.dec} z {args.z} M {args.mixture}, "
          f"batch {args.batch_size}", flush=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.data:
            r = bench_dataset(name, args, device, Path(tmp))
            results.append(r)
            line = (f"{r['data']:>10}: mean len {r['mean_len']:5.1f} padded {r['mean_T']:5.1f} | baseline {r['baseline']['sketches_per_s']:7.1f}/s "
                    f"| full {r['full']['sketches_per_s']:7.1f}/s ({r['full']['min_s']:.3f}..{r['full']['max_s']:.3f} s) "
                    f"| full/baseline {r['full_over_baseline']:.2f}x")
            if "pad250" in r:
                line += f" | pad250 {r['pad250']['sketches_per_s']:6.1f}/s = {r['pad250_over_full']:.1f}x slower"
            if "rdrop" in r:
                line += (f" | rdrop {r['recurrent_dropout']:g} {r['rdrop']['sketches_per_s']:7.1f}/s = "
                         f"{r['rdrop_over_full']:.2f}x the nn.LSTM step")
            if "cells" in r:
                line += f" | cells (recurrent dropout {r['cell_dropout']:g}): " + ", ".join(
                    f"{cell} {c['sketches_per_s']:.1f}/s = {r['cell_over_first'][cell]:.2f}x"
                    for cell, c in r["cells"].items())
            if "full_over_port" in r:
                line += f" | {r['full_over_port']:.1f}x the port's {PORT_CPU_SKETCHES_PER_S:.0f}/s"
            print(line, flush=True)
    if args.json:
        args.json.write_text(json.dumps({"device": str(device), "threads": torch.get_num_threads(),
                                         "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                                         "torch": torch.__version__, "batch_size": args.batch_size,
                                         "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
