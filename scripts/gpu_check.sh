#!/usr/bin/env bash
# Check and measure the GPU path in one command (at most ~9 minutes on one CUDA GPU).
#
# Usage (from anywhere; it runs in the repository root):
#   scripts/gpu_check.sh [OUT_DIR]            # on a machine with a CUDA GPU
#   scripts/gpu_check.sh --dry-run [OUT_DIR]  # the same steps on CPU with tiny sizes (seconds)
#
# OUT_DIR (default $GPU_CHECK_OUT, else runs/gpu_check) receives everything:
#   tests.log                 pytest -m gpu tests/test_gpu.py (bf16 autocast step, cuDNN vs CPU,
#                             reproducible CUDA-generator sampling, batched sampling on the device)
#   bench_train_b100.json/.log, bench_train_b512.json/.log
#                             scripts/bench_train.py --device cuda on Quick, Draw! and aaron_sheep
#                             batches, batch 100 and 512, with the recurrent-dropout step (0.1)
#   bench_sample.json/.log    scripts/bench_sample.py --device cuda up to 10,000 samples
#   train/                    a 5-minute default-size training on aaron_sheep (--max-minutes 5):
#                             best.pt, last.pt, metrics.jsonl; train.log
#   summary.json, summary.md  what ran, how long, pass / fail / timeout, and the headline numbers
# Every step has its own time limit; a failing step is recorded and the next one still runs.
# Exit status: 0 when every step passed, 1 otherwise.
#
# Data: aaron_sheep.npz and the Quick, Draw! sample folder are looked up in $SKETCHVAE_SHARED_DATA,
# then ../shared/data beside the repository, then shared/data inside it.
# Python: $PYTHON, else .venv/bin/python when it exists, else python.
set -uo pipefail
cd "$(dirname "$0")/.."

DRY=0
OUT=${GPU_CHECK_OUT:-runs/gpu_check}
for arg in "$@"; do
  case $arg in
    --dry-run) DRY=1 ;;
    -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
    -*) echo "gpu_check.sh: unknown option $arg (see --help)" >&2; exit 2 ;;
    *) OUT=$arg ;;
  esac
done
if [[ -n ${PYTHON:-} ]]; then PY=$PYTHON
elif [[ -x .venv/bin/python ]]; then PY=.venv/bin/python
else PY=python; fi

if [[ -n ${SKETCHVAE_SHARED_DATA:-} ]]; then DATA=$SKETCHVAE_SHARED_DATA
elif [[ -d ../shared/data ]]; then DATA=../shared/data
else DATA=shared/data; fi
export SKETCHVAE_SHARED_DATA=$DATA
SHEEP=$DATA/sketchrnn_datasets/aaron_sheep.npz
if [[ ! -f $SHEEP ]]; then
  echo "gpu_check.sh: $SHEEP not found; set SKETCHVAE_SHARED_DATA to the folder holding sketchrnn_datasets/" >&2
  exit 2
fi
mkdir -p "$OUT"
: > "$OUT/steps.tsv"

# step NAME LIMIT_S COMMAND...: run with a time limit, log to OUT/NAME.log, record the outcome.
step() {
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS rc status
  echo "== $name (limit ${limit}s): $*" >&2
  timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
  rc=$?
  if [[ $rc -eq 0 ]]; then status=pass; elif [[ $rc -eq 124 || $rc -eq 137 ]]; then status=timeout; else status=fail; fi
  printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$rc" "$((SECONDS - t0))" >> "$OUT/steps.tsv"
  echo "   $status after $((SECONDS - t0)) s (log: $OUT/$name.log)" >&2
  tail -n 3 "$OUT/$name.log" >&2
}

if [[ $DRY -eq 1 ]]; then
  DEV=cpu
  BENCH_SIZE=(--enc 16 --dec 32 --z 8 --mixture 3 --batches 1 --warmup 0 --no-pad250 --threads 1)
  TRAIN_SIZE=(--enc-rnn-size 16 --dec-rnn-size 32 --z-size 8 --num-mixture 3 --steps 2 --eval-every 2
              --eval-batches 1 --batch-size 8 --max-minutes 1 --threads 1)
  SAMPLE_ARGS=(--sizes 2 --max-len 10 --seq-sketches 1 --enc 16 --dec 32 --threads 1 --repeats 1)
  BENCH_DATA=("$OUT/sheep.h5")
  BATCHES=(8)
  LIMITS=(120 120 120 120)  # tests, each bench_train, bench_sample, train
else
  DEV=cuda
  BENCH_SIZE=(--batches 10 --warmup 2)
  SAMPLE_ARGS=(--sizes 1,100,1000,10000 --seq-sketches 3 --repeats 1)
  BENCH_DATA=("$OUT/quickdraw.h5" "$OUT/sheep.h5")
  BATCHES=(100 512)
  LIMITS=(50 60 40 330)
  QUICKDRAW=$DATA/quickdraw/simplified_first25_per_class
fi
BUDGET=${GPU_CHECK_BUDGET_S:-540}  # the whole command; the training gets what the steps before it left

T_START=$SECONDS
step prepare 120 "$PY" -m sketchvae prepare "$SHEEP" -o "$OUT/sheep.h5"
if [[ $DRY -eq 0 ]]; then
  if [[ -d $QUICKDRAW ]]; then
    step prepare_quickdraw 90 "$PY" -m sketchvae prepare "$QUICKDRAW" -o "$OUT/quickdraw.h5" --skip-bad
  else
    echo "gpu_check.sh: $QUICKDRAW not found: benchmarking aaron_sheep batches only" >&2
    BENCH_DATA=("$OUT/sheep.h5")
  fi
fi
step tests "${LIMITS[0]}" "$PY" -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider
for B in "${BATCHES[@]}"; do
  step "bench_train_b$B" "${LIMITS[1]}" "$PY" scripts/bench_train.py --device "$DEV" --data "${BENCH_DATA[@]}" \
    --batch-size "$B" --recurrent-dropout 0.1 "${BENCH_SIZE[@]}" --json "$OUT/bench_train_b$B.json"
done
step bench_sample "${LIMITS[2]}" "$PY" scripts/bench_sample.py --device "$DEV" "${SAMPLE_ARGS[@]}" \
  --json "$OUT/bench_sample.json"
rm -rf "$OUT/train"
if [[ $DRY -eq 0 ]]; then  # 5 minutes, or what is left of the budget after 40 s for the final evaluations
  LEFT=$((BUDGET - (SECONDS - T_START) - 40))
  (( LEFT > 300 )) && LEFT=300
  (( LEFT < 30 )) && LEFT=30
  TRAIN_SIZE=(--max-minutes "$(awk "BEGIN {print $LEFT / 60}")" --steps 1000000 --eval-every 1000 --log-every 100)
  LIMITS[3]=$((LEFT + 30))
fi
step train "${LIMITS[3]}" "$PY" -m sketchvae train "$OUT/sheep.h5" -o "$OUT/train" --device "$DEV" --no-progress \
  "${TRAIN_SIZE[@]}"

"$PY" - "$OUT" "$DRY" "$((SECONDS - T_START))" <<'EOF'
import json, sys
from pathlib import Path

out, dry, total = Path(sys.argv[1]), sys.argv[2] == "1", int(sys.argv[3])
steps = []
for line in (out / "steps.tsv").read_text().splitlines():
    name, status, rc, secs = line.split("\t")
    steps.append({"name": name, "status": status, "rc": int(rc), "seconds": int(secs)})
summary = {"dry_run": dry, "total_seconds": total, "steps": steps, "ok": all(s["status"] == "pass" for s in steps)}
try:
    import torch
    summary["torch"] = torch.__version__
    summary["gpu"] = torch.cuda.get_device_name() if torch.cuda.is_available() else None
except Exception as err:  # noqa: BLE001 - the summary is written whatever fails
    summary["torch_error"] = str(err)
lines = [f"# gpu_check {'(dry run, CPU)' if dry else ''}", "", f"GPU: {summary.get('gpu')}, torch {summary.get('torch')}, "
         f"{total} s in all", "", "| step | status | seconds |", "|---|---|---|"]
lines += [f"| {s['name']} | {s['status']} | {s['seconds']} |" for s in steps]
for f in sorted(out.glob("bench_train_b*.json")):
    data = json.loads(f.read_text())
    summary[f.stem] = data
    lines += ["", f"## {f.stem} (batch {data.get('batch_size')})", ""]
    for r in data["results"]:
        text = (f"- {Path(str(r['data'])).name}: full {r['full']['sketches_per_s']:.0f} sketches/s, "
                f"{r['full_over_baseline']:.2f}x the bare nn.LSTM baseline")
        if "rdrop" in r:
            text += f"; recurrent dropout {r['rdrop_over_full']:.2f}x the nn.LSTM step"
        if "pad250" in r:
            text += f"; padding to 250 is {r['pad250_over_full']:.1f}x slower"
        lines.append(text)
bs = out / "bench_sample.json"
if bs.exists():
    data = json.loads(bs.read_text())
    summary["bench_sample"] = data
    lines += ["", "## bench_sample", ""]
    lines += [f"- n={r['n']}: {r['sketches_per_s']:.0f} sketches/s ({r['over_one_at_a_time']:.0f}x one at a time)"
              for r in data["batched"]]
metrics = out / "train" / "metrics.jsonl"
if metrics.exists():
    recs = [json.loads(l) for l in metrics.read_text().splitlines() if l.strip()]
    valid = [r for r in recs if r.get("split") == "valid"]
    test = [r for r in recs if r.get("split") == "test"]
    train = [r for r in recs if r.get("split") == "train"]
    summary["train"] = {"steps": max((r["step"] for r in recs), default=0),
                        "best_valid": min(valid, key=lambda r: r["loss"]) if valid else None,
                        "test": test[-1] if test else None,
                        "sketches_per_s": train[-1].get("sketches_per_s") if train else None,
                        "best_checkpoint": str(out / "train" / "best.pt") if (out / "train" / "best.pt").exists() else None}
    t = summary["train"]
    lines += ["", "## train (aaron_sheep)", "", f"- {t['steps']} steps"]
    if t["best_valid"]:
        lines.append(f"- best valid: step {t['best_valid']['step']}, loss {t['best_valid']['loss']:.4f}, "
                     f"recon {t['best_valid']['recon']:.4f}, kl {t['best_valid']['kl']:.4f}")
    if t["test"]:
        lines.append(f"- test (best.pt): loss {t['test']['loss']:.4f}, recon {t['test']['recon']:.4f}")
(out / "summary.json").write_text(json.dumps(summary, indent=1))
(out / "summary.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
sys.exit(0 if summary["ok"] else 1)
EOF
