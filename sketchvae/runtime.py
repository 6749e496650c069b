"""Seeding, device choice, autocast, RNG state and atomic file writes.

Everything here is small and shared by the sketch and image sides.
"""

from __future__ import annotations

import contextlib
import os
import random
import tempfile
from pathlib import Path

import numpy as np
import torch


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, numpy and torch; return a CPU generator seeded with `seed`."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def resolve_device(name: str = "auto") -> torch.device:
    """Map 'auto' | 'cpu' | 'cuda' | 'cuda:N' to a device; fail clearly if CUDA is missing."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available; use --device cpu or auto")
    if name != "cpu" and not name.startswith("cuda"):
        raise ValueError(f"unknown device {name!r}; choose from auto, cpu, cuda, cuda:N")
    return torch.device(name)


def configure_cpu() -> None:
    """Flush denormals to zero: LSTMs on CPU run several times slower without it."""
    torch.set_flush_denormal(True)


def autocast(device: torch.device, enabled: bool = True):
    """bf16 autocast on CUDA, a no-op context on CPU (full precision)."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def rng_state() -> dict:
    """Capture every RNG the training loop touches, as tensors (safe for weights_only loads)."""
    state = {
        "torch": torch.get_rng_state(),
        "numpy": torch.from_numpy(np.frombuffer(_pickle_free_numpy_state(), dtype=np.uint8).copy()),
        "python": torch.tensor(list(random.getstate()[1]), dtype=torch.int64),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _pickle_free_numpy_state() -> bytes:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    header = np.array([pos, has_gauss], dtype=np.int64).tobytes() + np.array([cached], dtype=np.float64).tobytes()
    return header + np.asarray(keys, dtype=np.uint32).tobytes()


def set_rng_state(state: dict) -> None:
    """Restore what `rng_state` captured."""
    torch.set_rng_state(state["torch"])
    raw = state["numpy"].numpy().tobytes()
    pos, has_gauss = np.frombuffer(raw[:16], dtype=np.int64)
    cached = np.frombuffer(raw[16:24], dtype=np.float64)[0]
    keys = np.frombuffer(raw[24:], dtype=np.uint32)
    np.random.set_state(("MT19937", keys, int(pos), int(has_gauss), float(cached)))
    py = random.getstate()
    random.setstate((py[0], tuple(int(v) for v in state["python"].tolist()), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_write(path: str | os.PathLike, write) -> Path:
    """Call `write(tmp_path)` then rename onto `path`: a crash never leaves a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path
