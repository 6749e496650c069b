"""`sketchvae serve`: the JSON API (good and bad requests, scaling, threads), discovery and the CLI."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("starlette", reason="starlette is not installed (pip install -e '.[test]')")
pytest.importorskip("httpx", reason="httpx is not installed (pip install -e '.[test]')")

from click.testing import CliRunner  # noqa: E402

with warnings.catch_warnings():  # starlette >= 1.x prefers the `httpx2` fork; httpx still works
    warnings.filterwarnings("ignore", message=".*httpx.*starlette.testclient")
    from starlette.testclient import TestClient  # noqa: E402

from sketchvae import sample as S  # noqa: E402
from sketchvae.cli import main  # noqa: E402
from sketchvae.serve import create_app, discover  # noqa: E402
from sketchvae.serve import engine as E  # noqa: E402
from sketchvae.serve import requests as R  # noqa: E402
from serve_util import CLASSES, DRAWING, ServerThread, tiny_checkpoint  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
STATIC = ROOT / "sketchvae" / "serve" / "static"



@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    for mode in ("vae", "class_vae", "decoder"):
        tiny_checkpoint(root / f"{mode}.pt", mode)
    return root


@pytest.fixture(scope="module")
def served(ckpts):
    models, notes = discover([ckpts / "vae.pt", ckpts / "class_vae.pt", ckpts / "decoder.pt"])
    assert notes == []
    return models


@pytest.fixture(scope="module")
def client(served):
    with TestClient(create_app(served, workers=2), raise_server_exceptions=False) as c:
        yield c


def _is_stroke3(s) -> bool:
    return isinstance(s, list) and all(
        isinstance(r, list) and len(r) == 3 and all(isinstance(v, (int, float)) for v in r[:2])
        and np.isfinite(r[:2]).all() and r[2] in (0, 1) for r in s)


# ------------------------------------------------------------------------------------------ good requests
def test_models_listing(client):
    r = client.get("/api/models")
    assert r.status_code == 200
    assert r.json() == [{"name": "vae", "mode": "vae", "classes": []},
                        {"name": "class_vae", "mode": "class_vae", "classes": CLASSES},
                        {"name": "decoder", "mode": "decoder", "classes": []}]


@pytest.mark.parametrize("model, extra", [("vae", {}), ("class_vae", {"class": "pig"}), ("decoder", {})])
def test_complete_gives_n_continuations(client, model, extra):
    body = {"model": model, "strokes": DRAWING, "n": 5, "temperature": 0.6, "seed": 3, **extra}
    r = client.post("/api/complete", json=body)
    assert r.status_code == 200, r.text
    sketches = r.json()["sketches"]
    assert len(sketches) == 5 and all(_is_stroke3(s) for s in sketches)
    assert all(s[-1][2] == 1 for s in sketches if s)
    assert any(len(s) > 0 for s in sketches)
    again = client.post("/api/complete", json=body).json()["sketches"]
    assert again == sketches  # a seed makes the answer reproducible
    other = client.post("/api/complete", json={**body, "seed": 4}).json()["sketches"]
    assert other != sketches


def test_complete_is_the_sample_api_in_page_pixels(served, client):
    """The answer equals sketchvae.sample.complete on the drawing in model units (rows after the first,
    times units_per_px), its continuations divided by units_per_px."""
    model = served["vae"]
    upp = model.units_per_px(None)
    prefix = np.array(DRAWING[1:], dtype=np.float32)
    prefix[:, 0:2] *= upp
    max_len = len(prefix) + max(model.sampler.config.max_seq_len - len(prefix), E.MIN_CONTINUATION)
    want = S.complete(model.sampler, prefix, 3, 0.5, seed=11, max_len=max_len)
    got = client.post("/api/complete", json={"model": "vae", "strokes": DRAWING, "n": 3, "temperature": 0.5,
                                             "seed": 11}).json()["sketches"]
    for full, page in zip(want, got):
        tail = full[len(prefix):].astype(np.float64)
        tail[:, 0:2] /= upp
        assert np.allclose(np.array(page, dtype=np.float64).reshape(-1, 3), tail, atol=0.006)


def test_page_answers_do_not_depend_on_the_checkpoint_units(tmp_path):
    """A model whose data was in units twice as large (same weights, scale factor doubled) measures a
    typical size twice as large, so the page sees exactly the same drawings."""
    from sketchvae.checkpoint import load_checkpoint, save_checkpoint

    a = tiny_checkpoint(tmp_path / "a.pt", "vae")
    ck = load_checkpoint(a)
    save_checkpoint(tmp_path / "b.pt", kind="sketch_rnn", config=ck["config"], model=ck["model"],
                    scale_factor=2 * ck["scale_factor"])
    models, _ = discover([tmp_path / "a.pt", tmp_path / "b.pt"])
    ma, mb = models["a"], models["b"]
    assert mb.units_per_px(None) == pytest.approx(2 * ma.units_per_px(None), rel=1e-5)
    drawing = np.array(DRAWING, dtype=np.float64)
    ca, cb = ma.complete(drawing, 4, 0.5, seed=1), mb.complete(drawing, 4, 0.5, seed=1)
    for x, y in zip(ca, cb):
        assert np.allclose(np.array(x).reshape(-1, 3), np.array(y).reshape(-1, 3), atol=0.02)


def test_page_to_model_simplifies_and_starts_at_the_first_point():
    # a dense straight stroke (RDP keeps its end points) then a corner
    xs = np.linspace(0, 100, 51)
    pts = [(50 + x, 80) for x in xs] + [(150, 180)]
    rows = [[pts[0][0], pts[0][1], 0]] + [[b[0] - a[0], b[1] - a[1], 0] for a, b in zip(pts, pts[1:])]
    rows[-1][2] = 1
    s3, last = E.page_to_model(np.array(rows, dtype=np.float64), 2.0)
    assert np.allclose(s3, [[200, 0, 0], [0, 200, 1]])  # two points left, offsets times 2
    assert np.allclose(last, [150, 180])
    # a drawing that starts with a dot keeps the dot as a (0, 0) pen-lift row
    dot_first = np.array([[10, 10, 1], [20, 0, 0], [5, 5, 1]], dtype=np.float64)
    s3, _ = E.page_to_model(dot_first, 1.0)
    assert np.allclose(s3, [[0, 0, 1], [20, 0, 0], [5, 5, 1]])


@pytest.mark.parametrize("model, extra", [("vae", {}), ("class_vae", {"class": "cat"}), ("class_vae", {}),
                                          ("decoder", {})])
def test_sample_is_centred_on_the_canvas(client, model, extra):
    r = client.post("/api/sample", json={"model": model, "n": 4, "temperature": 0.8, "seed": 2, **extra})
    assert r.status_code == 200, r.text
    sketches = r.json()["sketches"]
    assert len(sketches) == 4 and all(_is_stroke3(s) for s in sketches)
    for s in sketches:
        if not s:
            continue
        xy = np.cumsum(np.array(s, dtype=np.float64)[:, 0:2], axis=0)
        centre = (xy.min(axis=0) + xy.max(axis=0)) / 2
        assert np.allclose(centre, E.CANVAS / 2, atol=0.05 * len(s) + 0.01)


def test_class_vae_sample_without_class_cycles_classes(served):
    model = served["class_vae"]
    direct = S.sample(model.sampler, 3, 0.5, classes=CLASSES, seed=5)
    got = model.sample(3, 0.5, None, 5)
    for want, page, cls in zip(direct, got, CLASSES):
        assert len(page) == (len(want) + 1 if len(want) else 0)
        if len(want):
            assert np.allclose(np.array(page)[1:, 0:2] * model.units_per_px(cls), want[:, 0:2], atol=0.01 * 12)


def test_interpolate_strip(served, client):
    body = {"model": "vae", "a": DRAWING, "b": [[300, 300, 0], [-50, 10, 0], [0, -40, 1]], "steps": 5,
            "temperature": 0.3, "seed": 9}
    r = client.post("/api/interpolate", json=body)
    assert r.status_code == 200, r.text
    strip = r.json()["sketches"]
    assert len(strip) == 5 and all(_is_stroke3(s) for s in strip)
    assert client.post("/api/interpolate", json=body).json()["sketches"] == strip
    # the ends decode the posterior means of a and b with the strip's shared draws
    model = served["vae"]
    upp = model.units_per_px(None)
    a, _ = E.page_to_model(np.array(body["a"], float), upp)
    b, _ = E.page_to_model(np.array(body["b"], float), upp)
    mu, _ = S.encode(model.sampler, [a, b])
    length = model.sampler.config.max_seq_len
    gen = torch.Generator().manual_seed(9)
    one = torch.cat([torch.rand(length, 1, 2, generator=gen), torch.randn(length, 1, 2, generator=gen)], -1)
    ends = S.sample(model.sampler, 2, 0.3, z=mu, max_len=length, noise=one.expand(length, 2, 4))
    for want, page in ((ends[0], strip[0]), (ends[1], strip[-1])):
        assert len(page) == len(want) + (1 if len(want) else 0)
        if len(want):
            assert np.allclose(np.array(page)[1:, 0:2] * upp, want[:, 0:2], atol=0.006 * upp)


def test_page_and_static_files(client):
    r = client.get("/")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    assert "default-src 'self'" in r.headers["content-security-policy"]
    sources = re.findall(r'(?:src|href)="(static/[^"]+)"', r.text)  # relative: export-web's page is the same file
    assert "static/app.js" in sources
    for src in sources:
        f = client.get("/" + src)
        assert f.status_code == 200, src
    assert client.get("/static/app.js").headers["content-type"].split(";")[0] in ("text/javascript",
                                                                                 "application/javascript")


def test_page_loads_nothing_from_elsewhere_and_agrees_on_the_canvas():
    for f in STATIC.iterdir():
        text = f.read_text(encoding="utf-8")
        assert not re.search(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", text.replace("http://www.w3.org/", "")), f
    app_js = (STATIC / "app.js").read_text(encoding="utf-8")
    assert re.search(rf"const CANVAS = {E.CANVAS};", app_js)


def test_static_files_are_package_data():
    import tomllib

    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = cfg["tool"]["setuptools"]["package-data"]["sketchvae.serve"]
    assert any(Path("static/app.js").match(p) for p in patterns)
    for name in ("index.html", "app.js", "style.css"):
        assert (STATIC / name).is_file()


# ------------------------------------------------------------------------------------------ bad requests
LONG = [[1, 1, 0]] * (R.MAX_POINTS + 1)

BAD = [
    # (endpoint, body (dict, or raw bytes), status, field named in the error)
    ("complete", b"{not json", 400, "body"),
    ("complete", b"", 400, "body"),
    ("complete", b"[1, 2]", 400, "body"),
    ("complete", b'"text"', 400, "body"),
    ("complete", b"\xff\xfe", 400, "body"),
    ("complete", b'{"model": "vae", "strokes": [[1, NaN, 0]]}', 400, "body"),
    ("complete", b'{"model": "vae", "strokes": [[1, Infinity, 0]]}', 400, "body"),
    ("complete", b'{"model": "vae", "strokes": [[1, 1e999, 0]]}', 400, "strokes[0][1]"),
    ("complete", {"strokes": DRAWING}, 400, "model"),
    ("complete", {"model": 3, "strokes": DRAWING}, 400, "model"),
    ("complete", {"model": "nope", "strokes": DRAWING}, 400, "model"),
    ("complete", {"model": "../vae.pt", "strokes": DRAWING}, 400, "model"),
    ("complete", {"model": "vae"}, 400, "strokes"),
    ("complete", {"model": "vae", "strokes": []}, 400, "strokes"),
    ("complete", {"model": "vae", "strokes": "M 0 0 L 10 10"}, 400, "strokes"),
    ("complete", {"model": "vae", "strokes": LONG}, 400, "strokes"),
    ("complete", {"model": "vae", "strokes": [[1, 2]]}, 400, "strokes[0]"),
    ("complete", {"model": "vae", "strokes": [[1, 2, 0], 5]}, 400, "strokes[1]"),
    ("complete", {"model": "vae", "strokes": [[1, "2", 0]]}, 400, "strokes[0][1]"),
    ("complete", {"model": "vae", "strokes": [[True, 2, 0]]}, 400, "strokes[0][0]"),
    ("complete", {"model": "vae", "strokes": [[1, 2, 2]]}, 400, "strokes[0][2]"),
    ("complete", {"model": "vae", "strokes": [[1, 2, 0.5]]}, 400, "strokes[0][2]"),
    ("complete", {"model": "vae", "strokes": [[1e6, 2, 1]]}, 400, "strokes[0][0]"),
    ("complete", {"model": "vae", "strokes": DRAWING, "n": 0}, 400, "n"),
    ("complete", {"model": "vae", "strokes": DRAWING, "n": R.MAX_N + 1}, 400, "n"),
    ("complete", {"model": "vae", "strokes": DRAWING, "n": 2.5}, 400, "n"),
    ("complete", {"model": "vae", "strokes": DRAWING, "n": "6"}, 400, "n"),
    ("complete", {"model": "vae", "strokes": DRAWING, "n": True}, 400, "n"),
    ("complete", {"model": "vae", "strokes": DRAWING, "temperature": 0}, 400, "temperature"),
    ("complete", {"model": "vae", "strokes": DRAWING, "temperature": -0.5}, 400, "temperature"),
    ("complete", {"model": "vae", "strokes": DRAWING, "temperature": 100}, 400, "temperature"),
    ("complete", {"model": "vae", "strokes": DRAWING, "temperature": "hot"}, 400, "temperature"),
    ("complete", {"model": "vae", "strokes": DRAWING, "seed": -1}, 400, "seed"),
    ("complete", {"model": "vae", "strokes": DRAWING, "seed": "x"}, 400, "seed"),
    ("complete", {"model": "vae", "strokes": DRAWING, "stroke": DRAWING}, 400, "stroke"),
    ("complete", {"model": "vae", "strokes": DRAWING, "class": "cat"}, 400, "class"),
    ("complete", {"model": "class_vae", "strokes": DRAWING}, 400, "class"),
    ("complete", {"model": "class_vae", "strokes": DRAWING, "class": "dog"}, 400, "class"),
    ("complete", {"model": "class_vae", "strokes": DRAWING, "class": 1}, 400, "class"),
    ("sample", {"model": "vae", "n": 100}, 400, "n"),
    ("sample", {"model": "decoder", "class": "cat"}, 400, "class"),
    ("sample", {"model": "class_vae", "class": "dog"}, 400, "class"),
    ("sample", {"model": "vae", "strokes": DRAWING}, 400, "strokes"),
    ("interpolate", {"model": "vae", "a": DRAWING}, 400, "b"),
    ("interpolate", {"model": "vae", "a": [], "b": DRAWING}, 400, "a"),
    ("interpolate", {"model": "vae", "a": DRAWING, "b": DRAWING, "steps": 1}, 400, "steps"),
    ("interpolate", {"model": "vae", "a": DRAWING, "b": DRAWING, "steps": R.MAX_STEPS + 1}, 400, "steps"),
    ("interpolate", {"model": "decoder", "a": DRAWING, "b": DRAWING}, 400, "model"),
    ("interpolate", {"model": "class_vae", "a": DRAWING, "b": DRAWING}, 400, "model"),
]


@pytest.mark.parametrize("endpoint, body, status, field", BAD)
def test_bad_requests_get_a_4xx_naming_the_field(client, endpoint, body, status, field):
    if isinstance(body, bytes):
        r = client.post(f"/api/{endpoint}", content=body, headers={"Content-Type": "application/json"})
    else:
        r = client.post(f"/api/{endpoint}", json=body)
    assert r.status_code == status, r.text
    data = r.json()
    assert set(data) == {"error", "field"} and data["field"] == field
    assert data["error"].startswith(f"{field}: ")
    assert "Traceback" not in r.text


def test_body_too_large_is_refused_before_it_is_read(client):
    big = b'{"model": "vae", "strokes": [' + b"[1, 1, 0], " * (R.MAX_BODY // 10) + b"[1, 1, 1]]}"
    r = client.post("/api/complete", content=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["field"] == "body"

    def chunks():  # no Content-Length: the limit applies while reading
        for _ in range(R.MAX_BODY // 1000 + 2):
            yield b" " * 1000

    r = client.post("/api/complete", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["field"] == "body"


def test_wrong_paths_and_methods_get_json_errors(client):
    r = client.get("/api/nothing")
    assert r.status_code == 404 and r.json()["field"] == "path"
    r = client.get("/api/complete")
    assert r.status_code == 405 and r.json()["field"] == "method"
    r = client.get("/static/../engine.py")
    assert r.status_code == 404


# with batching (the default) complete and sample reach the model through its decoding thread, which
# plans each request with _plan_METHOD (in that thread), not through the method itself
BATCHING = pytest.mark.parametrize("window", [0, 5], ids=["unbatched", "batched"])


def _entry(window: float, method: str) -> str:
    return method if window == 0 else f"_plan_{method}"


@BATCHING
def test_unexpected_failures_are_a_json_500_without_traceback(served, monkeypatch, window):
    def boom(*a, **k):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(served["vae"], _entry(window, "sample"), boom)
    with TestClient(create_app(served, batch_window_ms=window), raise_server_exceptions=False) as c:
        r = c.post("/api/sample", json={"model": "vae"})
    assert r.status_code == 500
    assert "error" in r.json() and "secret" not in r.text and "Traceback" not in r.text


def test_untrusted_host_header_is_refused(served):
    with TestClient(create_app(served, allowed_hosts=["127.0.0.1", "localhost"]), base_url="http://evil.example") as c:
        assert c.get("/api/models").status_code == 400
    with TestClient(create_app(served, allowed_hosts=["127.0.0.1", "localhost"]), base_url="http://localhost") as c:
        assert c.get("/api/models").status_code == 200


# ------------------------------------------------------------------------------------------ concurrency
def test_concurrent_requests_on_a_real_server_match_serial_answers(served):
    import httpx

    bodies = [("complete", {"model": m, "strokes": DRAWING, "n": 3, "seed": s, **({"class": "cat"} if m == "class_vae"
                                                                                     else {})})
              for m in ("vae", "class_vae", "decoder") for s in range(4)]
    bodies += [("sample", {"model": "vae", "n": 4, "seed": s}) for s in range(4)]
    with ServerThread(create_app(served, workers=4)) as url:
        with httpx.Client(base_url=url, timeout=60) as http:
            serial = [http.post(f"/api/{e}", json=b).json() for e, b in bodies]

            def one(item):
                with httpx.Client(base_url=url, timeout=60) as h:
                    return h.post(f"/api/{item[0]}", json=item[1]).json()

            with ThreadPoolExecutor(8) as pool:
                parallel = list(pool.map(one, bodies * 2))
    assert parallel == serial * 2


@BATCHING
def test_a_slow_sampling_call_does_not_block_the_others(served, monkeypatch, window):
    import httpx

    release = threading.Event()
    started = threading.Event()
    real = getattr(served["vae"], _entry(window, "sample"))

    def slow(*a, **k):
        started.set()
        release.wait(30)
        return real(*a, **k)

    monkeypatch.setattr(served["vae"], _entry(window, "sample"), slow)
    with ServerThread(create_app(served, workers=2, batch_window_ms=window)) as url:
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(lambda: httpx.post(f"{url}/api/sample", json={"model": "vae", "n": 1}, timeout=60))
            assert started.wait(20)
            try:
                assert httpx.get(f"{url}/api/models", timeout=10).status_code == 200
                r = httpx.post(f"{url}/api/complete", json={"model": "decoder", "strokes": DRAWING, "n": 2}, timeout=20)
                assert r.status_code == 200 and not pending.done()
            finally:
                release.set()
            assert pending.result().status_code == 200


@BATCHING
def test_requests_abandoned_while_waiting_for_a_worker_are_not_sampled(served, monkeypatch, window):
    import httpx

    release, started = threading.Event(), threading.Event()
    calls = []
    real = getattr(served["decoder"], _entry(window, "sample"))

    def counted(*a, **k):
        calls.append(k or a)
        if len(calls) == 1:
            started.set()
            release.wait(30)
        return real(*a, **k)

    monkeypatch.setattr(served["decoder"], _entry(window, "sample"), counted)
    with ServerThread(create_app(served, workers=1, batch_window_ms=window)) as url:
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(lambda: httpx.post(f"{url}/api/sample", json={"model": "decoder", "n": 1}, timeout=60))
            assert started.wait(20)
            with pytest.raises(httpx.TimeoutException):  # waits for the only worker, then gives up
                httpx.post(f"{url}/api/sample", json={"model": "decoder", "n": 2}, timeout=0.5)
            threading.Event().wait(0.2)  # for the server to hear that the client has gone
            release.set()
            assert first.result().status_code == 200
        # the abandoned request never reached the model; a new one does
        assert httpx.post(f"{url}/api/sample", json={"model": "decoder", "n": 3}, timeout=20).status_code == 200
    assert len(calls) == 2


# ------------------------------------------------------------------------------------------ discovery and CLI
def test_discover_names_and_skips(ckpts, tmp_path):
    from sketchvae.checkpoint import save_checkpoint

    folder = tmp_path / "runs"
    tiny_checkpoint(folder / "sheep" / "best.pt", "vae")
    tiny_checkpoint(folder / "cat.pt", "decoder")
    save_checkpoint(folder / "image.pt", kind="image_vae", config={}, model={})  # not a Sketch-RNN
    (folder / "broken.pt").write_bytes(b"not a checkpoint")
    models, notes = discover([folder, ckpts / "vae.pt", ckpts / "vae.pt"], warm=False)
    assert list(models) == ["runs/cat", "runs/sheep/best", "vae", "vae-2"]
    assert len(notes) == 2 and any("image.pt" in n and "image_vae" in n for n in notes)
    assert any("broken.pt" in n for n in notes)
    with pytest.raises(ValueError, match="image_vae"):
        discover([folder / "image.pt"], warm=False)
    with pytest.raises(ValueError, match="not a readable"):
        discover([folder / "broken.pt"], warm=False)
    with pytest.raises(ValueError, match="no such file"):
        discover([tmp_path / "missing.pt"], warm=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no checkpoints"):
        discover([tmp_path / "empty"], warm=False)


def test_discover_defaults_to_the_shipped_checkpoints():
    from sketchvae.checkpoint import shipped_checkpoints_dir

    if not (shipped_checkpoints_dir() / "sheep.pt").exists():
        pytest.skip("the shipped checkpoints are not in this checkout")
    models, notes = discover([], warm=False)
    assert models["sheep"].mode == "vae"
    assert all(not name.startswith("mnist") for name in models)
    assert any("mnist_conv.pt" in n for n in notes)


def test_default_folder_includes_converted_magenta_models(tmp_path, monkeypatch):
    from sketchvae.checkpoint import save_checkpoint

    tiny_checkpoint(tmp_path / "sheep.pt", "vae")
    tiny_checkpoint(tmp_path / "magenta" / "sheep.pt", "decoder")  # as the magenta-js converter writes them
    save_checkpoint(tmp_path / "mnist_conv.pt", kind="image_vae", config={}, model={})
    monkeypatch.setattr("sketchvae.checkpoint.shipped_checkpoints_dir", lambda: tmp_path)
    models, notes = discover([], warm=False)
    assert {name: m.mode for name, m in models.items()} == {"magenta/sheep": "decoder", "sheep": "vae"}
    assert len(notes) == 1 and "mnist_conv.pt" in notes[0]


def test_cli_help_and_bad_arguments(tmp_path):
    runner = CliRunner()
    r = runner.invoke(main, ["serve", "--help"])
    assert r.exit_code == 0 and "Examples:" in r.output and "127.0.0.1" in r.output
    r = runner.invoke(main, ["serve", str(tmp_path / "missing.pt")])
    assert r.exit_code != 0 and "no such file" in r.output and "Traceback" not in r.output
    r = runner.invoke(main, ["serve", "--device", "tpu"])
    assert r.exit_code != 0 and "unknown device" in r.output


def test_cli_serves_and_prints_the_url(ckpts, tmp_path):
    import httpx

    proc = subprocess.Popen([sys.executable, "-m", "sketchvae", "serve", str(ckpts / "decoder.pt"), "--port", "0",
                             "--device", "cpu"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        m = re.search(r"open (http://127\.0\.0\.1:\d+/)", line)
        assert m, (line, proc.stderr.read() if proc.poll() is not None else "")
        r = httpx.get(m.group(1) + "api/models", timeout=20)
        assert r.json() == [{"name": "decoder", "mode": "decoder", "classes": []}]
        page = httpx.get(m.group(1), timeout=20)
        assert page.status_code == 200 and "app.js" in page.text
    finally:
        proc.terminate()
        proc.wait(20)


def test_json_limits_are_documented_in_the_readme():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("sketchvae serve"):]
    for text in (f"n <= {R.MAX_N}", f"{R.MAX_POINTS:,} points", f"{R.MAX_BODY // 1024} KiB"):
        assert text in section, text
