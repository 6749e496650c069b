"""Batched sampling vs a one-at-a-time reference, temperature, classes, latent space, completion."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sketchvae import sample as S
from sketchvae.checkpoint import CheckpointError, save_checkpoint
from sketchvae.models.sketch_rnn import SketchRNN, SketchRNNConfig

CLASSES = ["cat", "pig", "hot air balloon"]
SCALE = 12.5


def tiny(mode="vae", max_seq_len=30, dtype=torch.float64, seed=0) -> S.Sampler:
    torch.manual_seed(seed)
    cfg = SketchRNNConfig(mode=mode, enc_rnn_size=12, dec_rnn_size=24, z_size=6, num_mixture=3,
                          max_seq_len=max_seq_len, class_embed_size=4,
                          num_classes=len(CLASSES) if mode == "class_vae" else 0)
    model = SketchRNN(cfg).to(dtype).eval()
    return S.Sampler(model, SCALE, list(CLASSES) if mode == "class_vae" else [])


def shared_noise(max_len, n, seed=3):
    g = torch.Generator().manual_seed(seed)
    return torch.cat([torch.rand(max_len, n, 2, generator=g), torch.randn(max_len, n, 2, generator=g)], -1)


def fake_sketch(rng, n=12) -> np.ndarray:
    s = np.zeros((n, 3), np.float32)
    s[:, 0:2] = rng.normal(0, 20, (n, 2)).round()
    s[n // 3, 2] = s[2 * n // 3, 2] = s[-1, 2] = 1
    return s


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


# ------------------------------------------------------------------ batched == one at a time
@pytest.mark.parametrize("mode", ["vae", "decoder", "class_vae"])
@pytest.mark.parametrize("tau", [0.3, 1.0])
def test_batched_equals_one_at_a_time_given_the_same_draws(mode, tau):
    sp = tiny(mode)
    n = 9
    noise = shared_noise(30, n)
    a = S.sample(sp, n, tau, seed=5, noise=noise)
    b = S.sample_sequential(sp, n, tau, seed=5, noise=noise)
    assert [len(x) for x in a] == [len(x) for x in b]
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-6)
    lengths = {len(x) for x in a}
    assert len(lengths) > 1, "sketches of different lengths are needed to test dropping finished rows"


def test_greedy_batched_equals_one_at_a_time_and_is_deterministic():
    sp = tiny("vae")
    z = torch.randn(5, 6, generator=torch.Generator().manual_seed(0))
    a = S.sample(sp, 5, z=z, greedy=True, max_len=20)
    b = S.sample_sequential(sp, 5, z=z, greedy=True, max_len=20)
    c = S.sample(sp, 5, z=z, greedy=True, max_len=20, chunk_size=2)
    for x, y, w in zip(a, b, c):
        np.testing.assert_allclose(x, y, atol=1e-6)
        np.testing.assert_array_equal(x, w)


def test_chunking_keeps_results_valid_and_seed_is_deterministic():
    sp = tiny("decoder", dtype=torch.float32)
    a = S.sample(sp, 11, 0.8, seed=1, chunk_size=4)
    b = S.sample(sp, 11, 0.8, seed=1, chunk_size=4)
    c = S.sample(sp, 11, 0.8, seed=2, chunk_size=4)
    assert len(a) == 11
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(x.shape == y.shape and np.array_equal(x, y) for x, y in zip(a, c))


def test_shapes_termination_and_pen_lift():
    sp = tiny("vae", dtype=torch.float32)
    out = S.sample(sp, 20, 1.0, seed=0, max_len=15)
    assert len(out) == 20
    for s in out:
        assert s.dtype == np.float32 and s.ndim == 2 and s.shape[1] == 3 and len(s) <= 15
        if len(s):
            assert s[-1, 2] == 1
            assert set(np.unique(s[:, 2])) <= {0.0, 1.0}


@pytest.mark.parametrize("mode", ["vae", "class_vae"])
def test_constant_input_step_is_the_model_step(mode):
    """The batched loop's LSTM step (z and class embedding through their weights once) computes what
    SketchRNN.step computes, also after rows are dropped; other decoders keep model.step."""
    sp = tiny(mode, dtype=torch.float32)
    model, b = sp.model, 7
    g = torch.Generator().manual_seed(0)
    z = torch.randn(b, 6, generator=g)
    labels = torch.arange(b) % len(CLASSES) if mode == "class_vae" else None
    state = model.decoder_initial_state(z, labels, batch_size=b)
    prev = torch.randn(b, 5, generator=g)
    fast = S._ConstantInputLSTMStep(model, z, labels)
    keep = torch.tensor([True, False, True, True, False, True, True])
    with torch.no_grad():
        for step in range(3):
            p1, pen1, st1 = model.step(prev, z, labels, state)
            p2, pen2, st2 = fast(prev, state)
            for a, c in zip((*p1, pen1, *st1), (*p2, pen2, *st2)):
                torch.testing.assert_close(a, c, rtol=1e-5, atol=1e-5)
            if step == 1:
                fast.keep(keep)
                st1 = tuple(t[:, keep] for t in st1)
                z, prev = z[keep], torch.randn(int(keep.sum()), 5, generator=g)
                labels = None if labels is None else labels[keep]
            state = st1
    assert not S._ConstantInputLSTMStep.available(tiny("decoder").model)  # nothing constant to fold in
    ln = SketchRNN(SketchRNNConfig(mode="vae", cell="layer_norm", enc_rnn_size=12, dec_rnn_size=24, z_size=6,
                                   num_mixture=3, max_seq_len=30)).eval()
    assert not S._ConstantInputLSTMStep.available(ln)
    assert not S._ConstantInputLSTMStep.available(tiny("vae").model.train())


@pytest.mark.parametrize("fast", [True, False], ids=["constant-input-step", "model.step"])
def test_finished_rows_are_dropped_from_the_batch(monkeypatch, fast):
    sp = tiny("vae")
    sizes = []
    if fast:  # the batched loop's own LSTM step (z multiplied by its weights once per sketch)
        assert S._ConstantInputLSTMStep.available(sp.model)
        original_call = S._ConstantInputLSTMStep.__call__

        def spy_fast(self, prev, state):
            sizes.append(prev.shape[0])
            assert self.bias.shape[0] == prev.shape[0] == state[0].shape[1] == state[1].shape[1]
            return original_call(self, prev, state)

        monkeypatch.setattr(S._ConstantInputLSTMStep, "__call__", spy_fast)
    else:
        monkeypatch.setattr(S._ConstantInputLSTMStep, "available", staticmethod(lambda model: False))
        original = sp.model.step

        def spy(prev, z, labels, state):
            sizes.append(prev.shape[0])
            assert z.shape[0] == prev.shape[0] == state[0].shape[1] == state[1].shape[1]
            return original(prev, z, labels, state)

        sp.model.step = spy
    out = S.sample(sp, 16, 1.0, seed=0, noise=shared_noise(30, 16))
    lengths = sorted(len(s) for s in out)
    # step t runs exactly the sketches that have not drawn their end state before t
    expected = [sum(1 for n in lengths if n >= t) for t in range(len(sizes))]
    assert sizes == expected
    assert sizes[-1] < sizes[0]
    assert len(sizes) == min(30, lengths[-1] + 1)


def test_progress_counts_every_sketch_once():
    sp = tiny("decoder", dtype=torch.float32)
    seen = []
    S.sample(sp, 13, 1.0, seed=0, chunk_size=5, progress=seen.append)
    assert sum(seen) == 13


def test_outputs_are_in_original_units():
    sp = tiny("vae")
    z = torch.zeros(1, 6)
    noise = shared_noise(30, 1)
    a = S.sample(sp, 1, 0.5, z=z, noise=noise)[0]
    sp1 = S.Sampler(sp.model, 1.0, [])
    b = S.sample(sp1, 1, 0.5, z=z, noise=noise)[0]
    np.testing.assert_allclose(a[:, 0:2], b[:, 0:2] * SCALE, rtol=1e-6)
    # the encoder sees offsets divided by the scale factor
    rng = np.random.default_rng(0)
    s = fake_sketch(rng)
    mu_a, _ = S.encode(sp, [s])
    mu_b, _ = S.encode(sp1, [s / np.array([SCALE, SCALE, 1.0], np.float32)])
    torch.testing.assert_close(mu_a, mu_b)


# ------------------------------------------------------------------ temperature
def test_temperature_and_n_validation():
    sp = tiny("vae")
    for bad in (0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="temperature"):
            S.sample(sp, 2, bad)
    for bad in (0, -3, 2.5):
        with pytest.raises(ValueError, match="n="):
            S.sample(sp, bad)
    S.sample(sp, 1, 0, greedy=True, max_len=3)  # greedy ignores the temperature
    with pytest.raises(ValueError, match="temperature"):
        S.complete(sp, fake_sketch(np.random.default_rng(0)), 2, 0.0)
    with pytest.raises(ValueError, match="convention"):
        S.sample(sp, 1, convention="nope")


def test_draw_temperature_convention():
    from sketchvae.distributions import MixtureParams

    b = 20000
    one = torch.zeros(b, 2)
    params = MixtureParams(log_pi=torch.log_softmax(torch.tensor([[0.0, math.log(3.0)]]).expand(b, 2), -1),
                           mu_x=one + torch.tensor([0.0, 10.0]), mu_y=one.clone(),
                           log_sigma_x=one + math.log(2.0), log_sigma_y=one + math.log(2.0), rho=one.clone())
    pen = torch.log(torch.tensor([[0.6, 0.3, 0.1]])).expand(b, 3)
    g = torch.Generator().manual_seed(0)
    noise = torch.cat([torch.rand(b, 2, generator=g), torch.randn(b, 2, generator=g)], 1)
    tau = 0.5
    rows = S.draw(params, pen, noise, tau)
    p1 = 3 ** (1 / tau) / (1 + 3 ** (1 / tau))  # softmax(log pi / tau)
    chose1 = rows[:, 0] > 5
    assert abs(chose1.float().mean().item() - p1) < 0.02
    assert abs(rows[chose1, 1].std().item() - 2.0 * math.sqrt(tau)) < 0.05  # sigma * sqrt(tau)
    q = torch.softmax(torch.log(torch.tensor([0.6, 0.3, 0.1])) / tau, 0)
    torch.testing.assert_close(rows[:, 2:].mean(0), q, atol=0.015, rtol=0)
    mag = S.draw(params, pen, noise, tau, convention="magenta")
    assert abs(mag[chose1, 1].std().item() - 2.0 * tau) < 0.05  # sigma * tau
    greedy = S.draw(params, pen, None, greedy=True)
    assert torch.all(greedy[:, 0] == 10.0) and torch.all(greedy[:, 2] == 1)


# ------------------------------------------------------------------ classes
def test_class_names_and_indices():
    sp = tiny("class_vae")
    a = S.sample(sp, 3, classes="pig", seed=0, max_len=5)
    b = S.sample(sp, 3, classes=1, seed=0, max_len=5)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    S.sample(sp, 2, classes=["cat", "hot air balloon"], max_len=3)
    with pytest.raises(ValueError) as err:
        S.sample(sp, 2, classes="dog")
    assert "dog" in str(err.value) and all(c in str(err.value) for c in CLASSES)
    with pytest.raises(ValueError, match="outside"):
        S.sample(sp, 2, classes=7)
    with pytest.raises(ValueError, match="3 classes for 2"):
        S.sample(sp, 2, classes=["cat", "pig", "cat"])
    with pytest.raises(ValueError, match="not class-conditional"):
        S.sample(tiny("vae"), 2, classes="cat")


def test_class_changes_the_drawing():
    sp = tiny("class_vae")
    noise = shared_noise(30, 1)
    z = torch.zeros(1, 6)
    a = S.sample(sp, 1, z=z, classes="cat", noise=noise, greedy=True)[0]
    b = S.sample(sp, 1, z=z, classes="pig", noise=noise, greedy=True)[0]
    assert a.shape != b.shape or not np.allclose(a, b)


# ------------------------------------------------------------------ latent space
def test_interpolation_endpoints_and_slerp_norm():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(16, generator=g), torch.randn(16, generator=g)
    b = b * (a.norm() / b.norm())  # equal norms: slerp stays on the sphere
    for method in ("slerp", "lerp"):
        zs = S.interpolate(a, b, 7, method)
        assert zs.shape == (7, 16)
        torch.testing.assert_close(zs[0], a)
        torch.testing.assert_close(zs[-1], b)
    norms = S.interpolate(a, b, 9, "slerp").norm(dim=1)
    torch.testing.assert_close(norms, torch.full((9,), float(a.norm())), rtol=1e-5, atol=1e-5)
    assert S.interpolate(a, b, 9, "lerp").norm(dim=1)[4] < a.norm() - 1e-3
    torch.testing.assert_close(S.interpolate(a, a, 3), a.expand(3, 16))  # parallel: no division by zero
    with pytest.raises(ValueError, match="method"):
        S.interpolate(a, b, 3, "cubic")


def test_encode_reconstruct_mean_latent():
    sp = tiny("vae")
    rng = np.random.default_rng(1)
    sketches = [fake_sketch(rng, 8), fake_sketch(rng, 14), fake_sketch(rng, 5)]
    mu, sigma = S.encode(sp, sketches)
    assert mu.shape == sigma.shape == (3, 6) and bool((sigma > 0).all())
    one, _ = S.encode(sp, sketches[1])
    torch.testing.assert_close(one[0], mu[1], rtol=1e-5, atol=1e-6)  # padding does not leak into the encoding
    torch.testing.assert_close(S.mean_latent(sp, sketches), mu.mean(0))
    recs = S.reconstruct(sp, sketches, n=2, temperature=0.3, seed=0, max_len=10)
    assert len(recs) == 3 and all(len(r) == 2 for r in recs)
    g1 = S.reconstruct(sp, sketches[:1], greedy=True, max_len=10)[0][0]
    g2 = S.sample(sp, 1, z=mu[0], greedy=True, max_len=10)[0]
    np.testing.assert_allclose(g1, g2, atol=1e-6)
    with pytest.raises(ValueError, match="no encoder"):
        S.encode(tiny("decoder"), sketches)
    with pytest.raises(ValueError, match="needs a class"):
        S.encode(tiny("class_vae"), sketches)


# ------------------------------------------------------------------ completion
@pytest.mark.parametrize("mode", ["vae", "decoder", "class_vae"])
def test_complete_keeps_the_given_prefix(mode):
    sp = tiny(mode)
    partial = fake_sketch(np.random.default_rng(2), 9)
    cls = "cat" if mode == "class_vae" else None
    out = S.complete(sp, partial, n=4, temperature=0.8, seed=0, classes=cls)
    assert len(out) == 4
    for full in out:
        np.testing.assert_array_equal(full[:len(partial)], partial)
        assert full[-1, 2] == 1 and len(full) <= sp.config.max_seq_len
    assert len({f.tobytes() for f in out}) > 1


def test_complete_continues_from_the_teacher_forced_state():
    """Greedy completion == greedy decoding of a sketch that starts with the partial one."""
    sp = tiny("decoder")
    partial = fake_sketch(np.random.default_rng(3), 6)
    full = S.complete(sp, partial, n=1, greedy=True)[0]
    # reference: step through the partial one point at a time, then continue greedily
    model = sp.model
    from sketchvae.strokes import to_stroke5

    s5 = torch.from_numpy(to_stroke5(partial / np.array([SCALE, SCALE, 1], np.float32))).double()
    with torch.no_grad():
        prev, state = model.start_tokens(1), None
        for row in s5:
            _, _, state = model.step(prev, None, None, state)
            prev = row.unsqueeze(0)
        tail = []
        for _ in range(sp.config.max_seq_len - len(partial)):
            params, pen, state = model.step(prev, None, None, state)
            prev = S.draw(params.select((slice(None), 0)), pen[:, 0], None, greedy=True)
            if prev[0, 4] == 1:
                break
            tail.append([prev[0, 0].item() * SCALE, prev[0, 1].item() * SCALE, prev[0, 3].item()])
    np.testing.assert_allclose(full[len(partial):, :2], np.array(tail).reshape(-1, 3)[:, :2], rtol=1e-5, atol=1e-4)


def test_the_model_reads_offsets_clamped_as_in_training():
    """Offsets beyond +-OFFSET_LIMIT reach the model clamped, as in training batches; a completion
    still returns the given strokes exactly."""
    from sketchvae.strokes import OFFSET_LIMIT

    sp = tiny("vae")
    s = fake_sketch(np.random.default_rng(4), 10)
    far, at_limit = s.copy(), s.copy()
    far[3, 0], at_limit[3, 0] = 5 * OFFSET_LIMIT, OFFSET_LIMIT
    mu_far, _ = S.encode(sp, [far])
    mu_limit, _ = S.encode(sp, [at_limit])
    torch.testing.assert_close(mu_far, mu_limit)
    a = S.complete(sp, far, n=2, temperature=0.5, seed=1, z_source="prior")
    b = S.complete(sp, at_limit, n=2, temperature=0.5, seed=1, z_source="prior")
    np.testing.assert_array_equal(a[0][:10], far)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x[10:], y[10:])


def test_complete_rejects_too_long_partials():
    sp = tiny("decoder", max_seq_len=8)
    with pytest.raises(ValueError, match="max_len"):
        S.complete(sp, fake_sketch(np.random.default_rng(0), 9), n=2)


# ------------------------------------------------------------------ loading
def test_load_round_trip_and_bad_files(tmp_path):
    sp = tiny("class_vae", dtype=torch.float32)
    path = save_checkpoint(tmp_path / "m.pt", kind="sketch_rnn", config=sp.config, model=sp.model,
                           class_names=CLASSES, scale_factor=SCALE)
    loaded = S.load(path)
    assert loaded.scale_factor == SCALE and loaded.class_names == CLASSES and not loaded.model.training
    a = S.sample(loaded, 3, classes="pig", seed=4, max_len=10)
    b = S.sample(sp, 3, classes="pig", seed=4, max_len=10)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="junk.pt"):
        S.load(tmp_path / "junk.pt")
    data = path.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.pt"):
        S.load(tmp_path / "cut.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a sketchvae checkpoint"):
        S.load(tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not found"):
        S.load(tmp_path / "missing.pt")
