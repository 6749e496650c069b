#!/usr/bin/env bash
# Regenerate the pictures in checkpoints/samples/ (shown in README.md) from the shipped
# checkpoints, with fixed seeds.  Usage: scripts/make_gallery.sh  (from the repository root)
# Magenta's pretrained models are drawn too when present: checkpoints/magenta/NAME.pt (from
# `sketchvae download --magenta NAME`), else converted there from $MAGENTA_MODELS/NAME.gen.json
# (default ../shared/data/magenta_models).  checkpoints/magenta/ is git-ignored; only the SVGs are kept.
set -euo pipefail
OUT=checkpoints/samples
DATA=${SKETCHRNN_DATA:-../shared/data/sketchrnn_datasets}
MAGENTA=${MAGENTA_MODELS:-../shared/data/magenta_models}
mkdir -p "$OUT"
sketchvae sample -n 16 --cols 8 --seed 0 -o "$OUT/sheep.svg"  # the README's command
for c in aaron_sheep omniglot short_kanji; do
  sketchvae sample checkpoints/multiclass.pt --class "$c" -n 8 --cols 8 -t 0.4 --seed 0 -o "$OUT/multiclass_$c.svg"
done
if [[ -f "$DATA/aaron_sheep.npz" ]]; then
  sketchvae reconstruct checkpoints/sheep.pt "$DATA/aaron_sheep.npz" --split test --index 0,1,2,3 --seed 0 -o "$OUT/sheep_reconstruct.svg"
  sketchvae interpolate checkpoints/sheep.pt "$DATA/aaron_sheep.npz" --split test --from 0 --to 1 --steps 8 --seed 0 -o "$OUT/sheep_interpolate.svg"
  sketchvae complete checkpoints/sheep.pt "$DATA/aaron_sheep.npz" --split test --index 2 -n 7 --seed 0 -o "$OUT/sheep_complete.svg"
fi
if [[ -f checkpoints/mnist_cvae.pt ]]; then
  sketchvae mnist sample checkpoints/mnist_cvae.pt -n 40 --ncol 10 --seed 0 -o "$OUT/mnist_cvae.png"
fi
if [[ -f checkpoints/mnist_conv.pt ]]; then
  sketchvae mnist sample checkpoints/mnist_conv.pt -n 40 --ncol 10 --seed 0 -o "$OUT/mnist_conv.png"
fi
for m in sheep bird bicycle rabbit dog; do
  if [[ ! -f "checkpoints/magenta/$m.pt" && -f "$MAGENTA/$m.gen.json" ]]; then
    sketchvae convert "$MAGENTA/$m.gen.json" "checkpoints/magenta/$m.pt"
  fi
  if [[ -f "checkpoints/magenta/$m.pt" ]]; then
    sketchvae sample "checkpoints/magenta/$m.pt" -n 8 --cols 8 -t 0.4 --seed 0 -o "$OUT/magenta_$m.svg"
  fi
done
