"""The `sketchvae` command line: a click group; each stage registers its commands.

Commands live beside the stage they drive (data.py, train.py, generate.py, mnist.py)
and stay thin: parse, validate, call the Python API, report. Heavy imports happen
inside commands so `sketchvae --help` is instant.
"""

from __future__ import annotations

import importlib

import click

from sketchvae import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="sketchvae")
def main():
    """Sketch-RNN and image VAEs: prepare data, train, evaluate and draw to SVG.

    \b
    Quick start (offline, shipped checkpoint):
      sketchvae sample -n 16 -o sheep.svg
    """


for _name in ("data", "train", "generate", "mnist", "interop", "serve"):
    try:
        importlib.import_module(f"sketchvae.cli.{_name}")
    except ModuleNotFoundError as err:  # a stage not written yet
        if err.name != f"sketchvae.cli.{_name}":
            raise
