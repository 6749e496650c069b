"""Clip a Sketch-RNN checkpoint's weights to [-10, 10], the range magenta-js's .gen.json format holds.

    python scripts/clip_for_magenta_js.py checkpoints/multiclass.pt     # in place; prints what changed

magenta-js stores weights as int16 scaled to [-10, 10] (`sketchvae.interop.magenta`), and `sketchvae
convert` / `export-web` refuse a model with a weight outside that range rather than clip it silently.
The v2 `multiclass.pt` run ended with one such weight (11.89, decoder input kernel, of 784,091); this
script is the documented step of scripts/train_checkpoints.sh that clips it.  checkpoints/README.md
records the test loss and score after clipping.
"""

from __future__ import annotations

import sys

from sketchvae.checkpoint import load_checkpoint, save_checkpoint
from sketchvae.interop.magenta import MAX_WEIGHT


def main(path: str) -> None:
    ckpt = load_checkpoint(path)  # validated: a corrupt file is a CheckpointError naming it
    changed = 0
    for name, w in ckpt["model"].items():
        if w.is_floating_point():
            over = w.abs() > MAX_WEIGHT
            if over.any():
                print(f"{name}: {int(over.sum())} weight(s), largest |w| {w.abs().max().item():.4f} -> {MAX_WEIGHT}")
                w.clamp_(-MAX_WEIGHT, MAX_WEIGHT)
                changed += int(over.sum())
    if changed:  # atomically, so an interrupted write cannot spoil the shipped file
        save_checkpoint(path, kind=ckpt["kind"], config=ckpt["config"], model=ckpt["model"],
                        class_names=ckpt["class_names"], scale_factor=ckpt["scale_factor"],
                        extra=ckpt["extra"], train_state=ckpt.get("train_state"))
    print(f"{path}: {changed} weight(s) clipped to [-{MAX_WEIGHT}, {MAX_WEIGHT}]")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
