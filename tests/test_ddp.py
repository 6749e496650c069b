"""DistributedDataParallel on CPU: 2 processes under torchrun, gloo backend.

The test launches this very file as the worker script (`python -m torch.distributed.run
--standalone --nproc_per_node 2 tests/test_ddp.py ...`), so `fit` joins the process group from
torchrun's environment exactly as `torchrun -m sketchvae train ...` would.  Each rank records the
sketch indices of every batch it trained on and its final weights; the test checks that the ranks
saw disjoint data and ended with identical weights, and that rank 0 alone wrote the run folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve()
STEPS = 4


def _configs():
    from sketchvae.models.sketch_rnn import SketchRNNConfig
    from sketchvae.train import TrainConfig

    mcfg = SketchRNNConfig(mode="vae", enc_rnn_size=16, dec_rnn_size=32, z_size=8, num_mixture=3, max_seq_len=40,
                           output_dropout=0.1)
    tcfg = TrainConfig(steps=STEPS, batch_size=6, eval_every=STEPS, log_every=1, device="cpu", seed=3,
                       test_at_end=False, num_threads=1)
    return mcfg, tcfg


def worker(cache: str, run_dir: str, out_dir: str) -> None:
    """One torchrun rank: train, then save (indices seen per step, final weights)."""
    import torch.distributed as dist

    from sketchvae.train import fit

    mcfg, tcfg = _configs()
    seen: list[list[int]] = []

    def callback(event, info):
        if event == "step":
            seen.append(list(info["indices"]))

    result = fit(mcfg, tcfg, cache, run_dir, callback=callback)
    rank = dist.get_rank()
    torch.save({"indices": seen, "model": result.model.state_dict(), "world_size": dist.get_world_size()},
               Path(out_dir) / f"rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_see_disjoint_data_and_end_identical(tmp_path):
    sys.path.insert(0, str(HERE.parent))
    from test_train import write_synthetic_cache

    cache = write_synthetic_cache(tmp_path / "tiny.h5", counts=(60, 12, 12))
    run, out = tmp_path / "run", tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(HERE),
           str(cache), str(run), str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    r0, r1 = (torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["world_size"] == r1["world_size"] == 2
    assert len(r0["indices"]) == len(r1["indices"]) == STEPS
    # 60 sketches / 2 ranks / batch 6 = 5 batches per rank and epoch: the 4 steps stay in epoch 0
    seen0 = [i for b in r0["indices"] for i in b]
    seen1 = [i for b in r1["indices"] for i in b]
    assert len(seen0) == len(seen1) == STEPS * 6
    assert not set(seen0) & set(seen1), "ranks trained on the same sketches"
    for k in r0["model"]:
        assert torch.equal(r0["model"][k], r1["model"][k]), k
    # rank 0 alone wrote the run folder; its last.pt holds both ranks' RNG states
    from sketchvae.checkpoint import load_checkpoint

    ckpt = load_checkpoint(run / "last.pt")
    assert len(ckpt["train_state"]["rng"]) == 2 and ckpt["extra"]["world_size"] == 2
    for k in r0["model"]:
        assert torch.equal(ckpt["model"][k], r0["model"][k]), k
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if r["split"] == "train"] == list(range(1, STEPS + 1))
    assert all(r.get("world_size") == 2 for r in lines if r["split"] == "train")


if __name__ == "__main__":  # torchrun entry point
    worker(*sys.argv[1:4])
