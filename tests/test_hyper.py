"""HyperLSTM (`--cell hyper`): the cell against a NumPy transcription of magenta's HyperLSTMCell
equations, its initialisation, backends, lengths, sampling, exact resume, the CLI, the
`magenta-large` preset and the `convert` refusal.  Shapes, gradients, step-wise decoding and the
checkpoint round trip run for every cell in tests/test_model.py."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import test_train
from sketchvae import sample as S
from sketchvae.checkpoint import load_checkpoint
from sketchvae.cli import main
from sketchvae.models import SketchRNN, SketchRNNConfig
from sketchvae.models.layers import HyperBiLSTMEncoder, HyperLSTM
from test_train import cache_path  # noqa: F401 (a fixture)

EPS = 1e-3  # magenta's layer-norm epsilon


# ---------------------------------------------------------------- NumPy transcription of rnn.py
def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _ln(x, gamma, beta):
    """magenta's `layer_norm` / one group of `layer_norm_all`: over the last axis, eps inside the sqrt."""
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + EPS) * gamma + beta


def _ln_all(x, gamma, beta, units):
    """`layer_norm_all`: one layer norm per block of `units` (the four gates), gamma/beta (4 * units,)."""
    parts = [_ln(x[:, k * units:(k + 1) * units], gamma[k * units:(k + 1) * units], beta[k * units:(k + 1) * units])
             for k in range(4)]
    return np.concatenate(parts, 1)


def numpy_hyper_lstm(p: dict, x, h, c, hh, hc, drop=None):
    """HyperLSTMCell.__call__ with use_layer_norm=True, written out with magenta's shapes: weights as
    (inputs, outputs) matrices, gates split i, j, f, o, one scope (zw, alpha, zb, beta) per gate term.
    x (B, T, I); h, c (B, H); hh, hc (B, Hh); drop (T, B, H) scaled mask on tanh(j) or None."""
    H = h.shape[1]
    Hh = hh.shape[1]
    outs = []
    for t in range(x.shape[1]):
        xt = x[:, t]
        # the hyper cell: LayerNormLSTMCell(Hh) on [x, h], no recurrent dropout
        concat = np.concatenate([xt, h, hh], 1) @ np.concatenate([p["hyper_W_xh"], p["hyper_W_hh"]], 0)
        i, j, f, o = np.split(_ln_all(concat, p["hyper_ln_gamma"], p["hyper_ln_beta"], Hh), 4, 1)
        hc = hc * _sigmoid(f + 1.0) + _sigmoid(i) * np.tanh(j)
        hh = np.tanh(_ln(hc, p["hyper_ln_c_gamma"], p["hyper_ln_c_beta"])) * _sigmoid(o)

        def hyper_norm(layer, scope, use_bias):
            zw = hh @ p[scope + "/zw/w"] + p[scope + "/zw/b"]
            result = (zw @ p[scope + "/alpha/w"]) * layer
            if use_bias:
                result = result + (hh @ p[scope + "/zb/w"]) @ p[scope + "/beta/w"]
            return result

        xh = np.split(xt @ p["W_xh"], 4, 1)
        hhh = np.split(h @ p["W_hh"], 4, 1)
        bias = np.split(p["bias"], 4, 0)
        gates = [hyper_norm(xh[k], f"hyper_{g}x", False) + hyper_norm(hhh[k], f"hyper_{g}h", True) + bias[k]
                 for k, g in enumerate("ijfo")]
        i, j, f, o = np.split(_ln_all(np.concatenate(gates, 1), p["ln_gamma"], p["ln_beta"], H), 4, 1)
        g = np.tanh(j) if drop is None else np.tanh(j) * drop[t]
        c = c * _sigmoid(f + 1.0) + _sigmoid(i) * g
        h = np.tanh(_ln(c, p["ln_c_gamma"], p["ln_c_beta"])) * _sigmoid(o)
        outs.append(h)
    return np.stack(outs, 1), h, c, hh, hc


def magenta_params(cell: HyperLSTM) -> dict:
    """Our parameters under magenta's variable names and shapes (per gate term, (in, out) matrices)."""
    sd = {k: v.detach().double().numpy() for k, v in cell.state_dict().items()}
    E = cell.embed_size
    H = cell.hidden_size
    p = {"W_xh": sd["weight_ih"].T, "W_hh": sd["weight_hh"][:4 * H].T, "bias": sd["bias"].reshape(-1),
         "ln_gamma": sd["ln_gamma"].reshape(-1), "ln_beta": sd["ln_beta"].reshape(-1),
         "ln_c_gamma": sd["ln_c_gamma"], "ln_c_beta": sd["ln_c_beta"],
         "hyper_W_xh": np.concatenate([sd["hyper.weight_ih"], sd["weight_hh"][4 * H:]], 1).T,  # on [x, h]
         "hyper_W_hh": sd["hyper.weight_hh"].T,
         "hyper_ln_gamma": sd["hyper.ln_gamma"].reshape(-1), "hyper_ln_beta": sd["hyper.ln_beta"].reshape(-1),
         "hyper_ln_c_gamma": sd["hyper.ln_c_gamma"], "hyper_ln_c_beta": sd["hyper.ln_c_beta"]}
    rows = lambda n: slice(n * E, (n + 1) * E)  # noqa: E731
    for k, g in enumerate("ijfo"):
        p[f"hyper_{g}x/zw/w"], p[f"hyper_{g}x/zw/b"] = sd["weight_z"][rows(k)].T, sd["bias_z"][rows(k)]
        p[f"hyper_{g}x/alpha/w"] = sd["weight_d"][k]
        p[f"hyper_{g}h/zw/w"], p[f"hyper_{g}h/zw/b"] = sd["weight_z"][rows(4 + k)].T, sd["bias_z"][rows(4 + k)]
        p[f"hyper_{g}h/alpha/w"] = sd["weight_d"][4 + k]
        p[f"hyper_{g}h/zb/w"], p[f"hyper_{g}h/beta/w"] = sd["weight_z"][rows(8 + k)].T, sd["weight_d"][8 + k]
    return p


def random_cell(seed=0, **kw) -> HyperLSTM:
    """A small HyperLSTM in float64 with every parameter moved away from its (partly constant) init."""
    torch.manual_seed(seed)
    cell = HyperLSTM(4, 6, hyper_size=5, embed_size=3, backend="eager", **kw).double()
    with torch.no_grad():
        for p in cell.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return cell


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_cell_matches_a_numpy_transcription_of_magentas_equations(dropout):
    cell = random_cell(recurrent_dropout=dropout).train(dropout > 0)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 7, 4, generator=g, dtype=torch.float64)
    h0, c0 = torch.randn(1, 3, 11, generator=g, dtype=torch.float64), torch.randn(1, 3, 11, generator=g,
                                                                                   dtype=torch.float64)
    drop = None
    if dropout:
        torch.manual_seed(5)
        drop = cell.dropout_mask(7, 3, "cpu", torch.float64).numpy()  # the mask forward draws next
        assert (drop == 0).any() and (drop > 1).any()
        torch.manual_seed(5)
    out, (h, c) = cell(x, (h0, c0))
    H = 6
    ref_out, ref_h, ref_c, ref_hh, ref_hc = numpy_hyper_lstm(magenta_params(cell), x.numpy(), h0[0, :, :H].numpy(),
                                                             c0[0, :, :H].numpy(), h0[0, :, H:].numpy(),
                                                             c0[0, :, H:].numpy(), drop)
    np.testing.assert_allclose(out.detach().numpy(), ref_out, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(h[0].detach().numpy(), np.concatenate([ref_h, ref_hh], 1), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(c[0].detach().numpy(), np.concatenate([ref_c, ref_hc], 1), rtol=1e-10, atol=1e-12)


def test_cell_starts_like_magentas():
    torch.manual_seed(0)
    cell = HyperLSTM(7, 16, hyper_size=12, embed_size=4)
    p = magenta_params(cell.double())
    for k, g in enumerate("ijfo"):
        # zw = 0 * hyper_output + 1, alpha = 0.1 / E everywhere: every weight-row scale starts at 0.1
        assert not p[f"hyper_{g}x/zw/w"].any() and (p[f"hyper_{g}x/zw/b"] == 1).all()
        np.testing.assert_allclose(p[f"hyper_{g}h/alpha/w"], 0.1 / 4)
        assert not p[f"hyper_{g}h/beta/w"].any()
        w = p["W_hh"][:, k * 16:(k + 1) * 16]
        np.testing.assert_allclose(w.T @ w, np.eye(16), atol=1e-6)  # orthogonal per gate
    assert 0.005 < p["hyper_ih/zb/w"].std() < 0.02 and not p["bias"].any()
    bound = np.sqrt(6 / (7 + 16 + 4 * 12))  # Glorot over the hyper cell's whole [x, h] input matrix
    assert np.abs(p["hyper_W_xh"]).max() <= bound and np.abs(p["hyper_W_xh"]).max() > 0.9 * bound
    assert (p["ln_gamma"] == 1).all() and not p["ln_beta"].any()


def test_scripted_path_agrees_with_eager_values_and_gradients():
    x = torch.randn(3, 7, 4, generator=torch.Generator().manual_seed(2))
    lengths = torch.tensor([7, 3, 5])
    results = []
    for backend in ["eager", "script", "script", "script"]:  # the profiling executor optimises after a few calls
        cell = random_cell(recurrent_dropout=0.2).float()
        cell.backend = backend
        torch.manual_seed(9)
        out, (h, c) = cell(x, lengths=lengths)
        (out.square().sum() + h.sum() + c.square().sum()).backward()
        results.append([out, h, c] + [p.grad for p in cell.parameters()])
    for got in results[1:]:
        for a, b in zip(got, results[0]):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.slow  # Inductor compiles C++ on CPU
def test_compiled_path_agrees_with_eager():
    x = torch.randn(3, 5, 4, generator=torch.Generator().manual_seed(2))
    lengths = torch.tensor([5, 2, 4])
    outs = []
    for backend in ["eager", "compile"]:
        cell = random_cell().float()
        cell.backend = backend
        with torch.no_grad():
            out, state = cell(x, lengths=lengths)
        outs.append((out, *state))
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_lengths_stop_the_state_and_the_encoder_reads_each_sketch_alone():
    torch.manual_seed(3)
    enc = HyperBiLSTMEncoder(4, 5, hyper_size=3, embed_size=2)
    x = torch.randn(2, 6, 4)
    lengths = torch.tensor([6, 3])
    h_fw, h_bw = enc(x, lengths)
    assert h_fw.shape == h_bw.shape == (2, 5)
    for b, n in enumerate(lengths.tolist()):
        _, (hf, _) = enc.fw(x[b:b + 1, :n])
        _, (hb, _) = enc.bw(x[b:b + 1, :n].flip(1))
        torch.testing.assert_close(h_fw[b], hf[0, 0, :5], atol=1e-6, rtol=0)
        torch.testing.assert_close(h_bw[b], hb[0, 0, :5], atol=1e-6, rtol=0)


def test_model_wiring_dropout_and_encoder_cell():
    cfg = SketchRNNConfig(cell="hyper", enc_cell="layer_norm", enc_rnn_size=6, dec_rnn_size=8, z_size=3,
                          num_mixture=2, max_seq_len=12, hyper_rnn_size=5, hyper_embed_size=3, recurrent_dropout=0.5)
    torch.manual_seed(0)
    model = SketchRNN(cfg)
    assert type(model.decoder_rnn).__name__ == "HyperLSTM" and type(model.encoder_rnn.fw).__name__ == "LayerNormLSTM"
    assert model.dec_init.out_features == 2 * (8 + 5) == 2 * cfg.decoder_state_size
    assert model.decoder_rnn.hyper.recurrent_dropout == 0.0  # magenta: hyper_use_recurrent_dropout=False
    strokes = torch.zeros(2, 6, 5)
    strokes[:, :, 2] = 1.0
    strokes[:, 1:, :2] = torch.randn(2, 5, 2)
    lengths = torch.tensor([5, 3])
    z = torch.randn(2, 3)
    runs = []
    for mode in ["train", "train", "eval", "eval"]:
        getattr(model, mode)()
        runs.append(model.decode(strokes[:, :-1], z)[0].mu_x)
    assert not torch.allclose(runs[0], runs[1]) and torch.equal(runs[2], runs[3])
    assert SketchRNNConfig(cell="hyper").encoder_cell == "hyper" and SketchRNNConfig().decoder_state_size == 512


def test_batched_sampling_equals_one_at_a_time_after_training_steps():
    torch.manual_seed(0)
    cfg = SketchRNNConfig(cell="hyper", enc_rnn_size=6, dec_rnn_size=12, z_size=4, num_mixture=3, max_seq_len=25,
                          hyper_rnn_size=6, hyper_embed_size=3)
    model = SketchRNN(cfg).double()
    for _ in range(3):  # as in fit: training steps through the scripted scan, then samples under inference_mode
        out, _ = model.decoder_rnn(torch.randn(2, 4, 9, dtype=torch.float64))
        out.sum().backward()
    sp = S.Sampler(model.eval(), 10.0, [])
    g = torch.Generator().manual_seed(3)
    noise = torch.cat([torch.rand(25, 7, 2, generator=g), torch.randn(25, 7, 2, generator=g)], -1)
    a = S.sample(sp, 7, 1.0, seed=5, noise=noise)
    b = S.sample_sequential(sp, 7, 1.0, seed=5, noise=noise)
    assert [len(s) for s in a] == [len(s) for s in b] and len({len(s) for s in a}) > 1
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------- training
def test_resumed_hyper_run_matches_an_uninterrupted_one(tmp_path, cache_path, monkeypatch):  # noqa: F811
    mcfg, tcfg = test_train._resume_config()
    hyper = dataclasses.replace(mcfg, cell="hyper", hyper_rnn_size=8, hyper_embed_size=4, recurrent_dropout=0.1)
    monkeypatch.setattr(test_train, "_resume_config", lambda: (hyper, tcfg))
    test_train.test_resumed_run_matches_an_uninterrupted_one(tmp_path, cache_path)
    assert load_checkpoint(tmp_path / "killed" / "last.pt")["config"]["cell"] == "hyper"


def test_cli_preset_magenta_large_and_convert_refusal(tmp_path, cache_path):  # noqa: F811
    run = tmp_path / "r"
    small = ["--enc-rnn-size", "8", "--dec-rnn-size", "8", "--hyper-rnn-size", "4", "--hyper-embed-size", "2",
             "--z-size", "4", "--num-mixture", "2", "--batch-size", "4", "--steps", "2", "--eval-every", "2",
             "--device", "cpu", "--no-progress", "--no-test-at-end"]
    res = CliRunner().invoke(main, ["train", str(cache_path), "-o", str(run), "--preset", "magenta-large", *small])
    assert res.exit_code == 0, res.output
    cfg = load_checkpoint(run / "last.pt")["config"]
    assert (cfg["cell"], cfg["enc_cell"], cfg["recurrent_dropout"], cfg["hyper_rnn_size"]) == \
        ("hyper", "layer_norm", 0.0, 4)
    res = CliRunner().invoke(main, ["convert", str(run / "last.pt"), str(tmp_path / "m.gen.json")])
    assert res.exit_code == 1 and res.output.count("\n") == 1 and "have no HyperLSTM" in res.output, res.output
    res = CliRunner().invoke(main, ["train", str(cache_path), "-o", str(tmp_path / "bad"), "--enc-cell", "gru"])
    assert res.exit_code == 2 and "'gru' is not one of 'lstm', 'layer_norm', 'hyper'" in res.output
    res = CliRunner().invoke(main, ["train", "--help"])
    assert "hyper" in res.output and "magenta-large" in res.output


def test_magenta_large_preset_is_magentas_big_model_recipe():
    from sketchvae.presets import apply_preset

    model, train = apply_preset("magenta-large", {}, {})
    cfg = SketchRNNConfig(**model)
    assert (cfg.cell, cfg.dec_rnn_size, cfg.encoder_cell, cfg.enc_rnn_size, cfg.recurrent_dropout) == \
        ("hyper", 2048, "layer_norm", 512, 0.0)
    assert (cfg.hyper_rnn_size, cfg.hyper_embed_size, cfg.z_size, cfg.num_mixture) == (256, 32, 128, 20)
    assert train == apply_preset("magenta", {}, {})[1]  # the training recipe is magenta's


def test_a_short_hyper_training_lowers_the_validation_loss(tmp_path, cache_path):  # noqa: F811
    """On the synthetic three-class sketches (README: the same on aaron_sheep, 77 CPU steps)."""
    from sketchvae.data.cache import open_cache
    from sketchvae.train import evaluate, fit, make_batches

    torch.set_num_threads(1)
    mcfg = test_train.tiny_model(cell="hyper", hyper_rnn_size=16, hyper_embed_size=4)
    result = fit(mcfg, test_train.tiny_train(steps=30, eval_every=30, lr=3e-3, test_at_end=False), cache_path,
                 tmp_path / "run")
    torch.manual_seed(1)  # the seed fit starts from: the same initial weights
    c = open_cache(cache_path)
    untrained = evaluate(SketchRNN(mcfg), make_batches(c, "valid", 8, mcfg.max_seq_len,
                                                       scale_factor=float(c.scale_factor), shuffle=False, seed=0))
    assert result.final_valid["recon"] < untrained["recon"] - 0.2, (untrained, result.final_valid)  # 2.26 -> 1.91
