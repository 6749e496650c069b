"""scripts/clip_for_magenta_js.py: the step that lets the shipped multiclass.pt convert to magenta-js's format."""

import importlib.util
from pathlib import Path

import pytest
import torch

from serve_util import tiny_checkpoint
from sketchvae.interop import magenta as M

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("clip_for_magenta_js", ROOT / "scripts" / "clip_for_magenta_js.py")
clip = importlib.util.module_from_spec(spec)
spec.loader.exec_module(clip)


def test_clips_only_the_weights_out_of_range_and_then_converts(tmp_path, capsys):
    path = tiny_checkpoint(tmp_path / "m.pt", "class_vae")
    ckpt = torch.load(path, weights_only=True)
    key = next(k for k in ckpt["model"] if k.startswith("decoder_rnn.weight_ih"))
    ckpt["model"][key][3, 0] = 11.9
    ckpt["model"][key][4, 1] = -10.5
    torch.save(ckpt, path)
    before = {k: v.clone() for k, v in ckpt["model"].items()}
    with pytest.raises(M.MagentaFormatError, match=r"2 weight\(s\) lie outside"):
        M.from_checkpoint(torch.load(path, weights_only=True), str(path), extension=True)  # as export-web

    clip.main(str(path))
    assert "2 weight(s) clipped" in capsys.readouterr().out
    saved = torch.load(path, weights_only=True)
    assert {k: saved[k] for k in ("kind", "config", "class_names", "scale_factor", "extra")} == \
        {k: ckpt[k] for k in ("kind", "config", "class_names", "scale_factor", "extra")}  # only weights change
    after = saved["model"]
    assert after[key][3, 0] == 10.0 and after[key][4, 1] == -10.0
    for k, v in before.items():
        changed = (after[k] != v).sum().item()
        assert changed == (2 if k == key else 0), k
    gen = M.from_checkpoint(torch.load(path, weights_only=True), str(path), extension=True)  # now it holds it
    assert gen is not None


def test_a_model_in_range_is_left_as_it_is(tmp_path, capsys):
    path = tiny_checkpoint(tmp_path / "m.pt", "vae")
    data = path.read_bytes()
    clip.main(str(path))
    assert "0 weight(s) clipped" in capsys.readouterr().out and path.read_bytes() == data
