"""Named sets of model and training options (`sketchvae train --preset NAME`).

    magenta        the reference configuration: magenta's `sketch_rnn` defaults (`model.py:
                   get_default_hparams`, `sketch_rnn_train.py`) as far as this implementation has them
    magenta-large  magenta's recipe for its big models (its README, "very large dataset ... HyperLSTM":
                   `dec_model=hyper,dec_rnn_size=2048,enc_model=layer_norm,enc_rnn_size=512,
                   use_recurrent_dropout=0`), the rest as `magenta`

What `magenta` sets (options given explicitly on the command line win over the preset):

    model:  cell lstm, recurrent_dropout 0.1 (magenta's keep probability 0.9, encoder and decoder),
            enc_rnn_size 256, dec_rnn_size 512, z_size 128, num_mixture 20, no input / output
            dropout; max_seq_len is left to its default, the longest sketch in the data (as
            magenta's `utils.get_max_len`)
    train:  batch_size 100, lr 1e-3, lr_decay 0.9999, min_lr 1e-5, kl_weight 0.5,
            kl_decay_rate 0.99995, kl_tolerance 0.2, grad_clip 1.0 per element (clip_mode value),
            augment_scale 0.15, augment_drop 0.1, and kl_eta_min = 0.01 / kl_weight, so that the KL
            weight starts at magenta's absolute kl_weight_start = 0.01 (0.02 with kl_weight 0.5)

`magenta-large` differs in the model only: cell hyper (HyperLSTM, hyper_rnn_size 256,
hyper_embed_size 32, magenta's HyperLSTMCell defaults) with dec_rnn_size 2048, enc_cell layer_norm
with enc_rnn_size 512, recurrent_dropout 0.  That is a GPU model: 24.5 M parameters (`magenta`: 2.2 M).

What they cannot set is listed in the README, "Differences from magenta" (validation loss weight,
one-sample validation, length bucketing).
"""

from __future__ import annotations

MAGENTA_KL_WEIGHT_START = 0.01  # magenta's kl_weight_start: the absolute KL weight at step 0

_MAGENTA_MODEL = {"cell": "lstm", "recurrent_dropout": 0.1, "enc_rnn_size": 256, "dec_rnn_size": 512, "z_size": 128,
                  "num_mixture": 20, "input_dropout": 0.0, "output_dropout": 0.0}
_MAGENTA_TRAIN = {"batch_size": 100, "lr": 1e-3, "lr_decay": 0.9999, "min_lr": 1e-5, "kl_weight": 0.5,
                  "kl_decay_rate": 0.99995, "kl_tolerance": 0.2, "grad_clip": 1.0, "clip_mode": "value",
                  "augment_scale": 0.15, "augment_drop": 0.1}

PRESETS: dict[str, dict[str, dict]] = {
    "magenta": {"model": _MAGENTA_MODEL, "train": _MAGENTA_TRAIN},
    "magenta-large": {
        "model": {**_MAGENTA_MODEL, "cell": "hyper", "dec_rnn_size": 2048, "hyper_rnn_size": 256,
                  "hyper_embed_size": 32, "enc_cell": "layer_norm", "enc_rnn_size": 512, "recurrent_dropout": 0.0},
        "train": _MAGENTA_TRAIN,
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
    if "kl_eta_min" not in train:  # every preset starts the KL weight at magenta's absolute value
        weight = float(train_out["kl_weight"])
        train_out["kl_eta_min"] = min(1.0, MAGENTA_KL_WEIGHT_START / weight) if weight > 0 else 1.0
    return model_out, train_out


__all__ = ["PRESETS", "apply_preset", "MAGENTA_KL_WEIGHT_START"]
