"""scripts/compare_recipes.py: the recipe table, the budget bookkeeping, and a whole tiny comparison
(two recipes trained in parallel for a few steps, resumed, scored) on synthetic data."""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "compare_recipes.py"


@pytest.fixture(scope="module")
def cr():
    spec = importlib.util.spec_from_file_location("compare_recipes", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _flags(options: list[str]) -> dict:
    return dict(zip(options[::2], options[1::2]))


def test_every_variant_changes_only_its_one_choice(cr):
    base = _flags(cr.recipe_options("v2"))
    assert base == cr.BASE
    for name, (_, change) in cr.RECIPES.items():
        opts = _flags(cr.recipe_options(name))
        differ = {k for k in set(opts) | set(base) if opts.get(k) != base.get(k)}
        assert differ == set(change), name
        assert (name == "v2") == (not change)


def test_the_base_recipe_is_the_v2_sheep_run_of_train_checkpoints_sh(cr):
    text = (REPO / "scripts" / "train_checkpoints.sh").read_text()
    common = text.split("COMMON=(", 1)[1].split(")", 1)[0]
    words = shlex.split(common.replace("\\\n", " "))
    v2 = text.split("if [[ $RECIPE == v2 ]]; then", 1)[1].split("elif", 1)[0]
    sheep = shlex.split(v2.split("SHEEP=(", 1)[1].split(")", 1)[0])
    sh = _flags([w for w in words if w not in ("--threads", "1", "--device", "cpu")])
    assert sh == cr.V1
    assert {**sh, **_flags(sheep)} == cr.BASE


def test_every_recipe_command_parses_as_sketchvae_train(cr, tmp_path):
    from sketchvae.cli import main

    train = main.commands["train"]
    for name in cr.RECIPES:
        for resume in (False, True):
            cmd = cr.train_command(name, tmp_path / name, tmp_path / "data.h5", 12.5, resume, [], None)
            assert cmd[:4] == [sys.executable, "-m", "sketchvae", "train"]
            ctx = train.make_context("train", cmd[4:])  # raises on an unknown option or a bad value
            assert ctx.params["max_minutes"] == 12.5 and ctx.params["num_threads"] == 1
            assert ctx.params["resume"] is resume
            if not resume:
                assert ctx.params["dec_rnn_size"] == int(_flags(cr.recipe_options(name))["--dec-rnn-size"])


def test_plan_resumes_for_the_budget_left_and_skips_a_spent_one(cr, tmp_path):
    for name, used_s in (("v2", 600.0), ("kl1", 1790.0)):
        run = tmp_path / name
        run.mkdir()
        (run / "last.pt").write_bytes(b"")
        cr.write_ledger(run, {"recipe": name, "options": cr.recipe_options(name),
                              "legs": [{"wall_s": used_s / 2, "cpu_s": 1.0}, {"wall_s": used_s / 2, "cpu_s": 1.0}]})
    jobs = {j["name"]: j for j in cr.plan(["v2", "kl1", "z32"], tmp_path, tmp_path / "d.h5", 30, [], None)}
    assert jobs["v2"]["resume"] and jobs["v2"]["left"] == pytest.approx(20.0)
    assert "--resume" in jobs["v2"]["cmd"] and jobs["v2"]["cmd"][-1] == "20.000"
    assert jobs["kl1"]["cmd"] is None  # 10 s left: below MIN_LEG_MINUTES
    assert not jobs["z32"]["resume"] and "--z-size" in jobs["z32"]["cmd"]
    cr.write_ledger(tmp_path / "kl1", {"options": ["--lr", "1"], "legs": []})  # a run of another recipe
    with pytest.raises(SystemExit, match="kl1"):
        cr.plan(["kl1"], tmp_path, tmp_path / "d.h5", 30, [], None)


def _tiny_npz(path: Path) -> None:
    rng = np.random.default_rng(0)

    def sketch():
        n = int(rng.integers(8, 16))
        s = np.zeros((n, 3), dtype=np.int16)
        s[:, :2] = rng.integers(-20, 21, size=(n, 2))
        s[rng.integers(1, n - 1), 2] = 1
        s[-1, 2] = 1
        return s

    arrays = {}
    for split, count in (("train", 48), ("valid", 12), ("test", 12)):
        arr = np.empty(count, dtype=object)
        arr[:] = [sketch() for _ in range(count)]
        arrays[split] = arr
    np.savez(path, **arrays)


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    res = subprocess.run([sys.executable, str(SCRIPT), *args, "--out", str(tmp_path / "out"),
                          "--data", str(tmp_path / "tiny.npz"), "--extra",
                          "--batch-size 8 --eval-batches 1 --log-every 1 --no-test-at-end",
                          "--score-n", "10", "--score-folds", "2", "--score-epochs", "1"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res


def test_a_tiny_comparison_trains_in_parallel_resumes_and_scores(tmp_path):
    _tiny_npz(tmp_path / "tiny.npz")
    out = tmp_path / "out"
    _run(tmp_path, "v2", "lr1e-3", "--minutes", "5", "--parallel", "2", "--steps", "2", "--reference", "none")
    first = json.loads((out / "results.json").read_text())
    rows = {r["recipe"]: r for r in first["rows"]}
    assert set(rows) == {"v2", "lr1e-3"}
    for name, r in rows.items():
        assert r["steps"] == 2 and r["legs"] == 1 and r["cpu_s"] > 0 and 0 < r["minutes"] < 5
        assert r["best_valid"]["loss"] == pytest.approx(min(
            json.loads(line)["loss"] for line in (out / name / "metrics.jsonl").read_text().splitlines()
            if json.loads(line)["split"] == "valid"))
        assert len(r["c2st"]) == 2 and all(0 <= a <= 1 for a in r["c2st"])
        assert r["c2st_mean"] == pytest.approx(sum(r["c2st"]) / 2) and r["m"] == 10
        assert 0 <= r["ended"] <= 1 and r["points"] > 0 and r["strokes"] >= 1
        assert r["real"]["strokes"] >= 1
        assert (out / name / "score_seed1.json").exists()
    assert set(first["controls"]) == {"0", "1"}
    from sketchvae.checkpoint import load_checkpoint

    assert load_checkpoint(out / "lr1e-3" / "last.pt")["extra"]["train_config"]["lr"] == pytest.approx(1e-3)
    table = (out / "results.md").read_text()
    assert "| `v2` |" in table and "| `lr1e-3` |" in table and "real vs real (control): seed 0:" in table
    assert "the real drawings (test split):" in table

    # continued with a higher cap: both runs resume where they stopped, and are scored again
    res = _run(tmp_path, "v2", "lr1e-3", "--minutes", "5", "--parallel", "2", "--steps", "4",
               "--reference", str(out / "v2" / "best.pt"))
    second = {r["recipe"]: r for r in json.loads((out / "results.json").read_text())["rows"]}
    for name in ("v2", "lr1e-3"):
        legs = json.loads((out / name / "recipe.json").read_text())["legs"]
        assert [(leg["steps_before"], leg["steps_after"]) for leg in legs] == [(0, 2), (2, 4)]
        assert "--resume" in legs[1]["command"] and second[name]["steps"] == 4
        assert second[name]["cpu_s"] == pytest.approx(sum(leg["cpu_s"] for leg in legs))
    assert "reference" in second[str(out / "v2" / "best.pt")]["change"]
    assert "resumed" in res.stdout

    # a budget already spent trains nothing more
    res = _run(tmp_path, "v2", "--minutes", "0.001", "--no-score")
    assert "spent" in res.stdout and "resumed" not in res.stdout
    assert len(json.loads((out / "v2" / "recipe.json").read_text())["legs"]) == 2
