#!/usr/bin/env python
"""Score Sketch-RNN checkpoints side by side with `sketchvae score`, over several seeds, as a markdown table.

Each checkpoint is scored against the same data with the same settings (test split, tau 0.4 under one
temperature convention for all, default the paper's, so that a checkpoint's own default convention
cannot make it look better) for each seed; a seed changes the samples, the held-out drawings picked and
the networks of the test, so the spread over seeds is the measurement's noise.  Prints one row per
checkpoint and class: mean +- standard deviation over the seeds of model vs real, real vs real and
(class-conditional models) recognised as asked, then the means of the sample statistics beside the
held-out drawings'.  These are the columns of the README's table of the shipped models.

    python scripts/score_checkpoints.py ../shared/data/sketchrnn_datasets/aaron_sheep.npz \\
        -c old=runs/old/sheep.pt -c new=checkpoints/sheep.pt
    D=../shared/data/sketchrnn_datasets
    python scripts/score_checkpoints.py $D/aaron_sheep.npz $D/omniglot.npz $D/short_kanji.npz \\
        -c multiclass=checkpoints/multiclass.pt --seeds 0 1 2 --json runs/scores/multiclass.json

Each (checkpoint, seed) runs `sketchvae score --json` in its own process with one torch thread, up to
`--parallel` at once; the data are prepared once.  About 20 s per seed for a sheep model, 2.5 minutes for
the three-data-set multiclass model.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def _mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _score(ckpt: str, data: Path, seed: int, convention: str, n: int) -> dict:
    cmd = [sys.executable, "-m", "sketchvae", "score", ckpt, str(data), "--json", "--no-progress", "--threads", "1",
           "--seed", str(seed), "--convention", convention, "-n", str(n)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr.strip()}")
    return json.loads(proc.stdout)


def table(results: dict[str, list[dict]]) -> str:
    """Markdown rows (name, class) from {name: [score result per seed]}."""
    lines = ["| model, class | m | model vs real | real vs real | recognised (held-out) | points: model / real "
             "| strokes | ended | box: model / real |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, per_seed in results.items():
        for k, cls in enumerate(per_seed[0]["classes"]):
            rows = [r["classes"][k] for r in per_seed]
            acc, acc_sd = _mean_sd([c["c2st"]["accuracy"] for c in rows])
            ctl, ctl_sd = _mean_sd([c["control"]["accuracy"] for c in rows])
            recog = ""
            if "recognised" in cls:
                rec, rec_sd = _mean_sd([100 * c["recognised"] for c in rows])
                real = statistics.fmean(100 * c["recognised_real"] for c in rows)
                recog = f"{rec:.0f} +- {rec_sd:.0f} % ({real:.0f} %)"
            model = {key: statistics.fmean(c["stats"]["model"][key] for c in rows)
                     for key in ("points", "strokes", "ended", "width", "height")}
            real = cls["stats"]["real"]
            lines.append(
                f"| `{name}`, {cls['class']} | {cls['m']} | {acc:.3f} +- {acc_sd:.3f} | {ctl:.3f} +- {ctl_sd:.3f} "
                f"| {recog} | {model['points']:.0f} / {real['points']:.0f} | {model['strokes']:.1f} / "
                f"{real['strokes']:.1f} | {100 * model['ended']:.0f} % | {model['width']:.0f} x "
                f"{model['height']:.0f} / {real['width']:.0f} x {real['height']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", nargs="+", help="data files or a prepared .h5, as `sketchvae score`")
    ap.add_argument("-c", "--ckpt", action="append", required=True, metavar="NAME=CKPT", dest="checkpoints",
                    help="a checkpoint to score (a file, run folder or shipped name) and its name in the table; "
                         "repeat for each")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="score seeds (default 0 1 2)")
    ap.add_argument("--convention", default="paper", choices=["paper", "magenta", "magenta-js"],
                    help="temperature convention for every checkpoint (default paper)")
    ap.add_argument("-n", type=int, default=1000, help="samples per class (m = min(N, held-out drawings))")
    ap.add_argument("--parallel", type=int, default=1, help="scores at once, one thread each")
    ap.add_argument("--json", type=Path, help="also write every result here")
    args = ap.parse_args(argv)

    named = []
    for item in args.checkpoints:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            ap.error(f"{item!r}: give NAME=CKPT")
        named.append((name, path))
    if len({n for n, _ in named}) != len(named):
        ap.error("two checkpoints have the same name")

    from sketchvae.train import prepare_data

    with tempfile.TemporaryDirectory(prefix="score-checkpoints-") as tmp:
        cache = prepare_data(list(args.data), tmp)
        data = Path(getattr(cache, "path", cache))
        jobs = [(name, path, seed) for name, path in named for seed in args.seeds]
        with concurrent.futures.ThreadPoolExecutor(max(1, args.parallel)) as pool:
            futures = {job: pool.submit(_score, job[1], data, job[2], args.convention, args.n) for job in jobs}
            results = {name: [futures[(name, path, seed)].result() for seed in args.seeds] for name, path in named}
    print(f"test split, tau 0.4 ({args.convention} convention), seeds {' '.join(map(str, args.seeds))}; "
          f"mean +- standard deviation over the seeds")
    print(table(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
