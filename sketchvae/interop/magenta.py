"""magenta-js (`@magenta/sketch`) Sketch-RNN models (`.gen.json`) <-> sketchvae checkpoints.

This module is the only place that knows the format.  It reads and validates `.gen.json` files,
converts them into `decoder`-mode `lstm` sketchvae checkpoints (`gen_json_to_checkpoint`), exports
such checkpoints, our own trained ones included, back to `.gen.json` (`checkpoint_to_gen_json`) and
fetches Magenta's published models (`download`).  `convert(src, dst)` picks the direction from the
file names.

The `.gen.json` format (as `@magenta/sketch` 0.2.0 reads it, `es5/sketch_rnn/model.js`)
-------------------------------------------------------------------------------------
One JSON array `[info, weight_dims, weight_strings]`:

* `info`: an object `{"mode": 2, "version": 6, "max_seq_len": N, "name": "sheep",
  "scale_factor": 63.0983}`.  mode 2 is the unconditional ("gen", decoder-only) model, the only one
  magenta-js can run; version 6 is the only version published.  magenta-js uses only
  `scale_factor`: its inputs and outputs are pixel offsets, divided by `scale_factor / pixel_factor`
  (pixel_factor 2.0 by default, `setPixelFactor`) before the network sees them.
* `weight_dims`: five shapes, in this order (H = LSTM units, M = mixture components, 20 in
  magenta-js, which hard-codes `NMIXTURE = 20`):

      0  output kernel          [H, 3 + 6M]   y = h @ kernel + bias
      1  output bias            [3 + 6M]
      2  LSTM input kernel      [5, 4H]       rows: the stroke-5 input (dx, dy, p_down, p_up, p_end)
      3  LSTM recurrent kernel  [H, 4H]
      4  LSTM bias              [4H]

* `weight_strings`: five base64 strings, each the little-endian int16 values of one array in
  row-major order; a weight is `10.0 * int16 / 32767` (so weights lie in [-10, 10], step 3.05e-4).

The network is TensorFlow's basic LSTM cell (`tf.basicLSTMCell`, forget bias 1.0): with
`g = [x, h] @ [[input kernel], [recurrent kernel]] + bias` split into four H-wide blocks (i, j, f, o),

    c' = c * sigmoid(f + 1.0) + sigmoid(i) * tanh(j),    h' = tanh(c') * sigmoid(o),

from the zero state, first input the start token (0, 0, 1, 0, 0).  The output `y` is laid out as
`[3 pen logits | pi | mu_x | mu_y | sigma_x | sigma_y | rho]` (M each): pi and pen through a softmax,
sigma = exp(.), rho = tanh(.) - the same layout as `SketchRNN.output` (`split_output`), so the output
layer maps over unchanged (transposed).

The mapping onto `nn.LSTM` (gate order i, f, g, o; two bias vectors):

    weight_ih = input kernel^T with its gate blocks reordered (i, j, f, o) -> (i, f, j, o)
    weight_hh = recurrent kernel^T, reordered the same way
    bias_ih   = bias, reordered;   bias_hh = 1.0 on the forget block, 0 elsewhere (the forget bias)

Keeping the forget bias in `bias_hh` (not added into `bias_ih`) makes the way back exact: for a
converted model `bias_hh - 1.0` is exactly 0, the exported bias is `bias_ih` itself, and the
float32 weights `10 * q / 32767` quantise back to the same int16 q, so `.gen.json -> .pt -> .gen.json`
gives the same weight strings bit for bit (tested).  For our own trained models the exported bias
is `bias_ih + bias_hh - 1.0` on the forget block, and every weight is rounded to the int16 grid
(error <= 1.5e-4), which is all the format can hold.

The sketchvae extension (format 1): `vae` and `class_vae` models in a `.gen.json`
----------------------------------------------------------------------------------------
magenta-js runs decoder-only models; sketchvae's own page decoder (`sketchvae/serve/static/sketchrnn.js`,
written by `sketchvae export-web`) also runs the encoder, the latent z and the class labels.  Such a
file is still `[info, weight_dims, weight_strings]` with the same int16 quantisation, and adds:

* `info["sketchvae"]`: `{"format": 1, "mode": "decoder" | "vae" | "class_vae", "cell": "lstm",
  "num_mixture": M, "z_size": Z, "enc_rnn_size": He, "class_embed_size": E, "classes": [names],
  "convention": "paper" | "magenta" | "magenta-js", "gen": {"z": "zeros", "class": name or null},
  "arrays": [names of the arrays after the first five]}`.  `format` is the version of this extension
  (a reader refuses a format it does not know); `convention` is the temperature convention the model's
  temperatures mean (`sketchvae.distributions`).  Every `export-web` file carries the key (decoder
  models with `"arrays": []`); `convert` writes plain magenta-js files without it, and files without
  it are read as Magenta's own (convention "magenta-js").
* after the five arrays, in the order `arrays` lists them (`EXTENSION_ARRAYS`; E = 0 and no class
  arrays for `vae`; LSTM kernels in TensorFlow's layout and gate order (i, j, f, o), biases with the
  forget bias 1.0 taken out, exactly as the five):

      decoder z kernel           [Z, 4H]     the decoder input rows for z
      decoder class kernel       [E, 4H]     ... for the class embedding e(y)        (class_vae)
      class embedding            [C, E]      e(y) for the C classes, in `classes` order (class_vae)
      initial state kernel       [Z + E, 2H] [h0; c0] = tanh([z; e(y)] @ kernel + bias) (eq. 4)
      initial state bias         [2H]
      gen initial state          [2, H]      rows c0, h0 (magenta-js's {c, h}) at z = 0 (and class gen.class)
      encoder forward input kernel [5 + E, 4He], encoder forward recurrent kernel [He, 4He],
      encoder forward bias [4He], the same three for "encoder backward"
      mu kernel [2He, Z], mu bias [Z], presig kernel [2He, Z], presig bias [Z]

  The encoder reads the sketch's stroke-5 rows (offsets / scale_factor, each row followed by e(y)),
  forwards and backwards from the zero state; [h_fw; h_bw] gives mu and presig = log sigma^2.
* The five magenta-js arrays hold the decoder at z = 0, the prior's mean (and, for class_vae, with
  class `gen.class`'s embedding folded into the LSTM bias): the input kernel is the stroke-5 rows of
  the decoder's input kernel.  So magenta-js loads every exported file and, started from
  `gen initial state` instead of its zero state, draws what the model draws at z = 0 (tested with
  @magenta/sketch in Node).  The page adds `z @ decoder z kernel` and, for class y,
  `(e(y) - e(gen.class)) @ decoder class kernel` to the bias, and starts from the initial state of z.

A converted checkpoint keeps `scale_factor` (so samples come out in Quick, Draw! units like every
other checkpoint), `max_seq_len` (the config's, the sampler's default length), the name (as its
one class name and in `extra["magenta"]`), the whole `info` object (`extra["magenta"]["info"]`, so
the export writes it back unchanged) and `extra["temperature_convention"] = "magenta-js"`, so that
a temperature means what it means in the magenta-js demos (see `sketchvae.distributions`).
"""

from __future__ import annotations

import base64
import dataclasses
import binascii
import difflib
import json
import math
import numbers
import os
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

GEN_JSON_SUFFIX = ".gen.json"
SUPPORTED_VERSIONS = (6,)
GEN_MODE = 2  # info["mode"] of decoder-only ("gen") models, the only kind magenta-js runs
MAX_WEIGHT = 10.0  # a weight is MAX_WEIGHT * int16 / INT16_SCALE
INT16_SCALE = 32767
FORGET_BIAS = 1.0  # tf.basicLSTMCell's forget bias, as magenta-js passes it
MAGENTA_JS_MIXTURES = 20  # @magenta/sketch 0.2.0 hard-codes NMIXTURE = 20
CONVENTION = "magenta-js"  # the temperature convention stored in converted checkpoints
WEIGHT_NAMES = ("output kernel", "output bias", "LSTM input kernel", "LSTM recurrent kernel", "LSTM bias")
EXTENSION_KEY = "sketchvae"  # info[EXTENSION_KEY]: the sketchvae extension (module docstring)
EXTENSION_FORMAT = 1  # its version; a reader refuses others
ENCODER_ARRAYS = tuple(f"encoder {d} {w}" for d in ("forward", "backward")
                       for w in ("input kernel", "recurrent kernel", "bias"))
EXTENSION_ARRAYS = {  # the arrays after the five, per mode, in file order
    "decoder": (),
    "vae": ("decoder z kernel", "initial state kernel", "initial state bias", "gen initial state")
           + ENCODER_ARRAYS + ("mu kernel", "mu bias", "presig kernel", "presig bias"),
    "class_vae": ("decoder z kernel", "decoder class kernel", "class embedding", "initial state kernel",
                  "initial state bias", "gen initial state")
                 + ENCODER_ARRAYS + ("mu kernel", "mu bias", "presig kernel", "presig bias"),
}

DEFAULT_BASE_URL = "https://storage.googleapis.com/quickdraw-models/sketchRNN/large_models"
BASE_URL_ENV = "SKETCHVAE_MAGENTA_URL"
DIR_ENV = "SKETCHVAE_MAGENTA_DIR"  # where downloads go: sketchvae.checkpoint.magenta_checkpoints_dir reads it

# The models Magenta lists for @magenta/sketch (its README, "Pre-trained models"): Quick, Draw!
# classes with spaces written as underscores, and a few trained on several classes (catpig, ...).
MAGENTA_MODELS = (
    "alarm_clock", "ambulance", "angel", "ant", "antyoga", "backpack", "barn", "basket", "bear", "bee",
    "beeflower", "bicycle", "bird", "book", "brain", "bridge", "bulldozer", "bus", "butterfly", "cactus",
    "calendar", "castle", "cat", "catbus", "catpig", "chair", "couch", "crab", "crabchair",
    "crabrabbitfacepig", "cruise_ship", "diving_board", "dog", "dogbunny", "dolphin", "duck", "elephant",
    "elephantpig", "eye", "face", "fan", "fire_hydrant", "firetruck", "flamingo", "flower", "floweryoga",
    "frog", "frogsofa", "garden", "hand", "hedgeberry", "hedgehog", "helicopter", "kangaroo", "key",
    "lantern", "lighthouse", "lion", "lionsheep", "lobster", "map", "mermaid", "monapassport", "monkey",
    "mosquito", "octopus", "owl", "paintbrush", "palm_tree", "parrot", "passport", "peas", "penguin", "pig",
    "pigsheep", "pineapple", "pool", "postcard", "power_outlet", "rabbit", "rabbitturtle", "radio",
    "radioface", "rain", "rhinoceros", "rifle", "roller_coaster", "sandwich", "scorpion", "sea_turtle",
    "sheep", "skull", "snail", "snowflake", "speedboat", "spider", "squirrel", "steak", "stove",
    "strawberry", "swan", "swing_set", "the_mona_lisa", "tiger", "toothbrush", "toothpaste", "tractor",
    "trombone", "truck", "whale", "windmill", "yoga", "yogabicycle", "everything",
)


class MagentaFormatError(ValueError):
    """A `.gen.json` file (or a checkpoint to export) the format cannot describe; the message names
    the file and what is wrong."""


# ------------------------------------------------------------------------------------------ the file
@dataclass
class GenJson:
    """A parsed `.gen.json`: `info` (dict, key order kept), `dims` (five shapes, more with the
    sketchvae extension) and `weights` (int16 arrays of those shapes: the exact file content)."""

    info: dict
    dims: list[list[int]]
    weights: list[np.ndarray]

    @property
    def hidden(self) -> int:
        return self.dims[0][0]

    @property
    def num_mixture(self) -> int:
        return (self.dims[1][0] - 3) // 6

    def floats(self) -> list[np.ndarray]:
        """The weights as magenta-js computes them: float32(10.0 * q / 32767) (in float64, rounded once)."""
        return [dequantize(q) for q in self.weights]

    def to_json(self) -> list:
        strings = [base64.b64encode(q.astype("<i2", copy=False).tobytes()).decode("ascii") for q in self.weights]
        return [self.info, [list(d) for d in self.dims], strings]

    def dumps(self) -> str:
        """The file text, formatted as Magenta's own files (no spaces, a final newline)."""
        return json.dumps(self.to_json(), separators=(",", ":"), allow_nan=False) + "\n"


def dequantize(q: np.ndarray) -> np.ndarray:
    """int16 -> float32 weights, 10 * q / 32767 as magenta-js computes it (float64, then float32)."""
    return (MAX_WEIGHT * q.astype(np.float64) / INT16_SCALE).astype(np.float32)


def _grid(w) -> np.ndarray:
    """w on the int16 grid, as float64 (not yet range-checked): round(w * 32767 / 10)."""
    return np.rint(np.asarray(w, dtype=np.float64) * (INT16_SCALE / MAX_WEIGHT))


def quantize(w: np.ndarray) -> np.ndarray:
    """float weights in [-10, 10] -> int16 q = round(w * 32767 / 10), the exact inverse of `dequantize`
    for every int16 (float32 keeps 24 bits; q needs 16).  Values off the int16 range are clipped:
    `from_checkpoint` refuses such models before it gets here."""
    return np.clip(_grid(w), -32768, 32767).astype(np.int16)


def _fail(where, message: str):
    raise MagentaFormatError(f"{where}: {message}")


def _expected_dims(hidden: int, mixtures: int) -> list[list[int]]:
    out = 3 + 6 * mixtures
    return [[hidden, out], [out], [5, 4 * hidden], [hidden, 4 * hidden], [4 * hidden]]


def _is_int(x) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def parse_gen_json(obj: Any, where="<.gen.json>") -> GenJson:
    """Validate a decoded `.gen.json` value; MagentaFormatError naming `where` and the problem."""
    if not isinstance(obj, list) or len(obj) != 3:
        what = f"a list of {len(obj)} items" if isinstance(obj, list) else f"a JSON {type(obj).__name__}"
        _fail(where, f"not a magenta-js .gen.json model: expected a JSON array [info, weight_dims, weight_strings], "
                     f"got {what}")
    info, dims, strings = obj
    if not isinstance(info, dict):
        _fail(where, f"info (item 0) must be a JSON object, got {type(info).__name__}")
    for key in ("version", "scale_factor", "max_seq_len"):
        if key not in info:
            _fail(where, f"info has no {key!r} (it has {sorted(info)})")
    version = info["version"]
    if version not in SUPPORTED_VERSIONS or isinstance(version, bool):
        _fail(where, f"unknown .gen.json version {version!r}; sketchvae reads version "
                     f"{', '.join(map(str, SUPPORTED_VERSIONS))} (the version of @magenta/sketch's models)")
    mode = info.get("mode", GEN_MODE)
    if mode != GEN_MODE or isinstance(mode, bool):
        _fail(where, f"info mode {mode!r} is not {GEN_MODE} (a decoder-only 'gen' model), the only kind "
                     f"magenta-js runs and sketchvae converts")
    scale = info["scale_factor"]
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not math.isfinite(scale) or scale <= 0:
        _fail(where, f"info scale_factor={scale!r} must be a finite number > 0")
    if not _is_int(info["max_seq_len"]) or info["max_seq_len"] < 1:
        _fail(where, f"info max_seq_len={info['max_seq_len']!r} must be an integer >= 1")
    if "name" in info and not isinstance(info["name"], str):
        _fail(where, f"info name={info['name']!r} must be a string")
    ext = _extension_header(info, where)
    names = WEIGHT_NAMES + (tuple(ext["arrays"]) if ext else ())
    if (not isinstance(dims, list) or len(dims) != len(names)
            or not all(isinstance(d, list) and d and all(_is_int(v) and v > 0 for v in d) for d in dims)):
        _fail(where, f"weight_dims (item 1) must be {len(names)} lists of positive integers "
                     f"({', '.join(names)}), got {json.dumps(dims)[:200]}")
    if len(dims[0]) != 2 or len(dims[1]) != 1:
        _fail(where, f"weight_dims {dims}: the output kernel must be [H, 3 + 6M] and its bias [3 + 6M]")
    hidden, out = dims[0]
    if out < 9 or (out - 3) % 6:
        _fail(where, f"weight_dims {dims}: output width {out} is not 3 + 6M (3 pen logits, 6 per component)")
    want = _expected_dims(hidden, (out - 3) // 6)
    if dims[:5] != want:
        _fail(where, f"weight_dims {dims[:5]} do not fit together: with {hidden} LSTM units and {(out - 3) // 6} "
                     f"mixture components they must be {want}")
    if ext:
        want_ext = _extension_dims(hidden, ext)
        for k, (name, got) in enumerate(zip(ext["arrays"], dims[5:]), start=5):
            if got != want_ext[name]:
                _fail(where, f"weight_dims[{k}] ({name}) is {got}; the {EXTENSION_KEY} header says {want_ext[name]}")
    if (not isinstance(strings, list) or len(strings) != len(names)
            or not all(isinstance(s, str) for s in strings)):
        _fail(where, f"weight_strings (item 2) must be a list of {len(names)} base64 strings")
    weights = []
    for k, (s, shape) in enumerate(zip(strings, dims)):
        try:
            raw = base64.b64decode(s, validate=True)
        except (binascii.Error, ValueError) as err:
            _fail(where, f"weight {k} ({names[k]}) is not valid base64 ({err})")
        count = int(np.prod(shape))
        if len(raw) != 2 * count:
            _fail(where, f"weight {k} ({names[k]}) holds {len(raw)} bytes ({len(raw) / 2:g} int16 values) "
                         f"but its dims {shape} need {count} values ({2 * count} bytes)")
        weights.append(np.frombuffer(raw, dtype="<i2").astype(np.int16).reshape(shape))
    return GenJson(dict(info), [list(d) for d in dims], weights)


def _extension_header(info: dict, where) -> dict | None:
    """info["sketchvae"] checked (module docstring), or None for a file without the extension."""
    ext = info.get(EXTENSION_KEY)
    if ext is None:
        return None
    if not isinstance(ext, dict):
        _fail(where, f"info[{EXTENSION_KEY!r}] must be a JSON object, got {type(ext).__name__}")
    fmt = ext.get("format")
    if fmt != EXTENSION_FORMAT or isinstance(fmt, bool):
        _fail(where, f"info[{EXTENSION_KEY!r}] format {fmt!r} is unknown; this sketchvae reads format "
                     f"{EXTENSION_FORMAT} (export the model again with this version)")
    mode = ext.get("mode")
    if mode not in EXTENSION_ARRAYS:
        _fail(where, f"info[{EXTENSION_KEY!r}] mode {mode!r} is not one of {tuple(EXTENSION_ARRAYS)}")
    if ext.get("arrays") != list(EXTENSION_ARRAYS[mode]):
        _fail(where, f"info[{EXTENSION_KEY!r}] arrays {ext.get('arrays')!r} are not the {mode} model's "
                     f"{list(EXTENSION_ARRAYS[mode])}")
    sizes = ("z_size", "enc_rnn_size") + (("class_embed_size",) if mode == "class_vae" else ())
    for key in sizes if mode != "decoder" else ():
        if not _is_int(ext.get(key)) or ext[key] < 1:
            _fail(where, f"info[{EXTENSION_KEY!r}] {key}={ext.get(key)!r} must be an integer >= 1")
    classes = ext.get("classes", [])
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        _fail(where, f"info[{EXTENSION_KEY!r}] classes must be a list of strings")
    if mode == "class_vae" and not classes:
        _fail(where, f"info[{EXTENSION_KEY!r}] a class_vae model needs its class names in 'classes'")
    if ext.get("convention", CONVENTION) not in ("paper", "magenta", "magenta-js"):
        _fail(where, f"info[{EXTENSION_KEY!r}] convention {ext.get('convention')!r} is not paper, magenta or "
                     f"magenta-js")
    return ext


def _extension_dims(hidden: int, ext: dict) -> dict[str, list[int]]:
    """Shapes of the extension's arrays for H = hidden and the header's sizes (module docstring)."""
    if ext["mode"] == "decoder":
        return {}
    z, he = ext["z_size"], ext["enc_rnn_size"]
    e = ext.get("class_embed_size", 0) if ext["mode"] == "class_vae" else 0
    dims = {"decoder z kernel": [z, 4 * hidden], "decoder class kernel": [e, 4 * hidden],
            "class embedding": [len(ext.get("classes", [])), e], "initial state kernel": [z + e, 2 * hidden],
            "initial state bias": [2 * hidden], "gen initial state": [2, hidden],
            "mu kernel": [2 * he, z], "mu bias": [z], "presig kernel": [2 * he, z], "presig bias": [z]}
    for d in ("forward", "backward"):
        dims.update({f"encoder {d} input kernel": [5 + e, 4 * he], f"encoder {d} recurrent kernel": [he, 4 * he],
                     f"encoder {d} bias": [4 * he]})
    return dims


def read_gen_json(path) -> GenJson:
    """Read and validate a `.gen.json` file; MagentaFormatError naming the file and the problem."""
    path = Path(path)
    if not path.exists():
        _fail(path, "no such file")
    if path.is_dir():
        _fail(path, "is a folder, not a .gen.json file")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        _fail(path, f"not a JSON text file (byte {err.start} is not UTF-8); a .gen.json model is JSON")
    except OSError as err:
        _fail(path, f"cannot read: {err.strerror or err}")
    if not text.strip():
        _fail(path, "is empty")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as err:
        ends_early = not text.rstrip().endswith(("]", "}")) or err.pos >= len(text.rstrip())
        hint = " (the file ends early: truncated?)" if ends_early else ""
        _fail(path, f"not valid JSON: {err.msg} at line {err.lineno}, column {err.colno}{hint}")
    except RecursionError:
        _fail(path, "not a .gen.json model: JSON nested too deeply")
    return parse_gen_json(obj, path)


# ------------------------------------------------------------------------------------------ to sketchvae
def _tf_to_torch_gates(a: np.ndarray, hidden: int) -> np.ndarray:
    """Reorder the last axis' gate blocks from TensorFlow's (i, j, f, o) to nn.LSTM's (i, f, g=j, o).
    The permutation swaps blocks 1 and 2, so it is its own inverse."""
    i, j, f, o = (a[..., k * hidden:(k + 1) * hidden] for k in range(4))
    return np.concatenate([i, f, j, o], axis=-1)


def to_checkpoint(gen: GenJson, source: str | None = None) -> dict:
    """The pieces of a sketchvae checkpoint for a parsed `.gen.json`: keyword arguments of
    `sketchvae.checkpoint.save_checkpoint` (kind, config, model state dict, class_names, scale_factor,
    extra).  Mode "decoder", cell "lstm"; see the module docstring for the mapping."""
    import torch

    from sketchvae.models.sketch_rnn import SketchRNNConfig

    hidden, mixtures = gen.hidden, gen.num_mixture
    ext = gen.info.get(EXTENSION_KEY)
    if ext and ext.get("mode", "decoder") != "decoder":
        _fail(source or "<.gen.json>", f"a {ext['mode']!r} model exported for the web page (the {EXTENSION_KEY} "
                                       f"extension); only decoder-only files convert back to a checkpoint: use "
                                       f"the .pt it was exported from")
    w_out, b_out, k_x, k_h, bias = gen.floats()[:5]
    name = gen.info.get("name") or (Path(source).name.removesuffix(GEN_JSON_SUFFIX) if source else "magenta")
    config = SketchRNNConfig(mode="decoder", cell="lstm", dec_rnn_size=hidden, num_mixture=mixtures,
                             max_seq_len=int(gen.info["max_seq_len"]))
    forget = np.zeros(4 * hidden, np.float32)
    forget[hidden:2 * hidden] = FORGET_BIAS  # torch order (i, f, g, o): block 1 is the forget gate
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))  # noqa: E731
    state = {
        "decoder_rnn.weight_ih_l0": t(_tf_to_torch_gates(k_x, hidden).T),  # (4H, 5)
        "decoder_rnn.weight_hh_l0": t(_tf_to_torch_gates(k_h, hidden).T),  # (4H, H)
        "decoder_rnn.bias_ih_l0": t(_tf_to_torch_gates(bias, hidden)),  # (4H,)
        "decoder_rnn.bias_hh_l0": t(forget),  # (4H,) the forget bias, kept apart for an exact way back
        "output.weight": t(w_out.T),  # (3 + 6M, H)
        "output.bias": t(b_out),  # (3 + 6M,)
    }
    extra = {
        "temperature_convention": (ext or {}).get("convention", CONVENTION),
        "magenta": {"name": name, "max_seq_len": int(gen.info["max_seq_len"]), "info": dict(gen.info),
                    "source": Path(source).name if source else None},
    }
    return {"kind": "sketch_rnn", "config": config, "model": state, "class_names": [name],
            "scale_factor": float(gen.info["scale_factor"]), "extra": extra}


def gen_json_to_checkpoint(src, dst) -> Path:
    """Convert a `.gen.json` file into a sketchvae checkpoint `dst` (written atomically)."""
    from sketchvae.checkpoint import build_model, save_checkpoint

    gen = read_gen_json(src)
    pieces = to_checkpoint(gen, str(src))
    # Build the model once so a file that cannot become a SketchRNN fails here, not at load time.
    build_model({"kind": "sketch_rnn", "config": dataclasses.asdict(pieces["config"]), "model": pieces["model"]}, src)
    return save_checkpoint(dst, **pieces)


# ------------------------------------------------------------------------------------------ from sketchvae
def from_checkpoint(ckpt: dict, where="checkpoint", name: str | None = None, *, extension: bool = False) -> GenJson:
    """A `GenJson` for a loaded sketchvae checkpoint (`load_checkpoint`), or MagentaFormatError with
    one line saying why the format cannot hold the model.

    extension=False: a file for @magenta/sketch (decoder-only, plain LSTM, 20 components).
    extension=True: the sketchvae extension (module docstring) for the export-web page: any mode, any
    number of components, plain LSTM; magenta-js runs its first five arrays where it runs at all
    (`magenta_js_note` says when it cannot)."""
    from sketchvae.checkpoint import CheckpointError, build_model, config_from_dict
    from sketchvae.models.sketch_rnn import SketchRNNConfig

    if ckpt.get("kind") != "sketch_rnn":
        _fail(where, f"holds a {ckpt.get('kind')!r} model; only Sketch-RNN models can be exported to .gen.json")
    try:
        cfg = config_from_dict(SketchRNNConfig, ckpt["config"])  # refuse before building a model we cannot use
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{where}: config does not describe a Sketch-RNN: {err}") from None
    # the cells first: a model with another cell cannot be exported whatever its mode
    for part, cell in (("cell", cfg.cell), ("enc_cell", cfg.encoder_cell if cfg.mode != "decoder" else "lstm")):
        if cell != "lstm":
            _fail(where, f"{part} {cell!r}: magenta-js and the export-web page run a plain (basic) LSTM and have no "
                         f"{'HyperLSTM' if cell == 'hyper' else 'layer-norm LSTM'}; train with --cell lstm")
    if cfg.mode != "decoder" and not extension:
        _fail(where, f"mode {cfg.mode!r} has an encoder and a latent z; a .gen.json holds only decoder-only "
                     f"(unconditional) models: train one with --mode decoder (or use `sketchvae export-web`, "
                     f"whose page runs {cfg.mode} models)")
    if cfg.num_mixture != MAGENTA_JS_MIXTURES and not extension:
        _fail(where, f"num_mixture={cfg.num_mixture}: @magenta/sketch 0.2.0 reads exactly {MAGENTA_JS_MIXTURES} "
                     f"mixture components")
    model = build_model(ckpt, where)
    hidden = cfg.dec_rnn_size
    sd = {k: v.detach().double().cpu().numpy() for k, v in model.state_dict().items()}
    # a class_vae saved without names gets "0", "1", ... as `sketchvae serve` shows it (ServedModel.classes)
    names = ckpt.get("class_names") or ([str(i) for i in range(cfg.num_classes)] if cfg.class_conditional else [])
    k_in = _tf_lstm_kernel(sd["decoder_rnn.weight_ih_l0"], hidden)  # (5 [+ Z + E], 4H)
    bias = _tf_lstm_bias(sd, "decoder_rnn", hidden)
    z_size = cfg.z_size if cfg.conditional else 0
    arrays = {"output kernel": sd["output.weight"].T, "output bias": sd["output.bias"],
              "LSTM input kernel": k_in[:5],
              "LSTM recurrent kernel": _tf_lstm_kernel(sd["decoder_rnn.weight_hh_l0"], hidden),
              "LSTM bias": bias}
    extra_arrays = {}
    if cfg.conditional:
        import torch

        embed = sd["class_embed.weight"] if cfg.class_conditional else np.zeros((0, 0))
        k_class = k_in[5 + z_size:]  # (E, 4H)
        gen_embed = embed[0] if cfg.class_conditional else np.zeros(0)
        arrays["LSTM bias"] = bias + gen_embed @ k_class  # the gen part runs class names[0] (docstring)
        with torch.no_grad():  # the decoder's initial state at z = 0 (class 0), as magenta-js's {c, h}
            h0, c0 = model.decoder_initial_state(torch.zeros(1, z_size, dtype=model.output.weight.dtype),
                                                 torch.zeros(1, dtype=torch.long) if cfg.class_conditional else None)
        extra_arrays = {"decoder z kernel": k_in[5:5 + z_size], "decoder class kernel": k_class,
                        "class embedding": embed, "initial state kernel": sd["dec_init.weight"].T,
                        "initial state bias": sd["dec_init.bias"],
                        "gen initial state": np.stack([c0[0, 0].double().numpy(), h0[0, 0].double().numpy()])}
        for d, short in (("forward", "fw"), ("backward", "bw")):
            he = cfg.enc_rnn_size
            extra_arrays[f"encoder {d} input kernel"] = _tf_lstm_kernel(sd[f"encoder_rnn.{short}.weight_ih_l0"], he)
            extra_arrays[f"encoder {d} recurrent kernel"] = _tf_lstm_kernel(sd[f"encoder_rnn.{short}.weight_hh_l0"], he)
            extra_arrays[f"encoder {d} bias"] = _tf_lstm_bias(sd, f"encoder_rnn.{short}", he)
        extra_arrays.update({"mu kernel": sd["enc_mu.weight"].T, "mu bias": sd["enc_mu.bias"],
                             "presig kernel": sd["enc_presig.weight"].T, "presig bias": sd["enc_presig.bias"]})
        extra_arrays = {k: extra_arrays[k] for k in EXTENSION_ARRAYS[cfg.mode]}
    arrays.update(extra_arrays)
    # Representable: on the int16 grid, i.e. [-10, 10] (and -32768 * 10 / 32767, which a file may hold).
    bad = {k: (int(np.sum(~((_grid(a) >= -32768) & (_grid(a) <= 32767)))), float(np.max(np.abs(a), initial=0.0)))
           for k, a in arrays.items()}
    count = sum(c for c, _ in bad.values())
    if count:
        worst = max(bad, key=lambda k: bad[k][1])
        _fail(where, f"{count} weight(s) lie outside the .gen.json range [-{MAX_WEIGHT:g}, {MAX_WEIGHT:g}] "
                     f"(largest |w| = {bad[worst][1]:.6g}, in the {worst}); the format cannot hold them")
    extra = ckpt.get("extra") if isinstance(ckpt.get("extra"), dict) else {}
    meta = extra.get("magenta") if isinstance(extra.get("magenta"), dict) else {}
    name = name or meta.get("name") or (names[0] if len(names) == 1 else None) or "sketchvae"
    scale = float(ckpt.get("scale_factor", 1.0))
    info = dict(meta["info"]) if isinstance(meta.get("info"), dict) else {}  # a converted model's own, in order
    info.update(mode=GEN_MODE, version=SUPPORTED_VERSIONS[-1], max_seq_len=cfg.max_seq_len, name=name)
    if info.get("scale_factor") != scale:
        info["scale_factor"] = scale
    if extension:
        header = {"format": EXTENSION_FORMAT, "mode": cfg.mode, "cell": cfg.cell, "num_mixture": cfg.num_mixture}
        if cfg.conditional:
            header.update(z_size=cfg.z_size, enc_rnn_size=cfg.enc_rnn_size)
        if cfg.class_conditional:
            header["class_embed_size"] = cfg.class_embed_size
        header.update(classes=list(names), convention=extra.get("temperature_convention", "paper"),
                      gen={"z": "zeros" if cfg.conditional else None,
                           "class": names[0] if cfg.class_conditional and names else None},
                      arrays=list(extra_arrays))
        info[EXTENSION_KEY] = header
    dims = _expected_dims(hidden, cfg.num_mixture)
    if extension and cfg.conditional:
        ext_dims = _extension_dims(hidden, info[EXTENSION_KEY])
        dims += [ext_dims[k] for k in extra_arrays]
    weights = [quantize(a) for a in arrays.values()]
    return GenJson(info, dims, [w.reshape(d) for w, d in zip(weights, dims)])


def _tf_lstm_kernel(weight: np.ndarray, hidden: int) -> np.ndarray:
    """nn.LSTM weight (4H, I) -> TensorFlow kernel (I, 4H), gate order (i, j, f, o)."""
    return _tf_to_torch_gates(weight.T, hidden)


def _tf_lstm_bias(sd: dict, prefix: str, hidden: int) -> np.ndarray:
    """nn.LSTM's two biases -> one TensorFlow bias (4H,) for a cell that adds FORGET_BIAS itself.
    bias_hh - 1.0 on the forget block is exactly 0 for a converted model (module docstring)."""
    forget = np.zeros(4 * hidden)
    forget[hidden:2 * hidden] = FORGET_BIAS
    return _tf_to_torch_gates(sd[f"{prefix}.bias_ih_l0"] + (sd[f"{prefix}.bias_hh_l0"] - forget), hidden)


def magenta_js_note(gen: GenJson) -> str | None:
    """Why @magenta/sketch 0.2.0 cannot run a file's model as the model itself, or None when it can."""
    if gen.num_mixture != MAGENTA_JS_MIXTURES:
        return (f"@magenta/sketch cannot load it: it has {gen.num_mixture} mixture components and magenta-js "
                f"reads exactly {MAGENTA_JS_MIXTURES}")
    ext = gen.info.get(EXTENSION_KEY) or {}
    mode = ext.get("mode", "decoder")
    if mode == "decoder":
        return None
    cls = ext.get("gen", {}).get("class")
    at = "z = 0" + (f" and class {cls!r}" if cls else "")
    return (f"@magenta/sketch loads only the decoder, at {at} (start it from the file's 'gen initial state'): "
            f"it has no encoder, no latent z" + (" and no classes" if mode == "class_vae" else "")
            + "; the exported page runs the whole model")


def checkpoint_to_gen_json(src, dst, name: str | None = None) -> Path:
    """Export a `decoder`-mode `lstm` sketchvae checkpoint to `.gen.json` `dst` (written atomically)."""
    from sketchvae.checkpoint import load_checkpoint
    from sketchvae.runtime import atomic_write

    gen = from_checkpoint(load_checkpoint(src), src, name)
    text = gen.dumps()
    return atomic_write(dst, lambda tmp: Path(tmp).write_text(text, encoding="ascii"))


def _kind(path) -> str:
    name = Path(path).name.lower()
    if name.endswith(GEN_JSON_SUFFIX) or name.endswith(".json"):
        return "gen.json"
    if name.endswith(".pt") or name.endswith(".pth"):
        return "pt"
    return "?"


def convert(src, dst, name: str | None = None) -> Path:
    """`X.gen.json -> Y.pt` or `X.pt -> Y.gen.json`, the direction from the file names; ValueError
    when the names do not say one of them.  `name`: the model name written into an exported
    .gen.json (default: a converted model's own, else the checkpoint's single class name)."""
    a, b = _kind(src), _kind(dst)
    if a == "gen.json" and b == "pt":
        if name is not None:
            raise ValueError("a model name applies only when writing a .gen.json (the .pt keeps the file's own)")
        return gen_json_to_checkpoint(src, dst)
    if a == "pt" and b == "gen.json":
        return checkpoint_to_gen_json(src, dst, name)
    raise ValueError(f"cannot tell what to convert from the file names {Path(src).name!r} -> {Path(dst).name!r}: "
                     f"use NAME.gen.json -> NAME.pt (magenta-js to sketchvae) or NAME.pt -> NAME.gen.json "
                     f"(sketchvae to magenta-js)")


# ------------------------------------------------------------------------------------------ downloads
def resolve_model_name(name: str) -> str:
    """Magenta's spelling of a model name ("Sea Turtle" -> "sea_turtle"); ValueError with close matches
    (`MAGENTA_MODELS` lists them all; the CLI points at `download --magenta --list`)."""
    key = "_".join(name.replace("-", " ").replace("_", " ").split()).lower()
    if key in MAGENTA_MODELS:
        return key
    close = difflib.get_close_matches(key, MAGENTA_MODELS, n=3, cutoff=0.6)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise ValueError(f"unknown Magenta model {name!r}{hint}")


def base_url(override: str | None = None) -> str:
    """The server: `override`, else ``$SKETCHVAE_MAGENTA_URL``, else Magenta's `large_models` folder."""
    return (override or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL).rstrip("/")


def model_url(name: str, base: str | None = None) -> str:
    return f"{base_url(base)}/{urllib.parse.quote(name)}{GEN_JSON_SUFFIX}"


def default_dir() -> Path:
    """Where downloaded models go: `sketchvae.checkpoint.magenta_checkpoints_dir()` (``$SKETCHVAE_MAGENTA_DIR``,
    else the repository's `checkpoints/magenta/`, or a user folder for an installed package): the folder
    where `sample magenta/NAME`, `load("magenta/NAME")` and `serve` find them."""
    from sketchvae.checkpoint import magenta_checkpoints_dir

    return magenta_checkpoints_dir()


@dataclass
class Fetched:
    """One model handled by `download`."""

    name: str
    gen_json: Path
    checkpoint: Path
    downloaded: bool  # False: the .gen.json was already there
    converted: bool  # False: the .pt was already there
    size: int  # bytes of the .gen.json


def _verify(path: Path) -> None:
    from sketchvae.data.formats import DataError

    try:
        read_gen_json(path)
    except MagentaFormatError as err:
        raise DataError(str(err).removeprefix(f"{path}: "), file=path, reason="bad .gen.json") from None


def download(names, out_dir=None, *, base: str | None = None, force: bool = False, timeout: float = 60.0,
             retries: int = 5, backoff: float = 1.0, progress: bool = False) -> list[Fetched]:
    """Fetch Magenta's models `names` into `out_dir` (default `default_dir()`) as NAME.gen.json and
    convert each to NAME.pt beside it.

    Uses the Quick, Draw! downloader (`sketchvae.data.quickdraw.download_file`): a `.part` file resumed
    with HTTP Range, retries, size check, the offline message, and verification (the file must parse
    as a `.gen.json`) before it is renamed into place.  Files already there are kept unless `force`.
    """
    from sketchvae.data.quickdraw import download_file

    resolved = [resolve_model_name(n) for n in names]
    if not resolved:
        raise ValueError("no model names given")
    out_dir = Path(out_dir) if out_dir is not None else default_dir()
    out = []
    for name in dict.fromkeys(resolved):
        src = out_dir / f"{name}{GEN_JSON_SUFFIX}"
        dst = out_dir / f"{name}.pt"
        downloaded = converted = False
        if force or not src.exists():
            if src.exists():
                src.unlink()
            download_file(model_url(name, base), src, timeout=timeout, retries=retries, backoff=backoff,
                          verify=_verify, progress=progress, desc=src.name,
                          offline_advice=f"set {BASE_URL_ENV} to a mirror, or copy {src.name} into {out_dir} yourself "
                                         f"(then run the command again to convert it)")
            downloaded = True
        if downloaded or not dst.exists():
            gen_json_to_checkpoint(src, dst)
            converted = True
        out.append(Fetched(name, src, dst, downloaded, converted, src.stat().st_size))
    return out


__all__ = ["GenJson", "MagentaFormatError", "read_gen_json", "parse_gen_json", "to_checkpoint", "from_checkpoint",
           "gen_json_to_checkpoint", "checkpoint_to_gen_json", "convert", "quantize", "dequantize", "download",
           "resolve_model_name", "model_url", "default_dir", "MAGENTA_MODELS", "CONVENTION", "EXTENSION_KEY",
           "EXTENSION_FORMAT", "EXTENSION_ARRAYS", "magenta_js_note"]
