"""`sketchvae convert`: magenta-js `.gen.json` models <-> sketchvae checkpoints.

Thin wrapper over `sketchvae.interop.magenta`; `sketchvae download --magenta` (in data.py) fetches
Magenta's published models and converts them with the same code.
"""

from __future__ import annotations

from pathlib import Path

import click

from sketchvae.cli import main


@main.command()
@click.argument("src", type=click.Path(dir_okay=False))
@click.argument("dst", type=click.Path(dir_okay=False))
@click.option("--name", default=None, help="Model name written into an exported .gen.json "
              "[default: the converted model's own, else the checkpoint's class].")
def convert(src, dst, name):
    """Convert a magenta-js model to a sketchvae checkpoint, or back; the direction comes from the names.

    \b
    NAME.gen.json -> NAME.pt   a @magenta/sketch model (e.g. from `sketchvae download --magenta`)
                               becomes a decoder-only checkpoint for sample, complete and serve;
                               its default temperature convention is magenta-js's.
    NAME.pt -> NAME.gen.json   a decoder-only (--mode decoder), plain-LSTM (--cell lstm) model with
                               20 mixture components, for @magenta/sketch in a web page; weights are
                               rounded to the format's 16-bit grid (range +-10).

    \b
    Examples:
      sketchvae convert sheep.gen.json sheep.pt
      sketchvae sample sheep.pt -n 16 -o sheep.svg
      sketchvae convert runs/cat/best.pt cat.gen.json
    """
    from sketchvae.checkpoint import CheckpointError
    from sketchvae.cli.common import output_file
    from sketchvae.interop.magenta import MagentaFormatError, convert as run

    output_file(dst, what="converted model")
    try:
        out = run(src, dst, name)
    except (MagentaFormatError, CheckpointError, ValueError, OSError) as err:
        raise click.ClickException(str(err)) from None
    if str(out).lower().endswith((".pt", ".pth")):
        from sketchvae.checkpoint import load_checkpoint

        ckpt = load_checkpoint(out)
        cfg = ckpt["config"]
        click.echo(f"wrote {out}: decoder-only Sketch-RNN, {cfg['dec_rnn_size']} LSTM units, {cfg['num_mixture']} "
                   f"mixture components, scale factor {ckpt['scale_factor']:g}, max length {cfg['max_seq_len']}, "
                   f"temperature convention {ckpt['extra'].get('temperature_convention', 'paper')}")
        click.echo(f"draw with: sketchvae sample {out} -n 16 -o {Path(out).stem}.svg")
    else:
        click.echo(f"wrote {out} (@magenta/sketch .gen.json; weights rounded to the format's 16-bit grid)")
