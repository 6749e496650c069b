"""Our reading of `.gen.json` files against @magenta/sketch 0.2.0 itself, run with Node.

For a fixed stroke sequence, `tests/js/magenta_steps.js` prints magenta-js's per-step `getPDF` (pi,
mu, sigma, rho, pen probabilities, at temperature 1 and at tempered values); we compute the same from
our checkpoint with `SketchRNN.decode` + `distributions.tempered(..., "magenta-js")` and compare:

* a real Magenta model (sheep) converted to a checkpoint: equal to float32 rounding;
* a small decoder model trained here for a few steps, exported to `.gen.json`: magenta-js on the
  exported file equals our model to the int16 quantisation, and equals the re-imported checkpoint
  to float rounding.

`.ci/run` installs the package (`npm ci --prefix tests/js`); without node or the package the tests skip.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from sketchvae.checkpoint import save_checkpoint
from sketchvae.distributions import tempered
from sketchvae.interop import magenta as M
from sketchvae.models.sketch_rnn import SketchRNN, SketchRNNConfig
from sketchvae.sample import load

JS = Path(__file__).resolve().parent / "js"
PACKAGE = JS / "node_modules" / "@magenta" / "sketch" / "es5" / "sketch_rnn" / "model.js"
SHEEP = Path(__file__).resolve().parents[2] / "shared" / "data" / "magenta_models" / "sheep.gen.json"
TAUS = (1.0, 0.25, 0.7)

pytestmark = [
    pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed (needed to run @magenta/sketch)"),
    pytest.mark.skipif(not PACKAGE.exists(), reason="@magenta/sketch 0.2.0 is not installed in tests/js/node_modules "
                                                    "(run `npm ci --prefix tests/js`, as .ci/run does)"),
]

# Largest differences measured (printed with -s; the issue note quotes them).
MEASURED: dict[str, float] = {}


def strokes(scale: float, n: int = 40, seed: int = 0) -> np.ndarray:
    """A fixed stroke-5 sequence in Quick, Draw! units: integer offsets ~ scale * N(0, 1), pen mostly down."""
    rng = np.random.default_rng(seed)
    s = np.zeros((n, 5))
    s[:, 0:2] = np.round(rng.normal(0.0, 1.0, (n, 2)) * scale)
    up = rng.random(n) < 0.2
    s[:, 2], s[:, 3] = ~up, up
    return s


def run_node(model_path: Path, seq: np.ndarray, tmp_path: Path) -> list[dict]:
    inp = tmp_path / "input.json"
    out = tmp_path / "output.json"
    inp.write_text(json.dumps({"strokes": seq.tolist(), "temperatures": list(TAUS)}))
    proc = subprocess.run(["node", str(JS / "magenta_steps.js"), str(model_path), str(inp), str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(out.read_text())["steps"]


def ours(sampler, seq: np.ndarray) -> list[dict]:
    """Our per-step pdf in magenta-js's terms, for the same inputs (start token, then seq)."""
    model = sampler.model
    x = torch.tensor(seq, dtype=torch.float32)
    x[:, 0:2] /= sampler.scale_factor
    inputs = torch.cat([model.start_tokens(1), x]).unsqueeze(0)  # (1, T+1, 5)
    with torch.no_grad():
        params, pen_logits, _ = model.decode(inputs)
    steps = [[] for _ in range(inputs.shape[1])]
    for tau in TAUS:
        p, pen = tempered(params, pen_logits, tau, "magenta-js")
        fields = {"pi": p.log_pi.exp(), "muX": p.mu_x, "muY": p.mu_y, "sigmaX": p.log_sigma_x.exp(),
                  "sigmaY": p.log_sigma_y.exp(), "corr": p.rho, "pen": pen.exp()}
        for t in range(inputs.shape[1]):
            steps[t].append({k: v[0, t].double().numpy() for k, v in fields.items()})
    return steps


def differences(js: list[dict], py: list[dict]) -> dict[str, float]:
    """Largest |js - ours| per field over all steps and temperatures (sigma: relative)."""
    assert len(js) == len(py)
    worst: dict[str, float] = {}
    for a, b in zip(js, py):
        for k in range(len(TAUS)):
            for key, want in b[k].items():
                got = np.asarray(a[k][key], dtype=np.float64)
                diff = np.abs(got - want)
                if key.startswith("sigma"):
                    diff = diff / want
                worst[key] = max(worst.get(key, 0.0), float(diff.max()))
    return worst


def test_converted_magenta_model_matches_magenta_js(tmp_path):
    if not SHEEP.exists():
        pytest.skip(f"{SHEEP} is absent (the shared Magenta models)")
    ckpt = M.gen_json_to_checkpoint(SHEEP, tmp_path / "sheep.pt")
    sampler = load(ckpt)
    seq = strokes(sampler.scale_factor)
    js = run_node(SHEEP, seq, tmp_path)
    worst = differences(js, ours(sampler, seq))
    MEASURED.update({f"sheep {k}": v for k, v in worst.items()})
    print("sheep, converted, vs magenta-js:", worst)
    # float32 rounding over 41 LSTM steps of 512 units (different summation orders)
    for key, tol in (("pi", 1e-5), ("pen", 1e-5), ("muX", 1e-4), ("muY", 1e-4), ("sigmaX", 1e-4),
                     ("sigmaY", 1e-4), ("corr", 1e-4)):
        assert worst[key] < tol, (key, worst[key])


@pytest.fixture(scope="module")
def small_trained(tmp_path_factory):
    """A decoder model (64 units, 20 components) trained for a few Adam steps on random strokes."""
    from sketchvae.losses import sketch_rnn_loss

    torch.manual_seed(0)
    cfg = SketchRNNConfig(mode="decoder", dec_rnn_size=64, num_mixture=20, max_seq_len=40)
    model = SketchRNN(cfg)
    rng = np.random.default_rng(1)
    batch = torch.zeros(8, 41, 5)
    batch[:, 0] = torch.tensor([0, 0, 1, 0, 0.0])
    batch[:, 1:, 0:2] = torch.tensor(rng.normal(0, 1, (8, 40, 2)), dtype=torch.float32)
    batch[:, 1:, 2] = 1.0
    lengths = torch.full((8,), 40)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(3):
        params, pen_logits, _ = model.decode(batch[:, :-1])
        loss = sketch_rnn_loss(params, pen_logits, batch[:, 1:], lengths, 40)["recon"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    root = tmp_path_factory.mktemp("small")
    path = save_checkpoint(root / "small.pt", kind="sketch_rnn", config=cfg, model=model.eval(), class_names=["dots"],
                           scale_factor=12.5)
    return path


def test_exported_sketchvae_model_matches_magenta_js(tmp_path, small_trained):
    gen = M.convert(small_trained, tmp_path / "small.gen.json")
    original = load(small_trained)
    back = load(M.convert(gen, tmp_path / "back.pt"))
    seq = strokes(original.scale_factor, seed=3)
    js = run_node(gen, seq, tmp_path)
    quantised = differences(js, ours(original, seq))
    rounding = differences(js, ours(back, seq))
    MEASURED.update({f"small vs original {k}": v for k, v in quantised.items()})
    MEASURED.update({f"small vs re-imported {k}": v for k, v in rounding.items()})
    print("small, exported, vs our float model:", quantised)
    print("small, exported, vs re-imported checkpoint:", rounding)
    for key, value in rounding.items():
        assert value < 1e-5, (key, value)
    # int16 quantisation: every weight moves by <= 10 / 32767 / 2 = 1.5e-4
    for key, value in quantised.items():
        assert value < 5e-3, (key, value)
    assert max(quantised.values()) > 1e-7  # the original really is unquantised (the test can tell)


def test_magenta_js_temperature_matches_our_convention(tmp_path, small_trained):
    """getPDF's tempered pi / pen / sigma equal `tempered(..., "magenta-js")` and differ from "paper"."""
    gen = M.convert(small_trained, tmp_path / "small.gen.json")
    back = load(M.convert(gen, tmp_path / "back.pt"))
    seq = strokes(back.scale_factor, n=5, seed=4)
    js = run_node(gen, seq, tmp_path)
    x = torch.tensor(seq, dtype=torch.float32)
    x[:, 0:2] /= back.scale_factor
    with torch.no_grad():
        params, pen_logits, _ = back.model.decode(torch.cat([back.model.start_tokens(1), x]).unsqueeze(0))
    for convention, should_match in (("magenta-js", True), ("paper", False)):
        p, pen = tempered(params, pen_logits, 0.25, convention)
        k = TAUS.index(0.25)
        got_pi = np.array([s[k]["pi"] for s in js])
        got_pen = np.array([s[k]["pen"] for s in js])
        got_sigma = np.array([s[k]["sigmaX"] for s in js])
        close = (np.allclose(got_pi, p.log_pi.exp()[0].numpy(), atol=1e-6)
                 and np.allclose(got_pen, pen.exp()[0].numpy(), atol=1e-6)
                 and np.allclose(got_sigma, p.log_sigma_x.exp()[0].numpy(), rtol=1e-5))
        assert close == should_match, convention
