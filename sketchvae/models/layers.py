"""Recurrent layers for Sketch-RNN: a layer-normalised LSTM with recurrent dropout, a plain LSTM with
recurrent dropout (`DropoutLSTM`, an `nn.LSTM` that drops in training; see its section below), a
HyperLSTM (`HyperLSTM`, magenta's `HyperLSTMCell`; its section below), and helpers that make
`nn.LSTM` start like the reference implementation.

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
`(h, c)`, each (num_layers * num_directions = 1, B, H), or (1, B, H + Hh) for a HyperLSTM.  Rows
can be dropped with `state = tuple(s[:, keep] for s in state)`.
"""

from __future__ import annotations

import logging
import math
import warnings
from typing import Callable, Optional

import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)

LN_EPS = 1e-3  # magenta's layer-norm epsilon
BACKENDS = ("eager", "script", "compile")


def ln_lstm_cell(gates: Tensor, c: Tensor, gamma: Tensor, beta: Tensor, gamma_c: Tensor, beta_c: Tensor,
                 forget_bias: float, eps: float, drop: Optional[Tensor]) -> tuple[Tensor, Tensor]:
    """What a layer-norm LSTM step does after its gate pre-activations: LN per gate, the memory update
    and the LN of c (shared by `ln_lstm_step` and `hyper_lstm_step`).

    gates: (B, 4, H) pre-activations in gate order i, j (candidate), f, o as magenta; c: (B, H);
    gamma, beta: (4, H); gamma_c, beta_c: (H,); drop: (B, H) scaled dropout mask for g or None.
    """
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


def ln_lstm_step(xw: Tensor, h: Tensor, c: Tensor, w_hh: Tensor, gamma: Tensor, beta: Tensor,
                 gamma_c: Tensor, beta_c: Tensor, forget_bias: float, eps: float,
                 drop: Optional[Tensor]) -> tuple[Tensor, Tensor]:
    """One layer-norm LSTM step.

    xw: (B, 4H) input projection x W_ih^T of this step; h, c: (B, H); w_hh: (4H, H);
    gamma, beta: (4, H) per-gate LN gain/shift; gamma_c, beta_c: (H,); drop: (B, H) scaled
    dropout mask for g or None.  Gate order i, j (candidate), f, o as magenta.
    """
    gates = (xw + torch.mm(h, w_hh.t())).view(h.size(0), 4, h.size(1))  # (B, 4, H)
    return ln_lstm_cell(gates, c, gamma, beta, gamma_c, beta_c, forget_bias, eps, drop)


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


_SCRIPTED: dict = {}
_COMPILED: dict = {}


def _scripted(fn, what: str):
    """`torch.jit.script(fn)`, built once; falls back to `fn` itself (with a log warning) where
    TorchScript is unavailable (it is deprecated in recent PyTorch but still works in 2.x)."""
    if fn not in _SCRIPTED:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _SCRIPTED[fn] = torch.jit.script(fn)
        except Exception as err:  # noqa: BLE001 - any scripting failure means "run eagerly"
            logger.warning("torch.jit.script of the %s failed (%s); running it eagerly", what, err)
            _SCRIPTED[fn] = fn
    return _SCRIPTED[fn]


def _compiled(fn):
    """`torch.compile(fn, dynamic=True)`, built once."""
    if fn not in _COMPILED:
        _COMPILED[fn] = torch.compile(fn, dynamic=True)
    return _COMPILED[fn]


def _stepwise_scan(step, inputs: tuple, state: tuple, params: tuple, drop, valid):
    """A Python loop over time around `step(*inputs[t], *state, *params, drop[t]) -> new state` (a
    tuple whose first element is the step's output h): what the "compile" backends run, one compiled
    step per time step.  inputs: (T, B, ...) tensors; drop: (T, B, H) or None; valid: (T, B, 1) or None
    (False keeps the state).  Returns (outputs (T, B, H), final state)."""
    outputs = []
    for t in range(inputs[0].size(0)):
        new = step(*(x[t] for x in inputs), *state, *params, None if drop is None else drop[t])
        if valid is not None:
            new = tuple(torch.where(valid[t], a, b) for a, b in zip(new, state))
        state = tuple(new)
        outputs.append(state[0])
    if not outputs:
        return state[0].new_zeros((0, *state[0].shape)), state
    return torch.stack(outputs), state


def _compiled_scan(xw, h, c, w_hh, gamma, beta, gamma_c, beta_c, forget_bias: float, eps: float, drop, valid):
    """`ln_lstm_scan` with the step compiled by `torch.compile` (one fused kernel per step on GPU)."""
    out, (h, c) = _stepwise_scan(_compiled(ln_lstm_step), (xw.to(h.dtype),), (h, c),
                                 (w_hh, gamma, beta, gamma_c, beta_c, forget_bias, eps), drop, valid)
    return out, h, c


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


class OwnRecurrence:
    """What the LSTMs that run their own recurrence share: the recurrent-dropout probability and the
    runtime `backend` ("script", "eager" or "compile"; never saved)."""

    def _set_options(self, recurrent_dropout: float, backend: str) -> None:
        if not 0.0 <= recurrent_dropout < 1.0:
            raise ValueError(f"recurrent_dropout is a probability of DROPPING, in [0, 1), got {recurrent_dropout}")
        self.recurrent_dropout = float(recurrent_dropout)
        self.backend = backend

    def dropout_mask(self, steps: int, bsz: int, device, dtype) -> Tensor:
        """(T, B, H) mask for g: 0 with probability p, else 1 / (1 - p); from torch's global RNG."""
        keep = 1.0 - self.recurrent_dropout
        return torch.bernoulli(torch.full((steps, bsz, self.hidden_size), keep, device=device, dtype=dtype)) / keep

    @property
    def backend(self) -> str:
        return self._backend

    @backend.setter
    def backend(self, name: str) -> None:
        if name not in BACKENDS:
            raise ValueError(f"unknown {type(self).__name__} backend {name!r}; choose from {BACKENDS}")
        self._backend = name

    def _drop_and_valid(self, steps: int, bsz: int, device, dtype, lengths: Tensor | None):
        """(drop (T, B, H) mask in training with p > 0 else None, valid (T, B, 1) bool where a step is
        within its sequence's length, or None without lengths)."""
        drop = self.dropout_mask(steps, bsz, device, dtype) if self.training and self.recurrent_dropout > 0 else None
        valid = None
        if lengths is not None:
            t_idx = torch.arange(steps, device=device).unsqueeze(1)  # (T, 1)
            valid = (t_idx < lengths.to(device).unsqueeze(0)).unsqueeze(-1)  # (T, B, 1)
        return drop, valid


class LayerNormLSTM(OwnRecurrence, nn.Module):
    """Single-layer, single-direction layer-norm LSTM over a batch-first sequence.

    forward(x (B, T, I), state=None, lengths=None) -> (outputs (B, T, H), (h, c) each (1, B, H)).
    `lengths` (B,) stops each sequence's state after its last real step (padding is never read
    into the state); outputs past a length are the carried h.  For a backward direction, reverse
    each sequence within its length first (`reverse_padded`) - `LayerNormBiLSTMEncoder` does.
    """

    def __init__(self, input_size: int, hidden_size: int, recurrent_dropout: float = 0.0,
                 forget_bias: float = 1.0, backend: str = "script"):
        super().__init__()
        self._set_options(recurrent_dropout, backend)
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.forget_bias = float(forget_bias)
        self.weight_ih = nn.Parameter(torch.empty(4 * hidden_size, input_size))  # (4H, I) gates i, j, f, o
        self.weight_hh = nn.Parameter(torch.empty(4 * hidden_size, hidden_size))  # (4H, H)
        self.ln_gamma = nn.Parameter(torch.ones(4, hidden_size))  # per-gate LN gain
        self.ln_beta = nn.Parameter(torch.zeros(4, hidden_size))  # per-gate LN shift (acts as the bias)
        self.ln_c_gamma = nn.Parameter(torch.ones(hidden_size))  # LN of the cell before tanh
        self.ln_c_beta = nn.Parameter(torch.zeros(hidden_size))
        nn.init.xavier_uniform_(self.weight_ih)
        lstm_orthogonal_(self.weight_hh)

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
        drop, valid = self._drop_and_valid(steps, bsz, x.device, h.dtype, lengths)  # (T, B, H), (T, B, 1)
        if self.backend == "script":
            scan = _scripted(ln_lstm_scan, "layer-norm LSTM")
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


class OwnBiLSTMEncoder(nn.Module):
    """Bidirectional encoder over two of this module's own LSTMs (`LayerNormLSTM` or `HyperLSTM`, one
    per direction, built by `make_direction`) that returns the final hidden states of both directions.

    forward(x (B, T, I), lengths (B,)) -> (h_fw (B, H), h_bw (B, H)).  The forward direction stops
    at each length; the backward one reads each sequence reversed within its length, so its final
    state is the one after x[b, 0], as `pack_padded_sequence` gives for `nn.LSTM`.  Of a HyperLSTM's
    state only the main cell's h (its first H units) is returned, as magenta's `get_output`.
    """

    def __init__(self, make_direction: Callable[[], nn.Module]):
        super().__init__()
        self.fw = make_direction()
        self.bw = make_direction()

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        _, (h_fw, _) = self.fw(x, lengths=lengths)
        _, (h_bw, _) = self.bw(reverse_padded(x, lengths), lengths=lengths)
        hidden = self.fw.hidden_size
        return h_fw[0, :, :hidden], h_bw[0, :, :hidden]


class LayerNormBiLSTMEncoder(OwnBiLSTMEncoder):
    """Bidirectional layer-norm LSTM encoder (see `OwnBiLSTMEncoder`)."""

    def __init__(self, input_size: int, hidden_size: int, recurrent_dropout: float = 0.0, backend: str = "script"):
        super().__init__(lambda: LayerNormLSTM(input_size, hidden_size, recurrent_dropout, backend=backend))


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

    def __init__(self, input_size: int, hidden_size: int, recurrent_dropout: float = 0.0):
        super().__init__()
        self.fw = init_lstm_like_reference(plain_lstm(input_size, hidden_size, recurrent_dropout))
        self.bw = init_lstm_like_reference(plain_lstm(input_size, hidden_size, recurrent_dropout))

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        lengths = lengths.to(x.device)
        last = (lengths - 1).view(-1, 1, 1).expand(-1, 1, self.fw.hidden_size)  # (B, 1, H)
        out_fw, _ = self.fw(x)
        out_bw, _ = self.bw(reverse_padded(x, lengths))
        return out_fw.gather(1, last).squeeze(1), out_bw.gather(1, last).squeeze(1)


# --------------------------------------------------------------------------------------------------
# Plain LSTM with recurrent dropout (magenta's `rnn.py: LSTMCell(use_recurrent_dropout=True)`)
#
#     [i, f, g~, o] = x W_ih^T + b_ih + h W_hh^T + b_hh       nn.LSTM's gate order and parameters
#     g  = tanh(g~) * m / (1 - p),   m ~ Bernoulli(1 - p)     a new mask per step, training only
#     c' = sigmoid(f) * c + sigmoid(i) * g                    the memory c is never dropped
#     h' = sigmoid(o) * tanh(c')
#
# The forget bias lives in b_ih (`init_lstm_like_reference`), as for nn.LSTM.  Training runs a
# hand-written BPTT (`lstm_dropout_forward` / `lstm_dropout_backward`, one autograd node for the
# whole sequence): per step one matmul plus pointwise ops each way, and the recurrent weight's
# gradient as ONE matmul over all steps at the end.  That is much cheaper than autograd through a
# Python / TorchScript loop of small ops (scripts/bench_train.py --cell lstm --recurrent-dropout 0.1
# prints the ratio against nn.LSTM).


def lstm_dropout_forward(xw: Tensor, h: Tensor, c: Tensor, w_hh: Tensor,
                         drop: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Forward of the recurrent-dropout LSTM over time, keeping what the backward needs.

    xw: (T, B, 4H) input projections with both biases; h, c: (B, H); w_hh: (4H, H); drop: (T, B, H)
    scaled mask.  Returns outputs (T, B, H), acts (T, B, 4H) = [sigmoid(i), sigmoid(f), tanh(g~)
    (before the mask), sigmoid(o)] and cells (T, B, H) (c after each step).
    """
    steps = xw.size(0)
    hidden = h.size(1)
    outputs = xw.new_empty((steps, h.size(0), hidden))
    acts = xw.new_empty(xw.shape)
    cells = xw.new_empty((steps, h.size(0), hidden))
    w_t = w_hh.t()
    for t in range(steps):
        gates = torch.addmm(xw[t], h, w_t)  # (B, 4H)
        a = acts[t]
        torch.sigmoid(gates, out=a)
        a[:, 2 * hidden:3 * hidden] = torch.tanh(gates[:, 2 * hidden:3 * hidden])
        i = a[:, :hidden]
        f = a[:, hidden:2 * hidden]
        g = a[:, 2 * hidden:3 * hidden]
        o = a[:, 3 * hidden:]
        c = torch.addcmul(f * c, i, g * drop[t])
        h = o * torch.tanh(c)
        cells[t] = c
        outputs[t] = h
    return outputs, acts, cells


def lstm_dropout_backward(grad_out: Tensor, grad_h: Tensor, grad_c: Tensor, acts: Tensor, cells: Tensor,
                          c0: Tensor, w_hh: Tensor, drop: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """BPTT of `lstm_dropout_forward`: gradients of the gate pre-activations (T, B, 4H) and of the
    initial h and c (B, H).  grad_out (T, B, H); grad_h, grad_c (B, H): gradients of the final state."""
    steps = acts.size(0)
    hidden = grad_h.size(1)
    dgates = acts.new_empty(acts.shape)
    dh = grad_h
    dc = grad_c
    for k in range(steps):
        t = steps - 1 - k
        a = acts[t]
        i = a[:, :hidden]
        f = a[:, hidden:2 * hidden]
        g = a[:, 2 * hidden:3 * hidden]
        o = a[:, 3 * hidden:]
        c_prev = cells[t - 1] if t > 0 else c0
        dh = dh + grad_out[t]
        tc = torch.tanh(cells[t])
        dc = dc + dh * o * (1.0 - tc * tc)
        m = drop[t]
        d = dgates[t]
        d[:, :hidden] = dc * g * m * i * (1.0 - i)
        d[:, hidden:2 * hidden] = dc * c_prev * f * (1.0 - f)
        d[:, 2 * hidden:3 * hidden] = dc * i * m * (1.0 - g * g)
        d[:, 3 * hidden:] = dh * tc * o * (1.0 - o)
        dh = torch.mm(d, w_hh)  # (B, H)
        dc = dc * f
    return dgates, dh, dc


_SCRIPTED_DROPOUT = None
_COMPILED_DROPOUT = None


def _dropout_kernels(backend: str):
    """(forward, backward) of the recurrent-dropout LSTM for a backend: "script" (torch.jit.script,
    falling back to eager with a log warning), "compile" (torch.compile of each) or "eager"."""
    global _SCRIPTED_DROPOUT, _COMPILED_DROPOUT
    if backend == "script":
        if _SCRIPTED_DROPOUT is None:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    _SCRIPTED_DROPOUT = (torch.jit.script(lstm_dropout_forward), torch.jit.script(lstm_dropout_backward))
            except Exception as err:  # noqa: BLE001 - any scripting failure means "run eagerly"
                logger.warning("torch.jit.script of the recurrent-dropout LSTM failed (%s); running it eagerly", err)
                _SCRIPTED_DROPOUT = (lstm_dropout_forward, lstm_dropout_backward)
        return _SCRIPTED_DROPOUT
    if backend == "compile":
        if _COMPILED_DROPOUT is None:
            _COMPILED_DROPOUT = (torch.compile(lstm_dropout_forward, dynamic=True),
                                 torch.compile(lstm_dropout_backward, dynamic=True))
        return _COMPILED_DROPOUT
    return lstm_dropout_forward, lstm_dropout_backward


class _LSTMDropoutFunction(torch.autograd.Function):
    """The whole recurrence as one autograd node: inputs (xw, h0, c0, w_hh, drop, backend)."""

    @staticmethod
    def forward(ctx, xw, h0, c0, w_hh, drop, backend: str):
        fwd, _ = _dropout_kernels(backend)
        out, acts, cells = fwd(xw, h0, c0, w_hh, drop)
        ctx.backend = backend
        ctx.save_for_backward(h0, c0, w_hh, drop, out, acts, cells)
        return out, out[-1].clone(), cells[-1].clone()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out, grad_h, grad_c):
        h0, c0, w_hh, drop, out, acts, cells = ctx.saved_tensors
        _, bwd = _dropout_kernels(ctx.backend)
        zeros = h0.new_zeros(h0.shape)
        grad_out = out.new_zeros(out.shape) if grad_out is None else grad_out.contiguous()
        dgates, dh0, dc0 = bwd(grad_out, zeros if grad_h is None else grad_h.contiguous(),
                               zeros if grad_c is None else grad_c.contiguous(), acts, cells, c0, w_hh, drop)
        h_prev = torch.cat([h0.unsqueeze(0), out[:-1]], dim=0)  # (T, B, H) the h each step read
        hidden = h0.size(1)
        dw_hh = torch.mm(dgates.reshape(-1, 4 * hidden).t(), h_prev.reshape(-1, hidden))  # (4H, H)
        return dgates, dh0, dc0, dw_hh, None, None


class DropoutLSTM(OwnRecurrence, nn.LSTM):
    """`nn.LSTM` (one layer, one direction, batch_first) with recurrent dropout on the candidate g in
    training, as magenta's `LSTMCell(use_recurrent_dropout=True)` (Semeniuta et al. 2016).

    `recurrent_dropout` is the probability of DROPPING a unit of g at a step (kept units are scaled
    by 1 / (1 - p)); magenta's keep probability 0.9 is 0.1 here.  The parameters ARE nn.LSTM's
    (`weight_ih_l0`, `weight_hh_l0`, `bias_ih_l0`, `bias_hh_l0`, gate order i, f, g, o), so a
    state dict loads into either class.  In eval mode (and with p = 0) `forward` is nn.LSTM's own
    (cuDNN / oneDNN): the same function, as dropout is off there.  In training with p > 0 it runs
    the recurrence of this module (see `lstm_dropout_forward`) in float32, also under autocast.
    `backend` ("script", "eager", "compile"; a runtime choice, never saved) picks how.
    """

    def __init__(self, input_size: int, hidden_size: int, recurrent_dropout: float = 0.0, backend: str = "script"):
        super().__init__(input_size, hidden_size, batch_first=True)
        self._set_options(recurrent_dropout, backend)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, recurrent_dropout={self.recurrent_dropout}, backend={self.backend!r}"

    def forward(self, x: Tensor, hx: tuple[Tensor, Tensor] | None = None):  # type: ignore[override]
        if not (self.training and self.recurrent_dropout > 0):
            return super().forward(x, hx)
        bsz, steps, _ = x.shape
        dtype = self.weight_hh_l0.dtype
        if hx is None:
            h0 = x.new_zeros((bsz, self.hidden_size), dtype=dtype)
            c0 = h0
        else:
            h0, c0 = hx[0][0].to(dtype), hx[1][0].to(dtype)  # (B, H)
        # all steps' input projections in one matmul (bf16 under autocast), the recurrence in float32
        xw = torch.matmul(x.transpose(0, 1), self.weight_ih_l0.t()) + (self.bias_ih_l0 + self.bias_hh_l0)
        drop = self.dropout_mask(steps, bsz, x.device, dtype)  # (T, B, H)
        if steps == 0:
            return x.new_zeros((bsz, 0, self.hidden_size), dtype=dtype), (h0.unsqueeze(0), c0.unsqueeze(0))
        with torch.autocast(x.device.type, enabled=False):
            out, h, c = _LSTMDropoutFunction.apply(xw.to(dtype).contiguous(), h0.contiguous(), c0.contiguous(),
                                                   self.weight_hh_l0, drop, self.backend)
        return out.transpose(0, 1), (h.unsqueeze(0), c.unsqueeze(0))  # (B, T, H), (1, B, H) x 2


def plain_lstm(input_size: int, hidden_size: int, recurrent_dropout: float = 0.0) -> nn.LSTM:
    """A batch-first `nn.LSTM`, or a `DropoutLSTM` (same parameters) when recurrent_dropout > 0."""
    if recurrent_dropout > 0:
        return DropoutLSTM(input_size, hidden_size, recurrent_dropout)
    return nn.LSTM(input_size, hidden_size, batch_first=True)


# --------------------------------------------------------------------------------------------------
# HyperLSTM (Ha, Dai & Le 2016, "HyperNetworks": the dynamic hypernetwork for LSTMs), as magenta's
# `rnn.py: HyperLSTMCell` with the defaults its Sketch-RNN uses: layer norm on, Hh = 256 hyper
# units, embedding E = 32, recurrent dropout on the main cell's candidate only (none in the hyper
# cell).  A small layer-norm LSTM (the hyper cell) reads [x_t, h_{t-1}] and, at every step, emits
# the scales of the main LSTM's weight rows:
#
#     (ĥ, ĉ)  = LNLSTM_hyper([x, h], (ĥ, ĉ))                     Hh units, forget bias 1, no dropout
#     zx_k = Wzx_k ĥ + bzx_k,  zh_k = Wzh_k ĥ + bzh_k,  zb_k = Wzb_k ĥ      E units, k in i, j, f, o
#     dx_k = Dx_k zx_k,        dh_k = Dh_k zh_k,        db_k = Db_k zb_k      H units, no bias
#     pre_k = dx_k * (Wx_k x) + dh_k * (Wh_k h) + db_k + b_k               per-row weight scaling
#     [i, j, f, o] = LN_gates(pre);  g = dropout(tanh(j))
#     c' = c * sigmoid(f + forget_bias) + sigmoid(i) * g;  h' = tanh(LN_c(c')) * sigmoid(o)
#
# Initialisation as magenta: Wzx, Wzh zero with bzx = bzh = 1 and Dx, Dh constant 0.1 / E (so every
# scale d starts at 0.1, the recurrent batch-norm trick of Cooijmans et al.); Wzb ~ N(0, 0.01^2),
# Db zero; Wx Glorot uniform, Wh orthogonal per gate, b zero; the hyper cell as `LayerNormLSTM`.
#
# Storage (so a step is a few large matmuls): `weight_z` (12E, Hh) holds the rows of
# [Wzx_i..o | Wzh_i..o | Wzb_i..o], `bias_z` (8E,) the biases of the first eight, `weight_d`
# (12, E, H) the matrices [Dx_i..o | Dh_i..o | Db_i..o].  The hyper cell's input weights on x are
# its `weight_ih` (4Hh, I); those on h are rows 4H: of this module's `weight_hh` (4H + 4Hh, H), below
# Wh, so one matmul per step gives both (magenta initialises the two parts as one Glorot matrix).
#
# State: (h, c) each (1, B, H + Hh): the main cell's units first, then the hyper cell's, as
# magenta's total_h / total_c.  The same 2-tuple as the other cells, only wider, so rows drop the
# same way; the decoder's initial state tanh(W z + b) covers all of it, as in magenta.


def hyper_lstm_step(xw: Tensor, xv: Tensor, h: Tensor, c: Tensor, hh: Tensor, hc: Tensor, params: list[Tensor],
                    forget_bias: float, eps: float,
                    drop: Optional[Tensor]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One HyperLSTM step.

    xw: (B, 4H) = x Wx^T; xv: (B, 4Hh) = x (the hyper cell's input weights on x)^T; h, c: (B, H)
    main state; hh, hc: (B, Hh) hyper state; drop: (B, H) scaled mask for g or None.  params, in
    order: w_hh (4H + 4Hh, H) = [Wh; hyper input weights on h], the hyper cell's w_hh (4Hh, Hh),
    ln gamma, beta (4, Hh), ln_c gamma, beta (Hh,), weight_z (12E, Hh), bias_z (12E,) (zeros for
    the zb rows), weight_d (12, E, H), b (4, H), ln gamma, beta (4, H), ln_c gamma, beta (H,).
    Returns (h', c', ĥ', ĉ').
    """
    bsz = h.size(0)
    hidden = h.size(1)
    rec = torch.mm(h, params[0].t())  # (B, 4H + 4Hh): Wh h and the hyper cell's input from h
    hh, hc = ln_lstm_step(xv + rec[:, 4 * hidden:], hh, hc, params[1], params[2], params[3], params[4], params[5],
                          forget_bias, eps, None)  # (B, Hh) x 2
    z = torch.addmm(params[7], hh, params[6].t())  # (B, 12E): [zx_i..o | zh_i..o | zb_i..o]
    w_d = params[8]
    d = torch.bmm(z.view(bsz, 12, w_d.size(1)).transpose(0, 1), w_d)  # (12, B, H): [dx | dh | db]
    gates = (d[0:4] * xw.view(bsz, 4, hidden).transpose(0, 1)
             + d[4:8] * rec[:, :4 * hidden].view(bsz, 4, hidden).transpose(0, 1)
             + d[8:12] + params[9].unsqueeze(1))  # (4, B, H) pre-activations of i, j, f, o
    h, c = ln_lstm_cell(gates.transpose(0, 1), c, params[10], params[11], params[12], params[13], forget_bias, eps,
                        drop)
    return h, c, hh, hc


def hyper_lstm_scan(xw: Tensor, xv: Tensor, h: Tensor, c: Tensor, hh: Tensor, hc: Tensor, params: list[Tensor],
                    forget_bias: float, eps: float, drop: Optional[Tensor],
                    valid: Optional[Tensor]) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Run `hyper_lstm_step` over time (TorchScript-compatible, as `ln_lstm_scan`).

    xw: (T, B, 4H), xv: (T, B, 4Hh) time-major input projections; drop: (T, B, H) or None; valid:
    (T, B, 1) bool or None (False: the state is carried unchanged).  Returns outputs (T, B, H) and
    the final h, c (B, H), ĥ, ĉ (B, Hh).
    """
    xw = xw.to(h.dtype)
    xv = xv.to(h.dtype)
    outputs: list[Tensor] = []
    for t in range(xw.size(0)):
        d: Optional[Tensor] = None
        if drop is not None:
            d = drop[t]
        h1, c1, hh1, hc1 = hyper_lstm_step(xw[t], xv[t], h, c, hh, hc, params, forget_bias, eps, d)
        if valid is not None:
            v = valid[t]
            h1, c1 = torch.where(v, h1, h), torch.where(v, c1, c)
            hh1, hc1 = torch.where(v, hh1, hh), torch.where(v, hc1, hc)
        h, c, hh, hc = h1, c1, hh1, hc1
        outputs.append(h)
    if len(outputs) == 0:
        return xw.new_zeros((0, h.size(0), h.size(1))), h, c, hh, hc
    return torch.stack(outputs), h, c, hh, hc


class HyperLSTM(OwnRecurrence, nn.Module):
    """Single-layer, single-direction HyperLSTM with layer norm over a batch-first sequence (see the
    section comment above for the equations, the initialisation and the state layout).

    forward(x (B, T, I), state=None, lengths=None) -> (outputs (B, T, H), (h, c) each (1, B, H + Hh)),
    with `lengths` as `LayerNormLSTM`.  `hyper_size` = Hh (magenta's hyper_num_units, 256),
    `embed_size` = E (hyper_embedding_size, 32); `recurrent_dropout` drops the main cell's g only.
    """

    def __init__(self, input_size: int, hidden_size: int, hyper_size: int = 256, embed_size: int = 32,
                 recurrent_dropout: float = 0.0, forget_bias: float = 1.0, backend: str = "script"):
        super().__init__()
        self._set_options(recurrent_dropout, backend)
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.hyper_size = hyper_size
        self.embed_size = embed_size
        self.forget_bias = float(forget_bias)
        self.weight_ih = nn.Parameter(torch.empty(4 * hidden_size, input_size))  # (4H, I) Wx, gates i, j, f, o
        # (4H + 4Hh, H): Wh (gates i, j, f, o), then the hyper cell's input weights on h
        self.weight_hh = nn.Parameter(torch.empty(4 * (hidden_size + hyper_size), hidden_size))
        self.bias = nn.Parameter(torch.zeros(4, hidden_size))  # b (magenta's `bias`, under the LN)
        self.ln_gamma = nn.Parameter(torch.ones(4, hidden_size))
        self.ln_beta = nn.Parameter(torch.zeros(4, hidden_size))
        self.ln_c_gamma = nn.Parameter(torch.ones(hidden_size))
        self.ln_c_beta = nn.Parameter(torch.zeros(hidden_size))
        # the hyper cell (its weights on x, recurrent weights, layer norms); this module runs it in its own step
        self.hyper = LayerNormLSTM(input_size, hyper_size, 0.0, forget_bias, backend)
        self.weight_z = nn.Parameter(torch.zeros(12 * embed_size, hyper_size))  # [Wzx | Wzh | Wzb]
        self.bias_z = nn.Parameter(torch.ones(8 * embed_size))  # [bzx | bzh]; zb has no bias
        self.weight_d = nn.Parameter(torch.zeros(12, embed_size, hidden_size))  # [Dx | Dh | Db]
        nn.init.xavier_uniform_(self.weight_ih)
        lstm_orthogonal_(self.weight_hh[:4 * hidden_size])
        bound = math.sqrt(6.0 / (input_size + hidden_size + 4 * hyper_size))  # Glorot over the hyper's [x, h] input
        with torch.no_grad():
            self.hyper.weight_ih.uniform_(-bound, bound)
            self.weight_hh[4 * hidden_size:].uniform_(-bound, bound)
            self.weight_z[8 * embed_size:].normal_(0.0, 0.01)
            self.weight_d[:8].fill_(0.1 / embed_size)

    @property
    def state_size(self) -> int:
        """Units of h (and of c) in the state: H + Hh."""
        return self.hidden_size + self.hyper_size

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, hyper_size={self.hyper_size}, embed_size={self.embed_size}, "
                f"recurrent_dropout={self.recurrent_dropout}, backend={self.backend!r}")

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor] | None = None,
                lengths: Tensor | None = None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        bsz, steps, _ = x.shape
        hidden = self.hidden_size
        dtype = self.weight_hh.dtype
        if state is None:
            h_all = c_all = x.new_zeros((bsz, self.state_size), dtype=dtype)
        else:
            h_all, c_all = state[0][0].to(dtype), state[1][0].to(dtype)  # (B, H + Hh) each
        h, hh = h_all[:, :hidden], h_all[:, hidden:]
        c, hc = c_all[:, :hidden], c_all[:, hidden:]
        xt = x.transpose(0, 1)  # (T, B, I)
        xw = torch.matmul(xt, self.weight_ih.t())  # (T, B, 4H)
        xv = torch.matmul(xt, self.hyper.weight_ih.t())  # (T, B, 4Hh)
        drop, valid = self._drop_and_valid(steps, bsz, x.device, dtype, lengths)  # (T, B, H), (T, B, 1)
        hyp = self.hyper
        params = [self.weight_hh, hyp.weight_hh, hyp.ln_gamma, hyp.ln_beta, hyp.ln_c_gamma,
                  hyp.ln_c_beta, self.weight_z, torch.cat([self.bias_z, self.bias_z.new_zeros(4 * self.embed_size)]),
                  self.weight_d, self.bias, self.ln_gamma, self.ln_beta, self.ln_c_gamma, self.ln_c_beta]
        if not torch.is_grad_enabled():
            # without autograd (sampling, evaluation): plain tensors, or the scripted scan, which takes its
            # parameters as a list, would still build its backward graph (and fail under inference_mode)
            params = [q.detach() for q in params]
        if self.backend == "compile":
            out, (h, c, hh, hc) = _stepwise_scan(_compiled(hyper_lstm_step), (xw.to(dtype), xv.to(dtype)),
                                                 (h, c, hh, hc), (params, self.forget_bias, LN_EPS), drop, valid)
        else:
            scan = _scripted(hyper_lstm_scan, "HyperLSTM") if self.backend == "script" else hyper_lstm_scan
            out, h, c, hh, hc = scan(xw, xv, h, c, hh, hc, params, self.forget_bias, LN_EPS, drop, valid)
        h_all = torch.cat([h, hh], dim=1).unsqueeze(0)
        c_all = torch.cat([c, hc], dim=1).unsqueeze(0)
        return out.transpose(0, 1), (h_all, c_all)  # (B, T, H), (1, B, H + Hh) x 2


class HyperBiLSTMEncoder(OwnBiLSTMEncoder):
    """Bidirectional HyperLSTM encoder (see `OwnBiLSTMEncoder`)."""

    def __init__(self, input_size: int, hidden_size: int, hyper_size: int = 256, embed_size: int = 32,
                 recurrent_dropout: float = 0.0, backend: str = "script"):
        super().__init__(lambda: HyperLSTM(input_size, hidden_size, hyper_size, embed_size, recurrent_dropout,
                                           backend=backend))


def gaussian_linear_(linear: nn.Linear, std: float = 0.001) -> nn.Linear:
    """N(0, std^2) weights and zero bias: magenta's `super_linear(init_w='gaussian', weight_start=0.001)`,
    used for the encoder's mu / presig heads and the decoder's initial-state layer."""
    nn.init.normal_(linear.weight, 0.0, std)
    nn.init.zeros_(linear.bias)
    return linear


def glorot_linear_(linear: nn.Linear) -> nn.Linear:
    """Glorot-uniform weight AND bias: TensorFlow's default initialiser, which magenta's output layer
    (`output_w`, `output_b`, created without one) gets.  TF treats a 1-D bias as fan_in = fan_out =
    its length n, so the bias is U(-sqrt(3 / n), sqrt(3 / n))."""
    nn.init.xavier_uniform_(linear.weight)
    bound = math.sqrt(3.0 / linear.bias.numel())
    nn.init.uniform_(linear.bias, -bound, bound)
    return linear


__all__ = ["DropoutLSTM", "plain_lstm", "lstm_dropout_forward", "lstm_dropout_backward", "LayerNormLSTM",
           "OwnBiLSTMEncoder", "LayerNormBiLSTMEncoder", "BiLSTMEncoder", "HyperLSTM", "HyperBiLSTMEncoder",
           "ln_lstm_cell", "ln_lstm_step", "ln_lstm_scan", "hyper_lstm_step", "hyper_lstm_scan", "reverse_padded",
           "init_lstm_like_reference", "lstm_orthogonal_", "gaussian_linear_", "glorot_linear_", "BACKENDS", "LN_EPS"]

