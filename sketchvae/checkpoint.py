"""One checkpoint format for every model in the package.

A checkpoint is a plain dict saved with `torch.save` and loaded with
`torch.load(weights_only=True)`: tensors, numbers, strings, lists and dicts only,
so loading a file never executes code from it.

Keys:
    format_version  int, CHECKPOINT_VERSION
    kind            str, a key of MODEL_KINDS ("sketch_rnn", "image_vae", ...)
    config          dict, the model's config dataclass as a dict (dataclasses.asdict)
    model           state_dict
    class_names     list[str] (may be empty)
    scale_factor    float (1.0 where it means nothing)
    extra           dict, anything else the producer wants to keep (metrics, data set)
    train_state     dict, optional: optimizer, scheduler, step, rng, ... for resuming
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any, Callable

import torch

from sketchvae.runtime import atomic_write

CHECKPOINT_VERSION = 1

REQUIRED_KEYS = ("format_version", "kind", "config", "model")

# kind -> (config class, model factory(config) -> nn.Module); filled by model modules via
# `register_model_kind`, imported lazily by `_ensure_kinds_loaded`.
MODEL_KINDS: dict[str, tuple[type, Callable[[Any], torch.nn.Module]]] = {}
_KIND_MODULES = {
    "sketch_rnn": "sketchvae.models.sketch_rnn",
    "image_vae": "sketchvae.image.models",
    "image_aae": "sketchvae.image.aae",
    "image_classifier": "sketchvae.image.classifier",
}


PACKAGED_DIR = "shipped_checkpoints"  # installed (wheel, `pip install .`): pyproject maps checkpoints/ here


def shipped_checkpoints_dir() -> Path:
    """The folder of the shipped checkpoints, found from the package's own location so it works from any
    directory: `sketchvae/shipped_checkpoints/` in an installed package (pyproject.toml installs the
    repository's `checkpoints/*.pt` there as package data), else the repository's `checkpoints/`
    (a source checkout, `pip install -e`)."""
    here = Path(__file__).resolve().parent
    packaged = here / PACKAGED_DIR
    return packaged if packaged.is_dir() else here.parent / "checkpoints"


MAGENTA_DIR_ENV = "SKETCHVAE_MAGENTA_DIR"  # = sketchvae.interop.magenta.DIR_ENV


def magenta_checkpoints_dir() -> Path:
    """Where Magenta's models are downloaded and converted (`sketchvae download --magenta`):
    ``$SKETCHVAE_MAGENTA_DIR``; else, in a source checkout, the repository's `checkpoints/magenta/`;
    else (an installed package, whose own folder may not be writable and goes with an uninstall)
    ``$XDG_DATA_HOME/sketchvae/magenta`` (``~/.local/share/sketchvae/magenta``)."""
    env = os.environ.get(MAGENTA_DIR_ENV)
    if env:
        return Path(env)
    shipped = shipped_checkpoints_dir()
    if shipped.name != PACKAGED_DIR:
        return shipped / "magenta"
    data_home = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data_home) / "sketchvae" / "magenta"


def shipped_checkpoints() -> dict[str, Path]:
    """The shipped checkpoints by name: {"sheep": .../checkpoints/sheep.pt, "magenta/NAME": the
    converted Magenta models in `magenta_checkpoints_dir()`}."""
    found = {p.stem: p for p in sorted(shipped_checkpoints_dir().glob("*.pt"))}
    found.update({f"magenta/{p.stem}": p for p in sorted(magenta_checkpoints_dir().glob("*.pt"))})
    return found


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, corrupt, foreign or of an unknown version."""


BEST_NAME = "best.pt"  # what a run folder's checkpoint is called (sketchvae.train.BEST_CKPT)


def resolve_checkpoint(path) -> Path:
    """The checkpoint file `path` names: the file itself, a run folder's best.pt, or a shipped checkpoint
    given by name ("sheep", "multiclass.pt", "magenta/sheep") when no such file exists here.

    Raises CheckpointError naming the path, and listing the shipped names for a bare name."""
    p = Path(path)
    if p.is_dir():
        if (p / BEST_NAME).is_file():
            return p / BEST_NAME
        raise CheckpointError(f"{p}: a folder without {BEST_NAME}; give a checkpoint file, or a run folder "
                              f"(`sketchvae train -o FOLDER` writes {BEST_NAME} at its first validation)")
    if p.exists():
        return p
    parts = p.parts
    bare = (len(parts) == 1 or (len(parts) == 2 and parts[0] == "magenta")) and p.suffix in ("", ".pt")
    if bare:
        shipped = shipped_checkpoints()
        key = str(p.with_suffix("")) if p.suffix == ".pt" else str(p)
        if key in shipped:
            return shipped[key]
        names = ", ".join(shipped) or "none found"
        raise CheckpointError(f"{p}: checkpoint not found: no such file here, and not the name of a shipped "
                              f"checkpoint ({names})")
    raise CheckpointError(f"{p}: checkpoint not found")


def _not_torch_file(path: Path) -> str | None:
    """Why `path` is clearly not a file written by torch.save (a zip archive, or a legacy pickle), or None."""
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError:
        return None
    if zipfile.is_zipfile(path) or head[:1] == b"\x80":
        return None
    if not head:
        return "the file is empty"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if all(c.isprintable() or c in "\r\n\t" for c in text):
        first = text.strip().splitlines()[0][:40] if text.strip() else ""
        return f"it is a text file (starting {first!r}), not a file written by torch.save"
    return None


def register_model_kind(kind: str, config_cls: type, factory: Callable[[Any], torch.nn.Module]) -> None:
    MODEL_KINDS[kind] = (config_cls, factory)


def _ensure_kind_loaded(kind: str) -> None:
    if kind not in MODEL_KINDS and kind in _KIND_MODULES:
        import importlib

        importlib.import_module(_KIND_MODULES[kind])


def save_checkpoint(path, *, kind: str, config, model: torch.nn.Module | dict, class_names=(),
                    scale_factor: float = 1.0, extra: dict | None = None,
                    train_state: dict | None = None) -> Path:
    """Write a checkpoint atomically (temporary file + rename)."""
    cfg = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
    state = model.state_dict() if isinstance(model, torch.nn.Module) else model
    payload = {
        "format_version": CHECKPOINT_VERSION,
        "kind": kind,
        "config": cfg,
        "model": {k: v.detach().cpu() for k, v in state.items()},
        "class_names": list(class_names),
        "scale_factor": float(scale_factor),
        "extra": dict(extra or {}),
    }
    if train_state is not None:
        payload["train_state"] = train_state

    def write(tmp):
        # through a Python file object: a full disk raises OSError(ENOSPC), which atomic_write turns
        # into a DiskFullError naming `path` (torch's own writer only says "unexpected pos ...")
        with open(tmp, "wb") as f:
            torch.save(payload, f)

    return atomic_write(path, write)


def load_checkpoint(path, map_location="cpu") -> dict:
    """Load and validate a checkpoint; raise CheckpointError naming the file and the problem.

    `path`: a checkpoint file, a run folder (its best.pt) or a shipped name (see `resolve_checkpoint`)."""
    path = resolve_checkpoint(path)
    why = _not_torch_file(path)
    if why:
        raise CheckpointError(f"{path}: not a readable sketchvae checkpoint: {why}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, OSError,
            ValueError, AttributeError, TypeError, KeyError, IndexError) as err:
        msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"{path}: not a readable sketchvae checkpoint (truncated, corrupt, or not a torch file "
            f"saved with plain tensors): {msg}") from None
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in REQUIRED_KEYS):
        have = sorted(ckpt) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{path}: not a sketchvae checkpoint (needs keys {list(REQUIRED_KEYS)}, has {have})")
    if ckpt["format_version"] != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {ckpt['format_version']!r} is not supported "
                              f"(this sketchvae reads version {CHECKPOINT_VERSION})")
    ckpt.setdefault("class_names", [])
    ckpt.setdefault("scale_factor", 1.0)
    ckpt.setdefault("extra", {})
    return ckpt


def build_model(ckpt: dict, path="checkpoint") -> torch.nn.Module:
    """Rebuild the model a loaded checkpoint describes and load its weights (eval mode)."""
    kind = ckpt["kind"]
    _ensure_kind_loaded(kind)
    if kind not in MODEL_KINDS:
        raise CheckpointError(f"{path}: unknown model kind {kind!r}; known kinds: {sorted(_KIND_MODULES)}")
    config_cls, factory = MODEL_KINDS[kind]
    try:
        config = config_from_dict(config_cls, ckpt["config"])
        model = factory(config)
        model.load_state_dict(ckpt["model"])
    except (TypeError, ValueError, RuntimeError, KeyError) as err:
        raise CheckpointError(f"{path}: weights or config do not fit a {kind} model: {err}") from None
    model.eval()
    return model


def config_from_dict(config_cls: type, data: dict):
    """Build a config dataclass from a dict, naming unknown fields instead of a TypeError."""
    names = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown {config_cls.__name__} fields {unknown}; known: {sorted(names)}")
    return config_cls(**data)
