"""Seeding, device choice, autocast, RNG state, atomic file writes and graceful stops.

Everything here is small and shared by the sketch and image sides.  torch is imported inside
the functions that need it, so data preparation and rendering (which use `atomic_write` and
`truncate_jsonl`) start without paying for the torch import.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import signal
import tempfile
import threading
import time
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


class DiskFullError(OSError):
    """A file could not be written because the disk (or the user's quota) is full.  str() is one
    sentence naming the file; `atomic_write` raises it with the previous version of the file intact."""

    def __init__(self, path: str | os.PathLike, *, kept: bool = False):
        super().__init__(errno.ENOSPC, "No space left on device", str(path))
        self.path = Path(path)
        self.kept = kept

    def __str__(self) -> str:
        kept = f"; the previous {self.path.name} is unchanged" if self.kept else ""
        return f"{self.path}: could not be written: the disk is full (no space left on device){kept}"


DISK_FULL_ERRNOS = frozenset(e for e in (errno.ENOSPC, getattr(errno, "EDQUOT", None)) if e is not None)


def is_disk_full(err: BaseException) -> bool:
    return isinstance(err, OSError) and err.errno in DISK_FULL_ERRNOS


def atomic_write(path: str | os.PathLike, write) -> Path:
    """Call `write(tmp_path)` then rename onto `path`: a crash never leaves a half-written file.

    A full disk raises `DiskFullError` naming `path` (the previous file, if any, is unchanged)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:  # name the file the user asked for, not the temporary one
        if is_disk_full(err):
            raise DiskFullError(path, kept=path.exists()) from None
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
        if is_disk_full(err) and not isinstance(err, DiskFullError):
            raise DiskFullError(path, kept=path.exists()) from None
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


# --------------------------------------------------------------------------------------------------
# Stopping cleanly: Ctrl-C / SIGTERM and periodic saves, shared by the sketch and image training loops


class StopRequests:
    """Turns Ctrl-C (SIGINT) and SIGTERM into a request the training loop polls, and says when a
    periodic save is due.

        with StopRequests(save_minutes=10) as stops:
            while training:
                ...one step...
                if stops.save_due(): save(); stops.saved()
                if stops.requested: save(); raise TrainingInterrupted(...)

    The first signal only sets `requested` (the signal's name, e.g. "SIGINT"): the loop finishes
    its step, saves and stops.  A second signal stops at once (KeyboardInterrupt, like an
    unhandled Ctrl-C; an atomic save in progress leaves the previous file intact).  Handlers are
    installed only in the main thread (elsewhere signals keep their current handlers) and the
    previous handlers come back on exit.  `save_minutes` <= 0 turns the periodic saves off.
    """

    SIGNALS = ("SIGINT", "SIGTERM")

    def __init__(self, save_minutes: float = 0.0, *, clock: Callable[[], float] = time.monotonic):
        self.interval = float(save_minutes) * 60.0
        self.clock = clock
        self.requested: str | None = None
        self._previous: dict = {}
        self._last_save = clock()

    def __enter__(self) -> "StopRequests":
        self._last_save = self.clock()
        if threading.current_thread() is threading.main_thread():
            for name in self.SIGNALS:
                sig = getattr(signal, name, None)
                if sig is not None:
                    self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        self._restore()

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()

    def _handle(self, signum, frame) -> None:
        if self.requested is not None:  # the second signal: stop now
            self._restore()
            raise KeyboardInterrupt(f"{signal.Signals(signum).name} again: stopped at once")
        self.requested = signal.Signals(signum).name

    def request(self, name: str = "SIGINT") -> None:
        """Ask the loop to stop as a signal would (for callers that are not the main thread)."""
        self.requested = name

    def save_due(self) -> bool:
        """True when save_minutes have passed since the last save (or the start)."""
        return self.interval > 0 and self.clock() - self._last_save >= self.interval

    def saved(self) -> None:
        """Start the next periodic interval now (call after every save of last.pt)."""
        self._last_save = self.clock()


class TrainingInterrupted(Exception):
    """Training stopped on request (Ctrl-C / SIGTERM) after saving its state: `checkpoint` (last.pt)
    holds step `step`, and resuming the run in `run_dir` continues exactly from there."""

    def __init__(self, signal_name: str, step: int | None, checkpoint: str, run_dir: str):
        self.signal_name, self.step, self.checkpoint, self.run_dir = signal_name, step, checkpoint, run_dir
        at = f"step {step}" if step is not None else "its last save"
        super().__init__(f"training stopped by {signal_name}; {checkpoint} holds {at}")

    @property
    def exit_code(self) -> int:
        """The shell's convention for a process stopped by a signal: 128 + its number."""
        return 128 + int(getattr(signal, self.signal_name, signal.SIGINT))
