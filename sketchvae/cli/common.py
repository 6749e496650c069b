"""What every command shares: output paths, OS errors as one line, progress bars, flag names.

* Output paths: `output_file` / `output_dir` check, before any work is done, that an output can
  be created (its parent is a folder, writable, on a writable file system; a file is not a folder
  and the other way round) and raise a one-line `click.ClickException` naming the path and the
  reason.  `new_run_dir` removes a run folder a failed start created and left empty.
* `os_error_line` turns any OSError into "PATH: reason"; the click group in `sketchvae.cli` uses it
  as a safety net, so an OSError no command expected still ends in one line, not a traceback.
* `show_progress` is the one place that decides whether a progress bar is drawn: when asked
  (`--progress` / `--no-progress`), else only where stderr is a terminal, so logs stay clean.
* `flag_message` rewrites the library's field names (`TrainConfig.steps=0`, `z_size`) into the
  flags the user typed (`--steps 0`, `--latent`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import sys
from pathlib import Path

import click

_REASONS = {
    errno.EEXIST: "already exists",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "is a folder, not a file",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "read-only file system",
    errno.ENOSPC: "no space left on the device (the disk is full)",
    errno.EDQUOT: "disk quota exceeded",
    errno.ENOENT: "no such file or folder",
    errno.ENAMETOOLONG: "file name too long",
}


def os_error_line(err: OSError, path=None) -> str:
    """One line for an OSError: 'PATH: reason' (the path from `path` or the error itself)."""
    from sketchvae.runtime import DiskFullError

    if isinstance(err, DiskFullError):  # its own sentence says which file and whether the old one is kept
        return str(err)
    reason = _REASONS.get(err.errno) or err.strerror or str(err) or type(err).__name__
    where = path if path is not None else err.filename
    if where is None:
        return f"{reason} ({err})" if err.strerror and str(err) != reason else reason
    extra = f" (while writing {err.filename2})" if err.filename2 else ""
    return f"{os.fsdecode(where)}: {reason}{extra}"


def _blocker(path: Path) -> str | None:
    """Why `path` (a file or folder to be created, with any missing parents) cannot be created, or None."""
    probe = path.parent
    while True:
        if probe.exists():
            break
        if probe == probe.parent:
            return f"{probe} does not exist"
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is a file, not a folder"
    if not os.access(probe, os.W_OK | os.X_OK):
        try:
            read_only = bool(os.statvfs(probe).f_flag & os.ST_RDONLY)
        except (OSError, AttributeError):
            read_only = False
        return f"{probe} is on a read-only file system" if read_only else f"no permission to write in {probe}"
    return None


def output_file(path, suffixes: tuple[str, ...] | None = None, what: str = "output") -> Path:
    """Check that the file `path` can be written (its folders are created when it is); raise a one-line
    ClickException naming the path and the reason otherwise.  `suffixes` (lower case, with the dot):
    the file types the command writes; any other extension is refused with a sentence."""
    p = Path(path)
    if suffixes and p.suffix.lower() not in suffixes:
        raise click.ClickException(
            f"{p}: this command writes {' or '.join(s[1:].upper() for s in suffixes)}; give an output name "
            f"ending in {' or '.join(suffixes)}")
    if p.is_dir():
        raise click.ClickException(f"{p}: cannot write the {what}: it is a folder")
    if p.exists() and not os.access(p, os.W_OK) and not os.access(p.parent, os.W_OK):
        raise click.ClickException(f"{p}: cannot write the {what}: permission denied")
    why = _blocker(p)
    if why:
        raise click.ClickException(f"{p}: cannot write the {what}: {why}")
    return p


def output_dir(path, what: str = "output folder") -> Path:
    """Check that the folder `path` exists or can be created and written in; ClickException otherwise."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise click.ClickException(f"{p}: cannot use it as the {what}: it is a file, not a folder")
    if p.is_dir():
        if not os.access(p, os.W_OK | os.X_OK):
            why = _blocker(p / "x")
            raise click.ClickException(f"{p}: cannot write in the {what}: {why or 'permission denied'}")
        return p
    why = _blocker(p)
    if why:
        raise click.ClickException(f"{p}: cannot create the {what}: {why}")
    return p


@contextlib.contextmanager
def new_run_dir(path, what: str = "run folder"):
    """Check the run folder `path` and, when the block fails, remove the folders it created that are
    still empty, so a failed start leaves nothing behind."""
    p = output_dir(path, what)
    created = []
    probe = p
    while not probe.exists():
        created.append(probe)
        if probe == probe.parent:
            break
        probe = probe.parent
    try:
        yield p
    except BaseException:
        for folder in created:  # innermost first
            with contextlib.suppress(OSError):
                folder.rmdir()  # only succeeds when empty
        raise


def show_progress(flag: bool | None) -> bool:
    """Draw a progress bar? As asked by --progress/--no-progress, else only on a terminal's stderr."""
    if flag is not None:
        return bool(flag)
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def progress_option(func):
    """`--progress/--no-progress`, default: a bar only when stderr is a terminal (see `show_progress`)."""
    return click.option("--progress/--no-progress", default=None,
                        help="Progress bar on stderr [default: only when stderr is a terminal].")(func)


_CONFIG_PREFIX = re.compile(r"\b(?:TrainConfig|SketchRNNConfig|ImageTrainConfig|ImageVAEConfig)\.")


def flag_message(message: str, flags: dict[str, str]) -> str:
    """Rewrite a library message about config fields into the command's flags.

    `flags` maps field names to flags ({"z_size": "--latent"}); `TrainConfig.steps=0 must be ...`
    becomes `--steps 0 must be ...`, a bare `z_size` becomes `--latent`.  A key that is not an
    identifier ("greedy=True") is replaced as it stands.
    """
    out = _CONFIG_PREFIX.sub("", str(message))
    for field, flag in sorted(flags.items(), key=lambda kv: -len(kv[0])):
        if not field.isidentifier():  # a phrase such as "greedy=True" or "rate (R)": replaced as it is
            out = out.replace(field, flag)
            continue
        out = re.sub(rf"(?<![\w.-]){re.escape(field)}=(?=\S)", f"{flag} ", out)
        out = re.sub(rf"(?<![\w.-]){re.escape(field)}(?![\w=-])", flag, out)
    return out


def example_lines(help_text: str | None) -> list[str]:
    """The example command lines ('sketchvae ...') of a command's help (used by the tests)."""
    return [line.strip() for line in (help_text or "").splitlines() if line.strip().startswith("sketchvae ")]
