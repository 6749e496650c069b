"""Image grids and strips as PNG (pillow). numpy only: no torch here.

Images are (N, H, W) arrays, float in [0, 1] (e.g. Bernoulli means) or uint8 in [0, 255]; they are
drawn as black digits on white (``invert=True``, the default) or white on black as in MNIST itself.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def to_uint8(images) -> np.ndarray:
    """float [0, 1] (clipped) or uint8 -> uint8 (N, H, W)."""
    a = np.asarray(images)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise ValueError(f"images must be (N, H, W) or (H, W), got shape {a.shape}")
    if a.dtype == np.uint8:
        return a
    return np.round(np.clip(a.astype(np.float64), 0.0, 1.0) * 255.0).astype(np.uint8)


def image_grid(images, ncol: int | None = None, *, padding: int = 2, invert: bool = True) -> np.ndarray:
    """Tile (N, H, W) images into one uint8 picture, `ncol` per row (default: a square-ish grid).

    Cells are separated (and framed) by `padding` background pixels; empty trailing cells stay blank.
    """
    a = to_uint8(images)
    if invert:
        a = 255 - a
    n, h, w = a.shape
    if n == 0:
        raise ValueError("no images to draw")
    if ncol is None:
        ncol = int(np.ceil(np.sqrt(n)))
    if ncol < 1:
        raise ValueError(f"ncol must be >= 1, got {ncol}")
    ncol = min(ncol, n)
    nrow = -(-n // ncol)
    bg = 255 if invert else 0
    out = np.full((nrow * (h + padding) + padding, ncol * (w + padding) + padding), bg, dtype=np.uint8)
    for i in range(n):  # at most a few thousand cells: a loop over cells, not pixels
        r, c = divmod(i, ncol)
        y, x = padding + r * (h + padding), padding + c * (w + padding)
        out[y:y + h, x:x + w] = a[i]
    return out


def save_png(path: str | os.PathLike, picture: np.ndarray, *, scale: int = 1) -> Path:
    """Write a uint8 (H, W) picture as a greyscale PNG, enlarged `scale` times (nearest), atomically."""
    from PIL import Image

    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    pic = np.asarray(picture, dtype=np.uint8)
    if scale > 1:
        pic = pic.repeat(scale, axis=0).repeat(scale, axis=1)
    from sketchvae.runtime import atomic_write

    return atomic_write(path, lambda tmp: Image.fromarray(pic).save(tmp, format="PNG"))


def save_grid(path, images, ncol: int | None = None, *, padding: int = 2, scale: int = 2,
              invert: bool = True) -> Path:
    """`image_grid` + `save_png`."""
    return save_png(path, image_grid(images, ncol, padding=padding, invert=invert), scale=scale)
