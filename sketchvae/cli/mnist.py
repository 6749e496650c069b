"""`sketchvae mnist ...`: download MNIST, train / evaluate image VAEs, draw samples, interpolations and
the 2-d latent manifold to PNG. Thin wrappers over `sketchvae.image`; heavy imports inside commands.
"""

from __future__ import annotations

import functools
import json
import sys

import click
from click.core import ParameterSource

from sketchvae.cli import main
from sketchvae.cli.common import flag_message, new_run_dir, output_dir, output_file, progress_option, show_progress

DEFAULT_DATA_DIR = "data/mnist"
MODELS = {  # --model -> ImageVAEConfig fields
    "mlp": {"arch": "mlp", "num_classes": 0},
    "conv": {"arch": "conv", "num_classes": 0},
    "cvae": {"arch": "mlp", "num_classes": 10},
}
# library field names -> the flags of `mnist train`, for messages passed through
TRAIN_FLAGS = {"z_size": "--latent", "hidden_size": "--hidden", "epochs": "--epochs", "batch_size": "--batch-size",
               "lr": "--lr", "beta": "--beta", "kl_weight (w_KL)": "--beta", "eta_min": "--kl-eta-min",
               "kl_eta_min": "--kl-eta-min", "kl_decay_rate": "--kl-decay-rate", "rate (R)": "--kl-decay-rate",
               "limit": "--limit", "valid_size": "--valid-size", "eval_limit": "--eval-limit", "seed": "--seed",
               "binarisation": "--binarize"}
DEFAULT_VALID_SIZE = 5000  # ImageTrainConfig.valid_size


def _errors(func):
    """Turn the library's ValueError / FileNotFoundError (CheckpointError, DataError, DownloadError
    are ValueErrors) into click errors: a message, never a traceback; field names become the flags."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except click.ClickException:
            raise
        except (ValueError, FileNotFoundError) as err:
            raise click.ClickException(flag_message(str(err), TRAIN_FLAGS)) from None

    return wrapper


def _png_out(ctx, param, value):
    return None if value is None else str(output_file(value, (".png",), "PNG"))


def _threads(n: int) -> None:
    import torch

    if n > 0:
        torch.set_num_threads(n)


@main.group()
def mnist():
    """MNIST image VAEs (MLP, convolutional, class-conditional): download, train, evaluate, draw.

    \b
    Examples:
      sketchvae mnist download
      sketchvae mnist train --model mlp -o runs/mnist_mlp --epochs 50
      sketchvae mnist evaluate runs/mnist_mlp/best.pt --k 5000
      sketchvae mnist sample runs/mnist_mlp/best.pt -n 64 -o grid.png
    """


@mnist.command()
@click.option("--data-dir", default=DEFAULT_DATA_DIR, show_default=True, type=click.Path(file_okay=False),
              help="Folder for the four IDX .gz files.")
@click.option("--base-url", default=None,
              help="Mirror to download from (default: $SKETCHVAE_MNIST_URL or "
                   "https://ossci-datasets.s3.amazonaws.com/mnist/).")
@progress_option
@_errors
def download(data_dir, base_url, progress):
    """Download the MNIST train and test files, verifying the MD5 of each file's content.

    Files already there and valid are kept; an interrupted download resumes.

    \b
    Examples:
      sketchvae mnist download
      sketchvae mnist download --data-dir ~/data/mnist
      SKETCHVAE_MNIST_URL=http://mirror/mnist/ sketchvae mnist download
    """
    from sketchvae.image.data import download as fetch

    output_dir(data_dir, "data folder")
    for item in fetch(data_dir, base_url=base_url, progress=show_progress(progress)):
        click.echo(f"{item.status:10s} {item.path}")


@mnist.command()
@click.option("--model", "model_name", type=click.Choice(sorted(MODELS)), default="mlp", show_default=True,
              help="mlp (784-400-z) | conv (convolutional) | cvae (class-conditional MLP).")
@click.option("-o", "--out", "run_dir", required=True, type=click.Path(file_okay=False),
              help="Run folder: last.pt, best.pt, metrics.jsonl.")
@click.option("--data-dir", default=DEFAULT_DATA_DIR, show_default=True, type=click.Path(file_okay=False))
@click.option("--epochs", type=int, default=None, help="Epochs in total (>= 1), counted from 0 also on resume [50].")
@click.option("--batch-size", type=int, default=None, help="Images per step [128].")
@click.option("--lr", type=float, default=None, help="Adam learning rate [1e-3].")
@click.option("--latent", type=int, default=None, help="Latent size z_size [20]; 2 allows `manifold`.")
@click.option("--hidden", type=int, default=None, help="Hidden units [400].")
@click.option("--beta", type=float, default=None, help="Final KL weight [1.0 = ELBO].")
@click.option("--kl-eta-min", type=float, default=None,
              help="KL warm-up: weight at step 0 as a fraction of beta [1.0 = no warm-up].")
@click.option("--kl-decay-rate", type=float, default=None, help="KL warm-up rate R per step [0.999].")
@click.option("--binarize", type=click.Choice(["dynamic", "static", "grey"]), default=None,
              help="dynamic (fresh Bernoulli sample per epoch) | static (one fixed sample) | grey [dynamic].")
@click.option("--seed", type=int, default=None, help="Random seed [0].")
@click.option("--device", default=None, help="auto | cpu | cuda | cuda:N [auto].")
@click.option("--limit", type=int, default=None, help="Train on the first N images only (0 = all) [0].")
@click.option("--valid-size", type=int, default=None,
              help="Hold out the last N training images to choose best.pt; the test set is never used to "
                   "choose (0 = no hold-out, best.pt is the last epoch) [5000; with --limit N: N/10, at most "
                   "5000].")
@click.option("--eval-limit", type=int, default=None, help="Evaluate each epoch on the first N test images [all].")
@click.option("--resume", is_flag=True, help="Continue the run in -o from its last.pt.")
@click.option("--save-minutes", type=float, default=10.0, show_default=True,
              help="Also save last.pt every M minutes inside an epoch (0 = after each epoch only); "
                   "Ctrl-C / SIGTERM save it too.")
@click.option("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default).")
@progress_option
@click.pass_context
@_errors
def train(ctx, model_name, run_dir, data_dir, resume, save_minutes, threads, progress, **opts):
    """Train an image VAE on MNIST (run `sketchvae mnist download` first).

    Writes RUN_DIR/last.pt (for --resume), best.pt (best ELBO on the held-out images) and
    metrics.jsonl.  An epoch of the MLP (55,000 images) took 16 to 80 s on one thread of a busy
    shared CPU (measured); --limit and --epochs make a quick first try.  Ctrl-C (or SIGTERM) saves
    last.pt after the current batch and prints the command that resumes; a second Ctrl-C stops at once.

    \b
    Examples:
      sketchvae mnist train -o runs/mnist_mlp
      sketchvae mnist train --model conv -o runs/mnist_conv --epochs 20
      sketchvae mnist train --model cvae --latent 2 -o runs/mnist_cvae2
      sketchvae mnist train -o runs/quick --limit 2000 --epochs 2      # a first try in seconds
      sketchvae mnist train -o runs/mnist_mlp --resume --epochs 100
    """
    from sketchvae import runtime
    from sketchvae.image.models import ImageVAEConfig
    from sketchvae.image.train import ImageTrainConfig, fit, load_run

    _threads(threads)
    given = {k: v for k, v in opts.items() if v is not None}
    model_fields = {"latent": "z_size", "hidden": "hidden_size"}
    model_opts = {model_fields[k]: given.pop(k) for k in list(given) if k in model_fields}
    if given.get("epochs", 1) < 1:
        raise click.BadParameter(f"{given['epochs']} epochs trains nothing; give 1 or more", param_hint="--epochs")
    if not resume:
        output_dir(run_dir, "run folder")  # before any work: a file in the way is one line, at once
    if not resume and given.get("limit") and "valid_size" not in given:
        # a small --limit would otherwise be all hold-out: keep a tenth of it for choosing best.pt
        given["valid_size"] = min(DEFAULT_VALID_SIZE, given["limit"] // 10)
    if resume:
        if model_opts or ctx.get_parameter_source("model_name") == ParameterSource.COMMANDLINE:
            raise click.UsageError("--model, --latent and --hidden cannot change when resuming")
        model_config, saved, saved_dir, _ = load_run(run_dir)
        import dataclasses

        config = ImageTrainConfig(**{**dataclasses.asdict(saved), **given})
        if ctx.get_parameter_source("data_dir") != ParameterSource.COMMANDLINE and saved_dir:
            data_dir = saved_dir
    else:
        model_config = ImageVAEConfig(**MODELS[model_name], **model_opts)
        config = ImageTrainConfig(**given)
        from pathlib import Path

        if (Path(run_dir) / "last.pt").exists():
            raise click.UsageError(f"{run_dir} already holds a run; use --resume to continue it or choose another -o")
    if config.limit and config.valid_size >= config.limit:
        raise click.BadParameter(f"holding out {config.valid_size} of {config.limit} images (--limit) leaves none to "
                                 f"train on; give a smaller --valid-size", param_hint="--valid-size")
    device = runtime.resolve_device(config.device)
    kind = "cvae" if model_config.num_classes and model_config.arch == "mlp" else model_config.arch
    click.echo(f"device {device}; model {kind} "
               f"(z_size {model_config.z_size}, classes {model_config.num_classes}); binarize {config.binarize}",
               err=True)

    def show(rec):
        keys = ("epoch", "split", "elbo", "recon", "kl") + (("images_per_s",) if rec["split"] == "train" else ())
        click.echo("  ".join(f"{k} {rec[k]:.2f}" if isinstance(rec[k], float) else f"{k} {rec[k]}"
                             for k in keys), err=True)

    if config.limit and config.valid_size and not resume:
        click.echo(f"holding out the last {config.valid_size} of the first {config.limit} training images to "
                   f"choose best.pt", err=True)
    try:
        with new_run_dir(run_dir):
            result = fit(model_config, config, data_dir, run_dir, resume=resume, progress=show_progress(progress),
                         callback=show, save_minutes=save_minutes)
    except runtime.TrainingInterrupted as err:
        import shlex

        click.echo(f"\nstopped by {err.signal_name}: {err.checkpoint} holds step {err.step}. Resume with:\n"
                   f"  sketchvae mnist train -o {shlex.quote(str(run_dir))} --resume", err=True)
        ctx.exit(err.exit_code)
    except runtime.DiskFullError as err:
        raise click.ClickException(str(err)) from None
    from pathlib import Path

    best = Path(run_dir) / "best.pt"
    if not best.exists():
        click.echo(f"done: {result.epochs} epochs; no best.pt was written")
    elif result.best_elbo == result.best_elbo:  # not nan: chosen on the held-out images
        click.echo(f"done: {result.epochs} epochs, best held-out ELBO {result.best_elbo:.2f} nats; {best}")
    else:
        click.echo(f"done: {result.epochs} epochs (no hold-out: best.pt is the last epoch); {best}")


@mnist.command()
@click.argument("checkpoint", type=click.Path())
@click.option("--k", "k", type=int, default=5000, show_default=True,
              help="Importance samples for the log p(x) estimate (0 = ELBO only).")
@click.option("--data-dir", default=DEFAULT_DATA_DIR, show_default=True, type=click.Path(file_okay=False))
@click.option("--limit", type=int, default=None, help="Evaluate the first N test images only.")
@click.option("--batch-size", type=int, default=100, show_default=True, help="Test images per batch.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the z samples.")
@click.option("--device", default="auto", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@click.option("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default).")
@progress_option
@_errors
def evaluate(checkpoint, k, data_dir, limit, batch_size, seed, device, as_json, threads, progress):
    """Test ELBO and importance-weighted negative log-likelihood, nats per image.

    CHECKPOINT: a checkpoint file, a run folder (its best.pt) or a shipped name (mnist_conv,
    mnist_cvae).  The importance-weighted estimate costs k decoder passes per image: --k 5000 on
    the 10,000 test images took about 1.75 hours on a laptop-class CPU (a review's measurement);
    the time grows with k x images, so --k 500 --limit 1000 takes about a hundredth of that.

    \b
    Examples:
      sketchvae mnist evaluate mnist_conv --k 0                   # test ELBO only, seconds
      sketchvae mnist evaluate runs/mnist_mlp --k 500 --limit 1000
      sketchvae mnist evaluate runs/mnist_mlp/best.pt --k 5000 --json
    """
    from tqdm import tqdm

    from sketchvae import runtime
    from sketchvae.image.data import load_data
    from sketchvae.image.evaluate import evaluate as run_eval
    from sketchvae.image.train import load_model

    _threads(threads)
    if k < 0:
        raise click.UsageError(f"--k must be >= 0, got {k}")
    dev = runtime.resolve_device(device)
    model, ckpt = load_model(checkpoint, dev)
    binarize = ckpt["extra"].get("binarize", "dynamic")
    data = load_data(data_dir, "test", binarize=binarize, device=dev, limit=limit, train=False)
    with tqdm(total=len(data), unit="img", desc="evaluate", file=sys.stderr, leave=False,
              disable=not show_progress(progress)) as bar:
        m = run_eval(model, data, k=k, batch_size=batch_size, seed=seed, progress=bar.update)
    m["binarize"] = binarize
    m["conditional_on_label"] = model.config.num_classes > 0
    if as_json:
        click.echo(json.dumps(m))
        return
    note = {"dynamic": "test set binarised once, seed 0", "static": "test set binarised once, seed 0",
            "grey": "grey-level targets: not a normalised likelihood"}[binarize]
    click.echo(f"checkpoint  {checkpoint}")
    click.echo(f"binarize    {binarize} ({note})")
    click.echo(f"images      {m['n']}")
    conditional = model.config.num_classes > 0
    m["conditional_on_label"] = conditional
    px = "p(x | y)" if conditional else "p(x)"
    click.echo(f"elbo        {m['elbo']:.2f} +- {m['elbo_se']:.2f} nats  (recon {m['recon']:.2f}, kl {m['kl']:.2f})")
    if k > 0:
        click.echo(f"nll         {m['nll']:.2f} +- {m['nll_se']:.2f} nats  (importance-weighted, k={k}; "
                   f"-log {px} <= -elbo)")
    if conditional:
        click.echo("note        class-conditional model: both numbers are given the label, log p(x | y); "
                   "not comparable with an unconditional model's log p(x)")


def _load(checkpoint, device="cpu"):
    from sketchvae.image.train import load_model

    return load_model(checkpoint, device)


@mnist.command()
@click.argument("checkpoint", type=click.Path())
@click.option("-n", "n", type=int, default=64, show_default=True, help="Number of digits.")
@click.option("--digit", type=click.IntRange(0, 9), default=None,
              help="Class to draw (class-conditional models; default: 0..9 in turn).")
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), callback=_png_out,
              help="PNG file (.png; its folders are created).")
@click.option("--ncol", type=int, default=None, help="Digits per row [square grid].")
@click.option("--scale", type=int, default=2, show_default=True, help="Pixel enlargement.")
@click.option("--seed", type=int, default=0, show_default=True)
@_errors
def sample(checkpoint, n, digit, out, ncol, scale, seed):
    """Draw n digits from the prior as a PNG grid (Bernoulli means).

    CHECKPOINT: a checkpoint file, a run folder (its best.pt) or a shipped name (mnist_conv, mnist_cvae).

    \b
    Examples:
      sketchvae mnist sample mnist_cvae -n 40 --ncol 10 --seed 0 -o digits.png
      sketchvae mnist sample mnist_cvae --digit 7 -n 16 -o sevens.png
      sketchvae mnist sample runs/mnist_mlp -n 64 --scale 3 -o grid.png
    """
    import torch

    from sketchvae.image.render import save_grid

    if n < 1:
        raise click.UsageError(f"-n must be >= 1, got {n}")
    model, _ = _load(checkpoint)
    k = model.config.num_classes
    if digit is not None and k == 0:
        raise click.UsageError("--digit needs a class-conditional model (train with --model cvae)")
    labels = None
    if k:
        labels = torch.full((n,), digit) if digit is not None else torch.arange(n) % k
        if ncol is None and digit is None:
            ncol = k
    g = torch.Generator().manual_seed(seed)
    probs = model.sample(n, labels, generator=g)
    s = model.config.image_size
    save_grid(out, probs.view(n, s, s).numpy(), ncol, scale=scale)
    click.echo(out)


@mnist.command()
@click.argument("checkpoint", type=click.Path())
@click.option("--from", "src", type=int, required=True, help="Index of the first test image.")
@click.option("--to", "dst", type=int, required=True, help="Index of the second test image.")
@click.option("--steps", type=int, default=10, show_default=True, help="Images in the strip, ends included.")
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), callback=_png_out,
              help="PNG file (.png; its folders are created).")
@click.option("--data-dir", default=DEFAULT_DATA_DIR, show_default=True, type=click.Path(file_okay=False))
@click.option("--scale", type=int, default=2, show_default=True)
@_errors
def interpolate(checkpoint, src, dst, steps, out, data_dir, scale):
    """Decode a straight line between the latent means of two test images (with the originals at the ends).

    \b
    Examples:
      sketchvae mnist interpolate mnist_conv --from 0 --to 1 -o strip.png
      sketchvae mnist interpolate runs/mnist_mlp --from 3 --to 42 --steps 12 --scale 3 -o strip.png
    """
    import torch

    from sketchvae.image.data import load_split
    from sketchvae.image.models import interpolate_latents
    from sketchvae.image.render import save_grid

    if steps < 2:
        raise click.UsageError(f"--steps must be >= 2, got {steps}")
    images, labels = load_split(data_dir, "test")
    for name, i in (("--from", src), ("--to", dst)):
        if not 0 <= i < len(images):
            raise click.UsageError(f"{name} {i} is not a test image index (0..{len(images) - 1})")
    model, _ = _load(checkpoint)
    x = torch.from_numpy(images[[src, dst]]).float().div(255).view(2, -1)
    k = model.config.num_classes
    y = torch.from_numpy(labels[[src, dst]]) if k else None
    with torch.no_grad():
        mu, _ = model.encode(x, y)
        z = interpolate_latents(mu[0], mu[1], steps)
        yy = None
        if k:
            oh = torch.nn.functional.one_hot(y, k).float()
            yy = interpolate_latents(oh[0], oh[1], steps)  # blend the class too
        probs = torch.sigmoid(model.decode(z, yy))
    s = model.config.image_size
    strip = torch.cat([x[:1], probs, x[1:]]).view(-1, s, s).numpy()
    save_grid(out, strip, len(strip), scale=scale)
    click.echo(out)


@mnist.command()
@click.argument("checkpoint", type=click.Path())
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), callback=_png_out,
              help="PNG file (.png; its folders are created).")
@click.option("-n", "n", type=int, default=20, show_default=True, help="Grid is n x n.")
@click.option("--digit", type=click.IntRange(0, 9), default=None, help="Class (class-conditional models).")
@click.option("--scale", type=int, default=1, show_default=True)
@_errors
def manifold(checkpoint, out, n, digit, scale):
    """Decode a grid over a 2-d latent space at prior quantiles (Kingma & Welling 2014, fig. 4).

    Needs a model with a 2-d latent space (train it with --latent 2).

    \b
    Examples:
      sketchvae mnist train -o runs/mnist2d --latent 2 --epochs 20
      sketchvae mnist manifold runs/mnist2d -n 20 --scale 2 -o manifold.png
      sketchvae mnist manifold runs/cvae2d --digit 3 -o threes.png
    """
    import torch

    from sketchvae.image.models import manifold_latents
    from sketchvae.image.render import save_grid

    if n < 1:
        raise click.UsageError(f"-n must be >= 1, got {n}")
    model, _ = _load(checkpoint)
    if model.config.z_size != 2:
        raise click.ClickException(f"{checkpoint}: the manifold needs a 2-d latent space, this model has "
                                   f"z_size {model.config.z_size} (train with --latent 2)")
    k = model.config.num_classes
    if k and digit is None:
        raise click.UsageError("this class-conditional model needs --digit")
    if digit is not None and not k:
        raise click.UsageError("--digit needs a class-conditional model (train with --model cvae)")
    z = manifold_latents(n)
    labels = torch.full((n * n,), digit) if k else None
    with torch.no_grad():
        probs = torch.sigmoid(model.decode(z, labels))
    s = model.config.image_size
    save_grid(out, probs.view(-1, s, s).numpy(), n, padding=0, scale=scale)
    click.echo(out)
