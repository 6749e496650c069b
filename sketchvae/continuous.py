"""Several `complete` / `sample` calls decoded together, each bit for bit what it gets alone: the
continuous batching behind `sketchvae serve`'s many users at once.

    results = run_together(sampler, [("complete", {"partial_sketch": s, "n": 6, "seed": 1}),
                                     ("sample", {"n": 4, "temperature": 0.8, "seed": 2})])
    batch = ContinuousBatch(sampler)                  # calls join between steps, leave when done
    batch.add("complete", {...}, tag="a")
    while batch.rows:
        for tag, sketches in batch.step(): ...

Every call is primed alone by `sketchvae.sample` (checks, encoder, teacher forcing over its partial
sketch, its own generator); only the step-by-step loop is shared, with a decoder step whose rows do
not depend on each other to the last bit (`_RowwiseLSTMStep`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from sketchvae.drawing import Drawings
from sketchvae.models.sketch_rnn import SketchRNN
from sketchvae.sample import (_ConstantInputLSTMStep, _Primed, _prime_completion, _prime_sample, _results_of,
                              _Settings, _as_sampler, complete, draw, sample)


class _RowwiseLSTMStep:
    """`_ConstantInputLSTMStep`'s function (and `SketchRNN.step`'s, "decoder" mode included) computed so
    that each row's result is the same bits whatever the other rows and however many there are: what
    lets `run_together` pack several calls into one decoder pass and still give each call the bits it
    gets alone (tests/test_run_together.py).

    The usual step is not: MKL multiplies a few rows (fewer than 6 to 16, by the shapes) with other
    kernels than many rows, which round differently.  Here the rows are the COLUMNS of every product
    (gates^T (4H, B) = [W_x W_h] [prev^T; h^T] + W_c [z; e]^T + b), which MKL computes alike in any batch of
    two or more columns, and the gate activations run on contiguous (H, B) blocks, all of whose elements
    take the vectorised loop when H * B is a multiple of 32 (PyTorch's scalar tail rounds exp, tanh
    differently).  So a single row, and batches of a model with H not a multiple of 32, get zero rows
    of padding.  The cost, for sheep.pt: a 6-ending completion takes ~1.3x `complete`'s time (whose
    step uses MKL's fast kernel for a few rows), about the same from ~16 rows.  Measured with MKL
    2024.2 (AVX-512), one thread; another BLAS may need another recipe, which that test would show."""

    def __init__(self, model: SketchRNN):
        rnn = model.decoder_rnn
        self.w_xh = torch.cat([rnn.weight_ih_l0[:, :5], rnn.weight_hh_l0], dim=1)  # (4H, 5 + H), gates i, f, g, o
        self.w_c = rnn.weight_ih_l0[:, 5:]  # (4H, N_z + E), for the inputs constant during a sketch
        self.hidden = rnn.hidden_size
        self.model = model
        self.bias = (rnn.bias_ih_l0 + rnn.bias_hh_l0).unsqueeze(1)[:, :0]  # (4H, B): no rows yet

    def add(self, z: Tensor | None, labels: Tensor | None, n: int) -> None:
        """n rows join (after the others), with their z (n, N_z) and labels (n,) as the model's mode needs."""
        rnn, dtype = self.model.decoder_rnn, self.model.output.weight.dtype
        bias = (rnn.bias_ih_l0 + rnn.bias_hh_l0).unsqueeze(1)  # (4H, 1)
        parts = []
        if self.model.config.conditional:
            parts.append(z.to(dtype))
        if self.model.class_embed is not None:
            parts.append(self.model.class_embed(labels.long().reshape(-1)).to(dtype))
        if parts:
            const = torch.cat(parts, dim=-1)  # (n, N_z + E)
            pad = self._pad(n, 0)
            if pad:
                const = torch.cat([const, const.new_zeros(pad, const.shape[1])])
            new = torch.addmm(bias, self.w_c, const.t())[:, :n]  # (4H, n)
        else:
            new = bias.expand(bias.shape[0], n)
        self.bias = torch.cat([self.bias, new], dim=1)

    @staticmethod
    def available(model: SketchRNN) -> bool:
        return _ConstantInputLSTMStep.available(model, constant_inputs=False)

    def _pad(self, b: int, hidden: int | None = None) -> int:
        """Zero rows to add to b rows: at least 2 rows, and H * rows a multiple of 32."""
        hidden = self.hidden if hidden is None else hidden
        rows = max(2, b)
        while hidden and (hidden * rows) % 32:
            rows += 1
        return rows - b

    def keep(self, mask: Tensor) -> None:
        self.bias = self.bias[:, mask]

    def __call__(self, prev: Tensor, state):
        b = prev.shape[0]
        h_t, c_t = (s[0].t() for s in state)  # (H, B) each
        bias = self.bias
        pad = self._pad(b)
        if pad:
            prev = torch.cat([prev, prev.new_zeros(pad, prev.shape[1])])
            h_t, c_t, bias = (torch.cat([x, x.new_zeros(x.shape[0], pad)], 1) for x in (h_t, c_t, bias))
        gates = torch.addmm(bias, self.w_xh, torch.cat([prev.t(), h_t]))  # (4H, B): one product
        i, f, g, o = gates.chunk(4, dim=0)  # contiguous (H, B) blocks
        c1 = torch.sigmoid(f) * c_t.contiguous() + torch.sigmoid(i) * torch.tanh(g)
        h1 = torch.sigmoid(o) * torch.tanh(c1)
        out = self.model.output
        y = torch.addmm(out.bias.unsqueeze(1), out.weight, h1).t().contiguous()  # (B, 6M + 3), row-major
        params, pen_logits = self.model.split_output(y.unsqueeze(1))
        if pad:
            params, pen_logits = type(params)(*(p[:b] for p in params)), pen_logits[:b]
            h1, c1 = h1[:, :b], c1[:, :b]
        return params, pen_logits, (h1.t().unsqueeze(0), c1.t().unsqueeze(0))


def _draw_groups(params, pen_logits: Tensor, noise: Tensor | None, group: Tensor,
                 settings: list[_Settings]) -> Tensor:
    """`draw` for rows drawn with different settings: row i with settings[group[i]], each group in one
    call (one call in all when every row shares its settings)."""
    if len(settings) == 1:
        tau, greedy, convention = settings[0]
        return draw(params, pen_logits, noise, tau, greedy=greedy, convention=convention)
    row = torch.empty(pen_logits.shape[0], 5, dtype=params.mu_x.dtype, device=pen_logits.device)
    for g, (tau, greedy, convention) in enumerate(settings):
        idx = (group == g).nonzero().squeeze(1)
        if idx.numel():
            row[idx] = draw(type(params)(*(p[idx] for p in params)), pen_logits[idx],
                            None if greedy else noise[idx], tau, greedy=greedy, convention=convention)
    return row


class _Member:
    """A call in a `ContinuousBatch`: its rows' results so far."""

    def __init__(self, item: _Primed, tag, rows: Tensor):
        self.item, self.tag = item, tag
        n = item.prev.shape[0]
        self.out = torch.zeros(n, item.steps, 3, dtype=item.prev.dtype, device=item.prev.device)
        self.lengths = np.full(n, item.steps, dtype=np.int64)
        self.alive = n
        self.t = 0  # the call's own step
        self.all_rows = rows  # arange(n)


class ContinuousBatch:
    """Calls of `complete` / `sample` decoded together, one step at a time, calls joining between steps
    and leaving as soon as their own sketches have ended (continuous batching, as `sketchvae serve`
    does with concurrent requests).

        batch = ContinuousBatch(sampler)
        batch.add("complete", {"partial_sketch": s, "n": 6, "seed": 3}, tag="a")
        while batch.rows:
            for tag, sketches in batch.step():   # the calls that finished at this step
                ...

    Each call's result is bit for bit what it gets alone in a batch (`run_together([call])`) with
    its seed, whoever else is in the batch and whenever it joined: every call is primed alone
    (encoder, teacher forcing over its partial sketch, its own generator for z and every draw,
    drawn for all its rows at each of its own steps), rows stop at their own call's max_len, and the
    step computes each row the same way whatever the batch (`_RowwiseLSTMStep`; so the bits may
    differ from `complete` / `sample`'s, whose step is faster for a few rows, by float32 rounding).
    Only one-layer plain-LSTM decoders can be packed (`packable`); `run_together` decodes the calls
    of other models one after another.  Not thread-safe: one thread drives a batch.  The bitwise
    equality is tested on the CPU (MKL); on CUDA it is not checked (cuBLAS may round a row differently
    in different batches), so there results may differ from alone by float rounding.
    """

    def __init__(self, model):
        self.sampler = _as_sampler(model)
        model_ = self.sampler.model
        model_.eval()  # (packable asks for an eval-mode model)
        if not self.packable(self.sampler):
            raise ValueError("only one-layer plain-LSTM decoders (cell 'lstm') can be decoded in a continuous "
                             "batch")
        self.step_fn = _RowwiseLSTMStep(model_)
        dev = self.sampler.device
        self.prev = torch.zeros(0, 5, dtype=model_.output.weight.dtype, device=dev)
        self.state = tuple(torch.zeros(1, 0, model_.config.dec_rnn_size, dtype=self.prev.dtype, device=dev)
                           for _ in range(2))
        self.members: list[_Member] = []  # the calls with rows alive, in row order
        self.row_member = torch.zeros(0, dtype=torch.int64, device=dev)  # index into members, per row
        self.row_local = torch.zeros(0, dtype=torch.int64, device=dev)  # row index within its call
        self.group = torch.zeros(0, dtype=torch.int64, device=dev)  # index into settings, per row
        self.settings: list[_Settings] = []
        self._layout = None  # (noise index, [(rows, their indices in the call)] per member): see step

    @staticmethod
    def packable(model) -> bool:
        return _RowwiseLSTMStep.available(_as_sampler(model).model)

    @property
    def rows(self) -> int:
        """Rows (sketches) being decoded."""
        return int(self.prev.shape[0])

    def add(self, kind: str, kwargs: dict, tag=None) -> None:
        """A call joins: `kind` "complete" or "sample" with that function's keyword arguments (sample: n up
        to its chunk size); `tag` comes back with its result.  A bad call raises its ValueError here."""
        if kind not in CALLS:
            raise ValueError(f"unknown kind {kind!r}; choose from {tuple(CALLS)}")
        item = CALLS[kind](self.sampler, **kwargs)
        n, dev = item.prev.shape[0], self.sampler.device
        with torch.inference_mode():
            self.step_fn.add(item.z, item.labels, n)
        if item.settings not in self.settings:
            self.settings.append(item.settings)
        self.prev = torch.cat([self.prev, item.prev])
        self.state = tuple(torch.cat([s, t.to(s.dtype)], dim=1) for s, t in zip(self.state, item.state))
        self.row_member = torch.cat([self.row_member, torch.full((n,), len(self.members), device=dev)])
        self.row_local = torch.cat([self.row_local, torch.arange(n, device=dev)])
        self.group = torch.cat([self.group, torch.full((n,), self.settings.index(item.settings), device=dev)])
        self.members.append(_Member(item, tag, torch.arange(n, device=dev)))
        self._layout = None

    @torch.inference_mode()
    def step(self) -> list[tuple[object, list[np.ndarray]]]:
        """One decoder step for every row; returns (tag, result) of the calls whose sketches have all ended."""
        if not self.rows:
            return []
        params, pen_logits, self.state = self.step_fn(self.prev, self.state)
        params = params.select((slice(None), 0))  # fields (b, M)
        if self._layout is None:  # where each row's draws and results go, until the rows change
            sizes = [len(m.lengths) for m in self.members]
            offsets = torch.tensor(np.cumsum([0] + sizes[:-1]), device=self.prev.device)
            mine = [(self.row_member == k).nonzero().squeeze(1) for k in range(len(self.members))]
            self._layout = (offsets[self.row_member] + self.row_local, [(i, self.row_local[i]) for i in mine])
        noise_index, slots = self._layout
        noise = torch.cat([m.item.noise(m.t, m.all_rows) for m in self.members])  # each call's draws, all rows
        row = _draw_groups(params, pen_logits[:, 0], noise[noise_index], self.group, self.settings)  # (b, 5)
        s3 = row[:, [0, 1, 3]]  # (b, 3) stroke-3 rows: dx, dy, pen lifted
        for m, (mine, local) in zip(self.members, slots):
            m.out[local, m.t] = s3[mine]
        done = row[:, 4] > 0.5
        if bool(done.any()):  # one host sync per step
            for k, local in zip(self.row_member[done].tolist(), self.row_local[done].tolist()):
                m = self.members[k]
                m.lengths[local] = m.t
                m.alive -= 1
        for k, m in enumerate(self.members):
            m.t += 1
            if m.alive and m.t == m.item.steps:  # at its max_len: the rest of its rows stop here
                done |= self.row_member == k
                m.alive = 0
        self.prev = row
        finished = []
        if any(not m.alive for m in self.members):
            gone = [k for k, m in enumerate(self.members) if not m.alive]
            finished = [(self.members[k].tag, self._result(self.members[k])) for k in gone]
            self._remove(~done, gone)
        elif bool(done.any()):
            self._remove(~done, [])
        return finished

    def drop(self, tag) -> None:
        """The call tagged `tag` leaves now, unfinished (its client has gone); no result comes back."""
        for k, m in enumerate(self.members):
            if m.tag == tag:
                self._remove(self.row_member != k, [k])
                return

    def _result(self, m: _Member) -> Drawings:
        return _results_of(m.item, m.out.float().cpu().numpy(), m.lengths, self.sampler.scale_factor)

    def _remove(self, keep: Tensor, gone: list[int]) -> None:
        """Keep the rows in `keep` (b,) and forget the members `gone` (whose rows are all outside it)."""
        if gone:  # renumber the members that stay
            stay = [k for k in range(len(self.members)) if k not in gone]
            renumber = torch.full((len(self.members),), -1, dtype=torch.int64, device=keep.device)
            renumber[stay] = torch.arange(len(stay), device=keep.device)
            self.row_member = renumber[self.row_member]
            self.members = [self.members[k] for k in stay]
            live = list(dict.fromkeys(m.item.settings for m in self.members))  # forget settings no call uses
            if live != self.settings:
                regroup = [live.index(x) if x in live else -1 for x in self.settings]
                self.group = torch.tensor(regroup, dtype=torch.int64, device=keep.device)[self.group]
                self.settings = live
        self.prev, self.row_member, self.row_local, self.group = (
            x[keep] for x in (self.prev, self.row_member, self.row_local, self.group))
        self.state = tuple(s[:, keep] for s in self.state)
        self.step_fn.keep(keep)
        self._layout = None


CALLS = {"complete": _prime_completion, "sample": _prime_sample}  # how each kind of call is primed


def run_together(model, calls: list[tuple[str, dict]]) -> list[Drawings]:
    """Several `complete` and `sample` calls decoded together (a `ContinuousBatch` that they all join
    at once): calls = [("complete" | "sample", keyword arguments of that function), ...], e.g.
    ("complete", {"partial_sketch": s, "n": 6, "temperature": 0.4, "seed": 3}); different partial
    sketches, n, temperatures, classes and seeds mix freely.  Returns each call's result, bit for bit
    what `run_together` gives that call alone (see `ContinuousBatch`).  Models that cannot be packed
    (layer-norm, hyper cells) decode the calls one after another, exactly as `complete` / `sample`.
    With packable models a bad call raises its ValueError before anything is decoded.
    """
    sampler = _as_sampler(model)
    for k, (kind, _) in enumerate(calls):
        if kind not in CALLS:
            raise ValueError(f"call {k}: unknown kind {kind!r}; choose from {tuple(CALLS)}")
    if not ContinuousBatch.packable(sampler):
        return [{"complete": complete, "sample": sample}[kind](sampler, **kwargs) for kind, kwargs in calls]
    batch = ContinuousBatch(sampler)
    for k, (kind, kwargs) in enumerate(calls):
        batch.add(kind, kwargs, tag=k)
    results: list = [None] * len(calls)
    while batch.rows:
        for k, sketches in batch.step():
            results[k] = sketches
    return results


__all__ = ["ContinuousBatch", "run_together"]
