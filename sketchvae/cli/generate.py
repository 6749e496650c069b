"""`sketchvae sample | reconstruct | interpolate | complete`: draw with a trained Sketch-RNN to SVG.

Thin wrappers over `sketchvae.sample` (generation) and `sketchvae.render` (SVG).  Heavy imports
(torch, h5py) happen inside the commands so `sketchvae --help` stays instant.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import click

from sketchvae.cli import main
from sketchvae.cli.common import flag_message, output_file, show_progress


class _Temperature(click.FloatRange):
    """A finite temperature > 0 (inf and nan are refused here, naming the flag)."""

    def convert(self, value, param, ctx):
        out = super().convert(value, param, ctx)
        if not math.isfinite(out):
            self.fail(f"{value!r} is not a finite number; use a temperature > 0 such as 0.4, or --greedy", param, ctx)
        return out


_TAU = _Temperature(min=0.0, min_open=True)
_COUNT = click.IntRange(min=1)
# library argument names -> this command line's flags, for messages passed through
_FLAGS = {"greedy=True": "--greedy", "temperature": "--temperature", "max_len": "--max-len", "n": "-n",
          "cols": "--cols"}
_CKPT = click.Path(dir_okay=True)  # a checkpoint file, a run folder (its best.pt) or a shipped name


def default_checkpoint() -> Path:
    """checkpoints/sheep.pt at the repository root (the shipped model)."""
    from sketchvae.checkpoint import shipped_checkpoints_dir

    return shipped_checkpoints_dir() / "sheep.pt"


def _fail(err: BaseException):
    raise click.ClickException(flag_message(str(err), _FLAGS)) from None


def _svg_out(ctx, param, value):
    return None if value is None else str(output_file(value, (".svg",), "SVG"))


def _load(ckpt, device: str):
    from sketchvae.checkpoint import CheckpointError
    from sketchvae.sample import load

    if ckpt is None:
        ckpt = default_checkpoint()
        if not ckpt.exists():
            raise click.ClickException(
                f"no CKPT given and the default checkpoint {ckpt} is missing; pass a checkpoint "
                f"(e.g. runs/NAME/best.pt from `sketchvae train`)")
    try:
        return load(ckpt, device=device)
    except (CheckpointError, ValueError, FileNotFoundError) as err:
        _fail(err)


def _parse_indices(text: str) -> list[int]:
    try:
        out = [int(x) for x in text.replace(" ", "").split(",") if x != ""]
    except ValueError:
        raise click.BadParameter(f"{text!r}: expected comma-separated integers, e.g. 0,3,7",
                                 param_hint="--index") from None
    if not out or min(out) < 0:
        raise click.BadParameter(f"{text!r}: expected one or more integers >= 0", param_hint="--index")
    return out


def read_sketches(path, indices, split: str = "test",
                  flags: str | list[str] = "--index") -> list[tuple["np.ndarray", str | None]]:  # noqa: F821
    """Sketches number `indices` of a data file as (int16 stroke-3, class name or None).

    `flags`: the option each index came from (one name, or one per index), named in errors.

    .npz: the split's sketches (class: the file's stem); .ndjson: the valid drawings in file order
    (class: the line's "word"); .h5 / .hdf5: a prepared cache's split (class: its label's name).
    Raises click errors naming the file and the number of sketches available.
    """
    import numpy as np

    from sketchvae.data.formats import DataError, iter_ndjson, read_npz_split

    path = Path(path)
    if not path.exists():
        raise click.BadParameter(f"{path}: no such file", param_hint="DATA")
    suffix = path.suffix.lower()
    need = max(indices)
    try:
        if suffix == ".npz":
            points, lengths, _ = read_npz_split(path, split)
            ends = np.concatenate([[0], np.cumsum(lengths)])
            count = len(lengths)
            get = lambda i: (points[ends[i]:ends[i + 1]], path.stem)  # noqa: E731
        elif suffix == ".ndjson":
            drawings = []
            for d in iter_ndjson(path, on_bad=lambda err: None):
                drawings.append(d)
                if len(drawings) > need:
                    break
            count = len(drawings)
            get = lambda i: (drawings[i].strokes, drawings[i].word)  # noqa: E731
        elif suffix in (".h5", ".hdf5"):
            from sketchvae.data.cache import open_cache

            cache = open_cache(path)
            if split not in cache.splits:
                raise click.BadParameter(f"{path} has no split {split!r}; it has {', '.join(cache.splits)}",
                                         param_hint="--split")
            view = cache.split(split)
            count = len(view)
            names = list(cache.class_names)
            get = lambda i: (np.asarray(view[i]), names[int(view.labels[i])] if names else None)  # noqa: E731
        else:
            raise click.BadParameter(f"{path}: unknown data format {suffix!r}; use .npz, .ndjson or .h5",
                                     param_hint="DATA")
    except (DataError, OSError, KeyError) as err:
        raise click.ClickException(f"{path}: cannot read sketches: {err}") from None
    opts = [flags] * len(indices) if isinstance(flags, str) else list(flags)
    bad = [(i, flag) for i, flag in zip(indices, opts) if i >= count]
    if bad:
        where = f"split {split!r} of {path}" if suffix != ".ndjson" else str(path)
        raise click.BadParameter(f"sketch {bad[0][0]} does not exist: {where} has {count} sketches (0..{count - 1})",
                                 param_hint=bad[0][1])
    return [get(i) for i in indices]


def _class_for(sampler, word: str | None, given: str | None):
    """The class to use for a data sketch: --class if given, else the sketch's own when the model knows it."""
    if not sampler.config.class_conditional:
        if given is not None:
            from sketchvae.sample import class_index

            class_index(sampler, given)  # raises "not class-conditional"
        return None
    if given is not None:
        return given
    if word is not None and word in sampler.class_names:
        return word
    names = ", ".join(sampler.class_names or map(str, range(sampler.config.num_classes)))
    raise ValueError(f"this class-conditional model needs --class (the data's class {word!r} is not one of "
                     f"its classes: {names})")


class _Bar:
    """tqdm progress on stderr, fed by the sampler's `progress` callback."""

    def __init__(self, total: int, enabled: bool, desc: str):
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="sketch", desc=desc, file=sys.stderr, dynamic_ncols=True)

    def __call__(self, k: int) -> None:
        if self.bar is not None:
            self.bar.update(k)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _common(func):
    func = click.option("--convention", type=click.Choice(["paper", "magenta", "magenta-js"]), default=None,
                        help="What -t means: paper (Ha & Eck eq. 8), magenta (sigma * tau) or magenta-js (pi and "
                             "pen softmax at 0.5 + tau/2) [default: the checkpoint's own: paper for sketchvae "
                             "models, magenta-js for converted Magenta models].")(func)
    func = click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda | cuda:N.")(func)
    func = click.option("--max-len", type=_COUNT, default=None,
                        help="Most points per sketch [default: the model's max_seq_len].")(func)
    func = click.option("--seed", type=int, default=None, help="Seed for z and every draw (reproducible output).")(func)
    func = click.option("--greedy", is_flag=True, help="Most likely choices instead of sampling (ignores -t).")(func)
    func = click.option("-t", "--temperature", type=_TAU, default=0.4, show_default=True,
                        help="Sampling temperature tau > 0 (Ha & Eck eq. 8).")(func)
    func = click.option("-o", "--out", type=click.Path(dir_okay=False), required=True, callback=_svg_out,
                        help="Output SVG file (.svg; its folders are created).")(func)
    return func


def _done(path, what: str) -> None:
    click.echo(f"wrote {what} to {path}")


# ----------------------------------------------------------------------------------------- sample
@main.command()
@click.argument("ckpt", required=False, type=_CKPT)
@click.option("-n", "n", type=_COUNT, default=16, show_default=True, help="Number of sketches.")
@click.option("--class", "class_name", default=None, help="Class to draw (class-conditional models).")
@click.option("--cols", type=_COUNT, default=None, help="Columns of the grid [default: near square].")
@click.option("--color-by-order", is_flag=True, help="Colour strokes by drawing order.")
@click.option("--progress/--no-progress", default=None,
              help="Progress bar on stderr [default: for n >= 256 when stderr is a terminal].")
@_common
def sample(ckpt, n, class_name, cols, color_by_order, progress, out, temperature, greedy, seed, max_len, device,
           convention):
    """Draw N new sketches from CKPT (default: the shipped checkpoints/sheep.pt) into an SVG grid.

    CKPT: a checkpoint file, a run folder (its best.pt) or the name of a shipped checkpoint
    (sheep, multiclass).  The output is SVG: open it in a browser, or convert it to PNG with
    e.g. `rsvg-convert sheep.svg -o sheep.png`.

    \b
    Examples:
      sketchvae sample -n 16 --cols 8 --seed 0 -o sheep.svg
      sketchvae sample multiclass --class omniglot -n 8 --seed 0 -o omniglot.svg
      sketchvae sample runs/catpig --class cat -n 64 -t 0.2 --seed 1 -o cats.svg
      sketchvae sample -n 4 --greedy -o likely.svg      # most likely choices, no randomness
      sketchvae sample magenta/sheep -t 0.45 -o magenta_sheep.svg   # after `download --magenta sheep`
    """
    from sketchvae import render
    from sketchvae import sample as S

    sampler = _load(ckpt, device)
    bar = _Bar(n, show_progress(progress) and (progress is not None or n >= 256), "sample")
    try:
        sketches = S.sample(sampler, n, temperature, classes=class_name, greedy=greedy, max_len=max_len, seed=seed,
                            progress=bar, convention=convention)
        render.grid_svg(sketches, cols=cols, path=out, color_by_order=color_by_order)
    except ValueError as err:
        _fail(err)
    finally:
        bar.close()
    _done(out, f"{n} sketches")


# ----------------------------------------------------------------------------------------- reconstruct
@main.command()
@click.argument("ckpt", type=_CKPT)
@click.argument("data", type=click.Path(dir_okay=False))
@click.option("--index", "index", default="0", show_default=True, help="Sketches to reconstruct, e.g. 0,3,7.")
@click.option("--split", default="test", show_default=True, help="Split of an .npz / .h5 file.")
@click.option("-n", "n", type=_COUNT, default=1, show_default=True, help="Reconstructions per sketch.")
@click.option("--class", "class_name", default=None, help="Class (class-conditional models; default: the sketch's).")
@click.option("--as-class", "as_class", default=None,
              help="Class-conditional models: encode each sketch with its own class, decode it as this one.")
@_common
def reconstruct(ckpt, data, index, split, n, class_name, as_class, out, temperature, greedy, seed, max_len, device,
                convention):
    """Encode sketches of DATA and decode them again: one row per sketch, the original first.

    CKPT: a checkpoint file, a run folder (its best.pt) or a shipped name (sheep, multiclass).
    DATA: .npz (Sketch-RNN), .ndjson (Quick, Draw!) or a prepared .h5 cache.

    \b
    Examples:
      sketchvae reconstruct sheep ../shared/data/sketchrnn_datasets/aaron_sheep.npz --index 0,1,2,3 -o recon.svg
      sketchvae reconstruct runs/catpig data/catpig.h5 --split valid --index 5 -n 4 --seed 0 -o cat5.svg
      sketchvae reconstruct multiclass aaron_sheep.npz --index 0 --as-class short_kanji -o k.svg
    """
    from sketchvae import render
    from sketchvae import sample as S

    indices = _parse_indices(index)
    sampler = _load(ckpt, device)
    if not sampler.config.conditional:
        raise click.ClickException(f"{ckpt}: this model (mode 'decoder') is unconditional: it has no encoder, so "
                                   f"it cannot reconstruct a given sketch; use `sketchvae complete` to continue one")
    items = read_sketches(data, indices, split)
    sketches, captions = [], []
    try:
        for i, (s3, word) in zip(indices, items):
            cls = _class_for(sampler, word, class_name)
            recs = S.reconstruct(sampler, [s3], n, temperature, classes=cls, greedy=greedy, seed=seed,
                                 max_len=max_len, convention=convention, as_class=as_class)[0]
            sketches += [s3] + recs
            what = "recon" if as_class is None else f"as {as_class}"
            captions += [f"#{i} original"] + [f"#{i} {what}" + (f" {k + 1}" if n > 1 else "") for k in range(n)]
        render.grid_svg(sketches, cols=n + 1, captions=captions, path=out)
    except ValueError as err:
        _fail(err)
    _done(out, f"{len(indices)} sketches and their reconstructions")


# ----------------------------------------------------------------------------------------- interpolate
@main.command()
@click.argument("ckpt", type=_CKPT)
@click.argument("data", type=click.Path(dir_okay=False))
@click.option("--from", "i_from", type=click.IntRange(min=0), required=True, help="Index of the first sketch.")
@click.option("--to", "i_to", type=click.IntRange(min=0), required=True, help="Index of the last sketch.")
@click.option("--steps", type=click.IntRange(min=2), default=10, show_default=True, help="Sketches in the strip.")
@click.option("--method", type=click.Choice(["slerp", "lerp"]), default="slerp", show_default=True)
@click.option("--split", default="test", show_default=True, help="Split of an .npz / .h5 file.")
@click.option("--class", "class_name", default=None, help="Class (class-conditional models; default: the sketch's).")
@_common
def interpolate(ckpt, data, i_from, i_to, steps, method, split, class_name, out, temperature, greedy, seed,
                max_len, device, convention):
    """Decode a strip of latent vectors between two sketches of DATA (their posterior means).

    Every step uses the same random draws, so only z changes along the strip.  --from and --to are
    sketch numbers in the split of DATA (0 is the first).

    \b
    Examples:
      sketchvae interpolate sheep ../shared/data/sketchrnn_datasets/aaron_sheep.npz --from 0 --to 1 --steps 8 -o interp.svg
      sketchvae interpolate runs/catpig data/catpig.h5 --from 3 --to 9 --method lerp --greedy -o cat_to_pig.svg
    """
    from sketchvae import render
    from sketchvae import sample as S

    sampler = _load(ckpt, device)
    if not sampler.config.conditional:
        raise click.ClickException(f"{ckpt}: this model (mode 'decoder') is unconditional: it has no encoder and "
                                   f"no latent space to interpolate in; use a 'vae' or 'class_vae' checkpoint")
    (a, word_a), (b, word_b) = read_sketches(data, [i_from, i_to], split, ["--from", "--to"])
    try:
        cls_a = _class_for(sampler, word_a, class_name)
        cls_b = _class_for(sampler, word_b, class_name)
        strip = S.interpolation_strip(sampler, a, b, steps, temperature, method=method,
                                      classes=None if cls_a is None else [cls_a, cls_b], greedy=greedy, seed=seed,
                                      max_len=max_len, convention=convention)
        captions = [f"#{i_from}"] + [f"t={k / (steps - 1):.2f}" for k in range(steps)] + [f"#{i_to}"]
        render.interpolation_svg([a] + strip + [b], path=out, captions=captions)
    except ValueError as err:
        _fail(err)
    _done(out, f"an interpolation of {steps} steps ({method}) between #{i_from} and #{i_to}")


# ----------------------------------------------------------------------------------------- analogy
@main.command()
@click.argument("ckpt", type=_CKPT)
@click.argument("data", type=click.Path(dir_okay=False))
@click.option("--a", "i_a", type=click.IntRange(min=0), required=True, help="Index of sketch a in DATA.")
@click.option("--b", "i_b", type=click.IntRange(min=0), required=True, help="Index of sketch b (subtracted).")
@click.option("--c", "i_c", type=click.IntRange(min=0), required=True, help="Index of sketch c (added to a - b).")
@click.option("-n", "n", type=_COUNT, default=4, show_default=True, help="Sketches decoded from z_a - z_b + z_c.")
@click.option("--split", default="test", show_default=True, help="Split of an .npz / .h5 file.")
@click.option("--class", "class_name", default=None,
              help="Class to encode a, b, c with (class-conditional models; default: each sketch's own).")
@click.option("--as-class", "as_class", default=None,
              help="Class to decode the result as (class-conditional models; default: c's).")
@_common
def analogy(ckpt, data, i_a, i_b, i_c, n, split, class_name, as_class, out, temperature, greedy, seed, max_len,
            device, convention):
    """Latent arithmetic: decode z_a - z_b + z_c (posterior means of three sketches of DATA).

    "a is to b as the result is to c": what sketch a has and b lacks, added to c.  One row: a, b,
    c, then N decodings.  Needs an encoder ('vae' or 'class_vae' model).

    \b
    Examples:
      sketchvae analogy checkpoints/sheep.pt aaron_sheep.npz --a 3 --b 7 --c 12 -o analogy.svg
      sketchvae analogy checkpoints/multiclass.pt data/mix.h5 --a 0 --b 5 --c 9 --as-class omniglot -o a.svg
    """
    from sketchvae import render
    from sketchvae import sample as S

    sampler = _load(ckpt, device)
    if not sampler.config.conditional:
        raise click.ClickException(f"{ckpt}: this model (mode 'decoder') is unconditional: it has no encoder and "
                                   f"no latent space for an analogy; use a 'vae' or 'class_vae' checkpoint")
    items = read_sketches(data, [i_a, i_b, i_c], split, ["--a", "--b", "--c"])
    try:
        classes = [_class_for(sampler, word, class_name) for _, word in items]
        result = S.analogy(sampler, *(s for s, _ in items), n, temperature,
                           classes=None if classes[0] is None else classes, decode_class=as_class, greedy=greedy,
                           seed=seed, max_len=max_len, convention=convention)
        captions = [f"a: #{i_a}", f"b: #{i_b}", f"c: #{i_c}"] + ["a - b + c" + (f" {k + 1}" if n > 1 else "")
                                                                 for k in range(n)]
        render.grid_svg([s for s, _ in items] + result, cols=3 + n, captions=captions, path=out)
    except ValueError as err:
        _fail(err)
    _done(out, f"{n} decodings of z_a - z_b + z_c (#{i_a} - #{i_b} + #{i_c})")


# ----------------------------------------------------------------------------------------- complete
@main.command()
@click.argument("ckpt", type=_CKPT)
@click.argument("partial", type=click.Path(dir_okay=False))
@click.option("--index", type=click.IntRange(min=0), default=0, show_default=True, help="Which sketch of PARTIAL.")
@click.option("--strokes", "keep", type=click.IntRange(min=1), default=None,
              help="Strokes of the sketch to keep [default: the first half of its strokes].")
@click.option("-n", "n", type=_COUNT, default=8, show_default=True, help="Number of completions.")
@click.option("--split", default="test", show_default=True, help="Split of an .npz / .h5 file.")
@click.option("--class", "class_name", default=None, help="Class (class-conditional models; default: the sketch's).")
@click.option("--z-source", type=click.Choice(["encode", "prior"]), default="encode", show_default=True,
              help="z from encoding the kept strokes (one posterior draw per completion) or from the prior.")
@_common
def complete(ckpt, partial, index, keep, n, split, class_name, z_source, out, temperature, greedy, seed, max_len,
             device, convention):
    """Keep the first strokes of a sketch of PARTIAL and let the model finish it N ways.

    The kept strokes are drawn in one colour, each ending in another.  PARTIAL: .ndjson, .npz or .h5.
    Works with every model, unconditional (decoder-only) ones included: their endings come from the
    decoder alone, which has read the kept strokes.

    \b
    Examples:
      sketchvae complete sheep ../shared/data/sketchrnn_datasets/aaron_sheep.npz --index 2 -n 7 --seed 0 -o done.svg
      sketchvae complete runs/cat my_cat.ndjson --strokes 3 -n 8 --z-source prior -o cat_endings.svg
    """
    import numpy as np

    from sketchvae import render
    from sketchvae import sample as S

    sampler = _load(ckpt, device)
    ((s3, word),) = read_sketches(partial, [index], split)
    lifts = np.flatnonzero(s3[:, 2] > 0)
    total = len(lifts)
    k = max(1, total // 2) if keep is None else keep
    if k > total:
        raise click.BadParameter(f"sketch #{index} has {total} strokes; cannot keep {k}", param_hint="--strokes")
    given = s3[:lifts[k - 1] + 1]
    try:
        cls = _class_for(sampler, word, class_name)
        full = S.complete(sampler, given, n, temperature, classes=cls, greedy=greedy, z_source=z_source, seed=seed,
                          max_len=max_len, convention=convention)
        render.completion_svg(given, [f[len(given):] for f in full], path=out)
    except ValueError as err:
        _fail(err)
    _done(out, f"{n} completions of the first {k} of {total} strokes of #{index}")
