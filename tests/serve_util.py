"""Helpers for the `sketchvae serve` tests: tiny Sketch-RNN checkpoints and a real uvicorn server in a
thread on a free 127.0.0.1 port."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import torch

CLASSES = ["cat", "pig", "hot air balloon"]
SCALE = 12.5
# two strokes (page pixels) whose corners are all far from the lines between them, so RDP keeps every point
DRAWING = [[100, 100, 0], [60, 0, 0], [0, 60, 1], [40, -80, 0], [30, 30, 1]]


def tiny_checkpoint(path: Path, mode: str, max_seq_len: int = 40, seed: int = 0, **config) -> Path:
    """A small untrained Sketch-RNN checkpoint of `mode` ("vae", "class_vae" or "decoder"); `config`:
    other SketchRNNConfig fields (e.g. cell="layer_norm")."""
    from sketchvae.checkpoint import save_checkpoint
    from sketchvae.models.sketch_rnn import SketchRNN, SketchRNNConfig

    torch.manual_seed(seed)
    cfg = SketchRNNConfig(mode=mode, enc_rnn_size=12, dec_rnn_size=24, z_size=6, num_mixture=3,
                          max_seq_len=max_seq_len, class_embed_size=4,
                          num_classes=len(CLASSES) if mode == "class_vae" else 0, **config)
    return save_checkpoint(path, kind="sketch_rnn", config=cfg, model=SketchRNN(cfg),
                           class_names=CLASSES if mode == "class_vae" else [], scale_factor=SCALE)


class ServerThread:
    """`with ServerThread(app) as url:` runs `app` on uvicorn at 127.0.0.1:<free port> meanwhile."""

    def __init__(self, app):
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()
