"""Sketch-RNN (Ha & Eck 2017, "A Neural Representation of Sketch Drawings"): config and model.

Three modes (`SketchRNNConfig.mode`):

* "vae" - the conditional VAE of the paper: a bidirectional LSTM encoder reads the sketch and
  gives mu, sigma_hat (`presig` = log sigma^2); z = mu + exp(presig / 2) * eps sets the decoder's
  initial state (eq. 4) and is fed to the decoder at every step next to the previous point.
* "decoder" - unconditional, decoder only (sec. 3.4 of the paper): no encoder, no z, no KL; the
  initial state is zeros (as magenta's `conditional=False`) and the input is just S_{t-1}.
* "class_vae" - class-conditional VAE (a CVAE, Sohn et al. 2015): a learned class embedding e(y)
  is concatenated to every encoder input step, to every decoder input step and to z where the
  initial state is made, so q(z | x, y) and p(x | z, y).  To draw a sketch of class y, sample
  z ~ N(0, I) (the prior, independent of y) and decode with label y; to change the class of a
  drawing, encode it with its own label and decode its z with another label.

Batch convention (from `sketchvae.data.batching.collate_stroke5`): `strokes` (B, T+1, 5) where row 0
is the start token (0, 0, 1, 0, 0), rows 1..n are the sketch's n real points and rows after them
padding (0, 0, 0, 0, 1); `lengths` (B,) = n.  The encoder reads rows 1..n only; the decoder reads
rows 0..T-1 (teacher forcing) and predicts rows 1..T.

Decoder state: a tuple (h, c), each (1, B, `config.decoder_state_size`) for every cell: dec_rnn_size
for "lstm" and "layer_norm", dec_rnn_size + hyper_rnn_size for "hyper" (the main cell's units, then
the hyper cell's, as magenta).  A sampler can drop finished rows with
`state = tuple(s[:, keep] for s in state)` (and index z / labels the same way).
"""

from __future__ import annotations

import dataclasses
import numbers

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sketchvae.checkpoint import register_model_kind
from sketchvae.distributions import MixtureParams, reparameterize
from sketchvae.models.layers import (BACKENDS, BiLSTMEncoder, HyperBiLSTMEncoder, HyperLSTM, LayerNormBiLSTMEncoder,
                                     LayerNormLSTM, OwnRecurrence, gaussian_linear_, glorot_linear_,
                                     init_lstm_like_reference, plain_lstm)

MODES = ("vae", "decoder", "class_vae")
CELLS = ("lstm", "layer_norm", "hyper")
START_TOKEN = (0.0, 0.0, 1.0, 0.0, 0.0)

State = tuple[Tensor, Tensor]


@dataclasses.dataclass
class SketchRNNConfig:
    """Sketch-RNN hyperparameters (names and defaults of the reference implementation, magenta's
    `sketch_rnn/model.py: get_default_hparams`).  Saved as a dict in every checkpoint.

    Training options (batch size 100, learning rate, KL weight and annealing, gradient clipping,
    augmentation) belong to the training config, not here.
    """

    # "vae" (conditional VAE, the paper's model) | "decoder" (unconditional, decoder only, no z) |
    # "class_vae" (class-conditional VAE: a class embedding steers encoder and decoder).
    mode: str = "vae"
    # Units per direction of the bidirectional encoder LSTM (output 2 * enc_rnn_size); 64..1024.
    enc_rnn_size: int = 256
    # Units of the decoder LSTM; 128..2048.  The paper uses 512 (2048 HyperLSTM for its best results).
    dec_rnn_size: int = 512
    # N_z, size of the latent vector z; 32, 64 or 128 recommended.  Unused in "decoder" mode.
    z_size: int = 128
    # M, number of bivariate normal components in the offset mixture (eq. 3); 5..30.
    num_mixture: int = 20
    # N_max, the longest sketch (points, excluding the start token) the model is trained on; the
    # reconstruction loss is divided by it (eq. 9).  Set it to the data set's maximum; 250 for Quick, Draw!.
    max_seq_len: int = 250
    # Recurrent cell of the decoder, and of the encoder unless enc_cell is set: "lstm" (plain LSTM as
    # magenta's LSTMCell: nn.LSTM, cuDNN on GPU; with recurrent_dropout > 0 a `DropoutLSTM` with the
    # same parameters in training) | "layer_norm" (layer-norm LSTM, as magenta's LayerNormLSTMCell) |
    # "hyper" (HyperLSTM with layer norm, as magenta's HyperLSTMCell; on CPU at the default sizes a
    # training step costs ~2.1x the layer_norm one and ~7x the lstm one: README, "Models").
    cell: str = "lstm"
    # Recurrent cell of the encoder when it differs from `cell` (magenta's enc_model); None = `cell`.
    # magenta's large models: enc_cell "layer_norm" with cell "hyper" (`--preset magenta-large`).
    enc_cell: str | None = None
    # Hh, units of the small layer-norm LSTM inside each "hyper" cell (magenta's hyper_num_units: 256);
    # 64..512.  Unused by the other cells.
    hyper_rnn_size: int = 256
    # E, size of the signals z the hyper cell emits per gate term (magenta's hyper_embedding_size: 32);
    # 4..64.  Unused by the other cells.
    hyper_embed_size: int = 32
    # Probability of DROPPING a unit of the LSTM candidate g at each step (recurrent dropout without
    # memory loss, Semeniuta et al. 2016), in [0, 1), both cells, training only.  NOT a keep
    # probability: magenta's recurrent_dropout_prob=0.9 (keep) is recurrent_dropout=0.1 here (a
    # "hyper" cell drops its main cell's g; its hyper cell never drops, as magenta's default), and
    # 0.1 is the default: on aaron_sheep it gave a lower validation loss at equal steps than 0 (README,
    # "Differences from magenta"), at ~1.4x the CPU time per step.  0 runs plain nn.LSTM / cuDNN.
    recurrent_dropout: float = 0.1
    # Probability of dropping decoder inputs ([S_{t-1}, z, ...]) per unit, in [0, 1); reference: off.
    input_dropout: float = 0.0
    # Probability of dropping decoder outputs (before the mixture layer) per unit, in [0, 1); reference: off.
    output_dropout: float = 0.0
    # Number of classes (labels 0..num_classes-1); required > 0 for "class_vae", ignored by other modes.
    num_classes: int = 0
    # Size of the learned class embedding e(y) in "class_vae" mode; 8..128.
    class_embed_size: int = 32

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"SketchRNNConfig.mode={self.mode!r} is not one of {MODES}")
        if self.cell not in CELLS:
            raise ValueError(f"SketchRNNConfig.cell={self.cell!r} is not one of {CELLS}")
        if self.enc_cell is not None and self.enc_cell not in CELLS:
            raise ValueError(f"SketchRNNConfig.enc_cell={self.enc_cell!r} is not one of {CELLS} (or None: the same "
                             f"as cell)")
        for name in ("enc_rnn_size", "dec_rnn_size", "z_size", "num_mixture", "max_seq_len", "class_embed_size",
                     "hyper_rnn_size", "hyper_embed_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"SketchRNNConfig.{name}={value!r} must be an integer >= 1")
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, numbers.Integral) \
                or self.num_classes < 0:
            raise ValueError(f"SketchRNNConfig.num_classes={self.num_classes!r} must be an integer >= 0")
        for name in ("recurrent_dropout", "input_dropout", "output_dropout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= value < 1.0:
                raise ValueError(f"SketchRNNConfig.{name}={value!r} must be a probability of dropping in [0, 1)")
        if self.mode == "class_vae" and self.num_classes < 1:
            raise ValueError(f"SketchRNNConfig.num_classes={self.num_classes!r}: mode 'class_vae' needs "
                             f"num_classes >= 1 (the number of class labels in the data)")

    @property
    def conditional(self) -> bool:
        """True when the model has an encoder and a latent z ("vae", "class_vae")."""
        return self.mode != "decoder"

    @property
    def encoder_cell(self) -> str:
        """The encoder's cell: `enc_cell`, or `cell` when that is None."""
        return self.cell if self.enc_cell is None else self.enc_cell

    @property
    def decoder_state_size(self) -> int:
        """Units of each of the decoder state's h and c: dec_rnn_size (+ hyper_rnn_size for "hyper")."""
        return self.dec_rnn_size + (self.hyper_rnn_size if self.cell == "hyper" else 0)

    @property
    def class_conditional(self) -> bool:
        return self.mode == "class_vae"

    @property
    def output_size(self) -> int:
        """Width of the decoder's output layer: 3 pen logits + 6 parameters per component (eq. 6)."""
        return 3 + 6 * self.num_mixture


class SketchRNN(nn.Module):
    """Sketch-RNN encoder + autoregressive mixture-density decoder (see the module docstring)."""

    def __init__(self, config: SketchRNNConfig):
        super().__init__()
        if not isinstance(config, SketchRNNConfig):
            raise TypeError(f"SketchRNN needs a SketchRNNConfig, got {type(config).__name__}")
        self.config = config
        cfg = config
        embed = cfg.class_embed_size if cfg.class_conditional else 0
        self.class_embed = nn.Embedding(cfg.num_classes, embed) if cfg.class_conditional else None

        # Encoder (sec. 3.1): bidirectional RNN over the real points, h = [h_fw; h_bw] -> mu, sigma_hat.
        if cfg.conditional:
            enc_in = 5 + embed
            if cfg.encoder_cell == "lstm":
                self.encoder_rnn = BiLSTMEncoder(enc_in, cfg.enc_rnn_size, cfg.recurrent_dropout)
            elif cfg.encoder_cell == "hyper":
                self.encoder_rnn = HyperBiLSTMEncoder(enc_in, cfg.enc_rnn_size, cfg.hyper_rnn_size,
                                                      cfg.hyper_embed_size, cfg.recurrent_dropout)
            else:
                self.encoder_rnn = LayerNormBiLSTMEncoder(enc_in, cfg.enc_rnn_size, cfg.recurrent_dropout)
            self.enc_mu = gaussian_linear_(nn.Linear(2 * cfg.enc_rnn_size, cfg.z_size))  # eq. 2, mu
            self.enc_presig = gaussian_linear_(nn.Linear(2 * cfg.enc_rnn_size, cfg.z_size))  # eq. 2, sigma_hat
            # Decoder initial state [h0; c0] = tanh(W_z [z; e(y)] + b_z) (eq. 4); for "hyper" h0 and c0
            # include the hyper cell's units, as magenta's initial_state covers the cell's whole state.
            self.dec_init = gaussian_linear_(nn.Linear(cfg.z_size + embed, 2 * cfg.decoder_state_size))
        else:
            self.encoder_rnn = None
            self.enc_mu = self.enc_presig = self.dec_init = None

        # Decoder (sec. 3.2): input x_t = [S_{t-1}; z; e(y)] (z and e(y) only where present).
        dec_in = 5 + (cfg.z_size if cfg.conditional else 0) + embed
        if cfg.cell == "lstm":
            self.decoder_rnn = init_lstm_like_reference(plain_lstm(dec_in, cfg.dec_rnn_size, cfg.recurrent_dropout))
        elif cfg.cell == "hyper":
            self.decoder_rnn = HyperLSTM(dec_in, cfg.dec_rnn_size, cfg.hyper_rnn_size, cfg.hyper_embed_size,
                                         cfg.recurrent_dropout)
        else:
            self.decoder_rnn = LayerNormLSTM(dec_in, cfg.dec_rnn_size, cfg.recurrent_dropout)
        self.input_dropout = nn.Dropout(cfg.input_dropout)
        self.output_dropout = nn.Dropout(cfg.output_dropout)
        self.output = glorot_linear_(nn.Linear(cfg.dec_rnn_size, cfg.output_size))  # y_t = W_y h_t + b_y (eq. 5)

    # ------------------------------------------------------------------ helpers
    def set_rnn_backend(self, name: str) -> "SketchRNN":
        """How the LSTMs this module runs itself run: "script" (default), "eager" or "compile" (see
        `models/layers.py`): the layer-norm LSTMs, and the plain LSTMs with recurrent dropout in
        training (nn.LSTM runs the rest).  A runtime choice; never saved in a checkpoint."""
        if name not in BACKENDS:  # checked here too: a model without such LSTMs still refuses a bad name
            raise ValueError(f"unknown rnn backend {name!r}; choose from {BACKENDS}")
        for module in self.modules():
            if isinstance(module, OwnRecurrence):
                module.backend = name
        return self

    def _labels(self, labels: Tensor | None, batch_size: int, where: str) -> Tensor | None:
        """Class embeddings (B, E) in class_vae mode (checking the labels), else None."""
        if self.class_embed is None:
            return None
        if labels is None:
            raise ValueError(f"{where}: mode 'class_vae' needs labels (B,) with values in "
                             f"[0, {self.config.num_classes - 1}], got None")
        labels = torch.as_tensor(labels, device=self.class_embed.weight.device).long().reshape(-1)
        if labels.numel() != batch_size:
            raise ValueError(f"{where}: got {labels.numel()} labels for a batch of {batch_size}")
        # Range check on CPU tensors only (on a GPU it would synchronise the device; there an
        # out-of-range label fails inside nn.Embedding instead).
        if labels.device.type == "cpu" and labels.numel():
            lo, hi = int(labels.min()), int(labels.max())
            if lo < 0 or hi >= self.config.num_classes:
                raise ValueError(f"{where}: label {lo if lo < 0 else hi} outside the allowed range "
                                 f"[0, {self.config.num_classes - 1}] (num_classes={self.config.num_classes})")
        return self.class_embed(labels)  # (B, E)

    # ------------------------------------------------------------------ encoder
    def encode(self, strokes: Tensor, lengths: Tensor, labels: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """q(z | x[, y]): (mu, presig) each (B, z_size), presig = log sigma^2 (eq. 2).

        strokes: the batch tensor (B, T+1, 5) WITH the start token in row 0 (it is skipped: the
        encoder reads rows 1..lengths[b]; padding is never read).  lengths: (B,) real points.
        """
        if not self.config.conditional:
            raise ValueError("encode: mode 'decoder' has no encoder (choose mode 'vae' or 'class_vae')")
        if strokes.dim() != 3 or strokes.shape[-1] != 5 or strokes.shape[1] < 2:
            raise ValueError(f"encode: strokes must be a stroke-5 batch (B, T+1, 5) with the start token in "
                             f"row 0, got shape {tuple(strokes.shape)}")
        # Guard against a silent off-by-one (points passed without the start token).  Checked on CPU
        # tensors only: on a GPU the check would synchronise the device at every training step.
        if strokes.device.type == "cpu" and not bool((strokes[:, 0] == strokes.new_tensor(START_TOKEN)).all()):
            raise ValueError("encode: strokes[:, 0] must be the start token (0, 0, 1, 0, 0); pass the batch "
                             "tensor (B, T+1, 5) from collate_stroke5, not the points alone")
        x = strokes[:, 1:]  # (B, T, 5) without the start token
        bsz, steps, _ = x.shape
        lengths_cpu = torch.as_tensor(lengths).detach().to("cpu", torch.int64).reshape(-1)
        if lengths_cpu.numel() != bsz:
            raise ValueError(f"encode: got {lengths_cpu.numel()} lengths for a batch of {bsz}")
        if bsz and (int(lengths_cpu.min()) < 1 or int(lengths_cpu.max()) > steps):
            raise ValueError(f"encode: lengths must be in [1, {steps}] (the batch has {steps} points after the "
                             f"start token), got min {int(lengths_cpu.min())}, max {int(lengths_cpu.max())}")
        emb = self._labels(labels, bsz, "encode")
        if emb is not None:
            x = torch.cat([x, emb.unsqueeze(1).expand(bsz, steps, emb.shape[-1]).to(x.dtype)], dim=-1)  # (B, T, 5+E)
        h_fw, h_bw = self.encoder_rnn(x, lengths_cpu.to(x.device))
        h = torch.cat([h_fw, h_bw], dim=-1)  # (B, 2H)
        return self.enc_mu(h), self.enc_presig(h)  # (B, N_z) x 2

    def sample_z(self, mu: Tensor, presig: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """z = mu + exp(presig / 2) * eps, eps ~ N(0, I) drawn from `generator` (eq. 2)."""
        return reparameterize(mu, presig, generator)

    # ------------------------------------------------------------------ decoder
    def decoder_initial_state(self, z: Tensor | None, labels: Tensor | None = None, *,
                              batch_size: int | None = None) -> State:
        """(h0, c0) each (1, B, decoder_state_size): tanh(W_z [z; e(y)] + b_z) (eq. 4), or zeros in
        "decoder" mode (then `batch_size` is needed, since there is no z)."""
        hidden = self.config.decoder_state_size
        if not self.config.conditional:
            if batch_size is None:
                raise ValueError("decoder_initial_state: mode 'decoder' has no z; pass batch_size=")
            weight = self.output.weight
            zeros = torch.zeros(1, batch_size, hidden, device=weight.device, dtype=weight.dtype)
            return zeros, zeros.clone()
        if z is None:
            raise ValueError(f"decoder_initial_state: mode {self.config.mode!r} needs z (B, {self.config.z_size})")
        emb = self._labels(labels, z.shape[0], "decoder_initial_state")
        zin = z if emb is None else torch.cat([z, emb.to(z.dtype)], dim=-1)  # (B, N_z + E)
        h0, c0 = torch.tanh(self.dec_init(zin)).chunk(2, dim=-1)  # (B, H) x 2
        return h0.unsqueeze(0).contiguous(), c0.unsqueeze(0).contiguous()

    def decode(self, inputs: Tensor, z: Tensor | None = None, labels: Tensor | None = None,
               state: State | None = None) -> tuple[MixtureParams, Tensor, State]:
        """Run the decoder over `inputs` (B, T, 5) = S_0..S_{T-1} (teacher forcing) or one step (T=1).

        z: (B, N_z) in "vae"/"class_vae" mode (ignored, may be None, in "decoder" mode).
        labels: (B,) int in "class_vae" mode.  state: (h, c) each (1, B, decoder_state_size) to continue from, or None
        for `decoder_initial_state(z, labels)`.
        Returns (MixtureParams with fields (B, T, M), pen_logits (B, T, 3), final state).  The
        params describe S_1..S_T (eq. 3).
        """
        bsz, steps, _ = inputs.shape
        if state is None:
            state = self.decoder_initial_state(z, labels, batch_size=bsz)
        parts = [inputs]
        if self.config.conditional:
            if z is None:
                raise ValueError(f"decode: mode {self.config.mode!r} needs z (B, {self.config.z_size})")
            parts.append(z.to(inputs.dtype).unsqueeze(1).expand(bsz, steps, z.shape[-1]))  # (B, T, N_z)
        if self.class_embed is not None:
            if labels is None:
                raise ValueError("decode: mode 'class_vae' needs labels (B,)")
            # No range check here (decode runs at every sampling step); `_labels` checks them in
            # the encoder and the initial state.
            emb = self.class_embed(torch.as_tensor(labels, device=inputs.device).long().reshape(-1))  # (B, E)
            parts.append(emb.to(inputs.dtype).unsqueeze(1).expand(bsz, steps, emb.shape[-1]))
        x = self.input_dropout(torch.cat(parts, dim=-1) if len(parts) > 1 else inputs)  # (B, T, dec_in)
        if isinstance(self.decoder_rnn, nn.LSTM):
            h0, c0 = state
            out, state = self.decoder_rnn(x, (h0.to(x.dtype), c0.to(x.dtype)))  # (B, T, H)
        else:
            out, state = self.decoder_rnn(x, state)  # (B, T, H)
        y = self.output(self.output_dropout(out))  # (B, T, 6M + 3)
        params, pen_logits = self.split_output(y)
        return params, pen_logits, state

    def split_output(self, y: Tensor) -> tuple[MixtureParams, Tensor]:
        """Decoder output (..., 6M+3) -> (MixtureParams (..., M), pen logits (..., 3)) (eq. 6-7).

        Layout as magenta: [pen logits (3) | Pi_hat | mu_x | mu_y | sigma_hat_x | sigma_hat_y | rho_hat]."""
        pen_logits = y[..., :3]  # (..., 3) logits of (p_down, p_up, p_end), q_k in eq. 6 after softmax
        pi_hat, mu_x, mu_y, log_sx, log_sy, rho_hat = y[..., 3:].chunk(6, dim=-1)  # (..., M) x 6
        params = MixtureParams(
            log_pi=F.log_softmax(pi_hat, dim=-1),  # eq. 6-7: Pi = softmax(Pi_hat), kept as log
            mu_x=mu_x,
            mu_y=mu_y,
            log_sigma_x=log_sx,  # eq. 6-7: sigma = exp(sigma_hat); log sigma = sigma_hat
            log_sigma_y=log_sy,
            rho=torch.tanh(rho_hat),  # eq. 6-7: rho = tanh(rho_hat)
        )
        return params, pen_logits

    def step(self, prev_stroke5: Tensor, z: Tensor | None = None, labels: Tensor | None = None,
             state: State | None = None) -> tuple[MixtureParams, Tensor, State]:
        """One decoder step for sampling: prev_stroke5 (B, 5) -> (params (B, 1, M), pen_logits (B, 1, 3),
        state).  Pass the returned state back in; `state=None` starts from `decoder_initial_state`.
        Finished rows can be dropped between steps: `state = tuple(s[:, keep] for s in state)`,
        `z = z[keep]`, `labels = labels[keep]`."""
        return self.decode(prev_stroke5.unsqueeze(1), z, labels, state)

    def start_tokens(self, batch_size: int) -> Tensor:
        """(B, 5) start tokens (0, 0, 1, 0, 0) on the model's device and dtype."""
        weight = self.output.weight
        return torch.tensor(START_TOKEN, device=weight.device, dtype=weight.dtype).expand(batch_size, 5).clone()

    # ------------------------------------------------------------------ full model
    def forward(self, batch_strokes: Tensor, lengths: Tensor, labels: Tensor | None = None,
                generator: torch.Generator | None = None) -> dict:
        """Teacher-forced pass over a batch.

        batch_strokes: (B, T+1, 5) with the start token in row 0; lengths: (B,); labels: (B,) for
        "class_vae".  z is sampled with `generator` (also in eval mode: the loss is then a
        one-sample ELBO estimate; use `encode` + the mean for deterministic reconstructions).
        Returns dict: `params` (MixtureParams (B, T, M)), `pen_logits` (B, T, 3) - predictions for
        `batch_strokes[:, 1:]` - and `mu`, `presig`, `z` ((B, N_z) each; None in "decoder" mode).
        """
        mu = presig = z = None
        if self.config.conditional:
            mu, presig = self.encode(batch_strokes, lengths, labels)
            z = self.sample_z(mu, presig, generator)
        params, pen_logits, _ = self.decode(batch_strokes[:, :-1], z, labels)
        return {"params": params, "pen_logits": pen_logits, "mu": mu, "presig": presig, "z": z}


register_model_kind("sketch_rnn", SketchRNNConfig, SketchRNN)

__all__ = ["SketchRNNConfig", "SketchRNN", "MODES", "CELLS", "START_TOKEN", "State"]
