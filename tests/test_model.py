"""Sketch-RNN config and model: shapes, padding, step-wise decoding, cells, backends, checkpoints."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from sketchvae.checkpoint import build_model, config_from_dict, load_checkpoint, save_checkpoint
from sketchvae.losses import kl_loss, sketch_rnn_loss
from sketchvae.models import SketchRNN, SketchRNNConfig
from sketchvae.models.layers import LayerNormBiLSTMEncoder, LayerNormLSTM, reverse_padded

MODES = ["vae", "decoder", "class_vae"]
CELLS = ["lstm", "layer_norm", "hyper"]


def tiny(mode="vae", cell="lstm", **kw):
    base = dict(mode=mode, cell=cell, enc_rnn_size=6, dec_rnn_size=8, z_size=3, num_mixture=2, max_seq_len=12,
                num_classes=3 if mode == "class_vae" else 0, class_embed_size=2, hyper_rnn_size=5, hyper_embed_size=3)
    base.update(kw)
    return SketchRNNConfig(**base)


def make_model(mode="vae", cell="lstm", seed=0, **kw):
    torch.manual_seed(seed)
    return SketchRNN(tiny(mode, cell, **kw)).eval()


def make_batch(lengths, seed=0, pad_value=None):
    """Stroke-5 batch (B, T+1, 5): start token, random real rows, (0, 0, 0, 0, 1) padding."""
    gen = torch.Generator().manual_seed(seed)
    steps = max(lengths)
    strokes = torch.zeros(len(lengths), steps + 1, 5)
    strokes[:, 0, 2] = 1.0
    for b, n in enumerate(lengths):
        strokes[b, 1:n + 1, :2] = torch.randn(n, 2, generator=gen)
        pen = torch.randint(0, 2, (n,), generator=gen)
        strokes[b, torch.arange(1, n + 1), 2 + pen] = 1.0  # p_down or p_up; one-hot per row
        strokes[b, n + 1:, 4] = 1.0
        if pad_value is not None:
            strokes[b, n + 1:] = pad_value
    labels = torch.arange(len(lengths)) % 3
    return strokes, torch.tensor(lengths), labels


# ---------------------------------------------------------------- config
def test_config_defaults_are_the_reference_ones():
    c = SketchRNNConfig()
    assert (c.mode, c.enc_rnn_size, c.dec_rnn_size, c.z_size, c.num_mixture, c.max_seq_len, c.cell) == \
        ("vae", 256, 512, 128, 20, 250, "lstm")
    assert c.output_size == 3 + 6 * 20


@pytest.mark.parametrize("kwargs,words", [
    (dict(mode="gan"), ["'gan'", "vae", "decoder", "class_vae"]),
    (dict(cell="gru"), ["'gru'", "lstm", "layer_norm", "hyper"]),
    (dict(enc_cell="gru"), ["enc_cell='gru'", "hyper", "None"]),
    (dict(hyper_rnn_size=0), ["hyper_rnn_size=0", ">= 1"]),
    (dict(z_size=0), ["z_size=0", ">= 1"]),
    (dict(num_mixture=2.5), ["num_mixture=2.5", "integer"]),
    (dict(input_dropout=1.0), ["input_dropout=1.0", "[0, 1)"]),
    (dict(mode="class_vae", num_classes=0), ["num_classes=0", "class_vae"]),
    (dict(num_classes=-1), ["num_classes=-1", ">= 0"]),
    (dict(recurrent_dropout=1.0), ["recurrent_dropout=1.0", "[0, 1)"]),
])
def test_config_errors_name_value_and_allowed_set(kwargs, words):
    with pytest.raises(ValueError) as err:
        SketchRNNConfig(**kwargs)
    for word in words:
        assert word in str(err.value)


def test_config_round_trips_through_a_dict():
    for c in (tiny("class_vae", "layer_norm", recurrent_dropout=0.1), tiny("vae", "hyper", enc_cell="layer_norm")):
        assert config_from_dict(SketchRNNConfig, dataclasses.asdict(c)) == c


# ---------------------------------------------------------------- model
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("mode", MODES)
def test_forward_shapes_loss_and_gradients(mode, cell):
    model = make_model(mode, cell).train()
    strokes, lengths, labels = make_batch([5, 2, 4])
    out = model(strokes, lengths, labels, generator=torch.Generator().manual_seed(0))
    p = out["params"]
    assert all(f.shape == (3, 5, 2) for f in p) and out["pen_logits"].shape == (3, 5, 3)
    assert torch.all(p.rho.abs() < 1) and torch.allclose(p.log_pi.exp().sum(-1), torch.ones(3, 5))
    loss = sketch_rnn_loss(p, out["pen_logits"], strokes[:, 1:], lengths, 12)["recon"]
    if mode == "decoder":
        assert out["mu"] is None and out["presig"] is None and out["z"] is None
    else:
        assert out["mu"].shape == out["presig"].shape == out["z"].shape == (3, 3)
        loss = loss + kl_loss(out["mu"], out["presig"], kl_min=0.0)
    loss.backward()
    grads = [q.grad for q in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("mode", ["vae", "class_vae"])
def test_encoder_ignores_padding_and_batch_company(mode, cell):
    model = make_model(mode, cell)
    strokes, lengths, labels = make_batch([6, 2, 4])
    with torch.no_grad():
        mu, presig = model.encode(strokes, lengths, labels)
        junk = make_batch([6, 2, 4], pad_value=7.5)[0]
        longer = torch.cat([junk, torch.full((3, 4, 5), -3.0)], dim=1)  # more padded steps
        mu2, presig2 = model.encode(longer, lengths, labels)
        torch.testing.assert_close(mu2, mu, rtol=0, atol=1e-6)
        torch.testing.assert_close(presig2, presig, rtol=0, atol=1e-6)
        for b, n in enumerate(lengths.tolist()):  # each sketch alone, no padding at all
            alone, _ = model.encode(strokes[b:b + 1, :n + 1], lengths[b:b + 1], labels[b:b + 1])
            torch.testing.assert_close(alone[0], mu[b], rtol=0, atol=1e-6)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("mode", MODES)
def test_stepwise_decoding_equals_teacher_forcing(mode, cell):
    model = make_model(mode, cell)
    strokes, lengths, labels = make_batch([5, 3])
    z = None if mode == "decoder" else torch.randn(2, 3)
    with torch.no_grad():
        full, pen_full, state_full = model.decode(strokes[:, :-1], z, labels)
        state = None
        for t in range(strokes.shape[1] - 1):
            p, pen, state = model.step(strokes[:, t], z, labels, state)
            assert p.mu_x.shape == (2, 1, 2) and pen.shape == (2, 1, 3)
            assert state[0].shape == state[1].shape == (1, 2, 8 + 5 * (cell == "hyper"))
            for a, b in zip(p, full.select((slice(None), slice(t, t + 1)))):
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(pen, pen_full[:, t:t + 1], rtol=1e-5, atol=1e-6)
    for a, b in zip(state, state_full):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cell", CELLS)
def test_state_rows_can_be_dropped_between_steps(cell):
    model = make_model("class_vae", cell)
    strokes, _, labels = make_batch([4, 4, 4])
    z = torch.randn(3, 3)
    with torch.no_grad():
        full, _, _ = model.decode(strokes[:, :3], z, labels)
        _, _, state = model.decode(strokes[:, :2], z, labels)
        keep = torch.tensor([0, 2])
        state = tuple(s[:, keep] for s in state)
        p, _, _ = model.step(strokes[keep, 2], z[keep], labels[keep], state)
    torch.testing.assert_close(p.mu_x[:, 0], full.mu_x[keep, 2], rtol=1e-5, atol=1e-6)


def test_decoder_mode_and_class_vae_argument_errors():
    dec = make_model("decoder")
    strokes, lengths, labels = make_batch([3, 2])
    with pytest.raises(ValueError, match="no encoder"):
        dec.encode(strokes, lengths)
    with pytest.raises(ValueError, match="batch_size"):
        dec.decoder_initial_state(None)
    h, c = dec.decoder_initial_state(None, batch_size=2)
    assert h.shape == (1, 2, 8) and not h.any() and not c.any()
    cvae = make_model("class_vae")
    with pytest.raises(ValueError, match="needs labels"):
        cvae.encode(strokes, lengths)
    with pytest.raises(ValueError, match=r"label 3 outside the allowed range \[0, 2\]"):
        cvae.encode(strokes, lengths, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="needs z"):
        cvae.decode(strokes[:, :-1], None, labels)
    vae = make_model("vae")
    with pytest.raises(ValueError, match="start token"):
        vae.encode(strokes[:, 1:], lengths - 1)
    with pytest.raises(ValueError, match=r"lengths must be in \[1, 3\]"):
        vae.encode(strokes, torch.tensor([4, 2]))
    with pytest.raises(ValueError, match="backend"):
        vae.set_rnn_backend("fast")


def test_class_label_changes_the_decoder_and_z_is_reproducible():
    model = make_model("class_vae")
    strokes, lengths, _ = make_batch([3])
    mu, presig = model.encode(strokes, lengths, torch.tensor([0]))
    z1 = model.sample_z(mu, presig, torch.Generator().manual_seed(3))
    z2 = model.sample_z(mu, presig, torch.Generator().manual_seed(3))
    assert torch.equal(z1, z2)
    a, _, _ = model.decode(strokes[:, :-1], z1, torch.tensor([0]))
    b, _, _ = model.decode(strokes[:, :-1], z1, torch.tensor([1]))
    assert not torch.allclose(a.mu_x, b.mu_x)


def test_lstm_starts_like_the_reference():
    model = make_model("vae", "lstm")
    bias = model.decoder_rnn.bias_ih_l0 + model.decoder_rnn.bias_hh_l0
    assert torch.all(bias[8:16] == 1.0) and torch.all(bias[:8] == 0) and torch.all(bias[16:] == 0)
    w = model.decoder_rnn.weight_hh_l0[:8]
    torch.testing.assert_close(w @ w.T, torch.eye(8), atol=1e-5, rtol=0)  # orthogonal gate block
    assert model.enc_mu.weight.std() < 0.01 and torch.all(model.dec_init.bias == 0)


# ---------------------------------------------------------------- layer-norm LSTM
def naive_ln_lstm(cell: LayerNormLSTM, x, h, c):
    """Eq. by eq. with F.layer_norm: one step at a time, batch-first input (B, T, I)."""
    hid = cell.hidden_size
    outs = []
    for t in range(x.shape[1]):
        gates = x[:, t] @ cell.weight_ih.T + h @ cell.weight_hh.T
        parts = [F.layer_norm(g, (hid,), cell.ln_gamma[k], cell.ln_beta[k], eps=1e-3)
                 for k, g in enumerate(gates.split(hid, -1))]
        i, j, f, o = parts
        c = c * torch.sigmoid(f + 1.0) + torch.sigmoid(i) * torch.tanh(j)
        h = torch.tanh(F.layer_norm(c, (hid,), cell.ln_c_gamma, cell.ln_c_beta, eps=1e-3)) * torch.sigmoid(o)
        outs.append(h)
    return torch.stack(outs, 1), h, c


def test_layer_norm_cell_matches_the_written_out_equations():
    torch.manual_seed(0)
    cell = LayerNormLSTM(4, 5, backend="eager")
    with torch.no_grad():
        cell.ln_gamma.uniform_(0.5, 1.5); cell.ln_beta.normal_(); cell.ln_c_gamma.uniform_(0.5, 1.5)
    x, h0, c0 = torch.randn(3, 6, 4), torch.randn(3, 5), torch.randn(3, 5)
    out, (h, c) = cell(x, (h0[None], c0[None]))
    ref_out, ref_h, ref_c = naive_ln_lstm(cell, x, h0, c0)
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(h[0], ref_h, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(c[0], ref_c, atol=1e-5, rtol=1e-5)


def _run_backend(backend, x, lengths, grad=True):
    torch.manual_seed(1)
    cell = LayerNormLSTM(4, 5, backend=backend)
    with torch.set_grad_enabled(grad):
        out, (h, c) = cell(x, lengths=lengths)
    if not grad:
        return out, h, c
    (out.square().sum() + h.sum()).backward()
    return out, h, c, cell.weight_hh.grad, cell.ln_gamma.grad


def test_layer_norm_scripted_path_agrees_with_eager():
    x = torch.randn(3, 7, 4, generator=torch.Generator().manual_seed(2))
    lengths = torch.tensor([7, 3, 5])
    want = _run_backend("eager", x, lengths)
    for _ in range(3):  # the TorchScript profiling executor optimises after a few calls
        got = _run_backend("script", x, lengths)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # raised inside torch.compile's own imports
@pytest.mark.slow  # Inductor compiles C++ on CPU: ~7 s forward only (~25 s with the backward graph)
def test_layer_norm_compiled_path_agrees_with_eager():
    x = torch.randn(3, 7, 4, generator=torch.Generator().manual_seed(2))
    lengths = torch.tensor([7, 3, 5])
    for a, b in zip(_run_backend("compile", x, lengths, grad=False), _run_backend("eager", x, lengths, grad=False)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_layer_norm_lengths_and_backward_direction():
    torch.manual_seed(3)
    enc = LayerNormBiLSTMEncoder(4, 5)
    x = torch.randn(2, 6, 4)
    lengths = torch.tensor([6, 3])
    h_fw, h_bw = enc(x, lengths)
    for b, n in enumerate(lengths.tolist()):
        _, (hf, _) = enc.fw(x[b:b + 1, :n])
        _, (hb, _) = enc.bw(x[b:b + 1, :n].flip(1))
        torch.testing.assert_close(h_fw[b], hf[0, 0], atol=1e-6, rtol=0)
        torch.testing.assert_close(h_bw[b], hb[0, 0], atol=1e-6, rtol=0)
    r = reverse_padded(torch.arange(8.0).view(2, 4), torch.tensor([3, 1]))
    assert r.tolist() == [[2, 1, 0, 3], [4, 5, 6, 7]]


def test_recurrent_dropout_only_in_training():
    model = make_model("vae", "layer_norm", recurrent_dropout=0.5)
    strokes, lengths, _ = make_batch([5, 4])
    g = torch.Generator
    model.train()
    a = model(strokes, lengths, generator=g().manual_seed(0))["params"].mu_x
    b = model(strokes, lengths, generator=g().manual_seed(0))["params"].mu_x
    assert not torch.allclose(a, b)
    model.eval()
    a = model(strokes, lengths, generator=g().manual_seed(0))["params"].mu_x
    b = model(strokes, lengths, generator=g().manual_seed(0))["params"].mu_x
    assert torch.equal(a, b)


# ---------------------------------------------------------------- checkpoint
@pytest.mark.parametrize("mode,cell", [("vae", "lstm"), ("class_vae", "layer_norm"), ("decoder", "lstm"),
                                       ("vae", "hyper"), ("class_vae", "hyper")])
def test_checkpoint_round_trip_gives_identical_outputs(tmp_path, mode, cell):
    model = make_model(mode, cell)
    with torch.no_grad():  # move away from the init so a fresh model would differ
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    path = save_checkpoint(tmp_path / "m.pt", kind="sketch_rnn", config=model.config, model=model,
                           class_names=["cat", "dog", "owl"], scale_factor=3.5)
    again = build_model(load_checkpoint(path), path)
    assert isinstance(again, SketchRNN) and again.config == model.config and not again.training
    strokes, lengths, labels = make_batch([4, 2])
    with torch.no_grad():
        a = model(strokes, lengths, labels, generator=torch.Generator().manual_seed(0))
        b = again(strokes, lengths, labels, generator=torch.Generator().manual_seed(0))
    for x, y in zip(a["params"], b["params"]):
        torch.testing.assert_close(x, y, rtol=0, atol=0)
    torch.testing.assert_close(a["pen_logits"], b["pen_logits"], rtol=0, atol=0)


def test_unpacked_encoder_equals_packed_bidirectional_lstm():
    """BiLSTMEncoder (two unpacked runs) gives the final states of a packed bidirectional nn.LSTM."""
    from torch.nn.utils.rnn import pack_padded_sequence

    from sketchvae.models.layers import BiLSTMEncoder

    torch.manual_seed(3)
    enc = BiLSTMEncoder(7, 16).double()
    ref = torch.nn.LSTM(7, 16, batch_first=True, bidirectional=True).double()
    with torch.no_grad():
        for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
            getattr(ref, name).copy_(getattr(enc.fw, name))
            getattr(ref, name + "_reverse").copy_(getattr(enc.bw, name))
    lengths = torch.tensor([9, 1, 5, 9, 3])
    x = torch.randn(5, 9, 7, dtype=torch.float64)
    x[torch.arange(9).unsqueeze(0) >= lengths.unsqueeze(1)] = 1e3  # padding must not leak in
    h_fw, h_bw = enc(x, lengths)
    _, (h_n, _) = ref(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))
    torch.testing.assert_close(h_fw, h_n[0])
    torch.testing.assert_close(h_bw, h_n[1])
