"""sketchvae: variational autoencoders for drawings (Sketch-RNN) and images (MNIST VAEs).

    import sketchvae
    sheep = sketchvae.load("sheep")     # a shipped checkpoint by name, a .pt file or a run folder
    sheep.sample(8, seed=0)             # Drawings: stroke-3 arrays that draw themselves in Jupyter

The rest of the Python API is in `sketchvae.sample` (sampling, reconstruction, interpolation,
completion) and `sketchvae.render` (SVG files); this module imports nothing heavy, so that
`sketchvae --help` stays instant.
"""

__version__ = "0.1.0"


def load(path, device="cpu"):
    """A Sketch-RNN checkpoint ready to draw: `sketchvae.sample.load` (a `Sampler`)."""
    from sketchvae.sample import load as load_sampler

    return load_sampler(path, device)
