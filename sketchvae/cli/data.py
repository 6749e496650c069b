"""`sketchvae download`, `sketchvae prepare` and `sketchvae info`: thin wrappers over
`sketchvae.data.quickdraw` and `sketchvae.data.cache`.

Heavy imports (numpy, h5py) happen inside the commands so `sketchvae --help` stays instant.
Every library error (ValueError / DataError / DownloadError / FileNotFoundError / OSError)
becomes a one-line `click.ClickException`, never a traceback.
"""

from __future__ import annotations

import json
import sys

import click

from sketchvae.cli import main
from sketchvae.cli.common import output_dir, output_file, progress_option, show_progress

_SPLITS = ("train", "valid", "test")
_SHOW_CLASSES = 40  # prepare/info list every class up to this many (else: summary, or --all-classes)
_SHOW_SOURCES = 10  # prepare lists the sources with the most skipped sketches (all with --all-classes)


def _fail(err: BaseException):
    raise click.ClickException(str(err)) from None


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


def _check_classes(names) -> list[str]:
    """Official spellings of the given class names; UsageError with close matches for unknown ones."""
    import difflib

    from sketchvae.data.quickdraw import CLASS_NAMES, resolve_class

    out, problems = [], []
    lower = {c.lower(): c for c in CLASS_NAMES}
    for name in names:
        try:
            out.append(resolve_class(name))
        except ValueError:
            key = " ".join(name.replace("_", " ").split()).lower()
            close = difflib.get_close_matches(key, list(lower), n=3, cutoff=0.6)
            hint = f" (did you mean {', '.join(repr(lower[c]) for c in close)}?)" if close else ""
            problems.append(f"{name!r}{hint}")
    if problems:
        raise click.UsageError(f"unknown Quick, Draw! class{'es' if len(problems) > 1 else ''}: "
                               f"{'; '.join(problems)}. `sketchvae download --list` shows all {len(CLASS_NAMES)}; "
                               f"quote names with spaces, e.g. \"ice cream\"")
    return out


# --------------------------------------------------------------------------------------------------
# download


@main.command()
@click.argument("classes", nargs=-1, metavar="CLASS...")
@click.option("--data-dir", default="data/quickdraw", show_default=True, type=click.Path(file_okay=False),
              help="Folder the files go to ({class}.npz, {class}.ndjson). `sketchvae prepare CLASS` looks here too.")
@click.option("--ndjson", is_flag=True, help="Also download the simplified ndjson file of each class "
              "(full/simplified/{class}.ndjson, every drawing with its key_id; much larger).")
@click.option("--no-npz", is_flag=True, help="Skip the Sketch-RNN .npz files (use with --ndjson).")
@click.option("--base-url", metavar="URL", default=None,
              help="Server or mirror to download from  [default: $SKETCHVAE_QUICKDRAW_URL, else "
                   "https://storage.googleapis.com/quickdraw_dataset; with --magenta: $SKETCHVAE_MAGENTA_URL, else "
                   "https://storage.googleapis.com/quickdraw-models/sketchRNN/large_models]")
@click.option("--force", is_flag=True, help="Download again even if the file is already there.")
@click.option("--retries", default=5, show_default=True, type=click.IntRange(0),
              help="Retries (resuming) when the connection drops.")
@click.option("--timeout", default=60.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Seconds without data before a connection counts as dropped.")
@click.option("--list", "list_classes", is_flag=True, help="Print the 345 class names (with --magenta: Magenta's "
              "models) and exit.")
@progress_option
@click.option("--magenta", is_flag=True, help="Download Magenta's pretrained Sketch-RNN models (magenta-js .gen.json) "
              "instead of data, and convert each to a checkpoint NAME.pt for sample / complete.")
@click.option("--models-dir", default=None, type=click.Path(file_okay=False),
              help="With --magenta: folder for NAME.gen.json and NAME.pt  [default: $SKETCHVAE_MAGENTA_DIR, else "
                   "checkpoints/magenta/ in the repository, or ~/.local/share/sketchvae/magenta/ when sketchvae "
                   "is installed from a wheel]")
def download(classes, data_dir, ndjson, no_npz, base_url, force, retries, timeout, list_classes, progress, magenta,
             models_dir):
    """Download Quick, Draw! classes (official Sketch-RNN .npz files), or with --magenta Magenta's models.

    Each .npz holds 70000 / 2500 / 2500 train / valid / test sketches of one class.

    Downloads go through a .part file: an interrupted download resumes where it stopped (HTTP
    Range) when you run the command again, and each .npz is checked with the safe loader before
    it is moved into place. Class names are case-insensitive; quote names with spaces.

    \b
    Examples:
      sketchvae download cat pig
      sketchvae download "ice cream" "The Eiffel Tower" --data-dir data/quickdraw
      sketchvae download cat --ndjson                 # also the simplified ndjson
      sketchvae download --list                       # the 345 class names
      SKETCHVAE_QUICKDRAW_URL=http://mirror/quickdraw sketchvae download cat

    
    Magenta's pretrained models (unconditional, one class each; Apache-2.0, trained on Quick, Draw!):
      sketchvae download --magenta sheep cat "sea turtle"   # -> checkpoints/magenta/sheep.pt, ...
      sketchvae sample checkpoints/magenta/sheep.pt -n 16 -o sheep.svg
      sketchvae download --magenta --list                  # the model names
    """
    if magenta:
        return _download_magenta(classes, models_dir, base_url, force, retries, timeout, list_classes, progress)
    from sketchvae.data.quickdraw import CLASS_NAMES, download as fetch

    if list_classes:
        for name in CLASS_NAMES:
            click.echo(name)
        return
    if not classes:
        raise click.UsageError("give at least one class name, e.g. `sketchvae download cat` (see --list)")
    if no_npz and not ndjson:
        raise click.UsageError("--no-npz leaves nothing to download; add --ndjson")
    names = _check_classes(classes)
    output_dir(data_dir, "data folder")
    try:
        fetched = fetch(names, data_dir, npz=not no_npz, simplified=ndjson, base=base_url, force=force,
                        timeout=timeout, retries=retries, progress=show_progress(progress))
    except (ValueError, OSError) as err:  # DownloadError / DataError are ValueErrors
        _fail(err)
    new = 0
    for f in fetched:
        what = "downloaded" if f.downloaded else "already there"
        new += f.downloaded
        click.echo(f"{f.cls}: {f.path} ({_size(f.size)}, {what})")
    click.echo(f"{new} file(s) downloaded, {len(fetched) - new} already there, in {data_dir}")


def _download_magenta(names, models_dir, base_url, force, retries, timeout, list_models, progress) -> None:
    from sketchvae.interop import magenta as M

    if list_models:
        for name in M.MAGENTA_MODELS:
            click.echo(name)
        return
    if not names:
        raise click.UsageError("give at least one model name, e.g. `sketchvae download --magenta sheep` (see --list)")
    problems = []
    for name in names:
        try:
            M.resolve_model_name(name)
        except ValueError as err:
            problems.append(str(err))
    if problems:
        raise click.UsageError(f"{'; '.join(problems)}. `sketchvae download --magenta --list` shows all "
                               f"{len(M.MAGENTA_MODELS)}")
    folder = output_dir(models_dir or M.default_dir(), "models folder")
    try:
        fetched = M.download(names, folder, base=base_url, force=force, timeout=timeout, retries=retries,
                             progress=show_progress(progress))
    except (ValueError, OSError) as err:  # DownloadError / MagentaFormatError / CheckpointError are ValueErrors
        _fail(err)
    for f in fetched:
        what = "downloaded" if f.downloaded else "already there"
        conv = "converted to" if f.converted else "checkpoint already there:"
        click.echo(f"{f.name}: {f.gen_json} ({_size(f.size)}, {what}); {conv} {f.checkpoint}")
    click.echo(f"{sum(f.downloaded for f in fetched)} model(s) downloaded, in {folder}; draw with "
               f"`sketchvae sample {fetched[0].checkpoint} -o {fetched[0].name}.svg`")


# --------------------------------------------------------------------------------------------------
# prepare


def _table(rows, header) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    fmt = lambda r: "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)  # noqa: E731
                              for i, (c, w) in enumerate(zip(r, widths)))
    return [fmt(header)] + [fmt(r) for r in rows]


def _class_table(class_names, counts, all_classes: bool) -> list[str]:
    """Lines of a per-class x split table of sketch counts (counts: (C, 3))."""
    rows = [[name, *[int(c) for c in counts[k]], int(counts[k].sum())] for k, name in enumerate(class_names)]
    total = ["TOTAL", *[int(c) for c in counts.sum(axis=0)], int(counts.sum())]
    hidden = 0
    if not all_classes and len(rows) > _SHOW_CLASSES:
        hidden = len(rows) - _SHOW_CLASSES
        rows = rows[:_SHOW_CLASSES]
    lines = _table(rows + [total], ["class", *_SPLITS, "total"])
    if hidden:
        lines.insert(-1, f"... {hidden} more classes (--all-classes lists them)")
    return lines


@main.command()
@click.argument("sources", nargs=-1, metavar="SOURCE...")
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False),
              help="The HDF5 cache to write, e.g. data/sheep.h5.")
@click.option("--max-len", default=250, show_default=True, type=click.IntRange(0),
              help="Leave out sketches with more points (0 = no limit).")
@click.option("--min-len", default=1, show_default=True, type=click.IntRange(1),
              help="Leave out sketches with fewer points.")
@click.option("--skip-bad", is_flag=True, help="Skip (and count) bad sketches / lines instead of stopping at the "
              "first one with an error naming file and line.")
@click.option("--valid-frac", default=0.05, show_default=True, type=click.FloatRange(0, 1, max_open=True),
              help="Fraction of each ndjson class for valid (.npz files keep their own splits).")
@click.option("--test-frac", default=0.05, show_default=True, type=click.FloatRange(0, 1, max_open=True),
              help="Fraction of each ndjson class for test.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the ndjson split (hash of key_id).")
@click.option("--format", "fmt", default="auto", show_default=True, type=click.Choice(["auto", "simplified", "raw"]),
              help="ndjson flavour: auto (raw if strokes have a time row), simplified or raw (converted as Google "
                   "simplified its data: scale to 0..255, resample 1 px, RDP 2.0).")
@click.option("--force", is_flag=True, help="Rebuild even if OUT is up to date; overwrite an OUT made from other "
              "sources or options (without --force that is refused: a run may point to it).")
@click.option("--data-dir", default="data/quickdraw", show_default=True, type=click.Path(file_okay=False),
              help="Where class-name sources are looked up ({class}.npz, else {class}.ndjson) and downloaded to.")
@click.option("--no-download", is_flag=True, help="Fail instead of downloading a class name that is not in --data-dir.")
@click.option("--base-url", metavar="URL", default=None, help="Server for class-name downloads (see `download`).")
@click.option("--all-classes", is_flag=True, help=f"List every class and every source with skipped sketches "
              f"(default: the first {_SHOW_CLASSES} classes, {_SHOW_SOURCES} sources).")
@progress_option
def prepare(sources, out, max_len, min_len, skip_bad, valid_frac, test_frac, seed, fmt, force, data_dir,
            no_download, base_url, all_classes, progress):
    """Prepare .npz / .ndjson files, folders or class names into one HDF5 cache for training.

    SOURCE: .npz files (Sketch-RNN stroke-3, their train/valid/test are kept), .ndjson files
    (Quick, Draw! simplified or raw; split by a seeded hash of key_id), folders of them, or
    Quick, Draw! class names (downloaded into --data-dir when missing). Each file is one class,
    named by its stem; files with the same stem are merged (a drawing present in two of them,
    e.g. raw and simplified, is kept once). Prints the sketches kept per class and split and
    every sketch left out, with the reason. An OUT made from the same source bytes with the same
    options is reused; an OUT made from anything else is never replaced without --force.

    \b
    Examples:
      sketchvae prepare ../shared/data/sketchrnn_datasets/aaron_sheep.npz -o data/sheep.h5
      sketchvae prepare cat pig "ice cream" -o data/three.h5
      sketchvae prepare qd/simplified/ qd/raw/ -o data/qd.h5 --skip-bad --max-len 200
      sketchvae prepare drawings.ndjson --format raw --valid-frac 0.1 --test-frac 0.1 -o data/mine.h5
    """
    from sketchvae.data.quickdraw import prepare as run_prepare

    if not sources:
        raise click.UsageError("give at least one SOURCE (.npz / .ndjson file, folder of them, or class name)")
    if valid_frac + test_frac >= 1:
        raise click.UsageError(f"--valid-frac + --test-frac must be < 1 (got {valid_frac} + {test_frac})")
    if max_len and max_len < min_len:
        raise click.UsageError(f"--max-len {max_len} is smaller than --min-len {min_len}")
    from sketchvae.data.quickdraw import CacheExistsError

    output_file(out, (".h5", ".hdf5"), "cache")
    try:
        rep = run_prepare(list(sources), out, max_len=max_len or None, min_len=min_len, skip_bad=skip_bad,
                          valid_frac=valid_frac, test_frac=test_frac, seed=seed, ndjson_format=fmt,
                          data_dir=data_dir, download_missing=not no_download, base=base_url, force=force,
                          progress=show_progress(progress), overwrite=False)
    except CacheExistsError as err:
        raise click.ClickException(f"{err}; not overwriting it (a run may use it): pass --force to replace it, "
                                   f"or choose another -o") from None
    except ValueError as err:
        _fail(err)
    _print_report(rep, all_classes)  # an OSError goes to the group's handler: one line naming the file


def _print_report(rep, all_classes: bool) -> None:
    head = "up to date, reused" if rep.reused else "written"
    click.echo(f"{rep.path}: {head}; {len(rep.class_names)} class(es), scale factor {rep.scale_factor:.4f}")
    for line in _class_table(rep.class_names, rep.counts, all_classes):
        click.echo("  " + line)
    skipped = rep.skipped
    n_skipped = sum(skipped.values())
    click.echo(f"input {rep.input} sketches: kept {rep.kept}, skipped {n_skipped}")
    if n_skipped:
        click.echo("skipped, by reason:")
        for reason, k in skipped.most_common():
            click.echo(f"  {k:>8}  {reason}")
            for ex in rep.examples.get(reason, [])[:3]:
                click.echo(f"            e.g. {ex}")
        by_source = [s for s in rep.sources if sum(s.skipped.values())]
        if by_source:
            click.echo("skipped, by source:")
            by_source.sort(key=lambda s: -sum(s.skipped.values()))
            shown = by_source if all_classes or len(by_source) <= _SHOW_SOURCES else by_source[:_SHOW_SOURCES]
            for s in shown:
                parts = ", ".join(f"{k} {r}" for r, k in s.skipped.most_common())
                click.echo(f"  {s.name}: {sum(s.skipped.values())} of {s.input} ({parts})")
            if len(shown) < len(by_source):
                click.echo(f"  ... {len(by_source) - len(shown)} more sources with skipped sketches "
                           f"(--all-classes lists them)")
    for s in rep.sources:
        for note in s.notes:
            click.echo(f"note: {note}")


# --------------------------------------------------------------------------------------------------
# info


def _length_stats(lengths) -> dict:
    import numpy as np

    if len(lengths) == 0:
        return {"n": 0}
    return {"n": int(len(lengths)), "min": int(lengths.min()), "median": float(np.median(lengths)),
            "mean": float(lengths.mean()), "p95": float(np.percentile(lengths, 95)), "max": int(lengths.max()),
            "points": int(lengths.sum())}


@main.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--all-classes", is_flag=True, help=f"List every class (default: the first {_SHOW_CLASSES}).")
@click.option("--json", "as_json", is_flag=True, help="Print everything as one JSON object.")
def info(file, all_classes, as_json):
    """Describe a prepared HDF5 cache: classes, counts, scale factor, lengths.

    Prints the classes, sketches per class and split, the scale factor, points-per-sketch
    statistics per split, the sources and the preprocessing options of FILE.

    \b
    Examples:
      sketchvae info data/sheep.h5
      sketchvae info data/qd.h5 --all-classes
      sketchvae info data/qd.h5 --json | python -m json.tool
    """
    import numpy as np

    from sketchvae.data.cache import open_cache

    try:
        cache = open_cache(file)
    except (ValueError, FileNotFoundError, OSError) as err:
        _fail(err)
    with cache:
        names = cache.class_names
        counts = np.stack([cache.split(s).class_counts(len(names)) if s in cache.splits
                           else np.zeros(len(names), np.int64) for s in _SPLITS], axis=1)
        stats = {s: _length_stats(cache.split(s).lengths) for s in cache.splits}
        attrs = cache.attrs
        prep = attrs.get("preprocessing") or {}
        sources = attrs.get("source_checksums") or {}
        if as_json:
            click.echo(json.dumps({
                "file": str(file), "class_names": names,
                "counts": {s: {n: int(counts[k, j]) for k, n in enumerate(names)} for j, s in enumerate(_SPLITS)},
                "scale_factor": cache.scale_factor, "lengths": stats, "sources": sources,
                "preprocessing": prep, "created_by": attrs.get("created_by"),
                "memory_mapped": cache.memory_mapped,
            }))
            return
        click.echo(f"{file}: {len(names)} class(es), {int(counts.sum())} sketches, scale factor "
                   f"{cache.scale_factor:.4f}" + (f", created by {attrs['created_by']}" if attrs.get("created_by") else ""))
        for line in _class_table(names, counts, all_classes):
            click.echo("  " + line)
        click.echo("points per sketch:")
        rows = []
        for s, st in stats.items():
            if st["n"]:
                rows.append([s, st["n"], st["min"], f"{st['median']:.0f}", f"{st['mean']:.1f}", f"{st['p95']:.0f}",
                             st["max"], st["points"]])
            else:
                rows.append([s, 0, "-", "-", "-", "-", "-", 0])
        for line in _table(rows, ["split", "sketches", "min", "median", "mean", "p95", "max", "points"]):
            click.echo("  " + line)
        if prep:
            keys = ("max_len", "min_len", "valid_frac", "test_frac", "seed", "ndjson_format", "skip_bad")
            click.echo("preprocessing: " + ", ".join(f"{k}={prep[k]}" for k in keys if k in prep))
        if sources:
            shown = list(sources) if all_classes or len(sources) <= _SHOW_CLASSES else list(sources)[:_SHOW_CLASSES]
            click.echo(f"sources ({len(sources)}): " + ", ".join(shown)
                       + (f", ... {len(sources) - len(shown)} more" if len(shown) < len(sources) else ""))
        rep = attrs.get("prepare_report")
        if isinstance(rep, dict):
            skipped: dict[str, int] = {}
            for s in rep.get("sources", []):
                for reason, k in s.get("skipped", {}).items():
                    skipped[reason] = skipped.get(reason, 0) + k
            if skipped:
                click.echo("skipped when prepared: " + "; ".join(f"{k} {r}" for r, k in
                                                               sorted(skipped.items(), key=lambda x: -x[1])))


__all__ = ["download", "prepare", "info"]

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
