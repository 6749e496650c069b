"""`sketchvae export-web`: the drawing page of `sketchvae serve` as static files, the models in the page.

Thin: `sketchvae.serve.export.export_web` does the work; this parses, checks the output folder and
reports what was written.
"""

from __future__ import annotations

import click

from sketchvae.cli import main


@main.command("export-web")
@click.argument("models", nargs=-1, type=click.Path())
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder to write the page into (created; files of the same names are replaced).")
def export_web(models, out_dir):
    """Write a folder that runs the drawing page with the models in the browser: no server.

    The folder holds index.html, the page's static files (the same ones `sketchvae serve` sends,
    plus sketchrnn.js, a small Sketch-RNN decoder in plain JavaScript) and each model as
    models/NAME.gen.json (the magenta-js format; vae and class_vae models carry the sketchvae
    extension with their encoder and classes, so interpolation and classes work too) and as
    models/NAME.js (the same model for a page opened from disk, where fetch() is not allowed).
    Open index.html from disk, or copy the folder to any static host (GitHub Pages, a course page).

    MODELS are Sketch-RNN checkpoints (plain LSTM cells), folders of them or shipped names
    (sheep, multiclass, magenta/NAME); without MODELS, all the shipped ones.  A Magenta .gen.json
    model: convert it first (`sketchvae convert`).

    \b
    Examples:
      sketchvae export-web checkpoints/sheep.pt -o site/
      sketchvae convert bird.gen.json bird.pt && sketchvae export-web bird.pt sheep -o site/
      python -m http.server -d site/ 8080        # or open site/index.html in a browser
    """
    from sketchvae.cli.common import output_dir
    from sketchvae.runtime import configure_cpu
    from sketchvae.serve.export import export_web as run

    output_dir(out_dir, what="page folder")
    configure_cpu()
    click.echo("loading models and measuring their drawing size ...", err=True)
    try:
        result = run(list(models), out_dir)
    except ValueError as err:
        raise click.ClickException(str(err)) from None
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
    for m in result.models:
        extra = f", classes: {', '.join(m.classes)}" if m.classes else ""
        click.echo(f"  {m.name}  ({m.mode}{extra})  {m.gen_json} ({m.size / 1e6:.1f} MB)")
        if m.magenta_js:
            click.echo(f"    magenta-js: {m.magenta_js}")
    click.echo(f"wrote {result.index}: open it in a browser (from disk or any static web server)")
