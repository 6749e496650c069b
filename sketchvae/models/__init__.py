"""Models: Sketch-RNN (`sketch_rnn`) and its recurrent layers (`layers`).

Importing this package registers the "sketch_rnn" checkpoint kind.
"""

from sketchvae.models.sketch_rnn import CELLS, MODES, SketchRNN, SketchRNNConfig

__all__ = ["SketchRNN", "SketchRNNConfig", "MODES", "CELLS"]
