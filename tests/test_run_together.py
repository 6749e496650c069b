"""`continuous.run_together`: several complete / sample calls decoded in one batch give, bit for bit, what
each call gives alone (what `sketchvae serve`'s dynamic batching relies on), and what `complete` /
`sample` give up to float32 rounding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sketchvae import continuous as C
from sketchvae import sample as S
from sketchvae.models.sketch_rnn import SketchRNN, SketchRNNConfig

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["cat", "pig", "hot air balloon"]


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # as serve runs


def model(mode: str, cell: str = "lstm", dec: int = 24, max_seq_len: int = 40) -> S.Sampler:
    """An untrained float32 model (the dtype of real checkpoints, where rounding differences show)."""
    torch.manual_seed(1)
    cfg = SketchRNNConfig(mode=mode, cell=cell, enc_rnn_size=12, dec_rnn_size=dec, z_size=6, num_mixture=3,
                          max_seq_len=max_seq_len, class_embed_size=4,
                          num_classes=len(CLASSES) if mode == "class_vae" else 0)
    return S.Sampler(SketchRNN(cfg).eval(), 12.5, list(CLASSES) if mode == "class_vae" else [])


def sketch(rng, n: int, scale: float) -> np.ndarray:
    s = np.zeros((n, 3), np.float32)
    s[:, 0:2] = rng.normal(0, scale, (n, 2)).round()
    s[n // 2, 2] = s[-1, 2] = 1
    return s


def mixed_calls(sp: S.Sampler, scale: float) -> list[tuple[str, dict]]:
    """Completions of drawings of different lengths, different n (1 included), temperatures, classes,
    seeds and max_len, and samples from nothing."""
    rng = np.random.default_rng(0)
    cls = sp.config.class_conditional
    c = lambda name: name if cls else None  # noqa: E731
    return [
        ("complete", {"partial_sketch": sketch(rng, 4, scale), "n": 6, "temperature": 0.4, "classes": c("pig"),
                      "seed": 1}),
        ("complete", {"partial_sketch": sketch(rng, 17, scale), "n": 1, "temperature": 1.0, "classes": c("cat"),
                      "seed": 2}),
        ("sample", {"n": 5, "temperature": 0.4, "classes": c("hot air balloon"), "seed": 3}),
        ("complete", {"partial_sketch": sketch(rng, 9, scale), "n": 3, "temperature": 0.7, "classes": c("pig"),
                      "seed": 4, "max_len": 20}),
        ("sample", {"n": 1, "temperature": 1.5, "seed": 5, "max_len": 12}),
        ("complete", {"partial_sketch": sketch(rng, 2, scale), "n": 4, "temperature": 0.4, "classes": c("cat"),
                      "seed": 6, "z_source": "prior"}),
        ("complete", {"partial_sketch": sketch(rng, 6, scale), "n": 2, "classes": c("cat"), "greedy": True,
                      "seed": 7}),
    ]


def alone(sp: S.Sampler, calls) -> list[list[np.ndarray]]:
    return [C.run_together(sp, [call])[0] for call in calls]


def by_the_functions(sp: S.Sampler, calls) -> list[list[np.ndarray]]:
    return [getattr(S, kind)(sp, **kwargs) for kind, kwargs in calls]


def assert_identical(together, separately) -> None:
    assert len(together) == len(separately)
    for k, (a, b) in enumerate(zip(together, separately)):
        assert len(a) == len(b), f"call {k}"
        for x, y in zip(a, b):
            assert x.dtype == y.dtype and x.shape == y.shape, f"call {k}: {x.shape} vs {y.shape}"
            assert np.array_equal(x, y), f"call {k}: largest difference {np.abs(x - y).max()}"


def spy_batches(monkeypatch) -> list[int]:
    """Records the rows of every decoder step of the packed batches."""
    sizes = []
    real = C._RowwiseLSTMStep.__call__

    def spy(self, prev, state):
        sizes.append(prev.shape[0])
        return real(self, prev, state)

    monkeypatch.setattr(C._RowwiseLSTMStep, "__call__", spy)
    return sizes


@pytest.mark.parametrize("mode,dec", [("vae", 24), ("class_vae", 24), ("decoder", 24), ("decoder", 512)])
def test_calls_decoded_together_equal_each_call_alone_bit_for_bit(monkeypatch, mode, dec):
    sp = model(mode, dec=dec)
    calls = mixed_calls(sp, 10.0)
    separately = alone(sp, calls)
    sizes = spy_batches(monkeypatch)
    together = C.run_together(sp, calls)
    assert sizes[0] == sum(kw["n"] for _, kw in calls), "the calls were not decoded in one batch"
    assert_identical(together, separately)
    lengths = {len(s) for result in separately for s in result}
    assert len(lengths) > 3, f"the sketches should end at different steps to test dropping rows: {lengths}"
    # the same call twice in one batch, and one call alone in a batch of one, are still the same bits
    assert_identical(C.run_together(sp, calls[:2] * 2), separately[:2] * 2)
    assert_identical(C.run_together(sp, calls[1:2]), separately[1:2])


def test_shipped_sheep_together_equals_alone(monkeypatch):
    """The real size (256 units, 20 mixtures): MKL rounds a few rows differently from many there."""
    path = ROOT / "checkpoints" / "sheep.pt"
    if not path.exists():
        pytest.skip(f"{path} is missing")
    sp = S.load(path)
    calls = [(kind, {**kw, "max_len": min(kw.get("max_len", 60), 60)}) for kind, kw in mixed_calls(sp, 0.2 * 248)]
    separately = alone(sp, calls)
    sizes = spy_batches(monkeypatch)
    assert_identical(C.run_together(sp, calls), separately)
    assert sizes[0] == sum(kw["n"] for _, kw in calls)


def test_other_cells_decode_the_calls_one_after_another(monkeypatch):
    sp = model("vae", cell="layer_norm")
    calls = mixed_calls(sp, 10.0)[:3]
    separately = by_the_functions(sp, calls)  # the same code as complete / sample: the same bits
    sizes = spy_batches(monkeypatch)
    assert_identical(C.run_together(sp, calls), separately)
    assert sizes == [] and not C.ContinuousBatch.packable(sp)


@pytest.mark.parametrize("mode,dec", [("vae", 24), ("class_vae", 24), ("decoder", 256)])
def test_rowwise_step_is_the_model_step_and_ignores_the_batch(mode, dec):
    sp = model(mode, dec=dec)
    m, b = sp.model, 40
    g = torch.Generator().manual_seed(0)
    z = torch.randn(b, 6, generator=g) if mode != "decoder" else None
    labels = torch.arange(b) % len(CLASSES) if mode == "class_vae" else None
    prev = torch.randn(b, 5, generator=g)
    state = tuple(torch.randn(1, b, dec, generator=g) for _ in range(2))
    with torch.inference_mode():
        step = C._RowwiseLSTMStep(m)
        step.add(z, labels, b)
        full = step(prev, state)
        ref = m.step(prev, z, labels, state)
        for x, y in zip((*full[0], full[1], *full[2]), (*ref[0], ref[1], *ref[2])):
            torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-5)
        for lo, hi in [(0, 1), (7, 8), (3, 5), (10, 21), (1, 40), (5, 11)]:
            rows = slice(lo, hi)
            step = C._RowwiseLSTMStep(m)
            step.add(None if z is None else z[rows], None if labels is None else labels[rows], hi - lo)
            part = step(prev[rows], tuple(s[:, rows] for s in state))
            for x, y in zip((*full[0], full[1]), (*part[0], part[1])):
                assert torch.equal(x[rows], y), (lo, hi)
            for x, y in zip(full[2], part[2]):
                assert torch.equal(x[:, rows], y), (lo, hi)


@pytest.mark.parametrize("mode", ["class_vae", "decoder"])
def test_calls_joining_a_running_batch_get_their_bits_alone(mode):
    """Continuous batching: calls join between steps and leave when their sketches have ended."""
    sp = model(mode)
    calls = mixed_calls(sp, 10.0)
    separately = alone(sp, calls)
    batch = C.ContinuousBatch(sp)
    joins = {0: [0, 1], 3: [2], 4: [3, 4], 11: [5], 30: [6]}  # step -> calls joining before it
    results, left_at, sizes = {}, {}, []
    for t in range(200):
        for k in joins.get(t, []):
            batch.add(*calls[k], tag=k)
        if not batch.rows and t > max(joins):
            break
        sizes.append(batch.rows)
        for k, sketches in batch.step():
            results[k], left_at[k] = sketches, t
    assert sorted(results) == list(range(len(calls)))
    assert_identical([results[k] for k in range(len(calls))], separately)
    assert len(set(left_at.values())) > 2 and max(sizes) > max(kw["n"] for _, kw in calls)
    assert batch.step() == [] and batch.rows == 0


def test_a_long_lived_batch_keeps_only_the_settings_of_its_calls():
    """A busy server's batch lives on while calls come and go: the temperatures of calls that left are
    forgotten (the list does not grow without bound) and the calls that stay keep their bits."""
    sp = model("vae")
    calls = mixed_calls(sp, 10.0)
    separately = alone(sp, calls)
    batch = C.ContinuousBatch(sp)
    results = {}
    for k, call in enumerate(calls):
        batch.add(*call, tag=f"call {k}")
        for tag, sketches in batch.step():
            results[int(tag.split()[1])] = sketches
        assert batch.settings == list(dict.fromkeys(m.item.settings for m in batch.members))
    while batch.rows:
        for tag, sketches in batch.step():
            results[int(tag.split()[1])] = sketches
        assert batch.settings == list(dict.fromkeys(m.item.settings for m in batch.members))
    assert batch.settings == [] and sorted(results) == list(range(len(calls)))
    assert_identical([results[k] for k in range(len(calls))], separately)


def test_drop_finds_a_call_by_an_equal_tag():
    sp = model("decoder")
    batch = C.ContinuousBatch(sp)
    batch.add("sample", {"n": 3, "seed": 0}, tag="".join(["cli", "ent 7"]))  # built, not interned
    batch.drop("client 7")
    assert batch.rows == 0 and batch.members == []


def test_together_is_complete_and_sample_up_to_rounding():
    sp = model("vae")
    calls = mixed_calls(sp, 10.0)
    for a, b in zip(C.run_together(sp, calls), by_the_functions(sp, calls)):
        for x, y in zip(a, b):
            n = min(len(x), len(y), 8)  # a rounding difference may flip a later discrete choice
            np.testing.assert_allclose(x[:n], y[:n], rtol=1e-4, atol=1e-4)


def test_bad_calls_are_refused_before_decoding(monkeypatch):
    sp = model("decoder")
    sizes = spy_batches(monkeypatch)
    with pytest.raises(ValueError, match="unknown kind 'draw'"):
        C.run_together(sp, [("sample", {"n": 1}), ("draw", {})])
    with pytest.raises(ValueError, match="partial sketch has 50 points"):
        C.run_together(sp, [("complete", {"partial_sketch": np.ones((50, 3), np.float32), "max_len": 40})])
    assert sizes == [] and C.run_together(sp, []) == []
