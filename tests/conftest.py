"""Shared test set-up."""

import pytest


@pytest.fixture(autouse=True)
def _restore_denormals():
    """Training and sampling flush denormals to zero (`runtime.configure_cpu`, much faster LSTMs on
    CPU); that is process-wide CPU state, so undo it after each test: hypothesis refuses to draw
    floats when subnormals cannot be represented."""
    yield
    import torch

    torch.set_flush_denormal(False)
