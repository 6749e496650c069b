"""scripts/gpu_check.sh --dry-run: every step of the one-command GPU check, on CPU with tiny sizes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


@pytest.mark.skipif(not (SHARED / "sketchrnn_datasets" / "aaron_sheep.npz").exists(),
                    reason="needs ../shared/data/sketchrnn_datasets/aaron_sheep.npz")
@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None, reason="needs bash and timeout")
def test_gpu_check_dry_run_passes_and_writes_one_output_folder(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable, "SKETCHVAE_SHARED_DATA": str(SHARED), "OMP_NUM_THREADS": "1"}
    res = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), "--dry-run", str(out)], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ok"] and summary["dry_run"]
    assert [s["name"] for s in summary["steps"]] == ["prepare", "tests", "bench_train_b8", "bench_sample", "train"]
    assert all(s["status"] == "pass" for s in summary["steps"])
    assert summary["train"]["steps"] == 2 and summary["train"]["best_valid"]["loss"] > 0
    assert (out / "train" / "best.pt").exists() and (out / "train" / "metrics.jsonl").exists()
    bench = summary["bench_train_b8"]["results"][0]
    assert bench["rdrop_over_full"] > 0 and bench["full"]["sketches_per_s"] > 0
    assert summary["bench_sample"]["batched"][0]["n"] == 2
    assert "| train | pass |" in (out / "summary.md").read_text()


def test_gpu_check_rejects_unknown_options(tmp_path):
    res = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), "--fast"], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 2 and "unknown option --fast" in res.stderr
