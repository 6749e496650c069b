#!/usr/bin/env python3
"""A new user's pass over every command, good and bad input, through the installed `sketchvae` entry point.

Runs each command in a subprocess (as a user's shell would: stderr not a terminal) in a scratch
folder and reports any run whose output holds a Python traceback, any good run that failed and any
bad run that succeeded.  Exit status 1 when anything is wrong.

    python scripts/newcomer_pass.py                 # uses ../shared/data beside the checkout when present
    python scripts/newcomer_pass.py --keep /tmp/np  # keep the scratch folder
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keep", type=Path, default=None, help="Scratch folder to use and keep.")
    ap.add_argument("--exe", default=shutil.which("sketchvae") or "sketchvae", help="The sketchvae command.")
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="newcomer-"))
    work.mkdir(parents=True, exist_ok=True)
    sheep = SHARED / "sketchrnn_datasets" / "aaron_sheep.npz"
    mnist = SHARED / "mnist"
    (work / "afile").write_text("a file where a folder should be\n")
    (work / "notes.pt").write_text("not a checkpoint\n")
    (work / "bad.ndjson").write_text('{"word": "cat", "drawing": [[[0, 1], [0, 1]]]}\n{not json\n')
    ro = work / "readonly"
    ro.mkdir(exist_ok=True)
    ro.chmod(0o555)

    good = [
        ["--help"], ["--version"],
        ["sample", "-n", "4", "--seed", "0", "-o", "s.svg"],
        ["sample", "multiclass", "--class", "omniglot", "-n", "2", "--seed", "0", "-o", "o.svg"],
        ["download", "--list"],
        ["mnist", "sample", "mnist_cvae", "-n", "10", "-o", "d.png"],
    ]
    if sheep.exists():
        good += [
            ["prepare", str(sheep), "-o", "sheep.h5"],
            ["info", "sheep.h5"],
            ["reconstruct", "sheep", str(sheep), "--index", "0,1", "--seed", "0", "-o", "r.svg"],
            ["interpolate", "sheep", "sheep.h5", "--from", "0", "--to", "1", "--steps", "4", "-o", "i.svg"],
            ["complete", "sheep", str(sheep), "--index", "2", "-n", "3", "--seed", "0", "-o", "c.svg"],
            ["train", "sheep.h5", "-o", "runs/tiny", "--steps", "2", "--eval-every", "2", "--batch-size", "8",
             "--enc-rnn-size", "16", "--dec-rnn-size", "16", "--z-size", "8", "--eval-batches", "1",
             "--no-test-at-end", "--threads", "1"],
            ["sample", "runs/tiny", "-n", "2", "--max-len", "20", "-o", "t.svg"],
            ["evaluate", "runs/tiny", "sheep.h5", "--max-batches", "1"],
            ["evaluate", "sheep", str(sheep), "--split", "valid", "--max-batches", "1", "--json"],
        ]
    if (mnist / "t10k-images-idx3-ubyte.gz").exists():
        good += [
            ["mnist", "evaluate", "mnist_conv", "--k", "0", "--limit", "200", "--data-dir", str(mnist)],
            ["mnist", "interpolate", "mnist_conv", "--from", "0", "--to", "1", "--data-dir", str(mnist), "-o", "x.png"],
            ["mnist", "train", "-o", "runs/m", "--limit", "1000", "--epochs", "1", "--hidden", "32",
             "--data-dir", str(mnist), "--threads", "1"],
        ]
    bad = [
        ["nosuchcommand"], ["sample", "-n", "0", "-o", "x.svg"], ["sample", "-t", "inf", "-o", "x.svg"],
        ["sample", "-o", "x.png"], ["sample", "-o", "afile/x.svg"],
        ["sample", "-o", "."], ["sample", "notes.pt", "-o", "x.svg"], ["sample", "sheepx", "-o", "x.svg"],
        ["sample", "afile", "-o", "x.svg"], ["sample", ".", "-o", "x.svg"], ["sample", "mnist_conv", "-o", "x.svg"],
        ["sample", "--class", "cat", "-o", "x.svg"], ["sample", "multiclass", "--class", "dog", "-o", "x.svg"],
        ["reconstruct", "sheep", "missing.npz", "-o", "x.svg"], ["reconstruct", "sheep", "notes.pt", "-o", "x.svg"],
        ["reconstruct", "sheep", "bad.ndjson", "--index", "5", "-o", "x.svg"],
        ["reconstruct", "sheep", "afile", "-o", "x.svg"],
        ["interpolate", "sheep", "bad.ndjson", "--from", "0", "--to", "9", "-o", "x.svg"],
        ["complete", "sheep", "bad.ndjson", "--strokes", "9", "-o", "x.svg"],
        ["prepare", "-o", "x.h5"], ["prepare", "notes.pt", "-o", "x.h5"], ["prepare", "bad.ndjson", "-o", "x.h5"],
        ["prepare", "bad.ndjson", "-o", "afile/x.h5"],
        ["prepare", "catt", "-o", "x.h5", "--no-download"], ["prepare", "bad.ndjson", "-o", "x.txt"],
        ["info", "notes.pt"], ["info", "missing.h5"], ["info", "."],
        ["download"], ["download", "catt"], ["download", "cat", "--data-dir", "afile/qd"],
        ["download", "cat", "--data-dir", "qd", "--base-url", "http://127.0.0.1:9", "--retries", "0"],
        ["train", "-o", "runs/x"], ["train", "bad.ndjson", "-o", "runs/bad"], ["train", "missing.h5", "-o", "runs/x"],
        ["train", "notes.pt", "-o", "runs/x"], ["train", "bad.ndjson", "-o", "afile/run"],
        ["train", "-o", "runs/none", "--resume"],
        ["train", "bad.ndjson", "-o", "runs/x", "--steps", "0"], ["train", "bad.ndjson", "-o", "runs/x", "--z-size", "0"],
        ["evaluate", "notes.pt", "bad.ndjson"], ["evaluate", "sheep", "missing.npz"],
        ["evaluate", "sheep", "bad.ndjson", "--split", "bogus"], ["evaluate", "sheep", "bad.ndjson"],
        ["mnist", "download", "--data-dir", "afile/m"],
        ["mnist", "download", "--data-dir", "m", "--base-url", "http://127.0.0.1:9/"],
        ["mnist", "train", "-o", "runs/m0", "--epochs", "0"], ["mnist", "train", "-o", "afile/m"],
        ["mnist", "train", "-o", "runs/m1", "--data-dir", "nothing"], ["mnist", "train", "-o", "runs/m2", "--latent", "0"],
        ["mnist", "train", "-o", "runs/none", "--resume"],
        ["mnist", "evaluate", "notes.pt"], ["mnist", "evaluate", "sheep"], ["mnist", "evaluate", "mnist_conv", "--k", "-1"],
        ["mnist", "sample", "sheep", "-o", "x.png"], ["mnist", "sample", "mnist_conv", "-o", "x.svg"],
        ["mnist", "sample", "mnist_conv", "-o", "afile/x.png"], ["mnist", "sample", "mnist_conv", "--digit", "3", "-o", "x.png"],
        ["mnist", "manifold", "mnist_conv", "-o", "x.png"], ["mnist", "interpolate", "mnist_conv", "--from", "0",
                                                             "--to", "99999", "-o", "x.png", "--data-dir", str(mnist)],
    ]
    if os.geteuid() != 0:  # root may write anywhere: no permission problem to meet
        bad += [["sample", "-o", "readonly/x.svg"], ["prepare", "bad.ndjson", "-o", "readonly/x.h5"],
                ["train", "bad.ndjson", "-o", "readonly/run"], ["download", "cat", "--data-dir", "readonly/qd"],
                ["mnist", "train", "-o", "readonly/m"]]
    if sheep.exists():
        bad += [["prepare", str(sheep), "-o", "sheep.h5", "--max-len", "100"],
                ["train", "sheep.h5", "-o", "runs/tiny"],
                ["interpolate", "sheep", str(sheep), "--from", "0", "--to", "999", "-o", "x.svg"]]

    problems = []
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SKETCHVAE_QUICKDRAW_URL": "http://127.0.0.1:9",
           "SKETCHVAE_MNIST_URL": "http://127.0.0.1:9/"}
    for expect_ok, cases in ((True, good), (False, bad)):
        for case in cases:
            t0 = time.time()
            p = subprocess.run([args.exe, *case], cwd=work, env=env, capture_output=True, text=True, timeout=900)
            out = p.stdout + p.stderr
            tag = "ok " if expect_ok else "bad"
            last = (out.strip().splitlines() or [""])[-1][:150]
            print(f"[{tag}] rc={p.returncode} {time.time() - t0:5.1f}s  sketchvae {' '.join(case)}\n       {last}")
            if "Traceback" in out:
                problems.append(("traceback", case, out))
            elif expect_ok and p.returncode != 0:
                problems.append(("failed", case, out))
            elif not expect_ok and p.returncode == 0:
                problems.append(("accepted bad input", case, out))
    ro.chmod(0o755)
    print(f"\n{len(good)} good and {len(bad)} bad invocations in {work}; {len(problems)} problem(s)")
    for kind, case, out in problems:
        print(f"--- {kind}: sketchvae {' '.join(case)}\n{out}")
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
