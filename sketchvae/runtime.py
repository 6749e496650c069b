"""Seeding, device choice, autocast, RNG state and atomic file writes.

Everything here is small and shared by the sketch and image sides.  torch is imported inside
the functions that need it, so data preparation and rendering (which use `atomic_write` and
`truncate_jsonl`) start without paying for the torch import.
"""

from __future__ import annotations

import contextlib
import os
import random
import tempfile
from pathlib import Path

import json
from typing import TYPE_CHECKING, Callable

import numpy as np

if TYPE_CHECKING:
    import torch


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, numpy and torch; return a CPU generator seeded with `seed`."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def resolve_device(name: str = "auto") -> torch.device:
    """Map 'auto' | 'cpu' | 'cuda' | 'cuda:N' to a device; fail clearly if CUDA is missing."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available; use --device cpu or auto")
    if name != "cpu" and not name.startswith("cuda"):
        raise ValueError(f"unknown device {name!r}; choose from auto, cpu, cuda, cuda:N")
    return torch.device(name)


def configure_cpu() -> None:
    """Flush denormals to zero: LSTMs on CPU run several times slower without it."""
    import torch

    torch.set_flush_denormal(True)


def autocast(device: torch.device, enabled: bool = True):
    """bf16 autocast on CUDA, a no-op context on CPU (full precision)."""
    import torch

    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def rng_state() -> dict:
    """Capture every RNG the training loop touches, as tensors (safe for weights_only loads)."""
    import torch

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
    import torch

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
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:  # name the file the user asked for, not the temporary one
        raise _renamed(err, path) from None
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(err, OSError) and err.filename is not None and os.fsdecode(err.filename) == tmp:
            raise _renamed(err, path) from err
        raise
    return path


def _renamed(err: OSError, path: Path) -> OSError:
    """The same OSError, naming `path` instead of atomic_write's temporary file."""
    out = type(err)(err.errno, err.strerror, str(path)) if err.errno is not None else OSError(str(err))
    return out


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def truncate_jsonl(path: str | os.PathLike, keep: Callable[[dict], bool]) -> None:
    """Rewrite a JSON-lines log keeping the records for which `keep(record)` is true, atomically.

    Used by resumed runs to drop what a killed run logged after its last checkpoint; a line cut
    short by a crash is dropped too."""
    path = Path(path)
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if keep(rec):
            kept.append(line + "\n")

    def write(tmp):
        with open(tmp, "w") as f:
            f.writelines(kept)

    atomic_write(path, write)
