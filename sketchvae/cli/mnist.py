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

DEFAULT_DATA_DIR = "data/mnist"
MODELS = {  # --model -> ImageVAEConfig fields
    "mlp": {"arch": "mlp", "num_classes": 0},
    "conv": {"arch": "conv", "num_classes": 0},
    "cvae": {"arch": "mlp", "num_classes": 10},
}


def _errors(func):
    """Turn the library's ValueError / FileNotFoundError (CheckpointError, DataError, DownloadError
    are ValueErrors) into click errors: a message, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except click.ClickException:
            raise
        except (ValueError, FileNotFoundError) as err:
            raise click.ClickException(str(err)) from None

    return wrapper


def _threads(n: int) -> None:
    import torch

    if n > 0:
        torch.set_num_threads(n)


@main.group()
def mnist():
    """MNIST image VAEs (MLP, convolutional, class-conditional): download, train, evaluate, draw.

    \b
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
@_errors
def download(data_dir, base_url):
    """Download the MNIST train and test files, verifying the MD5 of each file's content."""
    from sketchvae.image.data import download as fetch

    for item in fetch(data_dir, base_url=base_url, progress=True):
        click.echo(f"{item.status:10s} {item.path}")


@mnist.command()
@click.option("--model", "model_name", type=click.Choice(sorted(MODELS)), default="mlp", show_default=True,
              help="mlp (784-400-z) | conv (convolutional) | cvae (class-conditional MLP).")
@click.option("-o", "--out", "run_dir", required=True, type=click.Path(file_okay=False),
              help="Run folder: last.pt, best.pt, metrics.jsonl.")
@click.option("--data-dir", default=DEFAULT_DATA_DIR, show_default=True, type=click.Path(file_okay=False))
@click.option("--epochs", type=int, default=None, help="Epochs in total, counted from 0 also on resume [50].")
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
                   "choose (0 = no hold-out, best.pt is the last epoch) [5000].")
@click.option("--eval-limit", type=int, default=None, help="Evaluate each epoch on the first N test images [all].")
@click.option("--resume", is_flag=True, help="Continue the run in -o from its last.pt.")
@click.option("--save-minutes", type=float, default=10.0, show_default=True,
              help="Also save last.pt every M minutes inside an epoch (0 = after each epoch only); "
                   "Ctrl-C / SIGTERM save it too.")
@click.option("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default).")
@click.pass_context
@_errors
def train(ctx, model_name, run_dir, data_dir, resume, save_minutes, threads, **opts):
    """Train an image VAE on MNIST.

    Ctrl-C (or SIGTERM) saves last.pt after the current batch and prints the command that
    resumes; a second Ctrl-C stops at once."""
    from sketchvae import runtime
    from sketchvae.image.models import ImageVAEConfig
    from sketchvae.image.train import ImageTrainConfig, fit, load_run

    _threads(threads)
    given = {k: v for k, v in opts.items() if v is not None}
    model_fields = {"latent": "z_size", "hidden": "hidden_size"}
    model_opts = {model_fields[k]: given.pop(k) for k in list(given) if k in model_fields}
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
    device = runtime.resolve_device(config.device)
    kind = "cvae" if model_config.num_classes and model_config.arch == "mlp" else model_config.arch
    click.echo(f"device {device}; model {kind} "
               f"(z_size {model_config.z_size}, classes {model_config.num_classes}); binarize {config.binarize}",
               err=True)

    def show(rec):
        keys = ("epoch", "split", "elbo", "recon", "kl") + (("images_per_s",) if rec["split"] == "train" else ())
        click.echo("  ".join(f"{k} {rec[k]:.2f}" if isinstance(rec[k], float) else f"{k} {rec[k]}"
                             for k in keys), err=True)

    try:
        result = fit(model_config, config, data_dir, run_dir, resume=resume, progress=True, callback=show,
                     save_minutes=save_minutes)
    except runtime.TrainingInterrupted as err:
        import shlex

        click.echo(f"\nstopped by {err.signal_name}: {err.checkpoint} holds step {err.step}. Resume with:\n"
                   f"  sketchvae mnist train -o {shlex.quote(str(run_dir))} --resume", err=True)
        ctx.exit(err.exit_code)
    except runtime.DiskFullError as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"done: {result.epochs} epochs, best ELBO {result.best_elbo:.2f} nats; {run_dir}/best.pt")


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
@_errors
def evaluate(checkpoint, k, data_dir, limit, batch_size, seed, device, as_json, threads):
    """Test ELBO and importance-weighted negative log-likelihood, nats per image."""
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
    with tqdm(total=len(data), unit="img", desc="evaluate", file=sys.stderr, leave=False) as bar:
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
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="PNG file.")
@click.option("--ncol", type=int, default=None, help="Digits per row [square grid].")
@click.option("--scale", type=int, default=2, show_default=True, help="Pixel enlargement.")
@click.option("--seed", type=int, default=0, show_default=True)
@_errors
def sample(checkpoint, n, digit, out, ncol, scale, seed):
    """Draw n digits from the prior as a PNG grid (Bernoulli means)."""
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
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="PNG file.")
@click.option("--data-dir", default=DEFAULT_DATA_DIR, show_default=True, type=click.Path(file_okay=False))
@click.option("--scale", type=int, default=2, show_default=True)
@_errors
def interpolate(checkpoint, src, dst, steps, out, data_dir, scale):
    """Decode a straight line between the latent means of two test images (with the originals at the ends)."""
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
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="PNG file.")
@click.option("-n", "n", type=int, default=20, show_default=True, help="Grid is n x n.")
@click.option("--digit", type=click.IntRange(0, 9), default=None, help="Class (class-conditional models).")
@click.option("--scale", type=int, default=1, show_default=True)
@_errors
def manifold(checkpoint, out, n, digit, scale):
    """Decode a grid over a 2-d latent space at prior quantiles (Kingma & Welling 2014, fig. 4)."""
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
