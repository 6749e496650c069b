"""Plots (matplotlib, PNG) for the image models: 2-d latent maps. numpy in, a file out; no torch here.

matplotlib is imported inside the function with the non-interactive Agg backend, so importing this
module is cheap and no display is needed.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def latent_maps(path: str | os.PathLike, panels: list[dict], *, dpi: int = 110, point_size: float = 2.0) -> Path:
    """Write a figure of 2-d latent maps, one column per model.

    Each panel is ``{"title": str, "codes": (N, 2), "labels": (N,) ints 0..9, "prior": (M, 2)}``: the top
    row shows the test codes coloured by digit, the bottom row the prior's samples on the same axes
    (Makhzani et al. 2015, fig. 2: a VAE's codes leave holes and clumps that the prior does not have;
    an AAE's codes fill the prior's shape). Written atomically.
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from sketchvae.runtime import atomic_write

    if not panels:
        raise ValueError("no latent maps to draw")
    ncol = len(panels)
    fig, axes = plt.subplots(2, ncol, figsize=(4.0 * ncol, 8.0), squeeze=False)
    cmap = plt.get_cmap("tab10")
    for j, p in enumerate(panels):
        codes, labels, prior = (np.asarray(p[k]) for k in ("codes", "labels", "prior"))
        if codes.ndim != 2 or codes.shape[1] != 2 or prior.ndim != 2 or prior.shape[1] != 2:
            raise ValueError(f"{p.get('title', 'panel')}: latent maps need 2-d codes, got {codes.shape} and "
                             f"prior {prior.shape}")
        both = np.concatenate([codes, prior])
        lo, hi = np.percentile(both, 0.5, axis=0), np.percentile(both, 99.5, axis=0)
        pad = 0.08 * (hi - lo)
        lim = (lo - pad, hi + pad)
        ax = axes[0, j]
        for c in range(10):
            sel = labels == c
            ax.scatter(codes[sel, 0], codes[sel, 1], s=point_size, color=cmap(c), label=str(c), linewidths=0,
                       rasterized=True)
        ax.set_title(f"{p['title']}\ntest codes by digit", fontsize=10)
        ax2 = axes[1, j]
        ax2.scatter(prior[:, 0], prior[:, 1], s=point_size, color="0.3", linewidths=0, rasterized=True)
        ax2.set_title("samples of the prior p(z)", fontsize=10)
        for a in (ax, ax2):
            a.set_xlim(lim[0][0], lim[1][0])
            a.set_ylim(lim[0][1], lim[1][1])
            a.set_aspect("equal", adjustable="box")
            a.tick_params(labelsize=8)
    handles, names = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, names, loc="upper center", ncol=10, markerscale=4, fontsize=9, frameon=False,
               bbox_to_anchor=(0.5, 1.0))
    fig.tight_layout(rect=(0, 0, 1, 0.96))

    def write(tmp):
        fig.savefig(tmp, format="png", dpi=dpi)

    try:
        return atomic_write(path, write)
    finally:
        plt.close(fig)
