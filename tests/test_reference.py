"""Behaviours that follow magenta's sketch_rnn (see the README, "Differences from magenta"):
N_max from the data, the plain LSTM's recurrent dropout, the scale factor from the train split only,
z at every decoder step, offset clamping, the output layer's init and the `magenta` preset."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from sketchvae.data.cache import open_cache, write_cache
from sketchvae.models.layers import DropoutLSTM, init_lstm_like_reference
from sketchvae.models.sketch_rnn import SketchRNN, SketchRNNConfig

SHEEP = Path(__file__).resolve().parents[2] / "shared" / "data" / "sketchrnn_datasets" / "aaron_sheep.npz"


def _sketch(rng, n, big=1):
    s = np.zeros((n, 3), dtype=np.int16)
    s[:, 0:2] = rng.integers(-5 * big, 5 * big + 1, (n, 2))
    s[n // 2, 2] = 1
    s[-1, 2] = 1
    return s


def _cache(path, lens=((20, 33, 7), (41,), (12, 5)), big=(1, 8, 8)):
    rng = np.random.default_rng(0)
    splits = {name: [(_sketch(rng, n, b), 0) for n in ns] for name, ns, b in zip(("train", "valid", "test"), lens, big)}
    return write_cache(path, splits, ["thing"]), splits


# ---------------------------------------------------------------- N_max
def test_cache_records_the_longest_sketch_of_all_splits(tmp_path):
    path, _ = _cache(tmp_path / "c.h5")
    cache = open_cache(path)
    assert cache.max_sketch_len == 41 and cache.attrs["max_sketch_len"] == 41  # the valid split's


def test_older_caches_without_the_attribute_get_it_computed(tmp_path):
    import h5py

    path, _ = _cache(tmp_path / "c.h5")
    with h5py.File(path, "a") as f:
        del f.attrs["max_sketch_len"]
    cache = open_cache(path)
    assert "max_sketch_len" not in cache.attrs and cache.max_sketch_len == 41


def test_fit_defaults_n_max_to_the_data_and_keeps_an_explicit_one(tmp_path):
    from sketchvae.train import TrainConfig, fit

    path, _ = _cache(tmp_path / "c.h5")
    small = dict(enc_rnn_size=8, dec_rnn_size=8, z_size=4, num_mixture=2)
    tcfg = TrainConfig(steps=1, batch_size=2, eval_every=1, device="cpu", test_at_end=False)
    events = []
    res = fit(small, tcfg, path, tmp_path / "a", callback=lambda e, i: events.append((e, i)))
    assert res.model.config.max_seq_len == 41
    start = dict(events)["start"]
    assert start["data_max_len"] == 41 and start["model_config"]["max_seq_len"] == 41
    res = fit({**small, "max_seq_len": 60}, tcfg, path, tmp_path / "b")
    assert res.model.config.max_seq_len == 60


def test_cli_says_which_n_max_it_used(tmp_path):
    from click.testing import CliRunner

    from sketchvae.cli import main

    path, _ = _cache(tmp_path / "c.h5")
    tiny = ["--enc-rnn-size", "8", "--dec-rnn-size", "8", "--z-size", "4", "--num-mixture", "2", "--batch-size", "2",
            "--steps", "1", "--eval-every", "1", "--device", "cpu", "--no-progress", "--no-test-at-end"]
    res = CliRunner().invoke(main, ["train", str(path), "-o", str(tmp_path / "a"), *tiny])
    assert res.exit_code == 0, res.output
    assert "N_max (max_seq_len) = 41: the longest sketch in the data" in res.output
    res = CliRunner().invoke(main, ["train", str(path), "-o", str(tmp_path / "b"), "--max-seq-len", "45", *tiny])
    assert res.exit_code == 0, res.output
    assert "N_max (max_seq_len) = 45, given (the longest sketch in the data has 41 points)" in res.output


# ---------------------------------------------------------------- scale factor, clamping
def test_scale_factor_is_np_std_of_the_train_offsets_only(tmp_path):
    """valid / test offsets are 8x larger: any leak would change the std a lot."""
    path, splits = _cache(tmp_path / "c.h5")
    train_xy = np.concatenate([s[:, 0:2] for s, _ in splits["train"]]).astype(np.float64)
    all_xy = np.concatenate([s[:, 0:2] for sp in splits.values() for s, _ in sp]).astype(np.float64)
    cache = open_cache(path)
    assert cache.scale_factor == pytest.approx(np.std(train_xy), rel=1e-12)
    assert abs(np.std(all_xy) - np.std(train_xy)) > 0.5 * np.std(train_xy)


@pytest.mark.skipif(not SHEEP.exists(), reason="needs ../shared/data/sketchrnn_datasets/aaron_sheep.npz")
def test_scale_factor_of_aaron_sheep_is_the_train_std(tmp_path):
    from sketchvae.train import prepare_data

    with np.load(SHEEP, allow_pickle=True, encoding="latin1") as z:
        train = np.concatenate([np.asarray(s)[:, 0:2] for s in z["train"]]).astype(np.float64)
    cache = open_cache(prepare_data([str(SHEEP)], tmp_path))
    assert cache.scale_factor == pytest.approx(np.std(train), rel=1e-9)
    assert cache.max_sketch_len == 250


def test_batches_clamp_offsets_at_the_reference_limit(tmp_path):
    from sketchvae.data.batching import OFFSET_LIMIT, collate_indices

    s = np.array([[3000, -2500, 0], [999, -1000, 0], [5, 6, 1]], dtype=np.int16)
    path = write_cache(tmp_path / "c.h5", {"train": [(s, 0)]}, ["x"], {"scale_factor": 2.0})
    batch = collate_indices(open_cache(path).split("train"), [0], 2.0)
    assert OFFSET_LIMIT == 1000
    np.testing.assert_array_equal(batch.strokes[0, 1:4, 0:2].numpy(), [[500, -500], [499.5, -500], [2.5, 3]])


# ---------------------------------------------------------------- model
def test_z_reaches_every_decoder_step_not_only_the_initial_state():
    """With the initial state held fixed, changing z changes the output at EVERY step, and each
    step's output has a gradient with respect to z."""
    torch.manual_seed(0)
    model = SketchRNN(SketchRNNConfig(enc_rnn_size=8, dec_rnn_size=16, z_size=6, num_mixture=2, max_seq_len=12)).eval()
    inputs = torch.randn(3, 12, 5)
    z = torch.randn(3, 6, requires_grad=True)
    state = tuple(s.detach() for s in model.decoder_initial_state(torch.zeros(3, 6)))
    params, pen, _ = model.decode(inputs, z, state=state)
    other, pen2, _ = model.decode(inputs, z.detach() + 0.5, state=state)
    assert ((params.mu_x - other.mu_x).abs().amax(dim=(0, 2)) > 1e-6).all()  # (T,): every step moved
    for t in (0, 5, 11):
        (grad,) = torch.autograd.grad(pen[:, t].sum(), z, retain_graph=True)
        assert grad.abs().sum() > 0


def test_output_layer_has_tensorflows_default_glorot_init():
    torch.manual_seed(0)
    cfg = SketchRNNConfig(dec_rnn_size=512, num_mixture=20)
    out = SketchRNN(cfg).output
    n_in, n_out = 512, cfg.output_size
    w_bound, b_bound = math.sqrt(6 / (n_in + n_out)), math.sqrt(3 / n_out)
    assert out.weight.abs().max() <= w_bound and out.weight.abs().max() > 0.95 * w_bound
    assert out.bias.abs().max() <= b_bound and out.bias.abs().max() > 0.8 * b_bound  # not zeros, not nn.Linear's
    assert out.weight.std().item() == pytest.approx(w_bound / math.sqrt(3), rel=0.05)


# ---------------------------------------------------------------- recurrent dropout on the plain LSTM
def _naive_lstm(m, x, h, c, drop):
    outs = []
    for t in range(x.shape[1]):
        gates = x[:, t] @ m.weight_ih_l0.t() + m.bias_ih_l0 + h @ m.weight_hh_l0.t() + m.bias_hh_l0
        i, f, g, o = gates.chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g) * drop[t]
        h = torch.sigmoid(o) * torch.tanh(c)
        outs.append(h)
    return torch.stack(outs, 1), h, c


@pytest.mark.parametrize("backend", ["eager", "script"])
def test_dropout_lstm_forward_and_gradients_equal_a_direct_computation(backend):
    torch.manual_seed(0)
    m = init_lstm_like_reference(DropoutLSTM(7, 6, 0.3, backend=backend)).double().train()
    x = torch.randn(3, 9, 7, dtype=torch.double, requires_grad=True)
    h0 = torch.randn(1, 3, 6, dtype=torch.double, requires_grad=True)
    c0 = torch.randn(1, 3, 6, dtype=torch.double, requires_grad=True)
    torch.manual_seed(5)
    out, (h, c) = m(x, (h0, c0))
    torch.manual_seed(5)
    drop = m.dropout_mask(9, 3, x.device, torch.double)  # the same draws
    ref, rh, rc = _naive_lstm(m, x, h0[0], c0[0], drop)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(h[0], rh)
    torch.testing.assert_close(c[0], rc)
    w = [torch.randn_like(t) for t in (ref, rh, rc)]
    wrt = [x, h0, c0, *m.parameters()]
    got = torch.autograd.grad(sum((a * b).sum() for a, b in zip((out, h[0], c[0]), w)), wrt)
    exp = torch.autograd.grad(sum((a * b).sum() for a, b in zip((ref, rh, rc), w)), wrt)
    for a, b in zip(got, exp):
        torch.testing.assert_close(a, b)


def test_recurrent_dropout_scales_by_one_over_keep_and_only_in_training():
    torch.manual_seed(0)
    m = DropoutLSTM(4, 2000, 0.25)
    mask = m.dropout_mask(3, 50, "cpu", torch.float32)
    assert torch.unique(mask).tolist() == [0.0, pytest.approx(1 / 0.75)]
    assert (mask == 0).float().mean().item() == pytest.approx(0.25, abs=0.01)
    assert mask.mean().item() == pytest.approx(1.0, abs=0.01)  # inverted dropout keeps the expectation

    ref = nn.LSTM(4, 2000, batch_first=True)
    ref.load_state_dict(m.state_dict())  # the same parameters, both ways
    m.load_state_dict(ref.state_dict())
    x = torch.randn(2, 5, 4)
    m.eval()
    torch.testing.assert_close(m(x)[0], ref(x)[0], rtol=0, atol=0)  # eval: nn.LSTM itself
    m.train()
    assert not torch.allclose(m(x)[0], ref(x)[0], atol=1e-4)  # training: dropped
    m.recurrent_dropout = 0.0
    torch.testing.assert_close(m(x)[0], ref(x)[0], rtol=1e-5, atol=1e-6)  # p = 0 in training: no dropout


def test_sketch_rnn_uses_the_dropout_lstm_only_when_asked():
    plain = SketchRNN(SketchRNNConfig(enc_rnn_size=8, dec_rnn_size=8, z_size=4, num_mixture=2, recurrent_dropout=0))
    assert type(plain.decoder_rnn) is nn.LSTM and type(plain.encoder_rnn.fw) is nn.LSTM
    ref = SketchRNN(SketchRNNConfig(enc_rnn_size=8, dec_rnn_size=8, z_size=4, num_mixture=2))  # the default: 0.1
    for rnn in (ref.decoder_rnn, ref.encoder_rnn.fw, ref.encoder_rnn.bw):
        assert isinstance(rnn, DropoutLSTM) and rnn.recurrent_dropout == 0.1
    ref.load_state_dict(plain.state_dict())  # checkpoints load across the two
    ref.set_rnn_backend("eager")
    assert ref.decoder_rnn.backend == "eager"


def test_dropout_lstm_trains_under_cpu_bf16_autocast():
    torch.manual_seed(0)
    m = DropoutLSTM(5, 8, 0.1).train()
    x = torch.randn(2, 4, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, (h, c) = m(x)
    assert out.dtype == torch.float32 and h.shape == (1, 2, 8)
    out.sum().backward()
    assert m.weight_hh_l0.grad is not None and torch.isfinite(m.weight_hh_l0.grad).all()


# ---------------------------------------------------------------- preset
def test_magenta_preset_fills_in_under_explicit_options():
    from sketchvae.presets import apply_preset
    from sketchvae.train import TrainConfig

    model, train = apply_preset("magenta", {}, {})
    assert model["recurrent_dropout"] == 0.1 and model["cell"] == "lstm" and "max_seq_len" not in model
    assert train["kl_weight"] == 0.5 and train["kl_eta_min"] == pytest.approx(0.02)
    assert TrainConfig(**train).kl_schedule.weight(0) == pytest.approx(0.01)  # magenta's kl_weight_start
    model, train = apply_preset("magenta", {"recurrent_dropout": 0.2}, {"kl_weight": 1.0, "steps": 5})
    assert model["recurrent_dropout"] == 0.2 and train["kl_eta_min"] == pytest.approx(0.01) and train["steps"] == 5
    assert apply_preset(None, {"a": 1}, {}) == ({"a": 1}, {})
    with pytest.raises(ValueError, match="unknown preset 'paper'.*magenta"):
        apply_preset("paper", {}, {})


def test_cli_preset_magenta_trains_the_reference_configuration(tmp_path):
    from click.testing import CliRunner

    from sketchvae.checkpoint import load_checkpoint
    from sketchvae.cli import main

    path, _ = _cache(tmp_path / "c.h5")
    small = ["--enc-rnn-size", "8", "--dec-rnn-size", "8", "--z-size", "4", "--num-mixture", "2", "--batch-size", "2",
             "--steps", "1", "--eval-every", "1", "--device", "cpu", "--no-progress", "--no-test-at-end"]
    res = CliRunner().invoke(main, ["train", str(path), "-o", str(tmp_path / "r"), "--preset", "magenta", *small])
    assert res.exit_code == 0, res.output
    ckpt = load_checkpoint(tmp_path / "r" / "last.pt")
    assert ckpt["config"]["recurrent_dropout"] == 0.1 and ckpt["config"]["enc_rnn_size"] == 8
    assert ckpt["extra"]["train_config"]["kl_eta_min"] == pytest.approx(0.02)
    res = CliRunner().invoke(main, ["train", "-o", str(tmp_path / "r"), "--resume", "--preset", "magenta"])
    assert res.exit_code != 0 and "--preset cannot be used with --resume" in res.output


def test_max_minutes_stops_with_a_validation_and_a_checkpoint(tmp_path):
    from sketchvae.checkpoint import load_checkpoint
    from sketchvae.train import TrainConfig, fit

    path, _ = _cache(tmp_path / "c.h5")
    small = dict(enc_rnn_size=8, dec_rnn_size=8, z_size=4, num_mixture=2)
    tcfg = TrainConfig(steps=1000, batch_size=2, eval_every=500, log_every=500, device="cpu", test_at_end=False,
                       max_minutes=1e-9)
    res = fit(small, tcfg, path, tmp_path / "r")
    assert res.step == 1 and res.final_valid is not None
    assert load_checkpoint(tmp_path / "r" / "last.pt")["extra"]["step"] == 1
