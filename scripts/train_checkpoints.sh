#!/usr/bin/env bash
# Retrain the shipped Sketch-RNN checkpoints (checkpoints/sheep.pt, checkpoints/multiclass.pt).
#
# Usage: scripts/train_checkpoints.sh [sheep|multiclass|all]   (from the repository root)
#
# Data: ../shared/data/sketchrnn_datasets (or set SKETCHRNN_DATA to a folder holding
# aaron_sheep.npz, omniglot.npz and short_kanji.npz, the files magenta publishes).
# The shipped models were trained on 2 CPU cores (1 torch thread each, both runs at once);
# the sizes are smaller than the paper's (encoder 128, decoder 256) so that CPU training in
# one to two hours gives usable models, and the KL weight is annealed faster (rate 0.9995 instead
# of 0.99995) because the runs are ~100x shorter than the paper's.  checkpoints/README.md
# records steps, time and losses.  On a GPU, raise --steps and use the default sizes (or
# --preset magenta for the reference's configuration, with recurrent dropout).
# N_max (max_seq_len) is the longest sketch in the data, as magenta: 250 for aaron_sheep and for the
# three data sets together (omniglot's longest is 157, short_kanji's 88).  Both recipes pin
# --recurrent-dropout 0.  The v1 models were trained before the point dropping followed magenta's
# augment_strokes exactly, so a v1 retrain now gives close, not identical, numbers; v2 was trained
# with the code as it is.
#
# Recipe v2 (the shipped models since issue 18): the base recipe COMMON (v1, the recipe of the first
# sheep.pt) with the learning rate 3e-3 (`v2` in scripts/compare_recipes.py), which learnt faster
# at equal CPU time than 1e-3 (README, "CPU recipe"), and for the multiclass model --balance-classes
# (every data set equally often; v1 gave the sheep 15 % of the steps).  The shipped runs were stopped by time
# (--max-minutes); the step counts below are where they stopped, and `--steps N` retraces the same
# trajectory (the schedules depend only on the step number; resuming is exact, tests/test_train.py).
# RECIPE=v1 retrains the first models (7000 and 4000 steps at lr 1e-3).
set -euo pipefail
DATA=${SKETCHRNN_DATA:-../shared/data/sketchrnn_datasets}
WHAT=${1:-all}
RECIPE=${RECIPE:-v2}
COMMON=(--enc-rnn-size 128 --dec-rnn-size 256 --z-size 128 --kl-decay-rate 0.9995
        --recurrent-dropout 0 --eval-every 250 --seed 0 --threads 1 --device cpu)
if [[ $RECIPE == v2 ]]; then
  STEPS_SHEEP=${STEPS_SHEEP:-10066}
  STEPS_MULTI=${STEPS_MULTI:-18318}
  SHEEP=(--lr 3e-3)
  MULTI=(--lr 3e-3 --balance-classes)
elif [[ $RECIPE == v1 ]]; then
  STEPS_SHEEP=${STEPS_SHEEP:-7000}
  STEPS_MULTI=${STEPS_MULTI:-4000}
  SHEEP=()
  MULTI=()
else
  echo "RECIPE=$RECIPE: choose v2 (default) or v1" >&2
  exit 2
fi

if [[ $WHAT == sheep || $WHAT == all ]]; then
  sketchvae train "$DATA/aaron_sheep.npz" -o runs/sheep "${COMMON[@]}" "${SHEEP[@]}" --steps "$STEPS_SHEEP"
  cp runs/sheep/best.pt checkpoints/sheep.pt
fi
if [[ $WHAT == multiclass || $WHAT == all ]]; then
  sketchvae train "$DATA/aaron_sheep.npz" "$DATA/omniglot.npz" "$DATA/short_kanji.npz" \
    --mode class_vae -o runs/multiclass "${COMMON[@]}" "${MULTI[@]}" --steps "$STEPS_MULTI"
  cp runs/multiclass/best.pt checkpoints/multiclass.pt
  # magenta-js's format (convert, export-web) holds weights in [-10, 10]; v2 ended with one at 11.89
  python scripts/clip_for_magenta_js.py checkpoints/multiclass.pt
fi
