"""`sketchvae export-web`: the serve page as a folder of static files, the models running in the page.

    from sketchvae.serve.export import export_web
    result = export_web(["checkpoints/sheep.pt"], "site/")   # ExportResult: files written, notes

The folder (open index.html from disk, or put it on any static host; nothing is loaded from elsewhere):

    index.html             the serve page (static/index.html), the in-page scripts named where its
                           `<!-- export-web: scripts -->` marker stands, and a Content-Security-Policy
    static/                the page's files, the same ones `sketchvae serve` sends: app.js (the page),
                           style.css, favicon.svg, sketchrnn.js (the decoder), inpage.js (the adapter
                           that answers the page's API calls in the page)
    models/NAME.gen.json   each model in the `.gen.json` format (`sketchvae.interop.magenta`, with the
                           sketchvae extension for vae / class_vae models)
    models/NAME.js         the same JSON, registered by a script (`SKETCHVAE_MODELS.push(...)`): a page
                           opened from disk (file://) cannot fetch() files, but it may load scripts
    models/page.js         the page-pixel settings of `engine` (canvas, RDP epsilon, ...)

Page pixels <-> model units: the in-page adapter does what `engine.ServedModel` does, with each model's
(and class's) `units_per_px` measured here, once, by `engine.ServedModel.units_per_px`.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

from sketchvae.serve import engine
from sketchvae.serve.app import STATIC

MARKER = "<!-- export-web: scripts -->"
PAGE_FILES = ("app.js", "style.css", "favicon.svg", "sketchrnn.js", "inpage.js")
# the served page's policy (app.SECURITY_HEADERS), as a <meta>: no connect-src (nothing is fetched)
# and no frame-ancestors (not allowed in a <meta>)
CSP = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
       "connect-src 'none'")


@dataclasses.dataclass
class ExportedModel:
    name: str  # as the page lists it
    mode: str
    classes: list[str]
    gen_json: Path
    script: Path
    size: int  # bytes of the .gen.json
    magenta_js: str | None  # why @magenta/sketch cannot run it as the model itself, None when it can


@dataclasses.dataclass
class ExportResult:
    out_dir: Path
    index: Path
    models: list[ExportedModel]
    notes: list[str]  # checkpoints skipped in folders


def file_stem(name: str) -> str:
    """A model name ("magenta/sheep") as a file name ("magenta_sheep")."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name).strip(".") or "model"


def page_html(scripts: list[str]) -> str:
    """static/index.html with `scripts` (relative URLs) at the marker and the CSP as a <meta>."""
    html = (STATIC / "index.html").read_text(encoding="utf-8")
    if MARKER not in html:
        raise RuntimeError(f"{STATIC / 'index.html'} has lost its {MARKER} marker")
    tags = "\n  ".join(f'<script src="{s}" defer></script>' for s in scripts)
    html = html.replace(MARKER, tags, 1)
    head = '<meta charset="utf-8">'  # the policy first, so that it covers everything the page loads
    return html.replace(head, f'{head}\n  <meta http-equiv="Content-Security-Policy" content="{CSP}">', 1)


def export_web(paths, out_dir, *, device="cpu") -> ExportResult:
    """Write the static page for the Sketch-RNN checkpoints among `paths` (files or folders, as
    `sketchvae serve` takes them, or shipped names; none: the shipped ones) into `out_dir` (created; files of the same
    names are replaced).  ValueError (naming the file) for a checkpoint the page cannot run (e.g. a
    layer-norm LSTM); `magenta.MagentaFormatError` is a ValueError."""
    from sketchvae.checkpoint import load_checkpoint, resolve_checkpoint
    from sketchvae.interop import magenta as M

    # a shipped name ("sheep", "magenta/bird") where no such file or folder exists, as other commands take it
    paths = [p if Path(p).exists() else resolve_checkpoint(p) for p in paths]
    models, notes = engine.discover(paths, device=device, warm=False)
    out = Path(out_dir)
    # everything is converted before anything is written: a model that cannot be exported leaves no half folder
    prepared = []
    for m in models.values():
        gen = M.from_checkpoint(load_checkpoint(m.path), m.path, file_stem(m.name), extension=True)
        units = {c or "": m.units_per_px(c) for c in (m.classes or [None])}
        prepared.append((m, gen, units))
    (out / "static").mkdir(parents=True, exist_ok=True)
    (out / "models").mkdir(exist_ok=True)
    for f in PAGE_FILES:
        shutil.copyfile(STATIC / f, out / "static" / f)
    settings = {"canvas": engine.CANVAS, "rdpEpsilonPx": engine.RDP_EPSILON_PX,
                "minContinuation": engine.MIN_CONTINUATION, "decimals": engine.DECIMALS}
    (out / "models" / "page.js").write_text(
        '"use strict";\n// written by sketchvae export-web: the page-pixel settings of sketchvae/serve/engine.py\n'
        f"window.SKETCHVAE_PAGE = {json.dumps(settings)};\n", encoding="utf-8")
    exported, scripts, used = [], ["models/page.js"], set()
    for m, gen, units in prepared:
        stem, k = file_stem(m.name), 2
        while stem in used:
            stem, k = f"{file_stem(m.name)}-{k}", k + 1
        used.add(stem)
        text = gen.dumps()
        gen_path = out / "models" / f"{stem}.gen.json"
        gen_path.write_text(text, encoding="ascii")
        entry = {"name": m.name, "mode": m.mode, "classes": m.classes, "unitsPerPx": units,
                 "file": gen_path.name}
        script = out / "models" / f"{stem}.js"
        script.write_text(
            '"use strict";\n// written by sketchvae export-web: the model of ' + gen_path.name + " for the page\n"
            "(window.SKETCHVAE_MODELS = window.SKETCHVAE_MODELS || []).push(Object.assign("
            + json.dumps(entry) + ", {model: " + text.rstrip("\n") + "}));\n", encoding="ascii")
        scripts.append(f"models/{script.name}")
        exported.append(ExportedModel(m.name, m.mode, m.classes, gen_path, script, len(text), M.magenta_js_note(gen)))
    index = out / "index.html"  # the models register first; inpage.js reads them when it runs
    index.write_text(page_html(scripts + ["static/sketchrnn.js", "static/inpage.js"]), encoding="utf-8")
    return ExportResult(out, index, exported, notes)


__all__ = ["export_web", "ExportResult", "ExportedModel", "page_html", "file_stem", "MARKER"]
