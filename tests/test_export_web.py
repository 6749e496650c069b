"""`sketchvae export-web`: the .gen.json extension, the folder it writes, its JavaScript decoder against
PyTorch and @magenta/sketch (Node), and the exported page in Chromium (file:// and a static server).

The JS decoder (sketchvae/serve/static/sketchrnn.js) is driven by tests/js/sketchrnn_steps.js: for a
fixed stroke sequence it prints the per-step mixture and pen probabilities, the rows `draw` makes of
them with given random numbers, and the encoder's mu / presig; we compute the same with PyTorch:

* with the model's weights snapped to the format's int16 grid first: equal to float rounding;
* with the model's own float weights: equal to the int16 quantisation (the largest differences are
  printed with -s and quoted in the README);
* Magenta's published models: equal to PyTorch's converted checkpoint and to @magenta/sketch itself.

Tests that need node, @magenta/sketch, Chromium or the shared Magenta models skip with the reason.
"""

from __future__ import annotations

import functools
import http.server
import json
import math
import os
import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from sketchvae.checkpoint import load_checkpoint, save_checkpoint, shipped_checkpoints_dir
from sketchvae.distributions import tempered
from sketchvae.interop import magenta as M
from sketchvae.models.sketch_rnn import SketchRNN, SketchRNNConfig
from sketchvae.sample import draw, encode, load
from sketchvae.serve import engine
from sketchvae.serve.export import MARKER, export_web, page_html
from serve_util import CLASSES, tiny_checkpoint
from test_magenta_js import TAUS, differences, strokes  # the same fixed strokes, temperatures and measure

ROOT = Path(__file__).resolve().parents[1]
JS = ROOT / "tests" / "js"
MAGENTA_JS = JS / "node_modules" / "@magenta" / "sketch" / "es5" / "sketch_rnn" / "model.js"
MAGENTA_DIR = ROOT.parent / "shared" / "data" / "magenta_models"
MAGENTA_NAMES = ("sheep", "bird", "bicycle", "rabbit", "dog")
CHROMIUM = Path("/usr/bin/chromium")

needs_node = pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed (runs the page's decoder)")
needs_magenta_js = pytest.mark.skipif(not MAGENTA_JS.exists(), reason="@magenta/sketch 0.2.0 is not installed in "
                                      "tests/js/node_modules (npm ci --prefix tests/js)")

MEASURED: dict[str, float] = {}  # largest differences, printed with -s


# ------------------------------------------------------------------------------------------ helpers
def node(script: str, model: Path, inp: dict, tmp_path: Path) -> dict:
    (tmp_path / "in.json").write_text(json.dumps(inp))
    proc = subprocess.run(["node", str(JS / script), str(model), str(tmp_path / "in.json"), str(tmp_path / "out.json")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads((tmp_path / "out.json").read_text())


def torch_steps(sampler, seq, convention, z=None, label=None, noise=None) -> list[list[dict]]:
    """PyTorch's per-step pdf (magenta-js's names) for the start token then seq, per tau; with noise,
    also the row `sample.draw` makes."""
    model = sampler.model
    x = torch.tensor(seq, dtype=torch.float32)
    x[:, 0:2] /= sampler.scale_factor
    inputs = torch.cat([model.start_tokens(1), x]).unsqueeze(0)
    zt = None if z is None else torch.tensor([z], dtype=torch.float32)
    lab = None if label is None else torch.tensor([label])
    with torch.no_grad():
        params, pen_logits, _ = model.decode(inputs, zt, lab)
    steps = [[] for _ in range(inputs.shape[1])]
    for tau in TAUS:
        p, pen = tempered(params, pen_logits, tau, convention)
        fields = {"pi": p.log_pi.exp(), "muX": p.mu_x, "muY": p.mu_y, "sigmaX": p.log_sigma_x.exp(),
                  "sigmaY": p.log_sigma_y.exp(), "corr": p.rho, "pen": pen.exp()}
        for t in range(inputs.shape[1]):
            step = {k: v[0, t].double().numpy() for k, v in fields.items()}
            if noise is not None:
                row = draw(params.select((0, slice(t, t + 1))), pen_logits[0, t:t + 1],
                           torch.tensor([noise[t]], dtype=torch.float32), tau, convention=convention)
                step["row"] = row[0].double().numpy()
            steps[t].append(step)
    return steps


def snapped(path: Path, dst: Path) -> Path:
    """The checkpoint with every weight on the .gen.json int16 grid and each LSTM's two biases in the
    exported form (b_ih + b_hh - forget bias, b_hh = the forget bias; class_vae: with the first class's
    embedding folded in, as the export holds it), so the export holds the model exactly."""
    ckpt = load_checkpoint(path)
    sd = {k: v.double() for k, v in ckpt["model"].items()}
    snap = lambda v: torch.from_numpy(M.dequantize(M.quantize(v.numpy())))  # noqa: E731
    out = {}
    for name, v in sd.items():
        if name.endswith("bias_hh_l0"):
            continue
        if name.endswith("bias_ih_l0"):
            hh = name.replace("bias_ih_l0", "bias_hh_l0")
            hidden = v.shape[0] // 4
            forget = torch.zeros_like(v)
            forget[hidden:2 * hidden] = M.FORGET_BIAS  # torch gate order (i, f, g, o)
            out[name] = snap(v + sd[hh] - forget)
            out[hh] = forget.float()
        else:
            out[name] = snap(v)
    cfg = SketchRNNConfig(**ckpt["config"])
    if cfg.class_conditional:  # the exported LSTM bias holds the first class folded in: put that on the grid
        fold = out["decoder_rnn.weight_ih_l0"][:, -cfg.class_embed_size:] @ out["class_embed.weight"][0]  # (4H,)
        out["decoder_rnn.bias_ih_l0"] = snap(out["decoder_rnn.bias_ih_l0"] + fold) - fold
    model = SketchRNN(cfg)
    model.load_state_dict({k: v.float() for k, v in out.items()})
    return save_checkpoint(dst, kind="sketch_rnn", config=cfg, model=model, class_names=ckpt["class_names"],
                           scale_factor=ckpt["scale_factor"], extra=ckpt["extra"])


def gen_json(path: Path, dst: Path) -> Path:
    gen = M.from_checkpoint(load_checkpoint(path), path, extension=True)
    dst.write_text(gen.dumps())
    return dst


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Small untrained checkpoints of the three modes (3 mixture components: not magenta-js's 20)."""
    root = tmp_path_factory.mktemp("tiny")
    return {mode: tiny_checkpoint(root / f"{mode}.pt", mode, max_seq_len=60, seed=k)
            for k, mode in enumerate(("vae", "class_vae", "decoder"))}


def shipped(name: str) -> Path:
    path = shipped_checkpoints_dir() / f"{name}.pt"
    if not path.exists():
        pytest.skip(f"{path} is absent (the shipped checkpoints)")
    return path


# ------------------------------------------------------------------------------------------ the format
def test_extension_header_arrays_and_way_back(tiny, tmp_path):
    for mode, path in tiny.items():
        ckpt = load_checkpoint(path)
        gen = M.from_checkpoint(ckpt, path, extension=True)
        ext = gen.info[M.EXTENSION_KEY]
        assert ext["format"] == M.EXTENSION_FORMAT and ext["mode"] == mode
        assert ext["arrays"] == list(M.EXTENSION_ARRAYS[mode]) and len(gen.weights) == 5 + len(ext["arrays"])
        back = M.parse_gen_json(json.loads(gen.dumps()), "x")  # the reader accepts what the writer writes
        assert all(np.array_equal(a, b) for a, b in zip(back.weights, gen.weights))
        note = M.magenta_js_note(gen)
        assert "20" in note  # 3 components: magenta-js cannot load these at all, and says why
    # a decoder model: the five arrays are the plain export's, bit for bit; a vae has no way back
    dec = load_checkpoint(tiny["decoder"])
    dec["config"]["num_mixture"] = 20
    model = SketchRNN(SketchRNNConfig(**dec["config"]))
    dec["model"] = model.state_dict()
    plain, ext = M.from_checkpoint(dec, "d"), M.from_checkpoint(dec, "d", extension=True)
    assert all(np.array_equal(a, b) for a, b in zip(plain.weights, ext.weights)) and M.magenta_js_note(ext) is None
    with pytest.raises(M.MagentaFormatError, match="vae.*only decoder-only files convert back"):
        M.to_checkpoint(M.from_checkpoint(load_checkpoint(tiny["vae"]), "v", extension=True), "v.gen.json")
    with pytest.raises(M.MagentaFormatError, match="mode 'vae'.*export-web"):
        M.from_checkpoint(load_checkpoint(tiny["vae"]), "v.pt")  # the plain export still refuses, pointing on


@pytest.mark.parametrize("change, message", [
    (lambda i, d: i["sketchvae"].update(format=2), "format 2 is unknown"),
    (lambda i, d: i["sketchvae"].update(mode="gan"), "mode 'gan'"),
    (lambda i, d: i["sketchvae"]["arrays"].pop(), "arrays"),
    (lambda i, d: d[5].__setitem__(0, 7), r"weight_dims\[5\] \(decoder z kernel\)"),
])
def test_extension_errors_name_the_field(tiny, change, message):
    info, dims, strings = M.from_checkpoint(load_checkpoint(tiny["vae"]), "v", extension=True).to_json()
    change(info, dims)
    with pytest.raises(M.MagentaFormatError, match=message):
        M.parse_gen_json([info, dims, strings], "model.gen.json")


def test_layer_norm_models_are_refused_clearly(tmp_path):
    cfg = SketchRNNConfig(mode="vae", cell="layer_norm", enc_rnn_size=8, dec_rnn_size=8, z_size=4, num_mixture=3)
    path = save_checkpoint(tmp_path / "ln.pt", kind="sketch_rnn", config=cfg, model=SketchRNN(cfg), class_names=[],
                           scale_factor=10.0)
    with pytest.raises(ValueError, match="ln.pt.*layer_norm.*plain"):
        export_web([path], tmp_path / "site")
    assert not (tmp_path / "site").exists()  # nothing half-written


def test_a_class_model_saved_without_names_exports_with_the_served_names(tmp_path):
    cfg = SketchRNNConfig(mode="class_vae", enc_rnn_size=8, dec_rnn_size=8, z_size=4, num_mixture=3, num_classes=3,
                          class_embed_size=2)
    path = save_checkpoint(tmp_path / "anon.pt", kind="sketch_rnn", config=cfg, model=SketchRNN(cfg), class_names=[],
                           scale_factor=10.0)
    result = export_web([path], tmp_path / "site")
    (model,) = result.models
    assert model.classes == ["0", "1", "2"]
    assert json.loads(model.gen_json.read_text())[0]["sketchvae"]["classes"] == ["0", "1", "2"]


# ------------------------------------------------------------------------------------------ the folder
def test_export_writes_one_page_with_the_served_files(tiny, tmp_path):
    result = export_web([tiny["vae"], tiny["class_vae"], tiny["decoder"]], tmp_path / "site")
    site = tmp_path / "site"
    static = ROOT / "sketchvae" / "serve" / "static"
    for f in ("app.js", "style.css", "favicon.svg", "sketchrnn.js", "inpage.js"):
        assert (site / "static" / f).read_bytes() == (static / f).read_bytes()  # the served files themselves
    html = result.index.read_text()
    assert MARKER not in html and MARKER in (static / "index.html").read_text()
    scripts = [s.split('"')[1] for s in html.split("<script src=")[1:]]
    assert scripts == ["models/page.js", "models/vae.js", "models/class_vae.js", "models/decoder.js",
                       "static/sketchrnn.js", "static/inpage.js", "static/app.js"]
    assert 'http-equiv="Content-Security-Policy"' in html and "script-src 'self'" in html
    assert '"/static/' not in html  # relative URLs: works from file:// and from any folder of a host
    assert [m.mode for m in result.models] == ["vae", "class_vae", "decoder"]
    for m in result.models:
        js = m.script.read_text()
        body = js[js.index("Object.assign(") + len("Object.assign("):js.rindex("));")]
        entry_json, model_json = body.split(", {model: ", 1)
        entry = json.loads(entry_json)
        assert json.loads(model_json.rstrip("}")) == json.loads(m.gen_json.read_text())  # the same model twice
        assert entry["name"] == m.name and entry["classes"] == m.classes
        assert set(entry["unitsPerPx"]) == set(m.classes or [""]) and all(v > 0 for v in entry["unitsPerPx"].values())
    assert json.loads(result.models[1].gen_json.read_text())[0]["sketchvae"]["classes"] == CLASSES


def test_served_page_has_no_in_page_scripts():
    assert page_html(["models/x.js"]).count("<script") == 2
    html = (ROOT / "sketchvae" / "serve" / "static" / "index.html").read_text()
    assert "inpage.js" not in html and "sketchrnn.js" not in html  # serve loads neither: app.js uses the server


def test_cli(tiny, tmp_path):
    from click.testing import CliRunner

    from sketchvae.cli import main

    runner = CliRunner()
    r = runner.invoke(main, ["export-web", "--help"])
    assert r.exit_code == 0 and "sketchvae export-web checkpoints/sheep.pt -o site/" in r.output
    r = runner.invoke(main, ["export-web", str(tiny["vae"]), "-o", str(tmp_path / "site")])
    assert r.exit_code == 0, r.output
    assert "vae.gen.json" in r.output and "magenta-js" in r.output and (tmp_path / "site" / "index.html").exists()
    (tmp_path / "file").write_text("x")
    r = runner.invoke(main, ["export-web", str(tiny["vae"]), "-o", str(tmp_path / "file")])
    assert r.exit_code != 0 and "is a file" in r.output
    r = runner.invoke(main, ["export-web", str(tmp_path / "missing.pt"), "-o", str(tmp_path / "s2")])
    assert r.exit_code != 0 and "missing.pt: checkpoint not found" in r.output and "Traceback" not in r.output
    if (shipped_checkpoints_dir() / "sheep.pt").exists():  # a shipped name, as other commands take it
        r = runner.invoke(main, ["export-web", "sheep", "-o", str(tmp_path / "s3")])
        assert r.exit_code == 0 and (tmp_path / "s3" / "models" / "sheep.js").exists(), r.output


# ------------------------------------------------------------------------------------------ Node: numbers
def _compare(path: Path, tmp_path: Path, label: str, *, classes=None, convention=None, seed=0):
    """The JS decoder on `path`'s export vs PyTorch on `path`: (pdf differences, encoder differences)."""
    sampler = load(path)
    cfg = sampler.config
    seq = strokes(sampler.scale_factor, seed=seed)
    rng = np.random.default_rng(seed + 100)
    z = rng.normal(0, 1, cfg.z_size).tolist() if cfg.conditional else None
    cls = (classes or sampler.class_names)[1] if cfg.class_conditional else None
    noise = np.concatenate([rng.random((len(seq) + 1, 2)), rng.normal(0, 1, (len(seq) + 1, 2))], 1).tolist()
    sketch = seq[:12, [0, 1, 3]].copy()
    conv = convention or sampler.convention
    out = node("sketchrnn_steps.js", gen_json(path, tmp_path / "m.gen.json"),
               {"strokes": seq.tolist(), "temperatures": list(TAUS), "convention": conv, "z": z, "class": cls,
                "noise": noise, "encode": sketch.tolist() if cfg.conditional else None}, tmp_path)
    py = torch_steps(sampler, seq, conv, z, None if cls is None else sampler.class_names.index(cls), noise)
    worst = differences(out["steps"], py)
    rows = np.array([[s[k]["row"] for k in range(len(TAUS))] for s in out["steps"]])
    want = np.array([[s[k]["row"] for k in range(len(TAUS))] for s in py])
    assert np.array_equal(rows[..., 2:], want[..., 2:]), "draw chose other pen states"
    worst["row"] = float(np.abs(rows - want).max())
    if cfg.conditional:
        mu, sigma = encode(sampler, [sketch.astype(np.float32)], None if cls is None else [cls])
        worst["mu"] = float(np.abs(np.array(out["encoded"]["mu"]) - mu[0].numpy()).max())
        worst["sigma"] = float(np.abs(np.exp(0.5 * np.array(out["encoded"]["presig"])) / sigma[0].numpy() - 1).max())
    MEASURED.update({f"{label} {k}": v for k, v in worst.items()})
    print(label, {k: f"{v:.2g}" for k, v in worst.items()})
    return worst


@needs_node
@pytest.mark.parametrize("mode", ["vae", "class_vae", "decoder"])
def test_js_decoder_equals_pytorch_tiny(tiny, tmp_path, mode):
    exact = _compare(snapped(tiny[mode], tmp_path / "s.pt"), tmp_path, f"tiny {mode} snapped")
    for key, value in exact.items():  # float rounding
        assert value < 2e-5, (key, value)
    quantised = _compare(tiny[mode], tmp_path, f"tiny {mode}")
    for key, value in quantised.items():
        assert value < 5e-3, (key, value)


@needs_node
@pytest.mark.parametrize("convention", ["paper", "magenta", "magenta-js"])
def test_js_temperature_conventions(tiny, tmp_path, convention):
    exact = _compare(snapped(tiny["vae"], tmp_path / "s.pt"), tmp_path, f"tiny vae {convention}",
                     convention=convention)
    assert max(exact.values()) < 2e-5


@needs_node
@pytest.mark.slow
@pytest.mark.parametrize("name", ["sheep", "multiclass"])
def test_js_decoder_equals_pytorch_shipped(tmp_path, name):
    path = shipped(name)
    exact = _compare(snapped(path, tmp_path / "s.pt"), tmp_path, f"{name} snapped")
    for key, value in exact.items():
        assert value < 5e-5, (key, value)
    quantised = _compare(path, tmp_path, name)  # the shipped float weights: the int16 quantisation
    for key, value in quantised.items():
        assert value < 2e-2, (key, value)


@needs_node
@needs_magenta_js
@pytest.mark.slow
@pytest.mark.parametrize("name", MAGENTA_NAMES)
def test_js_decoder_equals_pytorch_and_magenta_js_on_magenta_models(tmp_path, name):
    src = MAGENTA_DIR / f"{name}.gen.json"
    if not src.exists():
        pytest.skip(f"{src} is absent (the shared Magenta models)")
    pt = M.gen_json_to_checkpoint(src, tmp_path / f"{name}.pt")
    ours = _compare(pt, tmp_path, f"magenta {name} vs pytorch")
    exported = json.loads((tmp_path / "m.gen.json").read_text())  # what export-web writes for it
    original = json.loads(src.read_text())
    assert exported[1:] == original[1:] and exported[0]["sketchvae"]["convention"] == "magenta-js"  # weights bit for bit
    for key, value in ours.items():
        assert value < 1e-4, (key, value)
    # the original file, read by both JS decoders
    seq = strokes(load(pt).scale_factor)
    theirs = node("magenta_steps.js", src, {"strokes": seq.tolist(), "temperatures": list(TAUS)}, tmp_path)["steps"]
    mine = node("sketchrnn_steps.js", src, {"strokes": seq.tolist(), "temperatures": list(TAUS)}, tmp_path)["steps"]
    mine = [[{k: np.asarray(v, dtype=np.float64) for k, v in s.items()} for s in step] for step in mine]
    worst = differences(theirs, mine)
    MEASURED.update({f"magenta {name} vs magenta-js {k}": v for k, v in worst.items()})
    print(f"magenta {name} vs @magenta/sketch", {k: f"{v:.2g}" for k, v in worst.items()})
    for key, value in worst.items():
        assert value < 1e-4, (key, value)


@needs_node
@needs_magenta_js
@pytest.mark.parametrize("mode", ["vae", "class_vae"])
def test_magenta_js_runs_the_decoder_part_of_an_exported_vae(tmp_path, mode):
    """magenta-js loads an exported vae file and, from its 'gen initial state', equals our model at z = 0
    (class_vae: with its first class)."""
    torch.manual_seed(3)
    cfg = SketchRNNConfig(mode=mode, enc_rnn_size=16, dec_rnn_size=32, z_size=8, num_mixture=20, max_seq_len=60,
                          class_embed_size=4, num_classes=3 if mode == "class_vae" else 0)
    path = save_checkpoint(tmp_path / "m.pt", kind="sketch_rnn", config=cfg, model=SketchRNN(cfg),
                           class_names=CLASSES if mode == "class_vae" else [], scale_factor=12.5)
    gen = M.from_checkpoint(load_checkpoint(path), path, extension=True)
    (tmp_path / "m.gen.json").write_text(gen.dumps())
    c0, h0 = gen.floats()[5 + gen.info["sketchvae"]["arrays"].index("gen initial state")]
    sampler = load(path)
    seq = strokes(sampler.scale_factor, n=20)
    js = node("magenta_steps.js", tmp_path / "m.gen.json", {"strokes": seq.tolist(), "temperatures": list(TAUS),
                                                             "state": {"c": c0.tolist(), "h": h0.tolist()}}, tmp_path)
    py = torch_steps(sampler, seq, "magenta-js", [0.0] * cfg.z_size, 0 if mode == "class_vae" else None)
    worst = differences(js["steps"], py)
    print(f"magenta-js on an exported {mode}:", {k: f"{v:.2g}" for k, v in worst.items()})
    for key, value in worst.items():
        assert value < 5e-3, (key, value)


@needs_node
def test_js_sampling_is_seeded_and_ends_with_a_pen_lift(tiny, tmp_path):
    path = tiny["class_vae"]
    out = node("sketchrnn_steps.js", gen_json(path, tmp_path / "m.gen.json"),
               {"strokes": [], "temperatures": [1.0], "class": "pig",
                "sample": {"n": 5, "temperature": 0.6, "seed": 7, "maxLen": 30},
                "complete": {"sketch": [[3, 4, 0], [5, -2, 1]], "n": 4, "temperature": 0.6, "seed": 1}}, tmp_path)
    first, again = out["sampled"]
    assert first == again  # the same seed, the same sketches
    drawn = [s for s in first if s]  # (an untrained model may end at once)
    assert len(drawn) >= 2 and len({json.dumps(s) for s in drawn}) == len(drawn)  # each sketch its own draws
    for s in first + out["completed"]:
        assert len(s) <= 30 + 60 and all(len(r) == 3 and r[2] in (0, 1) for r in s)
        if s:
            assert s[-1][2] == 1
    assert len(out["completed"]) == 4


# ------------------------------------------------------------------------------------------ Chromium
def _browser_models(tmp_path: Path) -> list[Path]:
    """sheep.pt (or a tiny vae), multiclass.pt (or a tiny class_vae) and Magenta's sheep, converted."""
    models = []
    for name, mode in (("sheep", "vae"), ("multiclass", "class_vae")):
        p = shipped_checkpoints_dir() / f"{name}.pt"
        models.append(p if p.exists() else tiny_checkpoint(tmp_path / f"{name}.pt", mode, max_seq_len=60))
    src = MAGENTA_DIR / "sheep.gen.json"
    if src.exists():
        (tmp_path / "magenta").mkdir(exist_ok=True)
        models.append(M.gen_json_to_checkpoint(src, tmp_path / "magenta" / "magenta_sheep.pt"))
    return models


BACK = [(160 + 120 * math.cos(t) + 7 * math.sin(7 * t), 250 - 90 * math.sin(t)) for t in np.linspace(0, math.pi, 24)]
HEAD = [(70 + 30 * math.cos(t), 230 + 26 * math.sin(t)) for t in np.linspace(0, 2 * math.pi, 14)]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("web")
    return export_web(_browser_models(tmp), tmp / "site")


def _browser_helpers():
    """test_serve_browser's Chromium flags and mouse stroke (imported here: that module skips itself
    without starlette or playwright, which the Node tests above do not need)."""
    from test_serve_browser import ARGS, _stroke

    return ARGS, _stroke


def _open(p, url, problems):
    args, _ = _browser_helpers()
    browser = p.chromium.launch(executable_path=str(CHROMIUM), args=args)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning")
            else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
    page.goto(url)
    page.locator("body[data-ready=true]").wait_for(timeout=30000)
    return browser, page


def _endings(page, count=6):
    page.locator("#suggestions .tile[data-done=true]").nth(count - 1).wait_for(timeout=90000)
    tiles = page.locator("#suggestions .tile")
    assert tiles.count() == count
    return [int(tiles.nth(k).get_attribute("data-points")) for k in range(count)]


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="no Chromium at /usr/bin/chromium (apt-get install -y chromium)")
def test_exported_page_from_disk_finishes_drawings(site, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    _, _stroke = _browser_helpers()
    problems: list[str] = []
    with sync_api.sync_playwright() as p:
        browser, page = _open(p, site.index.as_uri() + "?seed=1", problems)
        try:
            names = [o.get_attribute("value") for o in page.locator("#model option").all()]
            assert names[:2] == ["sheep", "multiclass"] and page.locator("#model").input_value() == "sheep"
            assert "in this page" in page.locator("#where").inner_text()
            box = page.locator("#canvas").bounding_box()
            _stroke(page, box, BACK)
            _stroke(page, box, HEAD)
            points = _endings(page)
            assert sum(n > 0 for n in points) >= 5, points
            assert "endings in" in page.locator("#status").inner_text()

            # the page's drawing reaches the model as engine.page_to_model makes it (RDP, scaling)
            rows = page.evaluate("""() => { const rows = []; let x = 0, y = 0;
                for (const [k, p] of [[0, [[10, 10], [40, 12], [41, 13], [80, 60]]], [1, [[90, 90], [95, 120]]]]) {
                  p.forEach(([px, py], i) => { rows.push([px - x, py - y, i === p.length - 1 ? 1 : 0]); x = px; y = py; });
                } return rows; }""")
            got = page.evaluate("(rows) => SketchvaeInPage.pageToModel(rows, 0.5)", rows)
            want, _ = engine.page_to_model(np.array(rows, dtype=np.float64), 0.5)
            assert np.allclose(np.array(got), want, atol=1e-5)

            # interpolation between a random sheep and the drawing (vae: encoder + z in the page)
            page.locator("[data-slot=a][data-from=random]").click()
            page.locator("#slot-a:not([data-points='0'])").wait_for(timeout=60000)
            page.locator("[data-slot=b][data-from=canvas]").click()
            page.locator("#interpolate").click()
            page.locator("#strip .tile[data-done=true]").nth(7).wait_for(timeout=120000)
            # the README's picture: SKETCHVAE_SCREENSHOT_DIR=checkpoints/samples pytest tests/test_export_web.py -k disk
            shots = Path(os.environ.get("SKETCHVAE_SCREENSHOT_DIR", tmp_path))
            page.screenshot(path=str(shots / "export_web.png"), full_page=True)

            # keep one: the model's strokes join the drawing
            pick = next(k for k, n in enumerate(points) if n > 0)
            page.locator("#suggestions .tile").nth(pick).click()
            assert "Kept" in page.locator("#suggestions").inner_text()

            # a class of the class_vae model, from nothing
            page.select_option("#model", "multiclass")
            page.select_option("#class", "omniglot")
            page.locator("#draw-something").click()
            assert sum(n > 0 for n in _endings(page)) >= 5

            # Magenta's own model (decoder-only, magenta-js's temperature) continues a drawing
            if len(names) > 2:
                page.select_option("#model", names[2])
                page.locator("#clear").click()
                _stroke(page, box, BACK)
                assert sum(n > 0 for n in _endings(page)) >= 5
        finally:
            browser.close()
    assert problems == [], problems


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="no Chromium at /usr/bin/chromium (apt-get install -y chromium)")
def test_exported_page_on_a_plain_static_server(site):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(site.out_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    problems: list[str] = []
    try:
        with sync_api.sync_playwright() as p:
            browser, page = _open(p, f"http://127.0.0.1:{server.server_address[1]}/?seed=3", problems)
            try:
                page.locator("#draw-something").click()
                assert sum(n > 0 for n in _endings(page)) >= 5
                # an ending the model refuses is shown in words (a class the model lacks)
                page.select_option("#model", "multiclass")
                page.evaluate("""() => { const c = document.querySelector('#class');
                    c.append(new Option('zebra', 'zebra')); c.value = 'zebra'; }""")
                page.locator("#draw-something").click()
                page.locator("#error").wait_for(state="visible", timeout=30000)
                assert "The model refused: class: unknown class zebra" in page.locator("#error-text").inner_text()
            finally:
                browser.close()
    finally:
        server.shutdown()
        server.server_close()
    assert problems == [], problems


def test_measured_differences_are_reported():
    """Prints the largest differences the tests above measured (pytest -s)."""
    for key, value in sorted(MEASURED.items()):
        print(f"{key}: {value:.3g}")
