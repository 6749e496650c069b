"""The CUDA path: bf16 autocast training steps, cuDNN against the CPU, reproducible sampling with CUDA
generators, batched sampling on the device.  Marked `gpu` and skipped without CUDA; run them with
`python -m pytest -m gpu tests/test_gpu.py` (scripts/gpu_check.sh does, with the benchmarks)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sketchvae.models.sketch_rnn import SketchRNN, SketchRNNConfig

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)")]

CUDA = torch.device("cuda")


@pytest.fixture
def no_tf32():
    """Full float32 matmuls and cuDNN RNNs, so CUDA and CPU can be compared tightly."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def _batch(n=16, seed=0, max_len=60):
    """A Batch of random stroke-3 sketches (as collate_stroke5 makes them)."""
    from sketchvae.data.batching import collate_stroke5

    rng = np.random.default_rng(seed)
    items = []
    for i in range(n):
        k = int(rng.integers(10, max_len))
        s = np.zeros((k, 3), dtype=np.float32)
        s[:, 0:2] = rng.normal(0, 1, (k, 2))
        s[rng.random(k) < 0.15, 2] = 1
        s[-1, 2] = 1
        items.append((s, i % 3))
    return collate_stroke5(items)


@pytest.mark.parametrize("recurrent_dropout", [0.0, 0.1])
@pytest.mark.parametrize("mode", ["vae", "class_vae"])
def test_bf16_autocast_training_steps_are_finite_and_learn(mode, recurrent_dropout):
    from sketchvae.train import TrainConfig, Trainer

    torch.manual_seed(0)
    cfg = SketchRNNConfig(mode=mode, num_classes=3 if mode == "class_vae" else 0, max_seq_len=60,
                          recurrent_dropout=recurrent_dropout)
    model = SketchRNN(cfg).to(CUDA)
    trainer = Trainer(model, TrainConfig(device="cuda", lr=3e-3), CUDA)
    assert trainer.optimizer.defaults.get("fused") is True  # fused Adam on CUDA
    batch = _batch()
    losses = [trainer.train_step(batch) for _ in range(10)]
    assert all(info["finite"] for info in losses)
    assert np.mean([info["recon"] for info in losses[-3:]]) < losses[0]["recon"]
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in model.parameters())


def test_cudnn_forward_and_gradients_equal_the_cpu(no_tf32):
    torch.manual_seed(0)
    cfg = SketchRNNConfig(enc_rnn_size=64, dec_rnn_size=128, z_size=16, num_mixture=5, max_seq_len=60,
                          recurrent_dropout=0.0)  # nn.LSTM: cuDNN
    cpu = SketchRNN(cfg).train()  # no dropout in this config: train mode is the same function, and cuDNN's
    gpu = SketchRNN(cfg).train()  # RNN backward needs it
    gpu.load_state_dict(cpu.state_dict())
    gpu.to(CUDA)
    batch = _batch()
    outs = []
    for model, dev in ((cpu, "cpu"), (gpu, CUDA)):
        strokes = batch.strokes.to(dev)
        mu, presig = model.encode(strokes, batch.lengths)
        params, pen, _ = model.decode(strokes[:, :-1], mu)
        loss = params.mu_x.square().mean() + pen.logsumexp(-1).mean() + presig.mean()
        loss.backward()
        outs.append((mu.detach().cpu(), pen.detach().cpu(), params.mu_x.detach().cpu(),
                     [p.grad.detach().cpu() for p in model.parameters()]))
    (mu_c, pen_c, mux_c, g_c), (mu_g, pen_g, mux_g, g_g) = outs
    torch.testing.assert_close(mu_g, mu_c, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(pen_g, pen_c, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(mux_g, mux_c, rtol=1e-4, atol=1e-4)
    for a, b in zip(g_g, g_c):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("backend", ["script", "eager"])
def test_recurrent_dropout_lstm_on_cuda_equals_the_cpu(no_tf32, backend):
    from sketchvae.models.layers import DropoutLSTM

    torch.manual_seed(0)
    cpu = DropoutLSTM(9, 32, 0.2, backend=backend).train()
    gpu = DropoutLSTM(9, 32, 0.2, backend=backend).train()
    gpu.load_state_dict(cpu.state_dict())
    gpu.to(CUDA)
    x = torch.randn(4, 20, 9)
    mask = cpu.dropout_mask(20, 4, "cpu", torch.float32)
    cpu.dropout_mask = lambda *a, **k: mask  # the same draws on both devices
    gpu.dropout_mask = lambda *a, **k: mask.to(CUDA)
    res = []
    for m, dev in ((cpu, "cpu"), (gpu, CUDA)):
        out, (h, c) = m(x.to(dev))
        (out.square().sum() + c.sum()).backward()
        res.append((out.detach().cpu(), m.weight_hh_l0.grad.cpu(), m.weight_ih_l0.grad.cpu()))
    for a, b in zip(*res):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def _sampler(mode="vae"):
    from sketchvae.sample import Sampler

    torch.manual_seed(0)
    cfg = SketchRNNConfig(mode=mode, num_classes=3 if mode == "class_vae" else 0, enc_rnn_size=64,
                          dec_rnn_size=128, max_seq_len=80)
    return Sampler(SketchRNN(cfg).to(CUDA).eval(), 1.0, ["a", "b", "c"] if mode == "class_vae" else [])


@pytest.mark.parametrize("mode", ["vae", "class_vae"])
def test_cuda_generator_sampling_is_reproducible(mode):
    from sketchvae.sample import sample

    sampler = _sampler(mode)
    a = sample(sampler, 64, temperature=0.5, seed=3, max_len=80)
    b = sample(sampler, 64, temperature=0.5, seed=3, max_len=80)
    c = sample(sampler, 64, temperature=0.5, seed=4, max_len=80)
    assert len(a) == 64
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert any(len(x) != len(y) or not np.array_equal(x, y) for x, y in zip(a, c))


def test_batched_sampling_runs_on_the_device_in_chunks():
    from sketchvae.sample import sample

    sampler = _sampler()
    out = sample(sampler, 3000, temperature=0.4, seed=0, max_len=80, chunk_size=1024)
    assert len(out) == 3000
    assert all(s.ndim == 2 and s.shape[1] == 3 and len(s) <= 80 and np.isfinite(s).all() for s in out)
    assert sum(len(s) for s in out) > 3000  # not all empty
    assert next(sampler.model.parameters()).device == CUDA
