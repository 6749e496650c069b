"""`sketchvae score`: sample quality of a Sketch-RNN against held-out real drawings.

Thin wrapper over `sketchvae.evaluation.score`; DATA is read as `sketchvae evaluate` reads it.
"""

from __future__ import annotations

import json

import click

from sketchvae.cli import main
from sketchvae.cli.common import flag_message, progress_option, show_progress
from sketchvae.cli.generate import _TAU, _load

_FLAGS = {"n": "-n", "temperature": "--temperature", "folds": "--folds", "epochs": "--epochs", "ScoreConfig.": ""}


def _fail(err: BaseException):
    raise click.ClickException(flag_message(str(err), _FLAGS)) from None


def _stats_line(label: str, st: dict) -> str:
    ended = "-" if st["ended"] is None else f"{100 * st['ended']:.0f} %"
    return (f"    {label:<6} {st['points']:>7.1f} {st['points_median']:>7.0f} {st['strokes']:>8.1f} {ended:>7} "
            f"{st['width']:>7.0f} x {st['height']:.0f}")


@main.command()
@click.argument("ckpt", type=click.Path(dir_okay=True))
@click.argument("data", nargs=-1, required=True)
@click.option("--split", default="test", show_default=True, type=click.Choice(["train", "valid", "test"]),
              help="Held-out drawings to compare with (the control and the recogniser use 'train').")
@click.option("-n", "n", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Samples per class; the test uses min(N, drawings of the class in the split) of each side.")
@click.option("-t", "--temperature", type=_TAU, default=0.4, show_default=True, help="Sampling temperature tau > 0.")
@click.option("--convention", type=click.Choice(["paper", "magenta", "magenta-js"]), default=None,
              help="What -t means (see `sketchvae sample --help`) [default: the checkpoint's own].")
@click.option("--folds", type=click.IntRange(min=2), default=5, show_default=True, help="k of the k-fold test.")
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True,
              help="Training epochs of each fold's network.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seeds the samples, the drawings chosen and the networks (another seed: another measurement).")
@click.option("--device", default="cpu", show_default=True, help="Where the model samples: cpu | cuda | auto.")
@click.option("--threads", type=click.IntRange(min=0), default=0, help="torch CPU threads (0 = torch's default).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@progress_option
def score(ckpt, data, split, n, temperature, convention, folds, epochs, seed, device, threads, as_json, progress):
    """Measure how real the samples of CKPT look, against the drawings of DATA.

    \b
    Prints, per class (each class of a class-conditional model; else the whole split):
      model vs real  accuracy of a small CNN trained (k-fold) to tell samples from held-out
                     drawings, +- its standard error: 0.5 = indistinguishable, 1.0 = always told apart
      real vs real   the same test with training drawings in place of the samples (the control,
                     near 0.5; its distance from 0.5 shows the test's noise)
      recognised     class-conditional models: the fraction of samples a classifier trained on DATA's
                     training split names as the class asked for (and, for the held-out drawings)
    and statistics of samples and held-out drawings: points and strokes per drawing, the fraction of
    samples that drew the end state before the model's length limit, and the median bounding box.

    CKPT: a checkpoint file, a run folder (its best.pt) or a shipped name.  DATA: a prepared .h5
    cache, or .npz / .ndjson files / class names (prepared into a temporary folder), as for
    `sketchvae evaluate`.  About 20 s for sheep on one CPU thread (300 test sheep); the README lists
    the noise of each number.

    \b
    Examples:
      sketchvae score sheep ../shared/data/sketchrnn_datasets/aaron_sheep.npz
      sketchvae score multiclass aaron_sheep.npz omniglot.npz short_kanji.npz --json
      sketchvae score runs/cat/best.pt data/cat.h5 --split valid -n 500 -t 1.0 --seed 1
    """
    import tempfile
    from pathlib import Path

    import torch

    from sketchvae import runtime
    from sketchvae.checkpoint import CheckpointError
    from sketchvae.evaluation import ScoreConfig
    from sketchvae.evaluation import score as run_score
    from sketchvae.train import prepare_data

    if threads:
        torch.set_num_threads(threads)
    runtime.configure_cpu()
    sampler = _load(ckpt, device)
    verbose = show_progress(progress)
    report = (lambda message: click.echo(f"score: {message}", err=True)) if verbose else None
    tmp = None
    try:
        config = ScoreConfig(n=n, temperature=temperature, convention=convention, folds=folds, epochs=epochs,
                             seed=seed)
        with tempfile.TemporaryDirectory(prefix="sketchvae-score-") as tmp:
            cache = prepare_data(list(data), tmp)
            result = run_score(sampler, cache, split, config, report=report)
    except (ValueError, CheckpointError, FileNotFoundError) as err:
        msg = str(err)
        if tmp is not None:  # the data prepared in a temporary folder is, to the user, DATA
            msg = msg.replace(str(Path(tmp) / "data.h5"), f"the data prepared from {' '.join(data)}")
        _fail(msg)
    result = {"checkpoint": str(ckpt), "data": list(data), **result}
    if as_json:
        click.echo(json.dumps(result))
        return
    click.echo(f"{ckpt} on {split} of {' '.join(data)}: tau {result['temperature']:g} ({result['convention']}), "
               f"seed {seed}, {folds}-fold, {result['seconds']:.0f} s")
    recog = "recogniser" in result
    click.echo(f"  {'class':<14} {'m':>5}  {'model vs real':>15}  {'real vs real':>15}"
               + (f"  {'recognised':>10}  {'(held-out)':>10}" if recog else ""))
    for c in result["classes"]:
        t, k = c["c2st"], c["control"]
        line = (f"  {c['class']:<14} {c['m']:>5}  {t['accuracy']:>7.3f} +- {t['se']:.3f}  "
                f"{k['accuracy']:>7.3f} +- {k['se']:.3f}")
        if recog:
            line += f"  {100 * c['recognised']:>8.1f} %  {100 * c['recognised_real']:>8.1f} %"
        click.echo(line)
    if result["classes_not_in_data"]:
        click.echo(f"  not scored (not in DATA): {', '.join(result['classes_not_in_data'])}")
    if recog:
        click.echo(f"  (recogniser: {result['recogniser']['accuracy'] * 100:.1f} % of the {split} drawings scored "
                   f"named right)")
    click.echo(f"  {'statistics':<8} {'points':>7} {'median':>7} {'strokes':>8} {'ended':>7} {'width x height':>15}")
    for c in result["classes"]:
        click.echo(f"  {c['class']}")
        click.echo(_stats_line("model", c["stats"]["model"]))
        click.echo(_stats_line("real", c["stats"]["real"]))
