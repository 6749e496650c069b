"""`sketchvae train` and `sketchvae evaluate`: thin wrappers over `sketchvae.train`.

Every training option maps one-to-one onto a field of `TrainConfig` (training) or
`SketchRNNConfig` (model; `num_classes` comes from the data).  Heavy imports happen inside the
commands so `sketchvae --help` stays instant.
"""

from __future__ import annotations

import json
import sys

import click
from click.core import ParameterSource

from sketchvae.cli import main
from sketchvae.cli.common import flag_message, new_run_dir, show_progress
from sketchvae.presets import PRESETS  # a plain table, no heavy imports

# (option name, TrainConfig field, type, help).  Defaults are read from the dataclass at runtime so
# that the help text and the library never disagree.
_TRAIN_OPTIONS = [
    ("--steps", "steps", int, "Optimiser steps to train for, counted from 0 (also when resuming)."),
    ("--batch-size", "batch_size", int, "Sketches per step and process (global batch = this x processes)."),
    ("--lr", "lr", float, "Adam learning rate at step 0."),
    ("--lr-decay", "lr_decay", float, "Learning-rate decay per step: lr_t = (lr - min_lr) decay^t + min_lr."),
    ("--min-lr", "min_lr", float, "Learning-rate floor."),
    ("--kl-weight", "kl_weight", float, "w_KL, the final KL weight (magenta's published models: 0.5; 1.0 = ELBO)."),
    ("--kl-eta-min", "kl_eta_min", float, "KL weight at step 0 as a fraction of w_KL (eta_min, eq. 11)."),
    ("--kl-decay-rate", "kl_decay_rate", float, "KL annealing rate R per step (eq. 11)."),
    ("--kl-tolerance", "kl_tolerance", float, "KL_min: floor of L_KL per z dimension (no gradient below it)."),
    ("--grad-clip", "grad_clip", float, "Gradient clipping threshold (0 = off)."),
    ("--clip-mode", "clip_mode", click.Choice(["value", "norm"]),
     "Clip each gradient element (value, the reference) or the global 2-norm (norm)."),
    ("--augment-scale", "augment_scale", float, "Random per-axis scale in [1-r, 1+r] (0 = off)."),
    ("--augment-drop", "augment_drop", float, "Probability of dropping an interior stroke point (0 = off)."),
    ("--balance-classes/--no-balance-classes", "balance_classes", bool,
     "Train on every class equally often (smaller classes repeated each epoch), for class_vae on classes of "
     "unequal size."),
    ("--eval-every", "eval_every", int, "Validate and save last.pt / best.pt every N steps."),
    ("--save-every", "save_every", int, "Also save last.pt every N steps (0 = at validation steps only)."),
    ("--save-minutes", "save_minutes", float, "Also save last.pt every M minutes (0 = off); Ctrl-C saves it too."),
    ("--log-every", "log_every", int, "Write a train line to metrics.jsonl every N steps."),
    ("--eval-batches", "eval_batches", int, "Validate on at most N batches (0 = the whole split)."),
    ("--test-at-end/--no-test-at-end", "test_at_end", bool, "Evaluate best.pt on the test split at the end."),
    ("--score-samples", "score_samples", int,
     "At each validation, score N samples against N validation drawings (two-sample test, 0.5 = "
     "indistinguishable) for the quality curve of `sketchvae report`; 0 = off, 100 takes about 10 s."),
    ("--seed", "seed", int, "Seed for weights, data order, augmentation, noise and dropout."),
    ("--device", "device", str, "auto | cpu | cuda | cuda:N (bf16 autocast on CUDA)."),
    ("--max-nonfinite", "max_nonfinite", int, "Stop after N non-finite losses/gradients in a row."),
    ("--num-workers", "num_workers", int, "DataLoader worker processes for batching (0 = none)."),
    ("--threads", "num_threads", int, "torch CPU threads (0 = torch's default)."),
    ("--max-minutes", "max_minutes", float, "Stop after N minutes (validate and save there; 0 = no limit)."),
]

_MODEL_OPTIONS = [
    ("--mode", "mode", click.Choice(["vae", "decoder", "class_vae"]),
     "vae (conditional VAE) | decoder (unconditional) | class_vae (class-conditional; classes from the data)."),
    ("--enc-rnn-size", "enc_rnn_size", int, "Encoder LSTM units per direction."),
    ("--dec-rnn-size", "dec_rnn_size", int, "Decoder LSTM units."),
    ("--z-size", "z_size", int, "Latent size N_z."),
    ("--num-mixture", "num_mixture", int, "Gaussian mixture components M."),
    ("--max-seq-len", "max_seq_len", int, "N_max: longest sketch trained on (longer ones are left out; the "
     "reconstruction loss is divided by it). Default: the longest sketch in the data, as magenta."),
    ("--cell", "cell", click.Choice(["lstm", "layer_norm", "hyper"]),
     "Decoder (and encoder) cell: lstm (nn.LSTM, fastest) | layer_norm (LN-LSTM) | hyper (HyperLSTM with LN, "
     "magenta's cell for its large models; slowest)."),
    ("--enc-cell", "enc_cell", click.Choice(["lstm", "layer_norm", "hyper"]),
     "Encoder cell when it differs from --cell (e.g. --cell hyper --enc-cell layer_norm, as --preset magenta-large)."),
    ("--hyper-rnn-size", "hyper_rnn_size", int, "Units of the small LSTM inside each hyper cell (--cell hyper)."),
    ("--hyper-embed-size", "hyper_embed_size", int, "Size of the hyper cell's per-gate signals (--cell hyper)."),
    ("--recurrent-dropout", "recurrent_dropout", float,
     "Probability of dropping a unit of the LSTM candidate g per step (training only; magenta: 0.1)."),
    ("--input-dropout", "input_dropout", float, "Decoder input dropout probability."),
    ("--output-dropout", "output_dropout", float, "Decoder output dropout probability."),
    ("--class-embed-size", "class_embed_size", int, "Class embedding size (class_vae)."),
]


# The dataclass defaults, written out so `--help` does not import torch; tests/test_train.py checks
# that they equal the dataclasses' defaults.
SHOWN_DEFAULTS = {
    "steps": 20000, "batch_size": 100, "lr": 1e-3, "lr_decay": 0.9999, "min_lr": 1e-5, "kl_weight": 0.5,
    "kl_eta_min": 0.01, "kl_decay_rate": 0.99995, "kl_tolerance": 0.2, "grad_clip": 1.0, "clip_mode": "value",
    "augment_scale": 0.15, "augment_drop": 0.1, "balance_classes": False, "eval_every": 500, "save_every": 0, "save_minutes": 10.0,
    "log_every": 50,
    "eval_batches": 0, "test_at_end": True, "score_samples": 0, "seed": 0, "device": "auto", "max_nonfinite": 20, "num_workers": 0,
    "num_threads": 0, "max_minutes": 0.0,
    "mode": "vae", "enc_rnn_size": 256, "dec_rnn_size": 512, "z_size": 128, "num_mixture": 20, "max_seq_len": 250,
    "cell": "lstm", "enc_cell": None, "hyper_rnn_size": 256, "hyper_embed_size": 32, "recurrent_dropout": 0.1, "input_dropout": 0.0, "output_dropout": 0.0, "class_embed_size": 32,
}


def _add_options(func):
    # The option defaults stay None so we can tell which options the user gave (on --resume only
    # those override the saved ones); the dataclasses decide the real defaults, shown in the help.
    for spec, field, typ, help_text in reversed(_MODEL_OPTIONS + _TRAIN_OPTIONS):
        shown = {"max_seq_len": "the longest sketch in DATA", "enc_cell": "the same as --cell"}.get(
            field, SHOWN_DEFAULTS[field])
        if typ is bool:
            shown = spec.split("/")[0 if shown else 1]
        kwargs = {"default": None, "help": f"{help_text}  [default: {shown}]"}
        if typ is not bool:
            kwargs["type"] = typ
            if not isinstance(typ, click.Choice):
                kwargs["metavar"] = typ.__name__.upper()
        func = click.option(spec, field, **kwargs)(func)
    return func


# config field -> the flag that sets it, so library messages name what the user typed
FLAGS = {field: spec.split("/")[0] for spec, field, _, _ in _TRAIN_OPTIONS + _MODEL_OPTIONS}
FLAGS["a smaller batch size"] = "a smaller --batch-size"


def _fail(err: BaseException):
    raise click.ClickException(flag_message(str(err), FLAGS)) from None


def _is_cache(data) -> bool:
    return len(data) == 1 and str(data[0]).lower().endswith((".h5", ".hdf5"))


@main.command()
@click.argument("data", nargs=-1)
@click.option("-o", "--out", "run_dir", required=True, type=click.Path(file_okay=False),
              help="Run folder: last.pt, best.pt, metrics.jsonl, samples/ (and data.h5 when DATA needs preparing).")
@click.option("--resume", is_flag=True, help="Continue the run in the run folder from last.pt (same trajectory); "
              "options given now override the saved ones where allowed (e.g. --steps to train longer); "
              "others must equal the run's.")
@click.option("--init-from", "init_from", type=click.Path(), default=None,
              help="Start a NEW run from the weights of a Sketch-RNN checkpoint (a .pt file, or a run folder: its "
                   "best.pt), e.g. to go on training on other data; model options come from the checkpoint.")
@click.option("--tensorboard", is_flag=True,
              help="Also log the metrics to RUN_DIR/tensorboard (pip install 'sketchvae[tensorboard]').")
@click.option("--skip-bad", is_flag=True, help="When DATA needs preparing: skip (and count) bad sketches instead of "
              "stopping at the first with an error (as `sketchvae prepare --skip-bad`).")
@click.option("--progress/--no-progress", default=None,
              help="Progress bar on stderr [default: only when stderr is a terminal].")
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default=None,
              help="Start from a named configuration; options given explicitly win. magenta: the reference's "
                   "(recurrent dropout 0.1, enc 256 / dec 512, KL weight 0.5 from 0.01, ...); magenta-large: its "
                   "big-model recipe (layer_norm encoder 512, hyper decoder 2048, no recurrent dropout; a GPU "
                   "job). See sketchvae/presets.py and the README's 'Differences from magenta'.")
@_add_options
def train(data, run_dir, resume, init_from, tensorboard, skip_bad, progress, preset, **options):
    """Train Sketch-RNN on DATA and write the run folder -o RUN_DIR.

    DATA: a prepared HDF5 cache (sketchvae prepare), or .npz / .ndjson files, folders of them or
    Quick, Draw! class names (prepared into RUN_DIR/data.h5).  With --resume, DATA may be left
    out (the run's data is used); given, it must be the run's data.

    Ctrl-C (or SIGTERM) saves last.pt at the current step and prints the command that resumes;
    a second Ctrl-C stops at once.  last.pt is also saved every --save-minutes.  Every validation
    draws samples/step_NNNNNN.svg; `sketchvae report RUN_DIR` shows the curves and the grids.

    Time: the default 20,000 steps at the default size take about 7 hours on a laptop-class CPU;
    for a first try use a smaller model and fewer steps (see the second example).

    \b
    Examples:
      sketchvae train ../shared/data/sketchrnn_datasets/aaron_sheep.npz -o runs/sheep
      sketchvae train data/sheep.h5 -o runs/quick --enc-rnn-size 128 --dec-rnn-size 256 --steps 2000
      sketchvae train drawings/ -o runs/mine --skip-bad       # skip malformed drawings
      sketchvae train cat.npz pig.npz --mode class_vae -o runs/catpig --steps 50000
      sketchvae train sheep.npz --preset magenta -o runs/sheep_ref
      sketchvae train sheep.npz -o runs/hyper --cell hyper --dec-rnn-size 128 --hyper-rnn-size 64 --steps 500
      sketchvae train -o runs/sheep --resume --steps 40000
      sketchvae train cat.npz -o runs/sheep2cat --init-from runs/sheep/last.pt
      sketchvae report runs/sheep
    """
    import dataclasses
    import shlex
    from pathlib import Path

    from sketchvae import runtime
    from sketchvae.checkpoint import CheckpointError, config_from_dict, load_checkpoint
    from sketchvae.data.formats import DataError
    from sketchvae.models.sketch_rnn import SketchRNNConfig
    from sketchvae.presets import apply_preset
    from sketchvae.run import BEST_CKPT, DATA_CACHE, LAST_CKPT, TENSORBOARD_MISSING, tensorboard_available
    from sketchvae.train import (RESUMABLE_OVERRIDES, TrainConfig, TrainingDiverged, fit, prepare_data,
                                 saved_train_config)

    ctx = click.get_current_context()
    given = {k for k, v in options.items()
             if v is not None and ctx.get_parameter_source(k) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)}
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    model_fields = {f.name for f in dataclasses.fields(SketchRNNConfig)}
    run = Path(run_dir)
    if tensorboard and not tensorboard_available():
        raise click.UsageError(f"--tensorboard: {TENSORBOARD_MISSING}")
    if resume and init_from:
        raise click.UsageError("--init-from starts a new run; --resume continues this one: give one of them")
    try:
        if resume:
            if preset is not None:
                raise click.UsageError("--preset cannot be used with --resume (the run keeps its saved options)")
            saved = saved_train_config(run)
            ckpt = load_checkpoint(run / LAST_CKPT)
            saved_model = dataclasses.asdict(config_from_dict(SketchRNNConfig, ckpt["config"]))
            fixed = {**saved_model, **{k: v for k, v in dataclasses.asdict(saved).items()
                                       if k not in RESUMABLE_OVERRIDES}}
            _refuse_changes(given, options, fixed, "--resume continues the saved run exactly",
                            f"allowed: {', '.join(_flag(o) for o in RESUMABLE_OVERRIDES)}")
            tcfg = dataclasses.replace(saved, **{k: options[k] for k in given if k in train_fields})
            mcfg = None
            if not data:
                data = (_run_data(run, ckpt, DATA_CACHE, LAST_CKPT),)
        else:
            if not data:
                raise click.UsageError("DATA is required (a prepared .h5 cache, .npz / .ndjson files or class names)")
            mcfg = {k: options[k] for k in given if k in model_fields}  # num_classes comes from the data
            tfields = {k: options[k] for k in given if k in train_fields}
            if init_from:
                if preset is not None:
                    raise click.UsageError("--preset sets the model; --init-from takes it from the checkpoint: "
                                           "give one of them")
                tcfg = TrainConfig(**tfields)
                init = Path(init_from)
                if init.is_dir():
                    init = init / BEST_CKPT if (init / BEST_CKPT).exists() else init / LAST_CKPT
                init_from = str(init)
                _refuse_changes(given, options, {k: v for k, v in load_checkpoint(init)["config"].items()
                                                 if k in model_fields},
                                "--init-from takes the model from the checkpoint", "leave the model options out")
                mcfg = None
            else:
                mcfg, tfields = apply_preset(preset, mcfg, tfields)
                tcfg = TrainConfig(**tfields)  # num_classes (below) and max_seq_len (in fit) come from the data
                SketchRNNConfig(**{**mcfg, "num_classes": 1})  # validate now, before preparing any data
            if (run / LAST_CKPT).exists():
                raise click.UsageError(f"{run} already holds a run; use --resume to continue it or choose another -o")
        with new_run_dir(run):
            try:
                cache_path = prepare_data(list(data), run, keep_existing=resume, skip_bad=skip_bad)
            except DataError as err:
                if skip_bad or _is_cache(data):
                    raise
                raise click.ClickException(f"{err}\n(to skip bad sketches and count them instead, add --skip-bad, "
                                           f"or prepare the data first: sketchvae prepare ... --skip-bad -o data.h5)"
                                           ) from None
            callback = _ProgressCallback(show_progress(progress))
            try:
                result = fit(mcfg, tcfg, cache_path, run, resume=resume, callback=callback, init_from=init_from,
                             tensorboard=tensorboard)
            finally:
                callback.close()
    except runtime.TrainingInterrupted as err:
        where = f"step {err.step}" if err.step is not None else "its last save"
        click.echo(f"\nstopped by {err.signal_name}: {err.checkpoint} holds {where}. Resume with:\n"
                   f"  sketchvae train -o {shlex.quote(str(run_dir))} --resume", err=True)
        ctx.exit(err.exit_code)
    except TrainingDiverged as err:
        _fail(err)
    except (ValueError, CheckpointError, FileNotFoundError, runtime.DiskFullError) as err:
        _fail(err)
    if result.best_valid:
        bv = result.best_valid
        click.echo(f"best valid (step {bv['step']}): loss {bv['loss']:.4f}  recon {bv['recon']:.4f}  kl {bv['kl']:.4f}")
    if result.test:
        t = result.test
        click.echo(f"test (best.pt): loss {t['loss']:.4f}  recon {t['recon']:.4f}  kl {t['kl']:.4f}")
    if result.nonfinite_skipped:
        click.echo(f"skipped {result.nonfinite_skipped} steps with a non-finite loss or gradient")
    click.echo(f"run folder: {result.run_dir} ({result.step} steps, {result.elapsed_s:.0f} s); "
               f"curves and samples: sketchvae report {shlex.quote(str(run_dir))}")


def _flag(field: str) -> str:
    return "--" + field.replace("_", "-")


def _refuse_changes(given: set, options: dict, fixed: dict, why: str, hint: str) -> None:
    """UsageError naming the options given with a value other than the one `fixed` holds."""
    differ = sorted(k for k in given if k in fixed and options[k] != fixed[k])
    if differ:
        shown = ", ".join(f"{_flag(k)} {options[k]} (the run's: {fixed[k]})" for k in differ)
        raise click.UsageError(f"{why}; these options differ from it: {shown} ({hint})")


def _run_data(run, ckpt: dict, data_cache: str, last: str) -> str:
    """The data a run trained on: its data.h5, else the path recorded in last.pt (absolute since
    this version; an older run's relative path only works from the folder it was started in)."""
    from pathlib import Path

    prepared = run / data_cache
    if prepared.exists():
        return str(prepared)
    recorded = ckpt["extra"].get("data") or ""
    if not recorded or not Path(recorded).exists():
        raise click.UsageError(f"{run / last} records its data as {recorded!r}, which is not found from here "
                               f"({Path.cwd()}); pass DATA again: sketchvae train DATA -o {run} --resume")
    return recorded


class _ProgressCallback:
    """Turns `fit` events into a tqdm bar (rank 0 only) and one line per validation."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bar = None
        self.rank = 0

    def __call__(self, event: str, info: dict) -> None:
        if event == "start":
            self.rank = info["rank"]
            if self.rank != 0:
                return
            what = "resuming at step {start_step}".format(**info) if info["resumed"] else "training"
            world = f" x {info['world_size']} processes" if info["world_size"] > 1 else ""
            click.echo(f"device: {info['device']}{world}; {what}; {info['num_params']:,} parameters; "
                       f"{info['train_sketches']:,} training sketches"
                       + (f" ({info['dropped_too_long']} longer than max_seq_len left out)"
                          if info["dropped_too_long"] else "")
                       + (f"; classes balanced: {info['epoch_sketches']:,} sketches an epoch"
                          if info.get("balance_classes") else ""), err=True)
            n_max, data_max = info["model_config"]["max_seq_len"], info.get("data_max_len", 0)
            if n_max == data_max:
                click.echo(f"N_max (max_seq_len) = {n_max}: the longest sketch in the data", err=True)
            else:
                click.echo(f"N_max (max_seq_len) = {n_max}, given (the longest sketch in the data has "
                           f"{data_max} points)", err=True)
            if self.enabled:
                from tqdm import tqdm

                self.bar = tqdm(total=info["steps"], initial=info["start_step"], unit="step", desc="train",
                                file=sys.stderr, dynamic_ncols=True, smoothing=0.05)
        elif self.rank != 0:
            return
        elif event == "step" and self.bar is not None:
            self.bar.update(1)
            if info["step"] % 10 == 0 and info["finite"]:
                self.bar.set_postfix(loss=f"{info['loss']:.3f}", refresh=False)
        elif event == "metrics" and info["split"] == "valid":
            msg = (f"step {info['step']}: valid loss {info['loss']:.4f}  recon {info['recon']:.4f}  "
                   f"kl {info['kl']:.4f}")
            if self.bar is not None:
                self.bar.write(msg, file=sys.stderr)
            else:
                click.echo(msg, err=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


@main.command()
@click.argument("checkpoint", type=click.Path(dir_okay=True))
@click.argument("data", nargs=-1, required=True)
@click.option("--split", default="test", show_default=True, type=click.Choice(["train", "valid", "test"]),
              help="Split of the data to evaluate.")
@click.option("--batch-size", default=100, show_default=True, type=int)
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda | cuda:N")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the z noise (same seed, same numbers).")
@click.option("--max-batches", default=0, show_default=True, type=int, help="Stop after N batches (0 = all).")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as one JSON object.")
def evaluate(checkpoint, data, split, batch_size, device, seed, max_batches, as_json):
    """Evaluate CHECKPOINT (a .pt file, a run folder: its best.pt, or a shipped name) on a split of DATA.

    DATA: a prepared .h5 cache, or .npz / .ndjson files / class names (prepared into a
    temporary folder).  Prints loss, recon (L_R) and kl (L_KL) as training's validation does.

    \b
    Examples:
      sketchvae evaluate runs/sheep ../shared/data/sketchrnn_datasets/aaron_sheep.npz
      sketchvae evaluate sheep data/sheep.h5 --split valid --json
      sketchvae evaluate runs/catpig/best.pt cat.npz pig.npz --max-batches 10
    """
    import tempfile
    from pathlib import Path

    from sketchvae.checkpoint import CheckpointError
    from sketchvae.train import BEST_CKPT, evaluate_checkpoint, prepare_data

    ckpt = Path(checkpoint)
    if ckpt.is_dir() and (ckpt / BEST_CKPT).exists():
        ckpt = ckpt / BEST_CKPT
    tmp = None
    try:
        with tempfile.TemporaryDirectory(prefix="sketchvae-evaluate-") as tmp:
            cache = prepare_data(list(data), tmp)
            metrics = evaluate_checkpoint(ckpt, cache, split, batch_size=batch_size, device=device, seed=seed,
                                          max_batches=max_batches)
    except (ValueError, CheckpointError, FileNotFoundError) as err:
        msg = str(err)
        if tmp is not None:  # the data prepared in a temporary folder is, to the user, DATA
            msg = msg.replace(str(Path(tmp) / "data.h5"), f"the data prepared from {' '.join(data)}")
        _fail(msg)
    if as_json:
        click.echo(json.dumps(metrics))
        return
    click.echo(f"{metrics['checkpoint']} on {split} ({metrics['n']} sketches"
               + (f", {metrics['skipped']} too long left out" if metrics["skipped"] else "") + "):")
    click.echo(f"  loss {metrics['loss']:.4f}  recon {metrics['recon']:.4f} (offset {metrics['offset']:.4f}, "
               f"pen {metrics['pen']:.4f})  kl {metrics['kl']:.4f}")


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("-o", "--out", default=None, type=click.Path(dir_okay=False),
              help="HTML file to write  [default: RUN_DIR/report.html]")
def report(run_dir, out):
    """Write RUN_DIR/report.html: loss curves, sample grids over time and the run's config.

    The page is one self-contained file (the curves are a PNG drawn with matplotlib, the grids
    the run's samples/step_NNNNNN.svg, embedded): open it in a browser, mail it, keep it.  It can
    be written while the run is still training.

    \b
    Examples:
      sketchvae report runs/sheep                 # then open runs/sheep/report.html
      sketchvae report runs/sheep -o sheep.html
    """
    from sketchvae import runtime
    from sketchvae.run import RunFolder

    try:
        path = RunFolder(run_dir).write_report(out)
    except (ValueError, FileNotFoundError, runtime.DiskFullError) as err:
        _fail(err)
    click.echo(f"wrote {path}")
