"""Other projects' model formats, converted to and from sketchvae checkpoints (and nothing else).

* `sketchvae.interop.magenta`: magenta-js (`@magenta/sketch`) `.gen.json` Sketch-RNN models.
"""
