"""Latency of `sketchvae serve`: 6 endings for a 3-stroke drawing, with 1 and with 4 concurrent clients.

    python scripts/bench_serve.py                              # shipped checkpoints/sheep.pt, CPU
    python scripts/bench_serve.py --ckpt runs/sheep/best.pt --requests 40 --clients 1,4,8

Starts the real server (`python -m sketchvae serve CKPT --port 0`, uvicorn on 127.0.0.1) in a
subprocess and sends POST /api/complete requests from `clients` threads at once, each waiting for
its answer before sending the next (closed loop), `--requests` in all per setting or until
`--max-seconds` have passed.  Each request has its own seed, so the endings (and their lengths)
vary as they do on the page.  Reports p50, p95 and mean latency and requests per second.

Baseline, measured in the same run: the same calls made directly in this process
(`ServedModel.complete`, one torch thread, no HTTP, no JSON), one at a time; ratios are the served
p50 over the direct p50 (what the web stack and the waiting for a free worker add).
"""

from __future__ import annotations

import argparse
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


def start_server(ckpt: str, device: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "sketchvae", "serve", ckpt, "--port", "0", "--device", device],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    m = re.search(r"open (http://\S+/)", line)
    if not m:
        proc.kill()
        raise SystemExit(f"the server did not start: {line!r}")
    return proc, m.group(1)


def run_clients(url: str, body: dict, clients: int, requests: int, max_seconds: float) -> tuple[list[float], float]:
    import httpx

    latencies: list[float] = []
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
                r = http.post("api/complete", json={**body, "seed": seed})
                dt = time.perf_counter() - t0
                if r.status_code != 200:
                    raise SystemExit(f"request failed: {r.status_code} {r.text}")
                with lock:
                    latencies.append(dt)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ckpt", default=None, help="Sketch-RNN checkpoint [default: the shipped sheep.pt]")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--n", type=int, default=6, help="endings per request")
    ap.add_argument("--clients", default="1,4", help="concurrent clients, comma-separated settings")
    ap.add_argument("--requests", type=int, default=30, help="requests per setting")
    ap.add_argument("--max-seconds", type=float, default=60.0, help="time limit per setting")
    args = ap.parse_args()

    import numpy as np
    import torch

    from sketchvae.checkpoint import shipped_checkpoints_dir
    from sketchvae.runtime import configure_cpu
    from sketchvae.serve import discover

    ckpt = args.ckpt or str(shipped_checkpoints_dir() / "sheep.pt")
    name = Path(ckpt).stem
    body = {"model": name, "strokes": drawing(), "n": args.n, "temperature": 0.4}

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

    proc, url = start_server(ckpt, args.device)
    try:
        run_clients(url, body, 1, 2, 30)  # warm-up
        for clients in (int(c) for c in args.clients.split(",")):
            lat, wall = run_clients(url, body, clients, args.requests, args.max_seconds)
            p50, p95 = percentile(lat, 0.5), percentile(lat, 0.95)
            print(f"served, {clients} client{'s' if clients > 1 else ' '}: p50 {p50 * 1000:.0f} ms, "
                  f"p95 {p95 * 1000:.0f} ms, mean {statistics.mean(lat) * 1000:.0f} ms over {len(lat)} requests, "
                  f"{len(lat) / wall:.1f} requests/s; p50 / direct p50 = {p50 / base:.2f}")
    finally:
        proc.terminate()
        proc.wait(20)


if __name__ == "__main__":
    main()
