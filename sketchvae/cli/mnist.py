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
    "cvae-conv": {"arch": "conv", "num_classes": 10},
    "aae": {},  # AAEConfig: adversarial autoencoder (--prior, --supervised)
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
    """MNIST image VAEs (MLP, convolutional, class-conditional) and adversarial autoencoders: download,
    train, evaluate, compare, draw.

    \b
    Examples:
      sketchvae mnist download
      sketchvae mnist train --model mlp -o runs/mnist_mlp --epochs 50
      sketchvae mnist evaluate runs/mnist_mlp/best.pt --k 5000
      sketchvae mnist sample runs/mnist_mlp/best.pt -n 64 -o grid.png
      sketchvae mnist train --model aae -o runs/mnist_aae --epochs 30
      sketchvae mnist compare checkpoints/mnist_conv.pt checkpoints/mnist_aae.pt
      sketchvae mnist attribute checkpoints/mnist_conv.pt --attr slant -o slant.png
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
              help="mlp (784-400-z) | conv (convolutional) | cvae (class-conditional MLP) | cvae-conv "
                   "(class-conditional convolutional) | aae (adversarial "
                   "autoencoder, Makhzani et al. 2015: 784-h-h-z, z_size 8 and h 1000 unless given).")
@click.option("--prior", type=click.Choice(["gaussian", "mixture10"]), default=None,
              help="AAE prior: gaussian N(0, I) | mixture10 (ten 2-d Gaussians on a circle; needs --latent 2) "
                   "[gaussian].")
@click.option("--supervised", is_flag=True, default=None,
              help="AAE: give the decoder the one-hot digit, so z holds only the style.")
@click.option("-o", "--out", "run_dir", required=True, type=click.Path(file_okay=False),
              help="Run folder: last.pt, best.pt, metrics.jsonl.")
@click.option("--data-dir", default=DEFAULT_DATA_DIR, show_default=True, type=click.Path(file_okay=False))
@click.option("--epochs", type=int, default=None, help="Epochs in total (>= 1), counted from 0 also on resume [50].")
@click.option("--batch-size", type=int, default=None, help="Images per step [128].")
@click.option("--lr", type=float, default=None, help="Adam learning rate [1e-3].")
@click.option("--latent", type=int, default=None, help="Latent size z_size [20]; 2 allows `manifold`.")
@click.option("--hidden", type=int, default=None, help="Hidden units [400].")
@click.option("--disc-hidden", type=int, default=None,
              help="AAE: units in each of the discriminator's two hidden layers [1000].")
@click.option("--beta", type=float, default=None, help="Final KL weight [1.0 = ELBO].")
@click.option("--kl-eta-min", type=float, default=None,
              help="KL warm-up: weight at step 0 as a fraction of beta [1.0 = no warm-up].")
@click.option("--kl-decay-rate", type=float, default=None, help="KL warm-up rate R per step [0.999].")
@click.option("--adv-lr", type=float, default=None,
              help="AAE: Adam learning rate of the discriminator and of the encoder as generator [5e-4].")
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
    """Train an image VAE or adversarial autoencoder on MNIST (run `sketchvae mnist download` first).

    Writes RUN_DIR/last.pt (for --resume), best.pt (best ELBO on the held-out images) and
    metrics.jsonl.  An epoch of the MLP (55,000 images) took 16 to 80 s on one thread of a busy
    shared CPU (measured); --limit and --epochs make a quick first try.  Ctrl-C (or SIGTERM) saves
    last.pt after the current batch and prints the command that resumes; a second Ctrl-C stops at once.

    \b
    Examples:
      sketchvae mnist train -o runs/mnist_mlp
      sketchvae mnist train --model conv -o runs/mnist_conv --epochs 20
      sketchvae mnist train --model cvae --latent 2 -o runs/mnist_cvae2
      sketchvae mnist train --model cvae-conv -o runs/mnist_cvae --epochs 40   # the shipped mnist_cvae
      sketchvae mnist train -o runs/quick --limit 2000 --epochs 2      # a first try in seconds
      sketchvae mnist train -o runs/mnist_mlp --resume --epochs 100
      sketchvae mnist train --model aae -o runs/mnist_aae --epochs 30 --hidden 512
      sketchvae mnist train --model aae --latent 2 --prior mixture10 -o runs/aae_mix
      sketchvae mnist train --model aae --supervised -o runs/aae_sup
    """
    from sketchvae import runtime
    from sketchvae.image.aae import AAEConfig
    from sketchvae.image.models import ImageVAEConfig
    from sketchvae.image.train import ImageTrainConfig, fit, load_run

    _threads(threads)
    given = {k: v for k, v in opts.items() if v is not None}
    model_fields = {"latent": "z_size", "hidden": "hidden_size", "prior": "prior", "supervised": "num_classes",
                    "disc_hidden": "disc_hidden_size"}
    model_opts = {model_fields[k]: given.pop(k) for k in list(given) if k in model_fields}
    if "num_classes" in model_opts:
        model_opts["num_classes"] = 10 if model_opts["num_classes"] else 0
    if given.get("epochs", 1) < 1:
        raise click.BadParameter(f"{given['epochs']} epochs trains nothing; give 1 or more", param_hint="--epochs")
    if not resume:
        output_dir(run_dir, "run folder")  # before any work: a file in the way is one line, at once
    if not resume and given.get("limit") and "valid_size" not in given:
        # a small --limit would otherwise be all hold-out: keep a tenth of it for choosing best.pt
        given["valid_size"] = min(DEFAULT_VALID_SIZE, given["limit"] // 10)
    if resume:
        if model_opts or ctx.get_parameter_source("model_name") == ParameterSource.COMMANDLINE:
            raise click.UsageError("--model, --latent, --hidden, --disc-hidden, --prior and --supervised cannot "
                                   "change when resuming")
        model_config, saved, saved_dir, _ = load_run(run_dir)
        import dataclasses

        config = ImageTrainConfig(**{**dataclasses.asdict(saved), **given})
        if ctx.get_parameter_source("data_dir") != ParameterSource.COMMANDLINE and saved_dir:
            data_dir = saved_dir
    elif model_name != "aae" and ({"prior", "num_classes", "disc_hidden_size"} & set(model_opts)
                                  or "adv_lr" in given):
        raise click.UsageError("--prior, --supervised, --disc-hidden and --adv-lr are for --model aae")
    elif model_name == "aae":
        model_config = AAEConfig(**model_opts)
        config = ImageTrainConfig(**given)
    else:
        model_config = ImageVAEConfig(**MODELS[model_name], **model_opts)
        config = ImageTrainConfig(**given)
    if not resume:
        from pathlib import Path

        if (Path(run_dir) / "last.pt").exists():
            raise click.UsageError(f"{run_dir} already holds a run; use --resume to continue it or choose another -o")
    if config.limit and config.valid_size >= config.limit:
        raise click.BadParameter(f"holding out {config.valid_size} of {config.limit} images (--limit) leaves none to "
                                 f"train on; give a smaller --valid-size", param_hint="--valid-size")
    device = runtime.resolve_device(config.device)
    if isinstance(model_config, AAEConfig):
        kind = f"aae, prior {model_config.prior}" + (", supervised" if model_config.num_classes else "")
    else:
        fields = {"arch": model_config.arch, "num_classes": model_config.num_classes}
        kind = next((name for name, f in MODELS.items() if f == fields), model_config.arch)
    click.echo(f"device {device}; model {kind} "
               f"(z_size {model_config.z_size}, classes {model_config.num_classes}); binarize {config.binarize}",
               err=True)

    def show(rec):
        keys = ("epoch", "split", "elbo", "recon", "kl", "disc", "gen") + (
            ("images_per_s",) if rec["split"] == "train" else ())
        click.echo("  ".join(f"{k} {rec[k]:.2f}" if isinstance(rec[k], float) else f"{k} {rec[k]}"
                             for k in keys if k in rec), err=True)

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
    elif isinstance(model_config, AAEConfig):
        click.echo(f"done: {result.epochs} epochs (an AAE's best.pt is its last epoch); {best}")
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
    if not hasattr(model, "presig"):
        raise click.ClickException(f"{checkpoint}: an adversarial autoencoder has no ELBO or importance-weighted "
                                   f"bound; measure it with `sketchvae mnist compare {checkpoint}`")
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
@click.option("--same-style", is_flag=True,
              help="Class-conditional models: one z per row, digits 0..9 across (z holds the style).")
@_errors
def sample(checkpoint, n, digit, out, ncol, scale, seed, same_style):
    """Draw n digits from the prior as a PNG grid (Bernoulli means).

    CHECKPOINT: a checkpoint file, a run folder (its best.pt) or a shipped name (mnist_conv, mnist_cvae).

    \b
    Examples:
      sketchvae mnist sample mnist_cvae -n 40 --ncol 10 --seed 0 -o digits.png
      sketchvae mnist sample mnist_cvae --digit 7 -n 16 -o sevens.png
      sketchvae mnist sample runs/mnist_mlp -n 64 --scale 3 -o grid.png
      sketchvae mnist sample runs/aae_sup --same-style -n 100 -o styles.png
    """
    import torch

    from sketchvae.image.render import save_grid

    if n < 1:
        raise click.UsageError(f"-n must be >= 1, got {n}")
    model, _ = _load(checkpoint)
    k = model.config.num_classes
    if digit is not None and k == 0:
        raise click.UsageError("--digit needs a class-conditional model (train with --model cvae or cvae-conv)")
    labels = None
    if k:
        labels = torch.full((n,), digit) if digit is not None else torch.arange(n) % k
        if ncol is None and digit is None:
            ncol = k
    g = torch.Generator().manual_seed(seed)
    if same_style:
        if not k or digit is not None:
            raise click.UsageError("--same-style needs a class-conditional model and no --digit")
        rows = -(-n // k)
        z = model.sample_latents(rows, generator=g)
        with torch.no_grad():
            probs = torch.sigmoid(model.decode(z.repeat_interleave(k, 0)[:n], labels))
        ncol = k
    else:
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
        mu = model.code(x, y)  # VAE: posterior means; AAE: its deterministic codes
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
        raise click.UsageError("--digit needs a class-conditional model (train with --model cvae or cvae-conv)")
    z = manifold_latents(n)
    labels = torch.full((n * n,), digit) if k else None
    with torch.no_grad():
        probs = torch.sigmoid(model.decode(z, labels))
    s = model.config.image_size
    save_grid(out, probs.view(-1, s, s).numpy(), n, padding=0, scale=scale)
    click.echo(out)


@mnist.command()
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="Checkpoint file to write.")
@click.option("--data-dir", default=DEFAULT_DATA_DIR, show_default=True, type=click.Path(file_okay=False))
@click.option("--epochs", type=int, default=6, show_default=True)
@click.option("--batch-size", type=int, default=128, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True, help="Adam learning rate of the first epoch.")
@click.option("--lr-decay", type=float, default=0.6, show_default=True, help="Learning rate factor per epoch.")
@click.option("--max-shift", type=int, default=2, show_default=True,
              help="Augmentation: random shifts of up to N pixels (0 = none).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--limit", type=int, default=None, help="Train on the first N training images only [all 60000].")
@click.option("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default).")
@_errors
def classifier(out, data_dir, epochs, batch_size, lr, lr_decay, max_shift, seed, limit, threads):
    """Train the small CNN digit classifier that `mnist compare` and `mnist attribute` measure with.

    It learns from the grey training images (all 60000: it is an instrument, never chosen on the test
    set), then prints and stores its accuracy on the 10000 test images.

    \b
      sketchvae mnist classifier -o checkpoints/mnist_classifier.pt --epochs 6
    """
    import torch

    from sketchvae.checkpoint import save_checkpoint
    from sketchvae.image.classifier import KIND, ClassifierConfig, accuracy, fit_classifier
    from sketchvae.image.data import load_split
    from sketchvae.image.train import CLASS_NAMES

    _threads(threads)
    images, labels = load_split(data_dir, "train", limit)
    test_images, test_labels = load_split(data_dir, "test")
    config = ClassifierConfig()

    def show(rec):
        click.echo(f"epoch {rec['epoch']}  lr {rec['lr']:.2e}  loss {rec['loss']:.4f}  "
                   f"train accuracy {rec['train_accuracy']:.4f}  {rec['seconds']:.0f} s", err=True)

    model = fit_classifier(config, _grey(images), torch.from_numpy(labels), epochs=epochs, batch_size=batch_size,
                           lr=lr, lr_decay=lr_decay, max_shift=max_shift, seed=seed, callback=show, progress=True)
    acc = accuracy(model, _grey(test_images), torch.from_numpy(test_labels))
    save_checkpoint(out, kind=KIND, config=config, model=model, class_names=CLASS_NAMES,
                    extra={"test_accuracy": acc, "train_images": len(images), "epochs": epochs,
                           "batch_size": batch_size, "lr": lr, "lr_decay": lr_decay, "max_shift": max_shift,
                           "seed": seed})
    click.echo(f"test accuracy {acc:.4f} on {len(test_images)} images; {out}")


def _classifier(path):
    from sketchvae.checkpoint import shipped_checkpoints_dir
    from sketchvae.image.classifier import load_classifier

    path = path or shipped_checkpoints_dir() / "mnist_classifier.pt"
    return load_classifier(path)[0]


def _grey(images):
    import torch

    return torch.from_numpy(images).reshape(len(images), -1).float().div(255)


def _fmt(v, spec=".2f", none="-"):
    return none if v is None else format(v, spec)


@mnist.command()
@click.argument("checkpoints", nargs=-1, required=True, type=click.Path())
@click.option("--data-dir", default=DEFAULT_DATA_DIR, show_default=True, type=click.Path(file_okay=False))
@click.option("--classifier", "classifier_path", type=click.Path(dir_okay=False), default=None,
              help="Classifier checkpoint [checkpoints/mnist_classifier.pt].")
@click.option("--samples", "n_samples", type=int, default=10000, show_default=True,
              help="Samples per model for the Parzen window and the classifier scores.")
@click.option("--limit", type=int, default=None, help="Use the first N test images only [all 10000].")
@click.option("--valid", "n_valid", type=int, default=2000, show_default=True,
              help="Held-out training images (the last N of the 60000) that choose the Parzen window width.")
@click.option("--k", "k", type=int, default=1000, show_default=True,
              help="Importance samples of the IWAE bound (VAEs; 0 = skip it).")
@click.option("--nll-limit", type=int, default=1000, show_default=True,
              help="Test images for the IWAE bound (the first N; it costs k decoder passes per image).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of samples and z noise.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list, one object per model.")
@click.option("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default).")
@_errors
def compare(checkpoints, data_dir, classifier_path, n_samples, limit, n_valid, k, nll_limit, seed, as_json,
            threads):
    """Measure image models the same way on the test set, in one table.

    \b
    For every model (VAE, CVAE, AAE), in nats per image:
      recon    -log p(x | z) at the model's point code (VAE: posterior mean; AAE: z = q(x)),
               on the binarised test images
      elbo     test ELBO (VAEs only)
      nll      importance-weighted bound on -log p(x), --k samples, first --nll-limit test images
               (VAEs only; for a class-conditional model both are given the label: -log p(x | y))
      parzen   Parzen-window log-likelihood of the grey test images under a Gaussian kernel density
               of --samples samples (window width chosen on --valid held-out training images; the
               GAN / AAE papers' protocol, AAE: 340 +- 2); +- is the standard error over test images,
               and the estimator is biased (see sketchvae.image.measure)
      asked    fraction of samples the classifier recognises as the digit asked (conditional models)
      IS       Inception-style score exp(E KL(p(y|x) || p(y))) of the samples (1..10), and the class
               histogram of the samples
    \b
      sketchvae mnist compare checkpoints/mnist_conv.pt checkpoints/mnist_cvae.pt checkpoints/mnist_aae.pt
      sketchvae mnist compare runs/aae/best.pt --samples 1000 --limit 1000 --k 0 --json
    """
    from pathlib import Path

    import torch

    from sketchvae.image.data import load_data, load_split
    from sketchvae.image.measure import compare_model

    _threads(threads)
    for name, v, lo in (("--samples", n_samples, 1), ("--valid", n_valid, 1), ("--k", k, 0),
                        ("--nll-limit", nll_limit, 1)):
        if v < lo:
            raise click.UsageError(f"{name} must be >= {lo}, got {v}")
    clf = _classifier(classifier_path)
    test_images, _ = load_split(data_dir, "test", limit)
    train_images, _ = load_split(data_dir, "train")
    if n_valid > len(train_images) // 2:
        raise click.UsageError(f"--valid {n_valid} is more than half the {len(train_images)} training images")
    test_grey, valid_grey = _grey(test_images), _grey(train_images[-n_valid:])
    results = []
    for path in checkpoints:
        model, ckpt = _load(path)
        binarize = ckpt["extra"].get("binarize", "dynamic")
        test = load_data(data_dir, "test", binarize=binarize, limit=limit, train=False)
        def say(text, path=path):
            click.echo(f"{path}: {text}", err=True)

        with torch.no_grad():
            m = compare_model(model, test=test, test_grey=test_grey, valid_grey=valid_grey, classifier=clf,
                              n_samples=n_samples, k=k, nll_limit=nll_limit, seed=seed, progress=say)

        results.append({"model": Path(path).stem, "checkpoint": str(path), "binarize": binarize, **m})
    if as_json:
        click.echo(json.dumps(results))
        return
    head = f"{'model':<18} {'kind':<26} {'recon':>7} {'elbo':>8} {'nll':>7} {'parzen':>15} {'sigma':>6} " \
           f"{'asked':>6} {'IS':>5}"
    click.echo(head)
    for r in results:
        nll = _fmt(r["nll"]) + ("*" if r["nll_conditional_on_label"] else "")
        parzen = f"{r['parzen']:.1f} +- {r['parzen_se']:.1f}"
        click.echo(f"{r['model']:<18} {r['kind']:<26} {r['recon']:>7.2f} {_fmt(r['elbo']):>8} {nll:>7} "
                   f"{parzen:>15} {r['sigma']:>6.3f} {_fmt(r['accuracy_as_asked'], '.3f'):>6} "
                   f"{r['inception_score']:>5.2f}")
    nll_note = (f"IWAE bound, k={k}, on the first {min(nll_limit, results[0]['n_test'])} test images "
                f"(* = given the label, -log p(x | y))" if k else "not measured (--k 0)")
    click.echo(f"\ntest images {results[0]['n_test']}; samples {n_samples}; Parzen window width chosen on the "
               f"last {n_valid} training images; nll: {nll_note}")
    click.echo("class histogram of the samples (fraction per digit 0..9):")
    for r in results:
        click.echo(f"  {r['model']:<18} " + " ".join(f"{h:.3f}" for h in r["histogram"]))
    if any(r["sigma_on_grid_edge"] for r in results):
        click.echo("warning: a window width is at the edge of the grid (0.1..1.0); the Parzen number is a "
                   "lower estimate", err=True)


@mnist.command()
@click.argument("checkpoint", type=click.Path())
@click.option("--attr", "attr", type=click.Choice(["thickness", "slant", "width"]), required=True,
              help="thickness (ink) | slant (second-moment shear) | width (bounding box).")
@click.option("-o", "--out", type=click.Path(dir_okay=False), default=None,
              help="PNG: rows of test digits decoded at each alpha [attribute_ATTR.png].")
@click.option("--data-dir", default=DEFAULT_DATA_DIR, show_default=True, type=click.Path(file_okay=False))
@click.option("--classifier", "classifier_path", type=click.Path(dir_okay=False), default=None,
              help="Classifier checkpoint [checkpoints/mnist_classifier.pt].")
@click.option("--alphas", default="-2,-1,0,1,2", show_default=True, help="Comma-separated multiples of z_attr.")
@click.option("--rows", type=int, default=10, show_default=True, help="Test digits drawn in the picture.")
@click.option("--train-limit", type=int, default=None,
              help="Training images that define z_attr (the first N) [all 60000].")
@click.option("--pooled", is_flag=True,
              help="Take the quarters over the whole training set instead of within each digit (the pooled "
                   "thickness vector mostly turns digits into 0s or 1s).")
@click.option("--measure", "n_measure", type=int, default=1000, show_default=True,
              help="Test images (the first N) whose decoded attribute and class are measured.")
@click.option("--scale", type=int, default=2, show_default=True)
@click.option("--json", "as_json", is_flag=True, help='Print [{"alpha", "attribute", "recognised"}, ...].')
@click.option("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default).")
@_errors
def attribute(checkpoint, attr, out, data_dir, classifier_path, alphas, rows, train_limit, pooled, n_measure,
              scale, as_json, threads):
    """Move digits along an attribute vector in latent space and measure what changes.

    z_attr = mean code of the training images in the top quarter of the attribute minus the mean code of
    the bottom quarter, taken within each digit and averaged over the digits (--pooled: over the whole
    training set); test digits are decoded from z + alpha * z_attr. For each alpha this prints the
    attribute measured on the decoded images and the fraction the classifier still recognises as the
    original digit, and draws --rows test digits (one per row; original at the left, then one column per
    alpha).

    \b
      sketchvae mnist attribute checkpoints/mnist_aae.pt --attr thickness -o thick.png
      sketchvae mnist attribute checkpoints/mnist_conv.pt --attr slant --json
    """
    import torch

    from sketchvae.image.data import load_split
    from sketchvae.image.measure import attribute_sweep, attribute_vector, is_conditional, measure_attribute
    from sketchvae.image.render import save_grid

    _threads(threads)
    try:
        alpha_list = [float(a) for a in alphas.split(",") if a.strip()]
    except ValueError:
        raise click.UsageError(f"--alphas must be comma-separated numbers, got {alphas!r}") from None
    if not alpha_list:
        raise click.UsageError("--alphas is empty")
    if rows < 0 or n_measure < 1:
        raise click.UsageError("--rows must be >= 0 and --measure >= 1")
    model, _ = _load(checkpoint)
    clf = _classifier(classifier_path)
    cond = is_conditional(model)
    train_images, train_labels = load_split(data_dir, "train", train_limit)
    test_images, test_labels = load_split(data_dir, "test")
    x_train = _grey(train_images)
    with torch.no_grad():
        codes = torch.cat([model.code(x_train[i:i + 2000],
                                      torch.from_numpy(train_labels[i:i + 2000]) if cond else None)
                           for i in range(0, len(x_train), 2000)])
    z_attr = attribute_vector(codes.double(), measure_attribute(train_images / 255.0, attr),
                              groups=None if pooled else train_labels).float()
    n = max(n_measure, rows)
    x_test, y_test = _grey(test_images[:n]), torch.from_numpy(test_labels[:n])
    table, decoded = attribute_sweep(model, clf, x_test[:n_measure], y_test[:n_measure], z_attr, alpha_list, attr)
    if rows:
        _, pic = attribute_sweep(model, clf, x_test[:rows], y_test[:rows], z_attr, alpha_list, attr)
        s = model.config.image_size
        cells = torch.cat([x_test[:rows, None], pic.transpose(0, 1)], dim=1)  # (rows, 1 + alphas, 784)
        out = out or f"attribute_{attr}.png"
        save_grid(out, cells.reshape(-1, s, s).numpy(), len(alpha_list) + 1, scale=scale)
    if as_json:
        click.echo(json.dumps([{k: r[k] for k in ("alpha", "attribute", "recognised")} for r in table]))
        return
    original = measure_attribute(x_test[:n_measure].numpy(), attr).mean()
    how = "pooled quarters" if pooled else "quarters within each digit"
    click.echo(f"{attr}: z_attr from {len(x_train)} training images, {how} (|z_attr| = {z_attr.norm():.3f}); "
               f"{n_measure} test digits; the originals measure {original:.3f}")
    click.echo(f"{'alpha':>6} {attr:>10} {'recognised':>11}")
    for r in table:
        click.echo(f"{r['alpha']:>6.2f} {r['attribute']:>10.3f} {r['recognised']:>11.3f}")
    if rows:
        click.echo(out)


@mnist.command()
@click.argument("checkpoints", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="PNG file.")
@click.option("--data-dir", default=DEFAULT_DATA_DIR, show_default=True, type=click.Path(file_okay=False))
@click.option("--limit", type=int, default=None, help="Plot the first N test images [all 10000].")
@click.option("--prior-samples", type=int, default=5000, show_default=True, help="Prior samples per model.")
@click.option("--title", "titles", multiple=True,
              help="Panel title, once per checkpoint in order [the checkpoints' kinds].")
@click.option("--seed", type=int, default=0, show_default=True)
@_errors
def latents(checkpoints, out, data_dir, limit, prior_samples, titles, seed):
    """Plot the test codes of 2-d models coloured by digit, beside samples of each model's prior.

    One column per checkpoint (Makhzani et al. 2015, fig. 2: a VAE beside an AAE).

    \b
      sketchvae mnist latents runs/vae2d/best.pt runs/aae2d/best.pt runs/aae_mix/best.pt -o latents.png
    """
    import torch

    from sketchvae.image.data import load_split
    from sketchvae.image.measure import describe, is_conditional
    from sketchvae.image.plots import latent_maps

    names = list(titles) or None
    if names is not None and len(names) != len(checkpoints):
        raise click.UsageError(f"{len(names)} --title for {len(checkpoints)} checkpoints: give one per checkpoint")
    images, labels = load_split(data_dir, "test", limit)
    x, y = _grey(images), torch.from_numpy(labels)
    panels = []
    for i, path in enumerate(checkpoints):
        model, _ = _load(path)
        if model.config.z_size != 2:
            raise click.ClickException(f"{path}: a latent map needs a 2-d latent space, this model has z_size "
                                       f"{model.config.z_size} (train with --latent 2)")
        with torch.no_grad():
            codes = model.code(x, y if is_conditional(model) else None)
            prior = model.sample_latents(prior_samples, torch.Generator().manual_seed(seed))
        panels.append({"title": names[i] if names else describe(model), "codes": codes.numpy(),
                       "labels": labels, "prior": prior.numpy()})
    latent_maps(out, panels)
    click.echo(out)
