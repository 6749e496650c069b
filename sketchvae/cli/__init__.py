"""The `sketchvae` command line: a click group; each stage registers its commands.

Commands live beside the stage they drive (data.py, train.py, generate.py, mnist.py)
and stay thin: parse, validate, call the Python API, report. Heavy imports happen
inside commands so `sketchvae --help` is instant.
"""

from __future__ import annotations

import errno
import importlib

import click

from sketchvae import __version__


class _Group(click.Group):
    """The top-level group: an OSError that no command turned into a message (a disk that fills, a
    folder that vanishes) still ends in one line naming the file and the reason, never a traceback.
    Any other unexpected exception is a bug: its traceback stays visible, with a note asking for a
    report."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except click.exceptions.ClickException:
            raise
        except OSError as err:
            if err.errno == errno.EPIPE:  # `sketchvae ... | head`: click exits quietly
                raise
            from sketchvae.cli.common import os_error_line

            raise click.ClickException(os_error_line(err)) from None
        except Exception as err:
            if hasattr(err, "add_note") and not isinstance(err, (click.exceptions.Exit, click.exceptions.Abort)):
                err.add_note(f"sketchvae {__version__}: this is a bug; please report it with the command you ran "
                             f"and this traceback")
            raise


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="sketchvae")
def main():
    """Sketch-RNN and image VAEs: prepare data, train, evaluate and draw to SVG.

    \b
    Quick start (offline, shipped checkpoint; the README's first picture):
      sketchvae sample -n 16 --cols 8 --seed 0 -o sheep.svg

    Every command has --help with examples.  Wherever a checkpoint is asked for, a run folder
    (its best.pt) or a shipped name (sheep, multiclass, mnist_conv, mnist_cvae) works too.
    """


for _name in ("data", "train", "generate", "score", "mnist", "interop", "serve", "web"):
    try:
        importlib.import_module(f"sketchvae.cli.{_name}")
    except ModuleNotFoundError as err:  # a stage not written yet
        if err.name != f"sketchvae.cli.{_name}":
            raise
