"""Generation with a trained Sketch-RNN: batched sampling, reconstruction, interpolation, completion.

    sampler = load("runs/sheep/best.pt")              # model (eval mode) + scale factor + class names
    sketches = sample(sampler, 64, temperature=0.4, seed=0)
    mu, sigma = encode(sampler, sketches[:2])
    zs = interpolate(mu[0], mu[1], steps=10)          # slerp (default) or lerp
    strip = sample(sampler, 10, z=zs, greedy=True)
    endings = complete(sampler, partial, n=8)
    result = analogy(sampler, a, b, c, n=4)           # decode z_a - z_b + z_c

Every function takes the loaded `Sampler` (or a bare `SketchRNN`, then scale factor 1 and no class
names).  Sketches go in and come out as stroke-3 arrays (n, 3) = (dx, dy, pen_lifted) in the
ORIGINAL units of the data (offsets are divided by the checkpoint's `scale_factor` before the model
sees them and multiplied by it afterwards); outputs are float32 and end with a pen lift.  They come as
`Drawings` (`sketchvae.drawing`): lists of `Drawing` arrays that draw themselves in Jupyter.

Batched sampling
----------------
All sketches of a call advance together, one decoder step at a time (`SketchRNN.step`).  When a
sketch draws the end-of-sketch pen state it is dropped from the batch: its rows of the LSTM state,
of z and of the labels are indexed away, so finished sketches cost no more work; the loop stops when
every sketch has ended or after `max_len` points (a sketch that never ends keeps its `max_len`
points).  Very large n is processed in chunks of `chunk_size` (4096) sketches.

Several calls at once, each bit for bit as alone: `sketchvae.continuous` (what `sketchvae serve` does
with concurrent requests), from the calls primed here (`_prime_completion`, `_prime_sample`).

Temperature (Ha & Eck 2017, eq. 8; the "paper" convention of `sketchvae.distributions`)
---------------------------------------------------------------------------------------
At every step, with tau > 0:

    component k ~ softmax(log_pi / tau)                 (mixture weights, logits divided by tau)
    (dx, dy)    ~ N(mu_k, Sigma_k * tau)                (sigma_x, sigma_y multiplied by sqrt(tau), rho kept)
    pen state   ~ softmax(pen_logits / tau)             (p_down, p_up, p_end)

tau -> 0 approaches the most likely choices; tau = 1 samples the model's own distribution.
`convention="magenta"` multiplies the sigmas by tau instead of sqrt(tau), as magenta's sampler does;
`convention="magenta-js"` softmaxes pi and the pen states at 0.5 + 0.5 * tau, as @magenta/sketch does
(the table of all three is in `sketchvae.distributions`).  `convention=None` (the default of every
function here) means the checkpoint's own: `Sampler.convention`, read from the checkpoint's
`extra["temperature_convention"]` ("paper" unless the producer stored another; models converted from
magenta-js store "magenta-js").  `greedy=True` takes the argmax component, its mean and the argmax
pen state (no randomness; the temperature is then not used).

Random draws
------------
Each step uses, per sketch, two uniforms (component, pen state) and two standard normals (offset)
drawn by inverse-CDF / Cholesky from a `torch.Generator` seeded with `seed`.  The draws for step t
are made for the whole chunk at once and indexed by the sketches still alive, so a sketch's draws do
not depend on which other sketches have finished: the batched loop gives the same sketches as the
one-at-a-time loop `sample_sequential` fed the same draws (`noise=`; tested).  In "vae" / "class_vae"
mode, z ~ N(0, I) (the prior) is drawn first from the same generator unless `z` is given.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from sketchvae.checkpoint import CheckpointError, build_model, load_checkpoint, resolve_checkpoint
from sketchvae.distributions import TEMPERATURE_CONVENTIONS, check_convention, temperature_scales
from sketchvae.drawing import Drawings
from sketchvae.models.sketch_rnn import SketchRNN
from sketchvae.strokes import model_input, to_stroke5

DEFAULT_CHUNK = 4096
CONVENTIONS = TEMPERATURE_CONVENTIONS  # ("paper", "magenta", "magenta-js"), see sketchvae.distributions
INTERPOLATIONS = ("slerp", "lerp")
Z_SOURCES = ("encode", "prior")

# noise(step, rows) -> (len(rows), 4): u_component, u_pen (uniform [0, 1)), e1, e2 (standard normal)
NoiseFn = Callable[[int, Tensor], Tensor]


# ------------------------------------------------------------------------------------------ loading
@dataclasses.dataclass
class Sampler:
    """A Sketch-RNN ready to draw: the model (eval mode) with what is needed to use it."""

    model: SketchRNN
    scale_factor: float = 1.0  # offsets were divided by this for training (std of the training offsets)
    class_names: list[str] = dataclasses.field(default_factory=list)
    path: Path | None = None
    # Temperature convention used when a call passes convention=None: the checkpoint's
    # extra["temperature_convention"] ("paper" by default; "magenta-js" for converted Magenta models).
    convention: str = "paper"

    @property
    def config(self):
        return self.model.config

    @property
    def device(self) -> torch.device:
        return self.model.output.weight.device

    def sample(self, n: int, **kw) -> Drawings:
        return sample(self, n, **kw)

    def encode(self, sketches, **kw):
        return encode(self, sketches, **kw)

    def reconstruct(self, sketches, **kw):
        return reconstruct(self, sketches, **kw)

    def complete(self, partial, **kw):
        return complete(self, partial, **kw)

    def interpolation_strip(self, a, b, **kw):
        return interpolation_strip(self, a, b, **kw)

    def mean_latent(self, sketches, **kw):
        return mean_latent(self, sketches, **kw)

    def analogy(self, a, b, c, **kw):
        return analogy(self, a, b, c, **kw)


def load(path, device="cpu") -> Sampler:
    """Load a Sketch-RNN checkpoint into a `Sampler` (model in eval mode on `device`).

    `path`: a checkpoint file, a run folder (its best.pt), or the name of a shipped checkpoint
    ("sheep", "multiclass", "magenta/NAME") when no file of that name exists here, so
    `load("sheep")` works from any directory.

    Raises `CheckpointError` (a ValueError naming the file) when the file is missing, truncated,
    corrupt, not a sketchvae checkpoint, or holds another kind of model.
    """
    path = resolve_checkpoint(path)
    return sampler_from_checkpoint(load_checkpoint(path), path, device)


def sampler_from_checkpoint(ckpt: dict, path, device="cpu") -> Sampler:
    """`load` for a checkpoint already read with `load_checkpoint` (`path` names it in errors)."""
    from sketchvae.runtime import resolve_device

    if ckpt["kind"] != "sketch_rnn":
        raise CheckpointError(f"{path}: holds a {ckpt['kind']!r} model, not a Sketch-RNN ('sketch_rnn')")
    model = build_model(ckpt, path)
    scale = ckpt["scale_factor"]
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not math.isfinite(scale) or scale <= 0:
        raise CheckpointError(f"{path}: scale_factor={scale!r} must be a finite number > 0")
    names = ckpt["class_names"]
    if not isinstance(names, (list, tuple)) or not all(isinstance(c, str) for c in names):
        raise CheckpointError(f"{path}: class_names must be a list of strings, got {names!r}")
    cfg = model.config
    if cfg.class_conditional and names and len(names) != cfg.num_classes:
        raise CheckpointError(f"{path}: {len(names)} class_names for a model with num_classes={cfg.num_classes}")
    convention = ckpt["extra"].get("temperature_convention", "paper") if isinstance(ckpt["extra"], dict) else "paper"
    if convention not in CONVENTIONS:
        raise CheckpointError(f"{path}: extra['temperature_convention']={convention!r} is not one of {CONVENTIONS}")
    model.to(resolve_device(str(device)) if isinstance(device, str) else device)
    model.eval()
    return Sampler(model, float(scale), list(names), path, convention)


def _as_sampler(obj) -> Sampler:
    if isinstance(obj, Sampler):
        return obj
    if isinstance(obj, SketchRNN):
        return Sampler(obj)
    raise TypeError(f"expected a Sampler (from sketchvae.sample.load) or a SketchRNN, got {type(obj).__name__}")


# ------------------------------------------------------------------------------------------ checks
def _check_n(n, what: str = "n") -> int:
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"{what}={n!r} must be an integer >= 1")
    return int(n)


def _check_tau(temperature) -> float:
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real) \
            or not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"temperature={temperature!r} must be a number > 0 (use greedy=True for the most "
                         f"likely choices)")
    return float(temperature)


def class_index(sampler, name) -> int:
    """The label of class `name` (a class name or an int index); ValueError listing the classes."""
    sampler = _as_sampler(sampler)
    cfg = sampler.config
    if not cfg.class_conditional:
        raise ValueError(f"this model (mode {cfg.mode!r}) is not class-conditional; a class cannot be chosen"
                         + (f" (it was trained on: {', '.join(sampler.class_names)})" if sampler.class_names else ""))
    names = sampler.class_names or [str(i) for i in range(cfg.num_classes)]
    if isinstance(name, (numbers.Integral, np.integer)) and not isinstance(name, bool):
        if 0 <= int(name) < cfg.num_classes:
            return int(name)
        raise ValueError(f"class index {name} outside [0, {cfg.num_classes - 1}]; classes: {', '.join(names)}")
    if isinstance(name, str):
        if name in names:
            return names.index(name)
        if name.strip().isdigit() and not sampler.class_names:
            return class_index(sampler, int(name))
        raise ValueError(f"unknown class {name!r}; this model's classes: {', '.join(names)}")
    raise ValueError(f"a class must be a name or an index, got {name!r}")


def _labels(sampler: Sampler, classes, n: int, *, default_cycle: bool) -> Tensor | None:
    """(n,) int64 labels on the model's device for class_vae, else None (classes must be None)."""
    cfg = sampler.config
    if not cfg.class_conditional:
        if classes is not None:
            class_index(sampler, classes if isinstance(classes, (str, int)) else 0)  # raises the clear error
        return None
    if classes is None:
        if not default_cycle:
            names = sampler.class_names or [str(i) for i in range(cfg.num_classes)]
            raise ValueError(f"mode 'class_vae' needs a class; this model's classes: {', '.join(names)}")
        idx = [i % cfg.num_classes for i in range(n)]
    elif isinstance(classes, (str, numbers.Integral, np.integer)):
        idx = [class_index(sampler, classes)] * n
    else:
        classes = list(classes)
        if len(classes) == 1:
            classes = classes * n
        if len(classes) != n:
            raise ValueError(f"got {len(classes)} classes for {n} sketches (give one class or one per sketch)")
        idx = [class_index(sampler, c) for c in classes]
    return torch.tensor(idx, dtype=torch.int64, device=sampler.device)


def _as_sketch_list(sketches) -> list[np.ndarray]:
    if isinstance(sketches, np.ndarray) and sketches.ndim == 2:
        sketches = [sketches]
    out = []
    for k, s in enumerate(sketches):
        s = np.asarray(s, dtype=np.float32)
        if s.ndim != 2 or s.shape[1] != 3 or len(s) < 1:
            raise ValueError(f"sketch {k}: expected a non-empty stroke-3 array (n, 3), got shape {s.shape}")
        if not np.isfinite(s).all():
            raise ValueError(f"sketch {k}: has non-finite offsets")
        out.append(s)
    if not out:
        raise ValueError("no sketches given")
    return out


def _convention(sampler: Sampler, convention: str | None) -> str:
    """The convention a call uses: the given one, or the sampler's default; ValueError listing them."""
    return check_convention(sampler.convention if convention is None else convention)


def _generator(seed, device: torch.device) -> torch.Generator:
    gen = torch.Generator(device=device)
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(int(seed))
    return gen


# ------------------------------------------------------------------------------------------ one step
def draw(params, pen_logits: Tensor, noise: Tensor | None, temperature: float = 1.0, *, greedy: bool = False,
         convention: str = "paper") -> Tensor:
    """One sampling step from given random numbers: fields (B, M), pen_logits (B, 3), noise (B, 4)
    (u_component, u_pen, e1, e2) -> stroke-5 rows (B, 5) (one-hot pen).

    Inverse-CDF choice of the component and pen state, then the Cholesky pair for (dx, dy); the
    temperature convention is the module docstring's.  greedy=True ignores `noise` (may be None).
    """
    if greedy:
        k = params.log_pi.argmax(-1, keepdim=True)  # (B, 1)
        pen = pen_logits.argmax(-1)  # (B,)
        dx = params.mu_x.gather(-1, k).squeeze(-1)
        dy = params.mu_y.gather(-1, k).squeeze(-1)
    else:
        t_discrete, scale = temperature_scales(float(temperature), convention)
        noise = noise.to(params.mu_x.dtype)
        k = _inverse_cdf(params.log_pi / t_discrete, noise[:, 0]).unsqueeze(-1)  # (B, 1)
        pen = _inverse_cdf(pen_logits / t_discrete, noise[:, 1])  # (B,)
        mu_x, mu_y, log_sx, log_sy, rho = (p.gather(-1, k).squeeze(-1) for p in params[1:])
        sx = torch.exp(log_sx) * scale
        sy = torch.exp(log_sy) * scale
        e1, e2 = noise[:, 2], noise[:, 3]
        dx = mu_x + sx * e1
        dy = mu_y + sy * (rho * e1 + torch.sqrt((1.0 - rho.square()).clamp(min=0.0)) * e2)
    row = torch.zeros(dx.shape[0], 5, dtype=dx.dtype, device=dx.device)
    row[:, 0] = dx
    row[:, 1] = dy
    row.scatter_(1, (pen + 2).unsqueeze(-1), 1.0)
    return row


def _inverse_cdf(logits: Tensor, u: Tensor) -> Tensor:
    """Index drawn from softmax(logits) (B, K) with uniforms u (B,): first k with cdf_k > u."""
    cdf = torch.softmax(logits.float(), dim=-1).cumsum(-1)  # (B, K)
    k = (cdf <= (u.float() * cdf[:, -1]).unsqueeze(-1)).sum(-1)
    return k.clamp(max=logits.shape[-1] - 1)


def _stream_noise(gen: torch.Generator, n: int, device, dtype) -> NoiseFn:
    """Draws for the whole chunk at each step, indexed by the rows still alive."""

    def noise(step: int, rows: Tensor) -> Tensor:
        u = torch.rand(n, 2, generator=gen, device=device, dtype=dtype)
        e = torch.randn(n, 2, generator=gen, device=device, dtype=dtype)
        return torch.cat([u, e], dim=1)[rows]

    return noise


# ------------------------------------------------------------------------------------------ the loop
class _ConstantInputLSTMStep:
    """One decoder step of a plain-LSTM decoder with the inputs that never change during a sketch (z,
    the class embedding) multiplied by their input weights once, not at every step.

    At the default size that is 128 (+ embedding) of the 645 input+hidden columns of the gate matmul:
    ~20 % of a step's work in the batched loop.  Same function as `SketchRNN.step` in eval mode (dropout
    off); `available` says whether a model qualifies (nn.LSTM, one layer, with z or labels)."""

    def __init__(self, model: SketchRNN, z: Tensor | None, labels: Tensor | None):
        rnn = model.decoder_rnn
        dtype = model.output.weight.dtype
        parts = []
        if model.config.conditional:
            parts.append(z.to(dtype))
        if model.class_embed is not None:
            parts.append(model.class_embed(labels.long().reshape(-1)).to(dtype))
        w_ih = rnn.weight_ih_l0  # (4H, 5 + N_z + E), gate order i, f, g, o
        self.bias = torch.addmm(rnn.bias_ih_l0 + rnn.bias_hh_l0, torch.cat(parts, dim=-1), w_ih[:, 5:].t())  # (B, 4H)
        self.w_x = w_ih[:, :5].t()  # (5, 4H)
        self.w_h = rnn.weight_hh_l0.t()  # (H, 4H)
        self.model = model

    @staticmethod
    def available(model: SketchRNN, constant_inputs: bool = True) -> bool:
        rnn = model.decoder_rnn
        return (isinstance(rnn, nn.LSTM) and rnn.num_layers == 1 and rnn.bias and not rnn.bidirectional
                and rnn.proj_size == 0 and not model.training
                and (model.config.conditional or model.class_embed is not None or not constant_inputs))

    def keep(self, mask: Tensor) -> None:
        self.bias = self.bias[mask]

    def __call__(self, prev: Tensor, state):
        h, c = state  # (1, B, H) each
        gates = torch.addmm(self.bias, prev, self.w_x).addmm_(h[0], self.w_h)  # (B, 4H)
        i, f, g, o = gates.chunk(4, dim=1)
        c1 = torch.sigmoid(f) * c[0] + torch.sigmoid(i) * torch.tanh(g)
        h1 = torch.sigmoid(o) * torch.tanh(c1)
        params, pen_logits = self.model.split_output(self.model.output(h1).unsqueeze(1))
        return params, pen_logits, (h1.unsqueeze(0), c1.unsqueeze(0))


class _Settings(NamedTuple):
    """How a call's rows are drawn (temperature, greedy, convention)."""
    temperature: float
    greedy: bool
    convention: str


@torch.inference_mode()
def _run(model: SketchRNN, prev: Tensor, state, z: Tensor | None, labels: Tensor | None, steps: int,
         noise: NoiseFn | None, temperature: float, greedy: bool, convention: str,
         progress: Callable[[int], None] | None) -> tuple[np.ndarray, np.ndarray]:
    """Batched decoding of B sketches from `prev` (B, 5) and `state`; returns (rows (B, steps, 3)
    normalised stroke-3 rows, lengths (B,)) on the CPU.  Finished rows are dropped every step."""
    bsz = prev.shape[0]
    device = prev.device
    out = torch.zeros(bsz, steps, 3, dtype=prev.dtype, device=device)
    lengths = torch.full((bsz,), steps, dtype=torch.int64, device=device)
    alive = torch.arange(bsz, device=device)
    fast = _ConstantInputLSTMStep(model, z, labels) if _ConstantInputLSTMStep.available(model) else None
    for t in range(steps):
        if fast is not None:
            params, pen_logits, state = fast(prev, state)
        else:
            params, pen_logits, state = model.step(prev, z, labels, state)
        params = params.select((slice(None), 0))  # fields (b, M)
        row = draw(params, pen_logits[:, 0], None if greedy else noise(t, alive), temperature,
                   greedy=greedy, convention=convention)  # (b, 5)
        out[alive, t, 0:2] = row[:, 0:2]
        out[alive, t, 2] = row[:, 3]
        ended = row[:, 4] > 0.5
        if bool(ended.any()):  # one host sync per step
            lengths[alive[ended]] = t
            keep = ~ended
            if progress is not None:
                progress(int(ended.sum()))
            if not bool(keep.any()):
                break
            alive, row = alive[keep], row[keep]
            state = tuple(s[:, keep] for s in state)
            if fast is not None:
                fast.keep(keep)
            z = None if z is None else z[keep]
            labels = None if labels is None else labels[keep]
        prev = row
    else:
        if progress is not None:
            progress(int(alive.numel()))
    return out.float().cpu().numpy(), lengths.cpu().numpy()


def _finish(rows: np.ndarray, lengths: np.ndarray, scale: float) -> list[np.ndarray]:
    """Normalised (B, T, 3) rows + lengths -> stroke-3 arrays in original units, ending in a pen lift."""
    result = []
    for r, n in zip(rows, lengths.tolist()):
        s3 = r[:n].astype(np.float32, copy=True)
        s3[:, 0:2] *= scale
        if n:
            s3[-1, 2] = 1.0
        result.append(s3)
    return result


def _prepare_z(sampler: Sampler, z, n: int, gen: torch.Generator | None) -> Tensor | None:
    cfg = sampler.config
    device, dtype = sampler.device, sampler.model.output.weight.dtype
    if not cfg.conditional:
        if z is not None:
            raise ValueError("this model (mode 'decoder') has no latent z; leave z=None")
        return None
    if z is None:
        return torch.randn(n, cfg.z_size, generator=gen, device=device, dtype=dtype)  # z ~ N(0, I), the prior
    z = torch.as_tensor(np.asarray(z) if not isinstance(z, Tensor) else z).to(device, dtype)
    if z.dim() == 1:
        z = z.unsqueeze(0)
    if z.dim() != 2 or z.shape[1] != cfg.z_size:
        raise ValueError(f"z must have shape ({n}, {cfg.z_size}) or ({cfg.z_size},), got {tuple(z.shape)}")
    if z.shape[0] == 1 and n > 1:
        z = z.expand(n, cfg.z_size)
    if z.shape[0] != n:
        raise ValueError(f"got {z.shape[0]} latent vectors for n={n} sketches")
    return z


class _Draws(NamedTuple):
    """What `sample` and `sample_sequential` share after checking their arguments."""
    sampler: Sampler
    n: int
    temperature: float
    max_len: int
    gen: torch.Generator | None
    z: Tensor | None  # (n, z_size) or None
    labels: Tensor | None  # (n,) or None
    noise: Tensor | None  # (max_len, n, 4) or None
    convention: str  # the temperature convention (the sampler's default resolved)


def _prepare_draws(model, n, temperature, z, classes, greedy, max_len, seed, convention, noise) -> _Draws:
    sampler = _as_sampler(model)
    n = _check_n(n)
    temperature = _check_tau(temperature) if not greedy else (temperature if temperature else 1.0)
    convention = _convention(sampler, convention)
    max_len = sampler.config.max_seq_len if max_len is None else _check_n(max_len, "max_len")
    dev = sampler.device
    sampler.model.eval()
    gen = _generator(seed, dev)
    with torch.inference_mode():
        z_all = _prepare_z(sampler, z, n, gen)
        labels_all = _labels(sampler, classes, n, default_cycle=True)
    if noise is not None:
        noise = torch.as_tensor(noise).to(dev, sampler.model.output.weight.dtype)
        if noise.shape != (max_len, n, 4):
            raise ValueError(f"noise must have shape ({max_len}, {n}, 4), got {tuple(noise.shape)}")
    return _Draws(sampler, n, temperature, max_len, gen, z_all, labels_all, noise, convention)


def sample(model, n: int = 1, temperature: float = 0.4, z=None, classes=None, greedy: bool = False,
           max_len: int | None = None, seed: int | None = None, device=None, *, chunk_size: int = DEFAULT_CHUNK,
           convention: str | None = None, progress: Callable[[int], None] | None = None,
           noise: Tensor | None = None) -> Drawings:
    """Draw `n` sketches (batched); returns n stroke-3 float32 arrays in original units.

    model: a `Sampler` from `load` (or a bare SketchRNN: scale factor 1).
    temperature: tau > 0, see the module docstring (ignored when greedy).
    convention: "paper" | "magenta" | "magenta-js" (module docstring); None: the sampler's own
        (`Sampler.convention`, from the checkpoint).
    z: (n, z_size) or (z_size,) latent vectors for "vae"/"class_vae" (default: z ~ N(0, I) from the
        seeded generator); must be None for "decoder" mode.
    classes: "class_vae" only: one class name / index for all, or one per sketch; None cycles through
        the classes (sketch i gets class i mod num_classes).  Unknown names: ValueError listing them.
    greedy: argmax component, its mean and argmax pen state (deterministic given z).
    max_len: most points per sketch (default config.max_seq_len); a sketch that has not drawn the
        end state by then is cut there.
    seed: seeds the generator for z and every draw (None: nondeterministic).
    device: None or the model's device (the model is placed by `load(path, device)`).
    chunk_size: sketches decoded together at most (memory bound for very large n).
    progress: called with the number of sketches finished at each step that finishes some.
    noise: (max_len, n, 4) pre-drawn random numbers (u_component, u_pen, e1, e2) instead of the
        generator's (for testing against `sample_sequential`).
    """
    chunk_size = _check_n(chunk_size, "chunk_size")
    sampler, n, temperature, max_len, gen, z_all, labels_all, noise, convention = _prepare_draws(
        model, n, temperature, z, classes, greedy, max_len, seed, convention, noise)
    dev = sampler.device
    if device is not None and torch.device(device) != dev and not (torch.device(device).type == dev.type == "cuda"
                                                                    and torch.device(device).index is None):
        raise ValueError(f"the model is on {dev}, not {device}; load it there with load(path, device={str(device)!r})")
    model_ = sampler.model
    dtype = model_.output.weight.dtype
    result: list[np.ndarray] = []
    for lo in range(0, n, chunk_size):
        hi = min(n, lo + chunk_size)
        b = hi - lo
        if noise is not None:
            chunk_noise = noise[:, lo:hi]
            noise_fn = lambda t, rows, cn=chunk_noise: cn[t][rows]  # noqa: E731
        else:
            noise_fn = _stream_noise(gen, b, dev, dtype)
        z_c = None if z_all is None else z_all[lo:hi]
        lab_c = None if labels_all is None else labels_all[lo:hi]
        with torch.inference_mode():
            state = model_.decoder_initial_state(z_c, lab_c, batch_size=b)
            rows, lengths = _run(model_, model_.start_tokens(b), state, z_c, lab_c, max_len, noise_fn,
                                 temperature, greedy, convention, progress)
        result.extend(_finish(rows, lengths, sampler.scale_factor))
    return Drawings(result)


def sample_sequential(model, n: int = 1, temperature: float = 0.4, z=None, classes=None, greedy: bool = False,
                      max_len: int | None = None, seed: int | None = None, *, convention: str | None = None,
                      noise: Tensor | None = None) -> Drawings:
    """The one-at-a-time reference: sketch after sketch, batch size 1, as magenta's `sample()` and
    most ports do.  Same arguments and draws as `sample` (given the same `noise`, or the same seed
    for z), much slower for large n; used by the tests and `scripts/bench_sample.py`."""
    sampler, n, temperature, max_len, gen, z_all, labels_all, noise, convention = _prepare_draws(
        model, n, temperature, z, classes, greedy, max_len, seed, convention, noise)
    dev = sampler.device
    model_ = sampler.model
    dtype = model_.output.weight.dtype
    result = []
    one = torch.zeros(1, dtype=torch.int64, device=dev)
    for i in range(n):
        if noise is not None:
            noise_fn = lambda t, rows, i=i: noise[t, i:i + 1]  # noqa: E731
        else:
            noise_fn = _stream_noise(gen, 1, dev, dtype)
        z_i = None if z_all is None else z_all[i:i + 1]
        lab_i = None if labels_all is None else labels_all[i:i + 1]
        with torch.inference_mode():
            state = model_.decoder_initial_state(z_i, lab_i, batch_size=1)
            prev = model_.start_tokens(1)
            rows = torch.zeros(1, max_len, 3, dtype=dtype, device=dev)
            length = max_len
            for t in range(max_len):
                params, pen_logits, state = model_.step(prev, z_i, lab_i, state)
                row = draw(params.select((slice(None), 0)), pen_logits[:, 0],
                           None if greedy else noise_fn(t, one), temperature, greedy=greedy, convention=convention)
                if bool(row[0, 4] > 0.5):
                    length = t
                    break
                rows[0, t, 0:2] = row[0, 0:2]
                rows[0, t, 2] = row[0, 3]
                prev = row
        result.extend(_finish(rows.float().cpu().numpy(), np.array([length]), sampler.scale_factor))
    return Drawings(result)


# ------------------------------------------------------------------------------------------ latent space
def _batch(sampler: Sampler, sketches: list[np.ndarray]):
    from sketchvae.data.batching import collate_stroke5

    items = []
    for s in sketches:
        s = model_input(s, sampler.scale_factor)
        s[-1, 2] = 1.0
        items.append((s, 0))
    batch = collate_stroke5(items)
    dtype = sampler.model.output.weight.dtype
    return batch.strokes.to(sampler.device, dtype), batch.lengths


def encode(model, sketches, classes=None) -> tuple[Tensor, Tensor]:
    """q(z | x[, y]) of stroke-3 sketches (original units): (mu, sigma) each (len(sketches), z_size)
    on the CPU, sigma = exp(presig / 2).  "class_vae" needs `classes` (one or one per sketch)."""
    sampler = _as_sampler(model)
    if not sampler.config.conditional:
        raise ValueError("this model (mode 'decoder') has no encoder; use a 'vae' or 'class_vae' checkpoint")
    sketches = _as_sketch_list(sketches)
    labels = _labels(sampler, classes, len(sketches), default_cycle=False)
    strokes, lengths = _batch(sampler, sketches)
    with torch.inference_mode():
        mu, presig = sampler.model.encode(strokes, lengths, labels)
    return mu.float().cpu(), torch.exp(0.5 * presig).float().cpu()


def mean_latent(model, sketches, classes=None) -> Tensor:
    """Mean of the posterior means mu over `sketches`: a (z_size,) vector (e.g. a "typical cat")."""
    mu, _ = encode(model, sketches, classes)
    return mu.mean(dim=0)


def reconstruct(model, sketches, n: int = 1, temperature: float = 0.4, *, classes=None, greedy: bool = False,
                posterior: str = "mean", seed: int | None = None, max_len: int | None = None,
                convention: str | None = None, as_class=None) -> Drawings:
    """Encode each sketch and decode it `n` times: a list (per input sketch) of n stroke-3 arrays.

    posterior: "mean" decodes z = mu (the variety of the n comes from the decoder's sampling);
    "sample" draws z = mu + sigma * eps per reconstruction.  classes: the labels for "class_vae"
    (used to encode, and to decode unless `as_class` is given).
    as_class: "class_vae" only: decode every z with this class instead (a name or index): the
    sketch, encoded with its own label, redrawn as another class (ValueError for other modes).
    """
    sampler = _as_sampler(model)
    n = _check_n(n)
    if not greedy:
        _check_tau(temperature)
    if posterior not in ("mean", "sample"):
        raise ValueError(f"unknown posterior {posterior!r}; choose from ('mean', 'sample')")
    sketches = _as_sketch_list(sketches)
    mu, sigma = encode(sampler, sketches, classes)
    z = mu.repeat_interleave(n, dim=0)  # (S * n, D)
    if posterior == "sample":
        gen = torch.Generator()
        if seed is None:
            gen.seed()
        else:
            gen.manual_seed(int(seed))
        z = z + sigma.repeat_interleave(n, dim=0) * torch.randn(z.shape, generator=gen)
    if as_class is not None:
        lab = [class_index(sampler, as_class)] * (len(sketches) * n)  # raises "not class-conditional"
    else:
        labels = _labels(sampler, classes, len(sketches), default_cycle=False)
        lab = None if labels is None else labels.repeat_interleave(n).tolist()
    flat = sample(sampler, len(sketches) * n, temperature, z=z, classes=lab, greedy=greedy, max_len=max_len,
                  seed=seed, convention=convention)
    return Drawings(flat[i * n:(i + 1) * n] for i in range(len(sketches)))  # a row per input sketch


def analogy(model, a, b, c, n: int = 1, temperature: float = 0.4, *, classes=None, decode_class=None,
            greedy: bool = False, seed: int | None = None, max_len: int | None = None,
            convention: str | None = None) -> Drawings:
    """Latent vector arithmetic (as in Ha & Eck 2017's analogy figures): decode z = z_a - z_b + z_c `n` times.

    a, b, c: stroke-3 sketches (original units); z_x is the posterior mean of x, so "a is to b as
    the result is to c": what a has and b lacks, added to c.  Returns n stroke-3 arrays.
    classes ("class_vae"): the labels to encode a, b, c with (one for all, or three); decode_class:
    the label to decode with (default: c's).  Other modes: both must be None.
    """
    sampler = _as_sampler(model)
    n = _check_n(n)
    sketches = _as_sketch_list([a, b, c])
    if not sampler.config.conditional:
        raise ValueError("this model (mode 'decoder') has no encoder and no latent space for an analogy; use a "
                         "'vae' or 'class_vae' checkpoint")
    if classes is not None and not isinstance(classes, (str, numbers.Integral, np.integer)):
        classes = list(classes)
    labels = _labels(sampler, classes, 3, default_cycle=False)
    mu, _ = encode(sampler, sketches, None if labels is None else labels.tolist())
    z = mu[0] - mu[1] + mu[2]  # (D,)
    if decode_class is not None:
        dec = class_index(sampler, decode_class)  # raises "not class-conditional" for other modes
    else:
        dec = None if labels is None else int(labels[2])
    return sample(sampler, n, temperature, z=z, classes=None if dec is None else [dec] * n, greedy=greedy,
                  max_len=max_len, seed=seed, convention=convention)


def interpolate(z_a, z_b, steps: int = 10, method: str = "slerp") -> Tensor:
    """`steps` latent vectors from z_a to z_b inclusive: (steps, D) float32.

    "slerp": spherical interpolation (White 2016, as the paper's figures), sin((1-t) w) / sin w * z_a
    + sin(t w) / sin w * z_b with w the angle between them (lerp when they are almost parallel);
    "lerp": (1 - t) z_a + t z_b.
    """
    if method not in INTERPOLATIONS:
        raise ValueError(f"unknown interpolation method {method!r}; choose from {INTERPOLATIONS}")
    steps = _check_n(steps, "steps")
    a = torch.as_tensor(np.asarray(z_a) if not isinstance(z_a, Tensor) else z_a).detach().double().reshape(-1).cpu()
    b = torch.as_tensor(np.asarray(z_b) if not isinstance(z_b, Tensor) else z_b).detach().double().reshape(-1).cpu()
    if a.shape != b.shape:
        raise ValueError(f"z_a and z_b have different sizes: {a.numel()} and {b.numel()}")
    t = torch.linspace(0.0, 1.0, steps, dtype=torch.float64).unsqueeze(1) if steps > 1 \
        else torch.zeros(1, 1, dtype=torch.float64)
    if method == "slerp":
        na, nb = a.norm(), b.norm()
        if na > 0 and nb > 0:
            cos = torch.clamp(torch.dot(a / na, b / nb), -1.0, 1.0)
            omega = torch.arccos(cos)
            so = torch.sin(omega)
            if float(so) > 1e-6:
                out = (torch.sin((1.0 - t) * omega) / so) * a + (torch.sin(t * omega) / so) * b
                return out.float()
    return ((1.0 - t) * a + t * b).float()


def interpolation_strip(model, a, b, steps: int = 10, temperature: float = 0.4, *, method: str = "slerp",
                        classes=None, greedy: bool = False, seed: int | None = None, max_len: int | None = None,
                        convention: str | None = None) -> Drawings:
    """`steps` sketches decoded along the path (`interpolate`) between the posterior means of the
    stroke-3 sketches a and b, with the same random draws at every step, so that only z changes along
    the strip.  classes ("class_vae"): (class of a, class of b); the first half of the strip is
    decoded as a's class, the rest as b's."""
    sampler = _as_sampler(model)
    mu, _ = encode(sampler, [a, b], classes)
    zs = interpolate(mu[0], mu[1], steps, method)
    length = sampler.config.max_seq_len if max_len is None else _check_n(max_len, "max_len")
    gen = _generator(seed, torch.device("cpu"))
    one = torch.cat([torch.rand(length, 1, 2, generator=gen), torch.randn(length, 1, 2, generator=gen)], -1)
    halves = None if classes is None else [classes[0] if k < steps / 2 else classes[1] for k in range(steps)]
    strip = sample(sampler, steps, temperature, z=zs, classes=halves, greedy=greedy, max_len=length,
                   noise=one.expand(length, steps, 4), convention=convention)
    return Drawings(strip, cols=steps)  # drawn as one row


# ------------------------------------------------------------------------------------------ completion
def complete(model, partial_sketch, n: int = 8, temperature: float = 0.4, *, classes=None, greedy: bool = False,
             z_source: str = "encode", seed: int | None = None, max_len: int | None = None,
             convention: str | None = None) -> Drawings:
    """Continue a partial sketch `n` ways: n stroke-3 arrays, each the partial sketch (copied exactly)
    followed by a sampled continuation (`result[i][len(partial):]`, offsets from its last point).

    The partial sketch is fed through the decoder with teacher forcing (start token, then its points),
    so the decoder's state has seen every given stroke; sampling then continues from its last point.
    z ("vae"/"class_vae"): with z_source="encode" (default) the partial sketch is encoded and each
    continuation gets its own z ~ q(z | partial) = N(mu, sigma^2) (so the n endings differ in z as
    well as in the decoder's draws); z_source="prior" draws z ~ N(0, I).  "decoder" mode has no z.
    classes: the class for "class_vae" (required there).
    max_len: most points of a completed sketch, prefix included (default config.max_seq_len).
    """
    sampler = _as_sampler(model)
    it = _prime_completion(sampler, partial_sketch, n, temperature, classes=classes, greedy=greedy,
                           z_source=z_source, seed=seed, max_len=max_len, convention=convention)
    rows, lengths = _run(sampler.model, it.prev, it.state, it.z, it.labels, it.steps, it.noise, *it.settings, None)
    return _results_of(it, rows, lengths, sampler.scale_factor)


def _prime_completion(sampler: Sampler, partial_sketch, n: int = 8, temperature: float = 0.4, *, classes=None,
                      greedy: bool = False, z_source: str = "encode", seed: int | None = None,
                      max_len: int | None = None, convention: str | None = None) -> _Primed:
    """`complete` up to the sampling loop: checks, z, and the decoder state after the partial sketch."""
    n = _check_n(n)
    if not greedy:
        _check_tau(temperature)
    if z_source not in Z_SOURCES:
        raise ValueError(f"unknown z_source {z_source!r}; choose from {Z_SOURCES}")
    convention = _convention(sampler, convention)
    (partial,) = _as_sketch_list([partial_sketch])
    cfg = sampler.config
    max_len = cfg.max_seq_len if max_len is None else _check_n(max_len, "max_len")
    k = len(partial)
    if k >= max_len:
        raise ValueError(f"the partial sketch has {k} points; the model draws at most max_len={max_len} "
                         f"(pass a larger max_len)")
    dev, dtype, model_ = sampler.device, sampler.model.output.weight.dtype, sampler.model
    model_.eval()
    gen = _generator(seed, dev)
    labels = _labels(sampler, classes, n, default_cycle=False)
    with torch.inference_mode():
        z = None
        if cfg.conditional:
            if z_source == "prior":
                z = torch.randn(n, cfg.z_size, generator=gen, device=dev, dtype=dtype)
            else:
                mu, sigma = encode(sampler, [partial], None if labels is None else labels[:1].tolist())
                mu, sigma = mu.to(dev, dtype), sigma.to(dev, dtype)
                eps = torch.randn(n, cfg.z_size, generator=gen, device=dev, dtype=dtype)
                z = mu + sigma * eps  # (n, D)
        s5 = torch.from_numpy(to_stroke5(model_input(partial, sampler.scale_factor))).to(dev, dtype)  # (k, 5)
        inputs = torch.cat([model_.start_tokens(1), s5[:-1]], dim=0)  # start, S_1 .. S_{k-1}
        inputs = inputs.unsqueeze(0).expand(n, k, 5).contiguous()
        _, _, state = model_.decode(inputs, z, labels)  # teacher forcing over the given points
        prev = s5[-1:].expand(n, 5).contiguous()  # S_k: the next step predicts S_{k+1}
    settings = _Settings(_check_tau(temperature) if not greedy else 1.0, greedy, convention)
    return _Primed(prev, state, z, labels, max_len - k, _stream_noise(gen, n, dev, dtype), settings, partial)


def _prime_sample(sampler: Sampler, n: int = 1, temperature: float = 0.4, z=None, classes=None, greedy: bool = False,
                  max_len: int | None = None, seed: int | None = None, *, convention: str | None = None) -> _Primed:
    """`sample` (n up to its chunk size) up to the sampling loop."""
    sampler, n, temperature, max_len, gen, z_all, labels_all, _, convention = _prepare_draws(
        sampler, n, temperature, z, classes, greedy, max_len, seed, convention, None)
    if n > DEFAULT_CHUNK:
        raise ValueError(f"n={n}: at most {DEFAULT_CHUNK} sketches a call when calls are decoded together")
    model_ = sampler.model
    with torch.inference_mode():
        state = model_.decoder_initial_state(z_all, labels_all, batch_size=n)
    noise = _stream_noise(gen, n, sampler.device, model_.output.weight.dtype)
    return _Primed(model_.start_tokens(n), state, z_all, labels_all, max_len, noise,
                   _Settings(temperature, greedy, convention), None)


class _Primed(NamedTuple):
    """One call's sketches ready for the sampling loop (the state after its partial sketch)."""
    prev: Tensor  # (n, 5) the row each sketch continues from
    state: tuple  # (h, c) each (1, n, H), the decoder state after it
    z: Tensor | None  # (n, z_size)
    labels: Tensor | None  # (n,)
    steps: int  # most points to draw
    noise: NoiseFn  # the call's own random draws (its generator)
    settings: _Settings
    partial: np.ndarray | None  # completion: the partial sketch (original units), put in front of each result


def _results_of(item: _Primed, rows: np.ndarray, lengths: np.ndarray, scale: float) -> Drawings:
    """The stroke-3 results of a primed call from its decoded rows (the partial sketch in front)."""
    sketches = _finish(rows, lengths, scale)
    if item.partial is not None:
        sketches = [np.concatenate([item.partial, tail]).astype(np.float32) for tail in sketches]
        for full in sketches:
            full[-1, 2] = 1.0
    return Drawings(sketches, given=item.partial)


__all__ = ["Sampler", "load", "sampler_from_checkpoint", "sample", "sample_sequential", "draw", "encode",
           "mean_latent", "reconstruct", "analogy", "interpolate", "interpolation_strip", "complete", "class_index"]
