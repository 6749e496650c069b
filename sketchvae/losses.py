"""Sketch-RNN losses and schedules: masked mixture NLL, pen cross-entropy, KL with a floor, KL
annealing and the learning-rate decay of the reference implementation.

Pure functions of tensors (STYLE.md practice 6).  `gaussian_kl`, `kl_loss`, `KLSchedule` and
`lr_at` are generic and shared with the image VAEs (`sketchvae/image/`).

Reconstruction loss normalisation (Ha & Eck 2017, eq. 9)
--------------------------------------------------------
    L_s = -1/N_max * sum_{i<N_s} log p(dx_i, dy_i)        offset term, real points only
    L_p = -1/N_max * sum_{i<N_max} sum_k p_k,i log q_k,i  pen term, over the padded sequence
    L_R = L_s + L_p,  averaged over the batch.

N_max is the data set's maximum length `max_seq_len`, not the batch's: both sums are divided by
the same constant so that a long sketch weighs more than a short one, exactly as magenta's
`reduce_mean` over a (batch, max_seq_len) grid.  Our batches are padded only to the longest
sketch in the batch (T <= N_max).  We sum over the T steps we have and divide by N_max; the
reference would also add the pen cross-entropy of the N_max - T further end-of-sketch rows
(target p_end, input (0, 0, 0, 0, 1)), which a trained model predicts with near certainty.  So
our L_p is lower than magenta's by that (small, non-negative) amount; the gradients for every
step we do compute are identical.  Unlike magenta we do not add 1e-6 inside the log of the
mixture density (we use log-sum-exp), so L_s can go below zero once densities exceed 1, and
magenta's cap of -log(1e-6) = 13.8 per point does not apply.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor

from sketchvae.distributions import MixtureParams, bivariate_mixture_log_prob, gaussian_kl

__all__ = ["sketch_rnn_loss", "kl_loss", "KLSchedule", "lr_at", "gaussian_kl", "length_mask"]


def length_mask(lengths: Tensor, max_len: int) -> Tensor:
    """Boolean (B, max_len) mask, True at steps t < lengths[b]."""
    steps = torch.arange(max_len, device=lengths.device)
    return steps.unsqueeze(0) < lengths.unsqueeze(1)  # (B, T)


def sketch_rnn_loss(params: MixtureParams, pen_logits: Tensor, targets: Tensor, lengths: Tensor,
                    max_seq_len: int, *, eval_mode: bool = False) -> dict[str, Tensor]:
    """Reconstruction loss L_R = L_s + L_p (Ha & Eck 2017, eq. 9), normalised by N_max = max_seq_len.

    params: MixtureParams, fields (B, T, M) - the decoder output for each target step.
    pen_logits: (B, T, 3) unnormalised pen-state scores (p_down, p_up, p_end).
    targets: (B, T, 5) stroke-5 rows the decoder must predict (the batch tensor without its start
        token, `batch.strokes[:, 1:]`); rows >= lengths[b] are padding (0, 0, 0, 0, 1).
    lengths: (B,) int number of real points per sketch (excluding the start token).
    max_seq_len: N_max, the data set's maximum sketch length (the model config's `max_seq_len`);
        must be >= T.  See the module docstring for why and how padding beyond T is treated.
    eval_mode: False (default): the pen term runs over all T padded steps, so the model learns to
        stop; this is the loss magenta trains *and* validates with.  True: the pen term is also
        masked to the real points (magenta's `is_training=False` graph, `result2 * fs`); the
        end-of-sketch prediction is then not scored at all, so use it only to compare with that.

    Returns a dict of scalar tensors: `recon` = `offset` + `pen`, `offset` = L_s, `pen` = L_p, each
    averaged over the batch.  Computed in float32 whatever the input dtype (bf16 autocast).
    """
    bsz, steps, _ = targets.shape
    if steps > max_seq_len:
        raise ValueError(f"targets have {steps} steps but max_seq_len (N_max) is {max_seq_len}; "
                         f"N_max must be the data set's maximum sketch length, >= every batch's length")
    if pen_logits.shape[:2] != (bsz, steps) or params.log_pi.shape[:2] != (bsz, steps):
        raise ValueError(f"shape mismatch: targets {tuple(targets.shape)}, pen_logits {tuple(pen_logits.shape)}, "
                         f"mixture {tuple(params.log_pi.shape)}; expected (B, T, ...) with B={bsz}, T={steps}")
    params = params.float()
    targets = targets.float()
    mask = length_mask(lengths.to(targets.device), steps).float()  # (B, T) 1 on real points

    # L_s: offset NLL on real points only (eq. 9, first sum); log-space mixture density (eq. 3).
    log_p = bivariate_mixture_log_prob(params, targets[..., 0], targets[..., 1])  # (B, T)
    # torch.where (not a product) so a non-finite value on a padding row can never leak in.
    offset_nll = torch.where(mask > 0, -log_p, torch.zeros_like(log_p))  # (B, T)

    # L_p: categorical cross-entropy over (p_down, p_up, p_end) (eq. 9, second sum).
    pen_nll = -(targets[..., 2:] * F.log_softmax(pen_logits.float(), dim=-1)).sum(-1)  # (B, T)
    if eval_mode:
        pen_nll = pen_nll * mask

    norm = float(bsz * max_seq_len)
    offset = offset_nll.sum() / norm
    pen = pen_nll.sum() / norm
    return {"recon": offset + pen, "offset": offset, "pen": pen}


def kl_loss(mu: Tensor, presig: Tensor, kl_min: float = 0.2) -> Tensor:
    """KL term with a floor, exactly as the Sketch-RNN reference (Ha & Eck 2017, eq. 10 and KL_min).

    kl = -1/2 * mean(1 + presig - mu^2 - exp(presig)) with the mean over the batch AND the z
    dimensions (Kingma & Welling 2014, appendix B, divided by B * N_z), then max(kl, kl_min):
    below `kl_min` (magenta's `kl_tolerance`, per z dimension) the KL is no longer optimised.
    mu, presig: (B, D).  Returns a scalar tensor.  kl_min=0 gives the plain mean KL per dimension.
    """
    kl = gaussian_kl(mu.float(), presig.float()).mean() / mu.shape[-1]
    return torch.clamp(kl, min=kl_min)


@dataclasses.dataclass(frozen=True)
class KLSchedule:
    """KL weight annealing of the Sketch-RNN training objective (Ha & Eck 2017, the eta_step schedule
    that multiplies w_KL in Loss_train = L_R + w_KL * eta_step * max(L_KL, KL_min)):

        eta_step = 1 - (1 - eta_min) * R^step,   weight(step) = w_KL * eta_step,

    so the weight starts at w_KL * eta_min and approaches w_KL.  (magenta's code anneals from an
    absolute start weight instead: w - (w - kl_weight_start) * R^step; with its defaults the two
    differ by less than 0.005 at any step.)
    """

    kl_weight: float = 0.5  # w_KL, the final KL weight; Sketch-RNN uses 0.5 or 1.0 (1.0 = true ELBO)
    eta_min: float = 0.01  # eta_min, fraction of w_KL at step 0, in [0, 1]
    rate: float = 0.99995  # R, annealing rate per optimiser step, in (0, 1]; 1 = no annealing

    def __post_init__(self) -> None:
        if self.kl_weight < 0:
            raise ValueError(f"kl_weight (w_KL) must be >= 0, got {self.kl_weight}")
        if not 0.0 <= self.eta_min <= 1.0:
            raise ValueError(f"eta_min must be in [0, 1], got {self.eta_min}")
        if not 0.0 < self.rate <= 1.0:
            raise ValueError(f"rate (R) must be in (0, 1], got {self.rate}")

    def weight(self, step: int) -> float:
        """The KL weight w_KL * eta_step at optimiser step `step` (0-based)."""
        return self.kl_weight * (1.0 - (1.0 - self.eta_min) * self.rate ** step)


def lr_at(step: int, lr: float = 1e-3, decay: float = 0.9999, min_lr: float = 1e-5) -> float:
    """Learning rate at `step`: (lr - min_lr) * decay^step + min_lr, as the Sketch-RNN reference
    (magenta `sketch_rnn_train.py`: learning_rate 1e-3, decay_rate 0.9999, min_learning_rate 1e-5)."""
    return (lr - min_lr) * decay ** step + min_lr
