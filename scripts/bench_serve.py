"""Latency of `sketchvae serve` with 1, 4 and 16 concurrent clients, dynamic batching on and off.

    python scripts/bench_serve.py                              # shipped checkpoints/sheep.pt, CPU
    python scripts/bench_serve.py --ckpt runs/sheep/best.pt --requests 64 --clients 1,4,8,16

Each client asks for 6 endings of a 3-stroke drawing (POST /api/complete).  For each mode (batching
on with `--batch-window-ms`, then off with 0) the script starts the real server (`python -m sketchvae
serve CKPT --port 0 ...`, uvicorn on 127.0.0.1) in a subprocess and sends the requests from
`clients` threads at once, each waiting for its answer before sending the next (closed loop),
`--requests` in all per setting (at least 3 per client) or until `--max-seconds` have passed.
Each request has its own seed, so the endings (and their lengths) vary as on the page.  Reports p50
and p95 latency, throughput in endings per second, the answers that were not 200 (5xx, timeouts),
p50 over the 1-client p50 of the same mode, and the machine's load average before and after.

Baseline, measured in the same run: the same calls made directly in this process
(`ServedModel.complete`, one torch thread, no HTTP, no JSON), one at a time.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

# a 3-stroke drawing in page pixels (the back of a sheep, a head, an ear), as the page sends it
BACK = [(40 + 12 * k, 250 - 90 * (1 - ((k - 12) / 12) ** 2)) for k in range(25)]  # an arch
HEAD = [(70 + 30 * c, 230 + 26 * s) for c, s in ((1, 0), (0.7, 0.7), (0, 1), (-0.7, 0.7), (-1, 0), (-0.7, -0.7),
                                                 (0, -1), (0.7, -0.7), (1, 0))]
EAR = [(60, 205), (45, 190), (52, 212)]


def drawing() -> list[list[float]]:
    rows, px, py = [], 0.0, 0.0
    for stroke in (BACK, HEAD, EAR):
        for i, (x, y) in enumerate(stroke):
            rows.append([round(x - px, 2), round(y - py, 2), int(i == len(stroke) - 1)])
            px, py = x, y
    return rows


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    k = (len(xs) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def start_server(ckpt: str, device: str, extra: list[str]) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "sketchvae", "serve", ckpt, "--port", "0", "--device", device,
                             *extra], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    m = re.search(r"open (http://\S+/)", line)
    if not m:
        proc.kill()
        raise SystemExit(f"the server did not start: {line!r}")
    return proc, m.group(1)


def run_clients(url: str, body: dict, clients: int, requests: int,
                max_seconds: float) -> tuple[list[float], list[str], float]:
    """(latencies of the 200 answers, descriptions of the others, wall time)."""
    import httpx

    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    issued = [0]
    deadline = time.monotonic() + max_seconds

    def client():
        with httpx.Client(base_url=url, timeout=120) as http:
            while True:
                with lock:
                    if issued[0] >= requests or time.monotonic() > deadline:
                        return
                    issued[0] += 1
                    seed = issued[0]
                t0 = time.perf_counter()
                try:
                    r = http.post("api/complete", json={**body, "seed": seed})
                    outcome = None if r.status_code == 200 else f"{r.status_code} {r.text[:80]}"
                except httpx.HTTPError as err:
                    outcome = f"{type(err).__name__}"
                dt = time.perf_counter() - t0
                with lock:
                    if outcome is None:
                        latencies.append(dt)
                    else:
                        failures.append(outcome)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, failures, time.perf_counter() - t0


def load() -> str:
    return " ".join(f"{v:.1f}" for v in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ckpt", default=None, help="Sketch-RNN checkpoint [default: the shipped sheep.pt]")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--n", type=int, default=6, help="endings per request")
    ap.add_argument("--clients", default="1,4,16", help="concurrent clients, comma-separated settings")
    ap.add_argument("--requests", type=int, default=48, help="requests per setting (at least 3 per client)")
    ap.add_argument("--max-seconds", type=float, default=90.0, help="time limit per setting")
    ap.add_argument("--batch-window-ms", type=float, default=5.0, help="the window of the batching-on server")
    ap.add_argument("--workers", type=int, default=None, help="the servers' --workers [default: theirs]")
    args = ap.parse_args()

    import numpy as np
    import torch

    from sketchvae.checkpoint import shipped_checkpoints_dir
    from sketchvae.runtime import configure_cpu
    from sketchvae.serve import discover

    ckpt = args.ckpt or str(shipped_checkpoints_dir() / "sheep.pt")
    name = Path(ckpt).stem
    body = {"model": name, "strokes": drawing(), "n": args.n, "temperature": 0.4}
    print(f"load average (1, 5, 15 min) at the start: {load()}; {os.cpu_count()} CPUs")

    # baseline: the same work in this process, no HTTP
    torch.set_num_threads(1)
    configure_cpu()
    models, _ = discover([ckpt], device=args.device)
    model = models[name]
    strokes = np.array(body["strokes"], dtype=np.float64)
    model.complete(strokes, args.n, 0.4, seed=0)  # warm-up
    direct = []
    for seed in range(1, min(args.requests, 20) + 1):
        t0 = time.perf_counter()
        model.complete(strokes, args.n, 0.4, seed=seed)
        direct.append(time.perf_counter() - t0)
    base = statistics.median(direct)
    print(f"model {ckpt}, {args.n} endings of a {sum(r[2] for r in body['strokes'])}-stroke drawing "
          f"({len(body['strokes'])} points), temperature 0.4, device {args.device}")
    print(f"direct (no HTTP, 1 at a time): p50 {base * 1000:.0f} ms, p95 {percentile(direct, 0.95) * 1000:.0f} ms "
          f"over {len(direct)} calls")

    modes = [(f"on ({args.batch_window_ms:g} ms)", ["--batch-window-ms", str(args.batch_window_ms)]),
             ("off", ["--batch-window-ms", "0"])]
    table = []
    for label, extra in modes:
        extra += ["--workers", str(args.workers)] if args.workers else []
        proc, url = start_server(ckpt, args.device, extra)
        try:
            run_clients(url, body, 1, 2, 30)  # warm-up
            one = None
            for clients in (int(c) for c in args.clients.split(",")):
                lat, failed, wall = run_clients(url, body, clients, max(args.requests, 3 * clients),
                                                args.max_seconds)
                p50, p95 = (percentile(lat, 0.5), percentile(lat, 0.95)) if lat else (float("nan"),) * 2
                one = p50 if clients == 1 else one
                ratio = f"{p50 / one:.2f}" if one else "-"
                table.append((label, clients, len(lat) + len(failed), p50, p95, len(lat) * args.n / wall,
                              len(failed), ratio, load()))
                print(f"batching {label}, {clients:2d} client{'s' if clients > 1 else ' '}: p50 {p50 * 1000:.0f} ms, "
                      f"p95 {p95 * 1000:.0f} ms over {len(lat)} answers, {len(lat) * args.n / wall:.1f} endings/s, "
                      f"{len(failed)} not 200{': ' + ', '.join(sorted(set(failed))) if failed else ''}; "
                      f"p50 / 1-client p50 = {ratio}; load {load()}", flush=True)
        finally:
            proc.terminate()
            proc.wait(20)
    print("\n| batching | clients | requests | p50 | p95 | endings/s | not 200 | p50 / 1 client's | load after |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, clients, n, p50, p95, eps, failed, ratio, after in table:
        print(f"| {label} | {clients} | {n} | {p50:.2f} s | {p95:.2f} s | {eps:.0f} | {failed} | {ratio} | {after} |")


if __name__ == "__main__":
    main()
