"""Named sets of model and training options (`sketchvae train --preset NAME`).

    magenta   the reference configuration: magenta's `sketch_rnn` defaults (`model.py:
              get_default_hparams`, `sketch_rnn_train.py`) as far as this implementation has them

What `magenta` sets (options given explicitly on the command line win over the preset):

    model:  cell lstm, recurrent_dropout 0.1 (magenta's keep probability 0.9, encoder and decoder),
            enc_rnn_size 256, dec_rnn_size 512, z_size 128, num_mixture 20, no input / output
            dropout; max_seq_len is left to its default, the longest sketch in the data (as
            magenta's `utils.get_max_len`)
    train:  batch_size 100, lr 1e-3, lr_decay 0.9999, min_lr 1e-5, kl_weight 0.5,
            kl_decay_rate 0.99995, kl_tolerance 0.2, grad_clip 1.0 per element (clip_mode value),
            augment_scale 0.15, augment_drop 0.1, and kl_eta_min = 0.01 / kl_weight, so that the KL
            weight starts at magenta's absolute kl_weight_start = 0.01 (0.02 with kl_weight 0.5)

What it cannot set is listed in the README, "Differences from magenta" (validation loss weight,
one-sample validation, length bucketing, no HyperLSTM).
"""

from __future__ import annotations

MAGENTA_KL_WEIGHT_START = 0.01  # magenta's kl_weight_start: the absolute KL weight at step 0

PRESETS: dict[str, dict[str, dict]] = {
    "magenta": {
        "model": {"cell": "lstm", "recurrent_dropout": 0.1, "enc_rnn_size": 256, "dec_rnn_size": 512, "z_size": 128,
                  "num_mixture": 20, "input_dropout": 0.0, "output_dropout": 0.0},
        "train": {"batch_size": 100, "lr": 1e-3, "lr_decay": 0.9999, "min_lr": 1e-5, "kl_weight": 0.5,
                  "kl_decay_rate": 0.99995, "kl_tolerance": 0.2, "grad_clip": 1.0, "clip_mode": "value",
                  "augment_scale": 0.15, "augment_drop": 0.1},
    },
}


def apply_preset(name: str | None, model: dict, train: dict) -> tuple[dict, dict]:
    """(model fields, train fields) with preset `name`'s values filled in under the given ones.

    model / train: the options given explicitly (field -> value); they are kept as they are.
    None returns them unchanged.  Unknown names raise ValueError listing the known ones."""
    if name is None:
        return dict(model), dict(train)
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    preset = PRESETS[name]
    model_out = {**preset["model"], **model}
    train_out = {**preset["train"], **train}
    if name == "magenta" and "kl_eta_min" not in train:
        weight = float(train_out["kl_weight"])
        train_out["kl_eta_min"] = min(1.0, MAGENTA_KL_WEIGHT_START / weight) if weight > 0 else 1.0
    return model_out, train_out


__all__ = ["PRESETS", "apply_preset", "MAGENTA_KL_WEIGHT_START"]
