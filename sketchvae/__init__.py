"""sketchvae: variational autoencoders for drawings (Sketch-RNN) and images (MNIST VAEs)."""

__version__ = "0.1.0"
