"""Recurrent layers for Sketch-RNN: a layer-normalised LSTM with recurrent dropout, and helpers that
make `nn.LSTM` start like the reference implementation.

Layer-norm LSTM (Ba et al. 2016) with recurrent dropout without memory loss (Semeniuta et al. 2016),
as magenta's `sketch_rnn/rnn.py: LayerNormLSTMCell`:

    [i, j, f, o] = LN_gates([x, h] W)            one LN per gate over H units, no bias (LN's beta is one)
    g  = dropout(tanh(j))                          recurrent dropout on the candidate g ONLY
    c' = c * sigmoid(f + forget_bias) + sigmoid(i) * g
    h' = tanh(LN_c(c')) * sigmoid(o)

`recurrent_dropout` is the probability of DROPPING a unit of g (inverted dropout: kept units are
scaled by 1 / (1 - p)).  magenta's `recurrent_dropout_prob=0.9` is a KEEP probability: it is our
`recurrent_dropout=0.1`.  A new mask is drawn at every time step, as magenta's cell does.

The recurrence is written as plain tensor ops in `ln_lstm_scan` (a loop over time) so it can be
run three ways, chosen with `LayerNormLSTM.backend` (a runtime choice, not saved anywhere):
"eager" (plain Python), "script" (`torch.jit.script` of the whole loop: no Python per step; on
CUDA the JIT fuses the pointwise ops) and "compile" (`torch.compile` of one step, fused by
Inductor, looped in Python).  All three compute the same numbers.

State format, shared with `nn.LSTM` so the sampler need not care which cell runs: a tuple
`(h, c)`, each (num_layers * num_directions = 1, B, H).  Rows can be dropped with
`state = tuple(s[:, keep] for s in state)`.
"""

from __future__ import annotations

import logging
import warnings
from typing import Optional

import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)

LN_EPS = 1e-3  # magenta's layer-norm epsilon
BACKENDS = ("eager", "script", "compile")


def ln_lstm_step(xw: Tensor, h: Tensor, c: Tensor, w_hh: Tensor, gamma: Tensor, beta: Tensor,
                 gamma_c: Tensor, beta_c: Tensor, forget_bias: float, eps: float,
                 drop: Optional[Tensor]) -> tuple[Tensor, Tensor]:
    """One layer-norm LSTM step.

    xw: (B, 4H) input projection x W_ih^T of this step; h, c: (B, H); w_hh: (4H, H);
    gamma, beta: (4, H) per-gate LN gain/shift; gamma_c, beta_c: (H,); drop: (B, H) scaled
    dropout mask for g or None.  Gate order i, j (candidate), f, o as magenta.
    """
    bsz = h.size(0)
    hidden = h.size(1)
    gates = (xw + torch.mm(h, w_hh.t())).view(bsz, 4, hidden)  # (B, 4, H)
    mean = gates.mean(dim=2, keepdim=True)
    var = (gates - mean).square().mean(dim=2, keepdim=True)
    gates = (gates - mean) * torch.rsqrt(var + eps) * gamma + beta  # (B, 4, H) LN per gate
    i = gates[:, 0]
    j = gates[:, 1]
    f = gates[:, 2]
    o = gates[:, 3]
    g = torch.tanh(j)
    if drop is not None:
        g = g * drop  # Semeniuta et al. 2016: drop the candidate only, memory c is never dropped
    c_new = c * torch.sigmoid(f + forget_bias) + torch.sigmoid(i) * g  # (B, H)
    c_mean = c_new.mean(dim=1, keepdim=True)
    c_var = (c_new - c_mean).square().mean(dim=1, keepdim=True)
    c_ln = (c_new - c_mean) * torch.rsqrt(c_var + eps) * gamma_c + beta_c
    h_new = torch.tanh(c_ln) * torch.sigmoid(o)  # (B, H)
    return h_new, c_new


def ln_lstm_scan(xw: Tensor, h: Tensor, c: Tensor, w_hh: Tensor, gamma: Tensor, beta: Tensor,
                 gamma_c: Tensor, beta_c: Tensor, forget_bias: float, eps: float,
                 drop: Optional[Tensor], valid: Optional[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """Run `ln_lstm_step` over time.  TorchScript-compatible (this whole function is scripted).

    xw: (T, B, 4H) time-major input projections; h, c: (B, H) initial state; drop: (T, B, H) or
    None; valid: (T, B, 1) bool or None - where False the state is carried unchanged (steps past a
    sequence's length), so the final (h, c) is the state after each sequence's last real step.
    Returns outputs (T, B, H) (the carried h on invalid steps), h (B, H), c (B, H).
    """
    xw = xw.to(h.dtype)  # the recurrence runs in the state's dtype (float32 under bf16 autocast)
    outputs: list[Tensor] = []
    for t in range(xw.size(0)):
        d: Optional[Tensor] = None
        if drop is not None:
            d = drop[t]
        h_new, c_new = ln_lstm_step(xw[t], h, c, w_hh, gamma, beta, gamma_c, beta_c, forget_bias, eps, d)
        if valid is not None:
            v = valid[t]
            h_new = torch.where(v, h_new, h)
            c_new = torch.where(v, c_new, c)
        h = h_new
        c = c_new
        outputs.append(h)
    if len(outputs) == 0:
        return xw.new_zeros((0, h.size(0), h.size(1))), h, c
    return torch.stack(outputs), h, c


_SCRIPTED = None
_COMPILED_STEP = None


def _scripted_scan():
    """`torch.jit.script(ln_lstm_scan)`, built once; falls back to eager (with a log warning) where
    TorchScript is unavailable (it is deprecated in recent PyTorch but still works in 2.x)."""
    global _SCRIPTED
    if _SCRIPTED is None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _SCRIPTED = torch.jit.script(ln_lstm_scan)
        except Exception as err:  # noqa: BLE001 - any scripting failure means "run eagerly"
            logger.warning("torch.jit.script of the layer-norm LSTM failed (%s); running it eagerly", err)
            _SCRIPTED = ln_lstm_scan
    return _SCRIPTED


def _compiled_scan(xw, h, c, w_hh, gamma, beta, gamma_c, beta_c, forget_bias: float, eps: float, drop, valid):
    """`ln_lstm_scan` with the step compiled by `torch.compile` (one fused kernel per step on GPU)."""
    global _COMPILED_STEP
    if _COMPILED_STEP is None:
        _COMPILED_STEP = torch.compile(ln_lstm_step, dynamic=True)
    xw = xw.to(h.dtype)
    outputs = []
    for t in range(xw.size(0)):
        h_new, c_new = _COMPILED_STEP(xw[t], h, c, w_hh, gamma, beta, gamma_c, beta_c, forget_bias, eps,
                                      None if drop is None else drop[t])
        if valid is not None:
            h_new = torch.where(valid[t], h_new, h)
            c_new = torch.where(valid[t], c_new, c)
        h, c = h_new, c_new
        outputs.append(h)
    if not outputs:
        return xw.new_zeros((0, h.size(0), h.size(1))), h, c
    return torch.stack(outputs), h, c


def lstm_orthogonal_(weight: Tensor, num_gates: int = 4) -> Tensor:
    """Orthogonal init of each gate's (H, in) block of a (num_gates * H, in) weight (magenta's
    `lstm_ortho_initializer`)."""
    with torch.no_grad():
        for block in weight.chunk(num_gates, dim=0):
            nn.init.orthogonal_(block)
    return weight


def init_lstm_like_reference(lstm: nn.LSTM, forget_bias: float = 1.0) -> nn.LSTM:
    """Initialise an `nn.LSTM` as magenta's `LSTMCell`: Glorot-uniform input weights, orthogonal
    recurrent weights per gate, zero biases except `forget_bias` on the forget gate.

    nn.LSTM gate order is (i, f, g, o) and it has two bias vectors; the forget bias goes on
    `bias_ih` only so that the effective bias is exactly `forget_bias`.
    """
    for name, p in lstm.named_parameters():
        if name.startswith("weight_ih"):
            nn.init.xavier_uniform_(p)
        elif name.startswith("weight_hh"):
            lstm_orthogonal_(p)
        elif name.startswith("bias"):
            with torch.no_grad():
                p.zero_()
                if name.startswith("bias_ih"):
                    hidden = p.shape[0] // 4
                    p[hidden:2 * hidden] = forget_bias
    return lstm


class LayerNormLSTM(nn.Module):
    """Single-layer, single-direction layer-norm LSTM over a batch-first sequence.

    forward(x (B, T, I), state=None, lengths=None) -> (outputs (B, T, H), (h, c) each (1, B, H)).
    `lengths` (B,) stops each sequence's state after its last real step (padding is never read
    into the state); outputs past a length are the carried h.  For a backward direction, reverse
    each sequence within its length first (`reverse_padded`) - `LayerNormBiLSTMEncoder` does.
    """

    def __init__(self, input_size: int, hidden_size: int, recurrent_dropout: float = 0.0,
                 forget_bias: float = 1.0, backend: str = "script"):
        super().__init__()
        if not 0.0 <= recurrent_dropout < 1.0:
            raise ValueError(f"recurrent_dropout is a probability of DROPPING, in [0, 1), got {recurrent_dropout}")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.recurrent_dropout = float(recurrent_dropout)
        self.forget_bias = float(forget_bias)
        self.backend = backend
        self.weight_ih = nn.Parameter(torch.empty(4 * hidden_size, input_size))  # (4H, I) gates i, j, f, o
        self.weight_hh = nn.Parameter(torch.empty(4 * hidden_size, hidden_size))  # (4H, H)
        self.ln_gamma = nn.Parameter(torch.ones(4, hidden_size))  # per-gate LN gain
        self.ln_beta = nn.Parameter(torch.zeros(4, hidden_size))  # per-gate LN shift (acts as the bias)
        self.ln_c_gamma = nn.Parameter(torch.ones(hidden_size))  # LN of the cell before tanh
        self.ln_c_beta = nn.Parameter(torch.zeros(hidden_size))
        nn.init.xavier_uniform_(self.weight_ih)
        lstm_orthogonal_(self.weight_hh)

    @property
    def backend(self) -> str:
        return self._backend

    @backend.setter
    def backend(self, name: str) -> None:
        if name not in BACKENDS:
            raise ValueError(f"unknown layer-norm LSTM backend {name!r}; choose from {BACKENDS}")
        self._backend = name

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, recurrent_dropout={self.recurrent_dropout}, "
                f"backend={self.backend!r}")

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor] | None = None,
                lengths: Tensor | None = None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        bsz, steps, _ = x.shape
        if state is None:
            zeros = x.new_zeros((bsz, self.hidden_size), dtype=self.weight_hh.dtype)
            h, c = zeros, zeros
        else:
            # (B, H); the recurrence runs in the weights' dtype (float32 under bf16 autocast)
            h, c = state[0][0].to(self.weight_hh.dtype), state[1][0].to(self.weight_hh.dtype)
        xw = torch.matmul(x.transpose(0, 1), self.weight_ih.t())  # (T, B, 4H) all steps in one matmul
        drop = None
        if self.training and self.recurrent_dropout > 0:
            keep = 1.0 - self.recurrent_dropout
            drop = torch.bernoulli(torch.full((steps, bsz, self.hidden_size), keep, device=x.device,
                                              dtype=h.dtype)) / keep  # (T, B, H)
        valid = None
        if lengths is not None:
            t_idx = torch.arange(steps, device=x.device).unsqueeze(1)  # (T, 1)
            valid = (t_idx < lengths.to(x.device).unsqueeze(0)).unsqueeze(-1)  # (T, B, 1)
        if self.backend == "script":
            scan = _scripted_scan()
        elif self.backend == "compile":
            scan = _compiled_scan
        else:
            scan = ln_lstm_scan
        out, h, c = scan(xw, h, c, self.weight_hh, self.ln_gamma, self.ln_beta, self.ln_c_gamma, self.ln_c_beta,
                         self.forget_bias, LN_EPS, drop, valid)
        return out.transpose(0, 1), (h.unsqueeze(0), c.unsqueeze(0))  # (B, T, H), (1, B, H) x 2


def reverse_padded(x: Tensor, lengths: Tensor) -> Tensor:
    """Reverse each sequence of a batch-first (B, T, ...) tensor within its length; padding stays put.

    Row b becomes x[b, n-1], ..., x[b, 0], x[b, n], ..., x[b, T-1] with n = lengths[b].
    Applying it twice gives x back.
    """
    bsz, steps = x.shape[:2]
    t = torch.arange(steps, device=x.device).unsqueeze(0)  # (1, T)
    n = lengths.to(x.device).unsqueeze(1)  # (B, 1)
    idx = torch.where(t < n, n - 1 - t, t)  # (B, T)
    idx = idx.view(bsz, steps, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(1, idx)


class LayerNormBiLSTMEncoder(nn.Module):
    """Bidirectional layer-norm LSTM that returns the final hidden states of both directions.

    forward(x (B, T, I), lengths (B,)) -> (h_fw (B, H), h_bw (B, H)).  The forward direction stops
    at each length; the backward one reads each sequence reversed within its length, so its final
    state is the one after x[b, 0], as `pack_padded_sequence` gives for `nn.LSTM`.
    """

    def __init__(self, input_size: int, hidden_size: int, recurrent_dropout: float = 0.0, backend: str = "script"):
        super().__init__()
        self.fw = LayerNormLSTM(input_size, hidden_size, recurrent_dropout, backend=backend)
        self.bw = LayerNormLSTM(input_size, hidden_size, recurrent_dropout, backend=backend)

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        _, (h_fw, _) = self.fw(x, lengths=lengths)
        _, (h_bw, _) = self.bw(reverse_padded(x, lengths), lengths=lengths)
        return h_fw[0], h_bw[0]


class BiLSTMEncoder(nn.Module):
    """Bidirectional `nn.LSTM` encoder over padded batches that returns the final hidden state of
    each direction without `pack_padded_sequence`.

    forward(x (B, T, I), lengths (B,)) -> (h_fw (B, H), h_bw (B, H)), equal to the final states a
    bidirectional `nn.LSTM` gives on the packed sequence (tests/test_model.py checks this).  The
    forward direction runs over the padded batch and its state is read at step lengths[b] - 1; the
    backward direction runs over each sequence reversed within its length (`reverse_padded`) and
    is read at the same step.  Steps after a length are computed but never reach the result.

    Why not packing: on CPU the backward pass of a packed LSTM zero-fills a full-size gradient
    buffer at every time step (measured: ~10x slower than this at T = 160, B = 100); unpacked
    calls use the fused oneDNN / cuDNN kernels on both devices.
    """

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.fw = init_lstm_like_reference(nn.LSTM(input_size, hidden_size, batch_first=True))
        self.bw = init_lstm_like_reference(nn.LSTM(input_size, hidden_size, batch_first=True))

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        lengths = lengths.to(x.device)
        last = (lengths - 1).view(-1, 1, 1).expand(-1, 1, self.fw.hidden_size)  # (B, 1, H)
        out_fw, _ = self.fw(x)
        out_bw, _ = self.bw(reverse_padded(x, lengths))
        return out_fw.gather(1, last).squeeze(1), out_bw.gather(1, last).squeeze(1)


def gaussian_linear_(linear: nn.Linear, std: float = 0.001) -> nn.Linear:
    """N(0, std^2) weights and zero bias: magenta's `super_linear(init_w='gaussian', weight_start=0.001)`,
    used for the encoder's mu / presig heads and the decoder's initial-state layer."""
    nn.init.normal_(linear.weight, 0.0, std)
    nn.init.zeros_(linear.bias)
    return linear


__all__ = ["LayerNormLSTM", "LayerNormBiLSTMEncoder", "BiLSTMEncoder", "ln_lstm_step", "ln_lstm_scan", "reverse_padded",
           "init_lstm_like_reference", "lstm_orthogonal_", "gaussian_linear_", "BACKENDS", "LN_EPS"]

