#!/usr/bin/env python
"""Compare Sketch-RNN training recipes on aaron_sheep at an equal CPU budget, scored by `sketchvae score`.

Each recipe is the recipe of the shipped `sheep.pt` (recipe v2: `scripts/train_checkpoints.sh sheep`) with ONE
choice changed (the table `RECIPES` below).  Every recipe trains for the same wall-clock budget (`--minutes`, passed
to `sketchvae train --max-minutes`), on one torch thread, in its own run folder OUT/NAME (default
runs/recipes/NAME), up to `--parallel` runs at once.  A run folder that exists is resumed (`sketchvae train
--resume`) for the budget it has not used yet, so a long comparison can be stopped and continued across
sessions, or extended by raising `--minutes`: the budget is the total over all legs, recorded in
OUT/NAME/recipe.json (each leg's wall seconds, CPU seconds of the training process, steps).  Stopping the
script (Ctrl-C, SIGTERM) stops the training runs, which save last.pt; the legs are recorded.

Then the best.pt of each recipe (and the shipped `sheep.pt`, for reference) is scored with
`sketchvae.evaluation.score`: test split, temperature 0.4, seeds 0 and 1 (`--seeds`), m = 300 test sheep.
Per recipe: steps reached, CPU seconds, best validation loss / recon / kl, model vs real (mean of the seeds
+- their standard deviation), the fraction of samples that end by themselves; the real-vs-real control of
each seed is printed once (it is the same drawings and networks for every model).  Written to
OUT/results.md (a markdown table) and OUT/results.json; scores are kept in OUT/NAME/score_seedS.json and
computed again only when best.pt changed.

    python scripts/compare_recipes.py --dry-run                          # what it would run
    python scripts/compare_recipes.py v2 lr1e-3 --minutes 28 --parallel 2
    python scripts/compare_recipes.py --minutes 45 --parallel 2          # all recipes; continues the above
    python scripts/compare_recipes.py --list

Run it from the repository root with the package importable (`pip install -e .`, or PYTHONPATH=.).
Data: ../shared/data/sketchrnn_datasets/aaron_sheep.npz, or $SKETCHRNN_DATA/aaron_sheep.npz, or --data.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import math
import os
import shlex
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# The recipe of the shipped sheep.pt, recipe v2 (scripts/train_checkpoints.sh: COMMON plus the sheep run's
# --lr 3e-3), without its --steps (the budget is time here) and the options every run gets (RUN_OPTIONS).
V1 = {"--enc-rnn-size": "128", "--dec-rnn-size": "256", "--z-size": "128", "--kl-decay-rate": "0.9995",
      "--recurrent-dropout": "0", "--eval-every": "250", "--seed": "0"}
BASE = {**V1, "--lr": "3e-3"}

# name -> (the one choice it changes, the options that change it).  Steps in 25 minutes on aaron_sheep
# against `v2`'s 2533 (README, "CPU recipe"): layer_norm 0.11x, large 0.37x, recurrent dropout 0.81x,
# small 2.5x, batch 32 3.5x (each step a third the size).
RECIPES = {
    "v2": ("the recipe of sheep.pt (v2)", {}),
    "layer_norm": ("cell: layer-norm LSTM instead of nn.LSTM", {"--cell": "layer_norm"}),
    "small": ("size: encoder 64, decoder 128 (v2: 128 / 256)", {"--enc-rnn-size": "64", "--dec-rnn-size": "128"}),
    "large": ("size: encoder 256, decoder 512 (the paper's)", {"--enc-rnn-size": "256", "--dec-rnn-size": "512"}),
    "lr1e-3": ("learning rate 1e-3 (recipe v1; v2: 3e-3)", {"--lr": "1e-3"}),
    "batch32": ("batch 32 (v2: 100)", {"--batch-size": "32"}),
    "dropout": ("recurrent dropout 0.1 (magenta's; v2: 0)", {"--recurrent-dropout": "0.1"}),
    "z32": ("z size 32 (v2: 128)", {"--z-size": "32"}),
    "kl1": ("KL weight 1.0 (v2: 0.5)", {"--kl-weight": "1.0"}),
}

# Every run: the time budget decides, not a step count (the schedules depend on the step only).
RUN_OPTIONS = ["--steps", "1000000", "--threads", "1", "--device", "cpu", "--save-minutes", "2", "--no-progress"]
SCORE_SEEDS = (0, 1)
LEDGER = "recipe.json"
MIN_LEG_MINUTES = 0.25  # a budget left below this is counted as spent (a leg costs ~10 s to start and validate)


# ------------------------------------------------------------------------------------------ commands
def recipe_options(name: str) -> list[str]:
    """The `sketchvae train` options of a recipe: the v2 ones with the recipe's choice applied."""
    _, change = RECIPES[name]
    merged = {**BASE, **change}
    return [x for flag, value in merged.items() for x in (flag, value)]


def train_command(name: str, run: Path, data: Path, minutes: float, resume: bool, extra: list[str],
                  steps: int | None) -> list[str]:
    cmd = [sys.executable, "-m", "sketchvae", "train"]
    if resume:  # the run keeps its own options and data; only the budget and the resumable extras are given
        cmd += ["-o", str(run), "--resume"]
    else:
        cmd += [str(data), "-o", str(run), *recipe_options(name)]
    opts = list(RUN_OPTIONS)
    if steps is not None:
        opts[opts.index("--steps") + 1] = str(steps)
    return cmd + opts + ["--max-minutes", f"{minutes:.3f}", *extra]


def read_ledger(run: Path) -> dict:
    path = run / LEDGER
    if not path.exists():
        return {"legs": []}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise SystemExit(f"{path}: not valid JSON ({err}); fix or remove it") from None


def write_ledger(run: Path, ledger: dict) -> None:
    from sketchvae.runtime import atomic_write

    atomic_write(run / LEDGER, lambda tmp: Path(tmp).write_text(json.dumps(ledger, indent=1) + "\n"))


def used_minutes(ledger: dict) -> float:
    return sum(leg["wall_s"] for leg in ledger["legs"]) / 60.0


def plan(names: list[str], out: Path, data: Path, budget: float, extra: list[str], steps: int | None) -> list[dict]:
    """For each recipe: the command of its next leg, or None when its budget is spent."""
    jobs = []
    for name in names:
        run = out / name
        ledger = read_ledger(run)
        if ledger.get("options") not in (None, recipe_options(name)):
            raise SystemExit(f"{run / LEDGER}: the run was trained with {ledger['options']}, but the recipe "
                             f"{name!r} is now {recipe_options(name)}; use another --out or remove the run")
        left = budget - used_minutes(ledger)
        resume = (run / "last.pt").exists()
        cmd = train_command(name, run, data, left, resume, extra, steps) if left >= MIN_LEG_MINUTES else None
        jobs.append({"name": name, "run": run, "left": left, "resume": resume, "cmd": cmd})
    return jobs


# ------------------------------------------------------------------------------------------ training
class Runner:
    """Runs the training legs, up to `parallel` at once, each one process on one thread."""

    def __init__(self, parallel: int, log=print):
        self.parallel, self.log = parallel, log
        self.procs: dict[int, subprocess.Popen] = {}
        self.lock = threading.Lock()
        self.stopping = False

    def stop(self, signum, frame) -> None:
        self.stopping = True
        with self.lock:  # training saves last.pt on SIGTERM and exits (a second signal would stop it at once)
            for pid in self.procs:
                os.kill(pid, signal.SIGTERM)

    def leg(self, job: dict) -> dict:
        run = job["run"]
        run.mkdir(parents=True, exist_ok=True)
        ledger = read_ledger(run)
        steps_before = last_step(run)
        if self.stopping:
            return {"name": job["name"], "skipped": True}
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
               "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        with open(run / "train.log", "a") as logfile:
            logfile.write(f"$ {shlex.join(job['cmd'])}\n")
            logfile.flush()
            t0 = time.time()
            with self.lock:  # own session: a Ctrl-C in the terminal reaches only this script, which passes it on once
                proc = subprocess.Popen(job["cmd"], stdout=logfile, stderr=subprocess.STDOUT, env=env, cwd=REPO,
                                        start_new_session=True)
                self.procs[proc.pid] = proc
            self.log(f"[{job['name']}] {'resumed' if job['resume'] else 'started'} for {job['left']:.2f} min "
                     f"(log: {run / 'train.log'})")
            _, status, usage = os.wait4(proc.pid, 0)  # the child's own CPU time, not the other runs'
            with self.lock:
                del self.procs[proc.pid]
                proc.returncode = os.waitstatus_to_exitcode(status)
        leg = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0)), "wall_s": time.time() - t0,
               "cpu_s": usage.ru_utime + usage.ru_stime, "steps_before": steps_before, "steps_after": last_step(run),
               "returncode": proc.returncode, "command": shlex.join(job["cmd"])}
        ledger.setdefault("recipe", job["name"])
        ledger.setdefault("change", RECIPES[job["name"]][0])
        ledger.setdefault("options", recipe_options(job["name"]))
        ledger["legs"].append(leg)
        write_ledger(run, ledger)
        self.log(f"[{job['name']}] leg ended (exit {proc.returncode}): steps {steps_before} -> {leg['steps_after']}, "
                 f"{leg['wall_s']:.0f} s wall, {leg['cpu_s']:.0f} s CPU")
        return leg

    def run(self, jobs: list[dict]) -> None:
        todo = [j for j in jobs if j["cmd"] is not None]
        if not todo:
            return
        old = {s: signal.signal(s, self.stop) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            with concurrent.futures.ThreadPoolExecutor(self.parallel) as pool:
                for fut in [pool.submit(self.leg, j) for j in todo]:
                    fut.result()
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)
        if self.stopping:
            raise SystemExit("stopped: the runs saved last.pt; run the same command again to continue")


# ------------------------------------------------------------------------------------------ results
def last_step(run: Path) -> int:
    """The step last.pt holds (where a resumed run goes on), 0 without one."""
    from sketchvae.run import RunFolder

    return RunFolder(run, writer=False).checkpoint_step() or 0


def best_valid(run: Path) -> dict | None:
    from sketchvae.run import RunFolder

    valid = [r for r in RunFolder(run, writer=False).metrics() if r.get("split") == "valid"]
    return min(valid, key=lambda r: r["loss"]) if valid else None


def score_checkpoint(ckpt: Path, cache: Path, seed: int, n: int, folds: int, epochs: int, keep: Path | None) -> dict:
    """`sketchvae.evaluation.score` of ckpt (test split, tau 0.4), kept in `keep` and reused while ckpt is
    unchanged (same size and modification time)."""
    from sketchvae.evaluation import ScoreConfig, score
    from sketchvae.sample import load

    stamp = [ckpt.stat().st_size, ckpt.stat().st_mtime_ns, n, folds, epochs]
    if keep is not None and keep.exists():
        kept = json.loads(keep.read_text())
        if kept.get("stamp") == stamp:
            return kept["result"]
    result = score(load(ckpt), cache, "test", ScoreConfig(n=n, temperature=0.4, folds=folds, epochs=epochs, seed=seed))
    if keep is not None:
        from sketchvae.runtime import atomic_write

        atomic_write(keep, lambda tmp: Path(tmp).write_text(json.dumps({"stamp": stamp, "result": result}) + "\n"))
    return result


def summarise(name: str, change: str, scores: dict[int, dict], ledger: dict | None, run: Path | None) -> dict:
    entries = {seed: r["classes"][0] for seed, r in scores.items()}
    first = entries[min(entries)]
    acc = [e["c2st"]["accuracy"] for e in entries.values()]
    row = {"recipe": name, "change": change,
           "c2st": acc, "c2st_mean": statistics.fmean(acc), "c2st_sd": statistics.stdev(acc) if len(acc) > 1 else 0.0,
           "ended": statistics.fmean(e["stats"]["model"]["ended"] for e in entries.values()),
           "points": statistics.fmean(e["stats"]["model"]["points"] for e in entries.values()),
           "strokes": statistics.fmean(e["stats"]["model"]["strokes"] for e in entries.values()),
           "real": {k: first["stats"]["real"][k] for k in ("points", "strokes")},  # the same test drawings every seed
           "m": first["m"], "seeds": sorted(scores)}
    if ledger is not None:
        row.update(minutes=used_minutes(ledger), cpu_s=sum(leg["cpu_s"] for leg in ledger["legs"]),
                   legs=len(ledger["legs"]), steps=last_step(run), best_valid=best_valid(run))
    return row


def markdown(rows: list[dict], controls: dict[int, float], budget: float, seeds: list[int]) -> str:
    lines = [f"Budget {budget:g} minutes per recipe (wall clock, one thread); test split, tau 0.4, seeds "
             f"{', '.join(map(str, seeds))}; model vs real: mean +- standard deviation over the seeds.", "",
             "| recipe | change | steps | minutes | CPU s | best valid loss (recon / kl), step | model vs real "
             "| ended | points | strokes |",
             "|---|---|---:|---:|---:|---|---:|---:|---:|---:|"]
    for r in rows:
        bv = r.get("best_valid")
        valid = f"{bv['loss']:.4f} ({bv['recon']:.4f} / {bv['kl']:.4f}), {bv['step']}" if bv else ""
        steps = r.get("steps", "")
        minutes = f"{r['minutes']:.1f}" if "minutes" in r else ""
        cpu = f"{r['cpu_s']:.0f}" if "cpu_s" in r else ""
        each = ", ".join(f"{a:.3f}" for a in r["c2st"])
        lines.append(f"| `{r['recipe']}` | {r['change']} | {steps} | {minutes} | {cpu} | {valid} "
                     f"| {r['c2st_mean']:.3f} +- {r['c2st_sd']:.3f} ({each}) | {100 * r['ended']:.0f} % "
                     f"| {r['points']:.0f} | {r['strokes']:.1f} |")
    lines += ["", "real vs real (control): " + ", ".join(f"seed {s}: {a:.3f}" for s, a in controls.items())]
    if rows:
        real = rows[0]["real"]
        lines += ["", f"the real drawings (test split): {real['points']:.0f} points, {real['strokes']:.1f} strokes"]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------ main
def _default_data() -> Path:
    root = os.environ.get("SKETCHRNN_DATA") or str(REPO.parent / "shared" / "data" / "sketchrnn_datasets")
    return Path(root) / "aaron_sheep.npz"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Recipes (each changes ONE choice of `v2`):\n"
               + "\n".join(f"  {n:<11} {c}" for n, (c, _) in RECIPES.items())
               + "\n\nExamples:\n  python scripts/compare_recipes.py --dry-run\n"
                 "  nohup python scripts/compare_recipes.py v2 lr1e-3 --minutes 28 --parallel 2 "
                 "> runs/recipes.log 2>&1 &\n"
                 "  python scripts/compare_recipes.py --minutes 45 --parallel 2   # all recipes, continuing the runs")
    p.add_argument("recipes", nargs="*", metavar="RECIPE", help="recipes to train and score (default: all)")
    p.add_argument("--minutes", type=float, default=30.0,
                   help="training budget per recipe, wall-clock minutes in total over all legs (default 30)")
    p.add_argument("--parallel", type=int, default=1, help="training runs at once, one thread each (<= cores)")
    p.add_argument("--out", type=Path, default=REPO / "runs" / "recipes", help="folder of the run folders")
    p.add_argument("--data", type=Path, default=None, help="aaron_sheep.npz (default: the shared data)")
    p.add_argument("--seeds", type=int, nargs="+", default=list(SCORE_SEEDS), help="score seeds (default 0 1)")
    p.add_argument("--reference", default="sheep",
                   help="checkpoint scored beside the recipes (default: the shipped sheep.pt; 'none': no reference)")
    p.add_argument("--no-train", action="store_true", help="only score what the run folders hold")
    p.add_argument("--no-score", action="store_true", help="only train")
    p.add_argument("--dry-run", action="store_true", help="print the plan and the commands, run nothing")
    p.add_argument("--list", action="store_true", help="list the recipes and their options")
    # for tests and quick checks: the same for every recipe, so the comparison stays equal
    p.add_argument("--steps", type=int, default=None, help="cap the steps of every run (tests)")
    p.add_argument("--extra", default="", help="more `sketchvae train` options for every run, one string (tests)")
    p.add_argument("--score-n", type=int, default=1000, help="samples per score (m = min(N, 300 test sheep))")
    p.add_argument("--score-folds", type=int, default=5, help=argparse.SUPPRESS)
    p.add_argument("--score-epochs", type=int, default=10, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    unknown = [r for r in args.recipes if r not in RECIPES]
    if unknown:
        p.error(f"unknown recipe(s) {', '.join(unknown)}; choose from {', '.join(RECIPES)}")
    cores = os.cpu_count() or 1
    if not 1 <= args.parallel <= cores:
        p.error(f"--parallel {args.parallel}: must be between 1 and the {cores} cores of this machine")
    if not args.minutes > 0 or not math.isfinite(args.minutes):
        p.error(f"--minutes {args.minutes}: must be a number > 0")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    names = args.recipes or list(RECIPES)
    if args.list:
        for name in RECIPES:
            print(f"{name:<11} {RECIPES[name][0]}\n            {shlex.join(recipe_options(name))}")
        return 0
    data = args.data or _default_data()
    out = args.out.resolve()
    if not data.exists() and not args.dry_run:
        raise SystemExit(f"{data}: not found; pass --data PATH/aaron_sheep.npz or set SKETCHRNN_DATA")
    cache = out / "data.h5"
    jobs = plan(names, out, cache, args.minutes, shlex.split(args.extra), args.steps)
    print(f"{len(names)} recipe(s), {args.minutes:g} min each, {args.parallel} at once, run folders in {out}")
    for j in jobs:
        state = "spent" if j["cmd"] is None else f"{j['left']:.2f} min to go"
        print(f"  {j['name']:<11} {RECIPES[j['name']][0]} [{'resume' if j['resume'] else 'new'}, {state}]")
        if j["cmd"] is not None and not args.no_train:
            print(f"    {shlex.join(j['cmd'])}")
    if not args.no_score:
        print(f"  then score best.pt of each{'' if args.reference == 'none' else ' and ' + args.reference} on "
              f"the test split, tau 0.4, seeds {' '.join(map(str, args.seeds))}")
    if args.dry_run:
        return 0

    sys.path.insert(0, str(REPO))
    import torch

    from sketchvae.train import prepare_data

    torch.set_num_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    prepare_data([str(data)], out, keep_existing=True)  # out/data.h5, shared by every run and the scores
    if not args.no_train:
        Runner(args.parallel).run(jobs)
    if args.no_score:
        return 0

    rows, controls, raw = [], {}, {}
    targets = [(n, out / n / "best.pt", out / n) for n in names]
    if args.reference != "none":
        from sketchvae.checkpoint import resolve_checkpoint

        targets.append((args.reference, resolve_checkpoint(args.reference), None))
    for name, ckpt, run in targets:
        if not ckpt.exists():
            print(f"  {name}: no {ckpt} yet, not scored")
            continue
        scores = {}
        for seed in args.seeds:
            keep = None if run is None else run / f"score_seed{seed}.json"
            scores[seed] = score_checkpoint(ckpt, cache, seed, args.score_n, args.score_folds, args.score_epochs, keep)
            controls[seed] = scores[seed]["classes"][0]["control"]["accuracy"]
        change = RECIPES[name][0] if run is not None else f"reference: {ckpt.name} as shipped"
        rows.append(summarise(name, change, scores, read_ledger(run) if run else None, run))
        raw[name] = scores
        print(f"  scored {name}: model vs real {rows[-1]['c2st_mean']:.3f} +- {rows[-1]['c2st_sd']:.3f}, "
              f"ended {100 * rows[-1]['ended']:.0f} %")
    table = markdown(rows, controls, args.minutes, args.seeds)
    (out / "results.md").write_text(table)
    (out / "results.json").write_text(json.dumps({"minutes": args.minutes, "seeds": args.seeds, "rows": rows,
                                                  "controls": controls, "scores": raw}, indent=1) + "\n")
    print()
    print(table)
    print(f"written: {out / 'results.md'}, {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
