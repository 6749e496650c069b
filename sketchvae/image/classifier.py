"""A small convolutional MNIST classifier, the measuring instrument of :mod:`sketchvae.image.measure`.

It reads grey images in [0, 1] (the data's grey levels, or a decoder's Bernoulli means) and returns
class logits. It is trained on all 60000 training images (it is an instrument, never selected on the
test set) and its test accuracy is stored in its checkpoint (kind ``"image_classifier"``); the
shipped one is ``checkpoints/mnist_classifier.pt`` (``scripts/train_mnist_checkpoints.sh classifier``).

Architecture (the usual small MNIST CNN): conv 3x3 1->32, ReLU, max-pool 2; conv 3x3 32->64, ReLU,
max-pool 2; dropout; dense 3136->128, ReLU; dropout; dense 128->10.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sketchvae.checkpoint import CheckpointError, build_model, load_checkpoint, register_model_kind

KIND = "image_classifier"


@dataclasses.dataclass
class ClassifierConfig:
    channels: int = 32  # channels of the first conv layer (the second has twice as many)
    hidden_size: int = 128  # dense units before the output layer
    dropout: float = 0.25  # dropout probability before each dense layer (training only)
    num_classes: int = 10
    image_size: int = 28  # square images, a multiple of 4

    def __post_init__(self) -> None:
        for name, lo in (("channels", 1), ("hidden_size", 1), ("num_classes", 2), ("image_size", 4)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
        if self.image_size % 4:
            raise ValueError(f"image_size must be a multiple of 4, got {self.image_size}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


class DigitClassifier(nn.Module):
    def __init__(self, config: ClassifierConfig):
        super().__init__()
        self.config = config
        c, s = config.channels, config.image_size // 4
        self.features = nn.Sequential(
            nn.Conv2d(1, c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (B, c, 14, 14)
            nn.Conv2d(c, 2 * c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (B, 2c, 7, 7)
            nn.Flatten(),
        )
        self.head = nn.Sequential(
            nn.Dropout(config.dropout), nn.Linear(2 * c * s * s, config.hidden_size), nn.ReLU(),
            nn.Dropout(config.dropout), nn.Linear(config.hidden_size, config.num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        """x: grey images in [0, 1], (B, 784) or (B, 1, 28, 28) -> class logits (B, 10)."""
        s = self.config.image_size
        return self.head(self.features(x.reshape(-1, 1, s, s).float()))

    @torch.no_grad()
    def probabilities(self, x: Tensor, batch_size: int = 1000) -> Tensor:
        """p(y | x) for many images, in batches, in eval mode: (N, 10)."""
        was = self.training
        self.eval()
        dev = next(self.parameters()).device
        out = [torch.softmax(self(x[i:i + batch_size].to(dev)), -1).cpu() for i in range(0, len(x), batch_size)]
        self.train(was)
        return torch.cat(out) if out else torch.zeros(0, self.config.num_classes)


def build_classifier(config: ClassifierConfig) -> DigitClassifier:
    return DigitClassifier(config)


register_model_kind(KIND, ClassifierConfig, build_classifier)


def accuracy(model: DigitClassifier, images: Tensor, labels: Tensor) -> float:
    """Fraction of images whose most probable class is the label."""
    return (model.probabilities(images).argmax(-1) == labels.cpu()).float().mean().item()


def random_shift(x: Tensor, max_shift: int, generator: torch.Generator | None = None) -> Tensor:
    """Move each image (B, 784) by its own random whole-pixel offset in -max_shift..max_shift along each axis,
    filling with 0 (background): (B, 784). The usual MNIST augmentation; exact, no interpolation."""
    if max_shift == 0:
        return x
    b, s = len(x), int(round(x.shape[-1] ** 0.5))
    pad = F.pad(x.reshape(b, s, s), (max_shift,) * 4)  # (B, s + 2m, s + 2m)
    off = torch.randint(0, 2 * max_shift + 1, (b, 2), generator=generator)
    rows = (off[:, :1] + torch.arange(s)).to(x.device)  # (B, s)
    cols = (off[:, 1:] + torch.arange(s)).to(x.device)
    return pad[torch.arange(b, device=x.device)[:, None, None], rows[:, :, None], cols[:, None, :]].reshape(b, -1)


def fit_classifier(config: ClassifierConfig, train_images: Tensor, train_labels: Tensor, *, epochs: int = 6,
                   batch_size: int = 128, lr: float = 1e-3, lr_decay: float = 0.6, max_shift: int = 2,
                   seed: int = 0, callback: Callable[[dict], None] | None = None,
                   progress: bool = False) -> DigitClassifier:
    """Train on grey images (N, 784) in [0, 1] with int labels (N,): Adam, cross-entropy, shuffled batches,
    random shifts of up to `max_shift` pixels, learning rate lr * lr_decay^epoch.

    `callback(record)` gets ``{"epoch", "loss", "train_accuracy", "lr", "seconds"}`` after every epoch.
    """
    if epochs < 1 or batch_size < 1 or not lr > 0 or not 0 < lr_decay <= 1 or max_shift < 0:
        raise ValueError(f"need epochs >= 1, batch_size >= 1, lr > 0, 0 < lr_decay <= 1 and max_shift >= 0 "
                         f"(got {epochs}, {batch_size}, {lr}, {lr_decay}, {max_shift})")
    torch.manual_seed(seed)
    model = DigitClassifier(config)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    n = len(train_images)
    for epoch in range(epochs):
        for group in opt.param_groups:
            group["lr"] = lr * lr_decay ** epoch
        model.train()
        t0 = time.perf_counter()
        order = torch.randperm(n, generator=g)
        loss_sum, correct = 0.0, 0
        batches = range(0, n, batch_size)
        if progress:
            from tqdm import tqdm

            batches = tqdm(batches, desc=f"epoch {epoch + 1}/{epochs}", unit="batch", leave=False)
        for i in batches:
            idx = order[i:i + batch_size]
            x, y = random_shift(train_images[idx], max_shift, g), train_labels[idx]
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(idx)
            correct += (logits.argmax(-1) == y).sum().item()
        if callback is not None:
            callback({"epoch": epoch + 1, "loss": loss_sum / n, "train_accuracy": correct / n,
                      "lr": opt.param_groups[0]["lr"], "seconds": time.perf_counter() - t0})
    model.eval()
    return model


def load_classifier(path: str | os.PathLike, device="cpu") -> tuple[DigitClassifier, dict]:
    """(classifier in eval mode, checkpoint dict)."""
    ckpt = load_checkpoint(path)
    if ckpt["kind"] != KIND:
        raise CheckpointError(f"{path}: a {ckpt['kind']!r} checkpoint, not an MNIST classifier ({KIND!r})")
    return build_model(ckpt, path).to(device), ckpt
