"""sketchvae.interop.magenta: .gen.json <-> checkpoint (exact semantics, bit-exact round trip, bad files,
refusals), the magenta-js temperature convention, `sketchvae convert`, unconditional models in the
CLI and `sketchvae download --magenta` against a local HTTP server."""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from sketchvae.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from sketchvae.cli import main
from sketchvae.distributions import TEMPERATURE_CONVENTIONS, temperature_scales, tempered
from sketchvae.interop import magenta as M
from sketchvae.models.sketch_rnn import SketchRNN, SketchRNNConfig
from sketchvae.sample import complete, load, reconstruct, sample

from test_image_data import serve

MODELS = Path(__file__).resolve().parents[2] / "shared" / "data" / "magenta_models"


def make_gen(hidden: int = 8, mixtures: int = 20, seed: int = 0, **info) -> M.GenJson:
    """A small random .gen.json model (weights up to +-3, a few at the ends of the int16 range)."""
    rng = np.random.default_rng(seed)
    dims = M._expected_dims(hidden, mixtures)
    weights = [rng.integers(-9000, 9000, size=d).astype(np.int16) for d in dims]
    weights[3].reshape(-1)[:3] = (32767, -32767, -32768)
    info = {"mode": 2, "version": 6, "max_seq_len": 30, "name": "tiny", "scale_factor": 17.25} | info
    return M.GenJson(info, dims, weights)


@pytest.fixture
def tiny(tmp_path) -> Path:
    path = tmp_path / "tiny.gen.json"
    path.write_text(make_gen().dumps())
    return path


# ------------------------------------------------------------------------------------------ semantics
def tf_basic_lstm_reference(gen: M.GenJson, inputs: np.ndarray) -> list[np.ndarray]:
    """Transcription of the format's definition (module docstring / tf.basicLSTMCell) in float64:
    the output vector y (3 + 6M) after each input row."""
    w_out, b_out, k_x, k_h, bias = (10.0 * q.astype(np.float64) / 32767 for q in gen.weights)
    hidden = gen.hidden
    kernel = np.concatenate([k_x, k_h], axis=0)
    h = np.zeros(hidden)
    c = np.zeros(hidden)
    sig = lambda v: 1.0 / (1.0 + np.exp(-v))  # noqa: E731
    out = []
    for x in inputs:
        g = np.concatenate([x, h]) @ kernel + bias
        i, j, f, o = np.split(g, 4)
        c = c * sig(f + 1.0) + sig(i) * np.tanh(j)
        h = np.tanh(c) * sig(o)
        out.append(h @ w_out + b_out)
    return out


def test_converted_model_computes_the_tf_basic_lstm(tmp_path, tiny):
    gen = M.read_gen_json(tiny)
    sampler = load(M.convert(tiny, tmp_path / "tiny.pt"))
    rng = np.random.default_rng(1)
    rows = np.zeros((12, 5))
    rows[:, 0:2] = rng.normal(0, 1.5, (12, 2))
    rows[np.arange(12), 2 + rng.integers(0, 2, 12)] = 1
    inputs = np.concatenate([[[0, 0, 1, 0, 0]], rows])
    want = np.stack(tf_basic_lstm_reference(gen, inputs))  # (T, 3 + 6M)
    x = torch.tensor(inputs, dtype=torch.float32).unsqueeze(0)
    with torch.no_grad():
        params, pen_logits, _ = sampler.model.decode(x)
        y = sampler.model.output(sampler.model.decoder_rnn(x)[0])[0].double().numpy()
    assert np.abs(y - want).max() < 1e-4
    # and the output layout: [3 pen | pi | mu_x | mu_y | sigma_x | sigma_y | rho], M each
    m = gen.num_mixture
    np.testing.assert_allclose(pen_logits[0].numpy(), want[:, :3], atol=1e-4)
    np.testing.assert_allclose(params.mu_x[0].numpy(), want[:, 3 + m:3 + 2 * m], atol=1e-4)
    np.testing.assert_allclose(params.mu_y[0].numpy(), want[:, 3 + 2 * m:3 + 3 * m], atol=1e-4)
    np.testing.assert_allclose(params.log_sigma_x[0].numpy(), want[:, 3 + 3 * m:3 + 4 * m], atol=1e-4)
    np.testing.assert_allclose(params.log_sigma_y[0].numpy(), want[:, 3 + 4 * m:3 + 5 * m], atol=1e-4)
    np.testing.assert_allclose(params.rho[0].numpy(), np.tanh(want[:, 3 + 5 * m:]), atol=1e-4)
    pi = np.exp(want[:, 3:3 + m]) / np.exp(want[:, 3:3 + m]).sum(-1, keepdims=True)
    np.testing.assert_allclose(params.log_pi[0].exp().numpy(), pi, atol=1e-5)


def test_converted_checkpoint_metadata(tmp_path, tiny):
    ckpt = load_checkpoint(M.convert(tiny, tmp_path / "tiny.pt"))
    cfg = ckpt["config"]
    assert (cfg["mode"], cfg["cell"], cfg["dec_rnn_size"], cfg["num_mixture"], cfg["max_seq_len"]) == \
        ("decoder", "lstm", 8, 20, 30)
    assert ckpt["scale_factor"] == 17.25
    assert ckpt["class_names"] == ["tiny"]
    assert ckpt["extra"]["temperature_convention"] == "magenta-js"
    assert ckpt["extra"]["magenta"]["name"] == "tiny" and ckpt["extra"]["magenta"]["max_seq_len"] == 30
    sampler = load(tmp_path / "tiny.pt")
    assert sampler.convention == "magenta-js" and sampler.scale_factor == 17.25


# ------------------------------------------------------------------------------------------ round trips
def test_round_trip_is_bit_exact(tmp_path, tiny):
    M.convert(tiny, tmp_path / "tiny.pt")
    M.convert(tmp_path / "tiny.pt", tmp_path / "back.gen.json")
    a = json.loads(tiny.read_text())
    b = json.loads((tmp_path / "back.gen.json").read_text())
    assert a[2] == b[2]  # the weight strings, bit for bit
    assert tiny.read_bytes() == (tmp_path / "back.gen.json").read_bytes()  # in fact the whole file


def test_real_magenta_model_round_trip(tmp_path):
    src = MODELS / "sheep.gen.json"
    if not src.exists():
        pytest.skip(f"{src} is absent (the shared Magenta models)")
    M.convert(src, tmp_path / "m.pt")
    M.convert(tmp_path / "m.pt", tmp_path / "m.gen.json")
    assert hashlib.sha256(src.read_bytes()).digest() == hashlib.sha256((tmp_path / "m.gen.json").read_bytes()).digest()


def test_every_int16_survives_float32_and_back():
    q = np.arange(-32768, 32768, dtype=np.int64).astype(np.int16)
    np.testing.assert_array_equal(M.quantize(M.dequantize(q)), q)


def decoder_checkpoint(path, *, scale=5.0, **cfg) -> Path:
    torch.manual_seed(0)
    config = SketchRNNConfig(**({"mode": "decoder", "dec_rnn_size": 16, "num_mixture": 20, "max_seq_len": 25} | cfg))
    model = SketchRNN(config).eval()
    return save_checkpoint(path, kind="sketch_rnn", config=config, model=model, class_names=["dots"],
                           scale_factor=scale)


def test_export_own_model_quantises_and_keeps_metadata(tmp_path):
    src = decoder_checkpoint(tmp_path / "own.pt", scale=7.5)
    M.convert(src, tmp_path / "own.gen.json")
    info, dims, _ = json.loads((tmp_path / "own.gen.json").read_text())
    assert info == {"mode": 2, "version": 6, "max_seq_len": 25, "name": "dots", "scale_factor": 7.5}
    assert dims == [[16, 123], [123], [5, 64], [16, 64], [64]]
    back = load_checkpoint(M.convert(tmp_path / "own.gen.json", tmp_path / "back.pt"))["model"]
    own = load_checkpoint(src)["model"]
    step = 10 / 32767
    for key in ("output.weight", "output.bias", "decoder_rnn.weight_ih_l0", "decoder_rnn.weight_hh_l0"):
        assert (back[key] - own[key]).abs().max() <= step / 2 + 1e-6, key
    # the LSTM biases: only their sum matters (the forget bias moves between bias_ih and bias_hh)
    sum_own = own["decoder_rnn.bias_ih_l0"] + own["decoder_rnn.bias_hh_l0"]
    sum_back = back["decoder_rnn.bias_ih_l0"] + back["decoder_rnn.bias_hh_l0"]
    assert (sum_back - sum_own).abs().max() <= step / 2 + 1e-6
    # --name overrides
    M.convert(src, tmp_path / "named.gen.json", name="my dots")
    assert json.loads((tmp_path / "named.gen.json").read_text())[0]["name"] == "my dots"


# ------------------------------------------------------------------------------------------ bad input
def _weights_b64(gen, k, data: bytes):
    obj = gen.to_json()
    obj[2][k] = base64.b64encode(data).decode()
    return json.dumps(obj)


BAD_FILES = {
    "not JSON": (lambda g: "hello, I am not JSON", "not valid JSON"),
    "truncated": (lambda g: g.dumps()[:len(g.dumps()) // 2], "truncated"),
    "empty": (lambda g: "", "empty"),
    "object": (lambda g: json.dumps({"weights": []}), "expected a JSON array [info, weight_dims, weight_strings]"),
    "two items": (lambda g: json.dumps(g.to_json()[:2]), "got a list of 2 items"),
    "unknown version": (lambda g: json.dumps([g.info | {"version": 7}] + g.to_json()[1:]),
                        "unknown .gen.json version 7"),
    "vae mode": (lambda g: json.dumps([g.info | {"mode": 1}] + g.to_json()[1:]), "mode 1 is not 2"),
    "no scale": (lambda g: json.dumps([{k: v for k, v in g.info.items() if k != "scale_factor"}]
                                      + g.to_json()[1:]), "no 'scale_factor'"),
    "bad scale": (lambda g: json.dumps([g.info | {"scale_factor": -1}] + g.to_json()[1:]), "scale_factor=-1"),
    "dims disagree": (lambda g: json.dumps([g.info, [[8, 123], [123], [5, 32], [8, 32], [16]], g.to_json()[2]]),
                      "do not fit together"),
    "dims not 3 + 6M": (lambda g: json.dumps([g.info, [[8, 10], [10], [5, 32], [8, 32], [32]], g.to_json()[2]]),
                        "is not 3 + 6M"),
    "bad base64": (lambda g: json.dumps(g.to_json()[:2] + [["@@@@"] + g.to_json()[2][1:]]), "not valid base64"),
    "too few values": (lambda g: _weights_b64(g, 1, b"\x00\x01" * 100), "holds 200 bytes"),
    "not UTF-8": (lambda g: b"\xff\xfe[1, 2]", "not a JSON text file"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_files_give_one_clear_error(tmp_path, case):
    make, phrase = BAD_FILES[case]
    path = tmp_path / "bad.gen.json"
    content = make(make_gen())
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(M.MagentaFormatError) as err:
        M.read_gen_json(path)
    assert str(err.value).startswith(f"{path}: ") and phrase in str(err.value), str(err.value)
    result = CliRunner().invoke(main, ["convert", str(path), str(tmp_path / "out.pt")])
    assert result.exit_code == 1 and result.output.startswith(f"Error: {path}: ") and "Traceback" not in result.output
    assert result.output.count("\n") == 1, result.output
    assert not (tmp_path / "out.pt").exists() and not list(tmp_path.glob("*.tmp"))


def test_missing_file_and_unknown_direction(tmp_path, tiny):
    with pytest.raises(M.MagentaFormatError, match="no such file"):
        M.read_gen_json(tmp_path / "nope.gen.json")
    with pytest.raises(ValueError, match="cannot tell what to convert"):
        M.convert(tiny, tmp_path / "x.svg")
    with pytest.raises(ValueError, match="cannot tell what to convert"):
        M.convert(tiny, tmp_path / "x.gen.json")


@pytest.mark.parametrize("cfg, phrase", [
    ({"mode": "vae"}, "mode 'vae' has an encoder"),
    ({"mode": "class_vae", "num_classes": 2}, "mode 'class_vae' has an encoder"),
    ({"cell": "layer_norm"}, "cell 'layer_norm'"),
    ({"cell": "hyper", "hyper_rnn_size": 4, "hyper_embed_size": 2}, "cell 'hyper': magenta-js and the export-web "
                                                                    "page run a plain (basic) LSTM and have no HyperLSTM"),
    ({"mode": "vae", "enc_cell": "layer_norm"}, "enc_cell 'layer_norm'"),  # the encoder's cell counts too
    ({"cell": "hyper", "mode": "vae"}, "have no HyperLSTM"),  # the cell first: a decoder-only hyper model is no help
    ({"num_mixture": 5}, "reads exactly 20 mixture components"),
])
def test_export_refuses_what_the_format_cannot_hold(tmp_path, cfg, phrase):
    src = decoder_checkpoint(tmp_path / "m.pt", **cfg)
    result = CliRunner().invoke(main, ["convert", str(src), str(tmp_path / "m.gen.json")])
    assert result.exit_code == 1 and phrase in result.output, result.output
    assert result.output.count("\n") == 1 and not (tmp_path / "m.gen.json").exists()


def test_export_refuses_weights_outside_the_range(tmp_path):
    src = decoder_checkpoint(tmp_path / "m.pt")
    ckpt = load_checkpoint(src)
    ckpt["model"]["decoder_rnn.weight_hh_l0"][0, 0] = 12.5
    ckpt["model"]["output.weight"][3, 1] = -10.2
    ckpt["model"]["output.bias"][0] = 10.0  # exactly representable: fine
    save_checkpoint(src, kind="sketch_rnn", config=ckpt["config"], model=ckpt["model"], scale_factor=5.0)
    with pytest.raises(M.MagentaFormatError, match=r"2 weight\(s\) lie outside .* \[-10, 10\] \(largest \|w\| = 12.5, "
                                                   r"in the LSTM recurrent kernel\)"):
        M.convert(src, tmp_path / "m.gen.json")
    assert not (tmp_path / "m.gen.json").exists()


# ------------------------------------------------------------------------------------------ temperature
def test_temperature_conventions_table():
    assert TEMPERATURE_CONVENTIONS == ("paper", "magenta", "magenta-js")
    assert temperature_scales(0.25, "paper") == (0.25, 0.5)
    assert temperature_scales(0.25, "magenta") == (0.25, 0.25)
    assert temperature_scales(0.25, "magenta-js") == (0.625, 0.5)
    for c in TEMPERATURE_CONVENTIONS:
        assert temperature_scales(1.0, c) == (1.0, 1.0)
    with pytest.raises(ValueError, match="magenta-js"):
        temperature_scales(0.5, "js")


def test_tempered_magenta_js_by_hand():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 20, generator=gen)
    pen_logits = torch.randn(4, 3, generator=gen)
    from sketchvae.distributions import MixtureParams

    params = MixtureParams(torch.log_softmax(logits, -1), *(torch.randn(4, 20, generator=gen) for _ in range(4)),
                           torch.tanh(torch.randn(4, 20, generator=gen)))
    p, pen = tempered(params, pen_logits, 0.3, "magenta-js")
    np.testing.assert_allclose(p.log_pi.exp(), torch.softmax(logits / 0.65, -1), atol=1e-6)
    np.testing.assert_allclose(pen.exp(), torch.softmax(pen_logits / 0.65, -1), atol=1e-6)
    np.testing.assert_allclose(p.log_sigma_x.exp(), params.log_sigma_x.exp() * 0.3 ** 0.5, rtol=1e-6)
    assert torch.equal(p.rho, params.rho) and torch.equal(p.mu_x, params.mu_x)


def test_sampler_default_convention_comes_from_the_checkpoint(tmp_path, tiny):
    sp = load(M.convert(tiny, tmp_path / "tiny.pt"))
    assert sp.convention == "magenta-js"
    default = sample(sp, 6, 0.3, seed=2, max_len=20)
    js = sample(sp, 6, 0.3, seed=2, max_len=20, convention="magenta-js")
    paper = sample(sp, 6, 0.3, seed=2, max_len=20, convention="paper")
    assert all(np.array_equal(a, b) for a, b in zip(default, js))
    assert not all(a.shape == b.shape and np.allclose(a, b) for a, b in zip(default, paper))
    part = np.array([[3.0, 1.0, 0.0], [2.0, -4.0, 1.0], [5.0, 5.0, 1.0]])
    assert all(np.array_equal(a, b) for a, b in zip(complete(sp, part, 3, 0.3, seed=1, max_len=20),
                                                     complete(sp, part, 3, 0.3, seed=1, max_len=20,
                                                              convention="magenta-js")))
    own = load(decoder_checkpoint(tmp_path / "own.pt"))
    assert own.convention == "paper"  # no extra["temperature_convention"]: the paper's
    with pytest.raises(ValueError, match="unknown temperature convention"):
        sample(own, 1, convention="magenta_js")


def test_bad_convention_in_checkpoint(tmp_path):
    src = decoder_checkpoint(tmp_path / "m.pt")
    ckpt = load_checkpoint(src)
    save_checkpoint(src, kind="sketch_rnn", config=ckpt["config"], model=ckpt["model"],
                    extra={"temperature_convention": "warm"})
    with pytest.raises(CheckpointError, match="'warm' is not one of"):
        load(src)


def test_reconstruct_api_refuses_decoder_models(tmp_path, tiny):
    sp = load(M.convert(tiny, tmp_path / "tiny.pt"))
    with pytest.raises(ValueError, match="has no encoder"):
        reconstruct(sp, [np.array([[1.0, 2.0, 1.0]])])


# ------------------------------------------------------------------------------------------ CLI
@pytest.fixture
def ndjson(tmp_path) -> Path:
    path = tmp_path / "d.ndjson"
    drawings = [[[[0, 20, 40, 40], [0, 5, 0, 30]], [[10, 30], [40, 45]]], [[[5, 25, 30], [5, 0, 20]]]]
    path.write_text("".join(json.dumps({"word": "tiny", "drawing": d}) + "\n" for d in drawings))
    return path


def test_cli_convert_sample_complete_on_converted_model(tmp_path, tiny, ndjson):
    run = CliRunner().invoke
    r = run(main, ["convert", str(tiny), str(tmp_path / "t.pt")])
    assert r.exit_code == 0 and "wrote" in r.output, r.output
    r = run(main, ["sample", str(tmp_path / "t.pt"), "-n", "4", "--max-len", "15", "--seed", "0",
                   "-o", str(tmp_path / "s.svg")])
    assert r.exit_code == 0 and (tmp_path / "s.svg").exists(), r.output
    r = run(main, ["sample", str(tmp_path / "t.pt"), "-n", "2", "--max-len", "15", "--convention", "paper",
                   "-o", str(tmp_path / "p.svg")])
    assert r.exit_code == 0, r.output
    r = run(main, ["complete", str(tmp_path / "t.pt"), str(ndjson), "-n", "3", "--max-len", "20", "--seed", "0",
                   "-o", str(tmp_path / "c.svg")])
    assert r.exit_code == 0 and (tmp_path / "c.svg").exists(), r.output
    for cmd in (["reconstruct", str(tmp_path / "t.pt"), str(ndjson)],
                ["interpolate", str(tmp_path / "t.pt"), str(ndjson), "--from", "0", "--to", "1"]):
        r = run(main, cmd + ["-o", str(tmp_path / "x.svg")])
        assert r.exit_code == 1 and "unconditional" in r.output and "no encoder" in r.output, r.output
        assert r.output.count("\n") == 1 and not (tmp_path / "x.svg").exists()
    r = run(main, ["convert", str(tmp_path / "t.pt"), str(tmp_path / "back.gen.json")])
    assert r.exit_code == 0 and (tmp_path / "back.gen.json").read_bytes() == tiny.read_bytes()


# ------------------------------------------------------------------------------------------ download
@pytest.fixture
def http_dir(tmp_path):
    """A plain HTTP server on 127.0.0.1 over tmp_path/www."""
    www = tmp_path / "www"
    www.mkdir()
    with serve(www) as url:
        yield www, url.rstrip("/")


def test_download_magenta_end_to_end(tmp_path, http_dir):
    www, url = http_dir
    (www / "sheep.gen.json").write_text(make_gen(name="sheep").dumps())
    (www / "sea_turtle.gen.json").write_text(make_gen(seed=3, name="sea_turtle").dumps())
    out = tmp_path / "models"
    run = CliRunner().invoke
    r = run(main, ["download", "--magenta", "sheep", "Sea Turtle", "--models-dir", str(out), "--base-url", url,
                   "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "2 model(s) downloaded" in r.output
    for name in ("sheep", "sea_turtle"):
        assert (out / f"{name}.gen.json").read_bytes() == (www / f"{name}.gen.json").read_bytes()
        sp = load(out / f"{name}.pt")
        assert sp.convention == "magenta-js" and sp.class_names == [name]
    r = run(main, ["download", "--magenta", "sheep", "--models-dir", str(out), "--base-url", url, "--no-progress"])
    assert r.exit_code == 0 and "already there" in r.output and "0 model(s) downloaded" in r.output
    (out / "sheep.pt").unlink()  # the .gen.json is kept: convert it again without downloading
    r = run(main, ["download", "--magenta", "sheep", "--models-dir", str(out), "--base-url", url, "--no-progress"])
    assert r.exit_code == 0 and "converted to" in r.output and (out / "sheep.pt").exists()


def test_download_magenta_env_dir_and_bad_file(tmp_path, http_dir, monkeypatch):
    www, url = http_dir
    (www / "cat.gen.json").write_text(make_gen().dumps()[:1000])  # truncated on the server
    monkeypatch.setenv(M.DIR_ENV, str(tmp_path / "envdir"))
    monkeypatch.setenv(M.BASE_URL_ENV, url)
    r = CliRunner().invoke(main, ["download", "--magenta", "cat", "--no-progress"])
    assert r.exit_code == 1 and "failed verification" in r.output and "truncated" in r.output, r.output
    assert not list((tmp_path / "envdir").glob("cat*"))


def test_download_magenta_offline_and_unknown_names(tmp_path):
    r = CliRunner().invoke(main, ["download", "--magenta", "sheep", "--models-dir", str(tmp_path),
                                  "--base-url", "http://127.0.0.1:9", "--retries", "0"])
    assert r.exit_code == 1 and "offline" in r.output and M.BASE_URL_ENV in r.output, r.output
    r = CliRunner().invoke(main, ["download", "--magenta", "sheeep", "--models-dir", str(tmp_path)])
    assert r.exit_code == 2 and "did you mean sheep" in r.output
    r = CliRunner().invoke(main, ["download", "--magenta", "--list"])
    assert r.exit_code == 0 and "the_mona_lisa" in r.output.split()
    assert M.model_url("sea_turtle", "http://x/") == "http://x/sea_turtle.gen.json"
    assert M.model_url("sheep").startswith("https://storage.googleapis.com/quickdraw-models/sketchRNN/large_models/")


def test_download_magenta_resumes_a_partial_file(tmp_path):
    """An interrupted download (a .part file) continues with HTTP Range, as Quick, Draw! downloads do."""
    from test_quickdraw import _Handler  # the Range-capable test server of the Quick, Draw! downloader

    body = make_gen(name="sheep").dumps().encode()
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    srv.files, srv.requests, srv.drop_first, srv.ranges = {"/m/sheep.gen.json": body}, [], {}, True
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        out = tmp_path / "models"
        out.mkdir()
        (out / "sheep.gen.json.part").write_bytes(body[:1000])
        fetched = M.download(["sheep"], out, base=f"http://127.0.0.1:{srv.server_address[1]}/m", backoff=0)
    finally:
        srv.shutdown()
        srv.server_close()
    assert srv.requests == [{"path": "/m/sheep.gen.json", "range": "bytes=1000-"}]
    assert (out / "sheep.gen.json").read_bytes() == body and not (out / "sheep.gen.json.part").exists()
    assert fetched[0].downloaded and fetched[0].converted and load(out / "sheep.pt").class_names == ["sheep"]
