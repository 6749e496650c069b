"""scripts/score_checkpoints.py: the table it prints from `sketchvae score` results, and its argument checks."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("score_checkpoints", ROOT / "scripts" / "score_checkpoints.py")
sc = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sc)


def result(acc, control, ended, recognised=None):
    stats = {"points": 100.0 + 10 * acc, "strokes": 5.0, "ended": ended, "width": 200.0, "height": 100.0}
    cls = {"class": "sheep", "m": 300, "c2st": {"accuracy": acc}, "control": {"accuracy": control},
           "stats": {"model": stats, "real": {"points": 127.0, "strokes": 11.6, "width": 240.0, "height": 150.0}}}
    if recognised is not None:
        cls.update(recognised=recognised, recognised_real=0.98)
    return {"classes": [cls]}


def test_table_gives_mean_and_spread_over_seeds():
    text = sc.table({"old": [result(0.70, 0.50, 0.2), result(0.80, 0.46, 0.4)],
                     "new": [result(0.60, 0.48, 0.9, recognised=0.5), result(0.62, 0.48, 0.7, recognised=0.7)]})
    rows = text.splitlines()
    assert len(rows) == 4 and rows[0].startswith("| model, class |")
    assert rows[2].startswith("| `old`, sheep | 300 | 0.750 +- 0.071 | 0.480 +- 0.028 |  | 108 / 127 |")
    assert "| 30 % |" in rows[2] and "200 x 100 / 240 x 150" in rows[2]
    assert "| 0.610 +- 0.014 |" in rows[3] and "| 60 +- 14 % (98 %) |" in rows[3] and "| 80 % |" in rows[3]


def test_arguments_are_checked(capsys):
    with pytest.raises(SystemExit):
        sc.main(["data.npz", "-c", "no-equals-sign"])
    assert "give NAME=CKPT" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        sc.main(["data.npz", "-c", "a=x.pt", "-c", "a=y.pt"])
    assert "same name" in capsys.readouterr().err
