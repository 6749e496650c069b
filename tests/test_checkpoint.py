import dataclasses
import os
import pickle

import numpy as np
import pytest
import torch

from sketchvae import checkpoint as C
from sketchvae import runtime


@dataclasses.dataclass
class TinyConfig:
    width: int = 3


class Tiny(torch.nn.Module):
    def __init__(self, config):
        super().__init__()
        self.lin = torch.nn.Linear(config.width, 2)


C.register_model_kind("tiny_test", TinyConfig, Tiny)


def test_round_trip_rebuilds_identical_model(tmp_path):
    model = Tiny(TinyConfig(width=4))
    path = C.save_checkpoint(tmp_path / "m.pt", kind="tiny_test", config=TinyConfig(width=4), model=model,
                             class_names=["cat", "hot air balloon"], scale_factor=12.5, extra={"step": 7})
    ckpt = C.load_checkpoint(path)
    assert ckpt["class_names"] == ["cat", "hot air balloon"] and ckpt["scale_factor"] == 12.5
    assert ckpt["extra"] == {"step": 7}
    again = C.build_model(ckpt)
    x = torch.randn(5, 4)
    torch.testing.assert_close(again.lin(x), model.lin(x), rtol=0, atol=0)
    assert not again.training


def test_atomic_write_leaves_no_partial_file(tmp_path):
    target = tmp_path / "ckpt.pt"
    target.write_bytes(b"old and good")

    def broken(tmp):
        with open(tmp, "wb") as f:
            f.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        runtime.atomic_write(target, broken)
    assert target.read_bytes() == b"old and good"
    assert os.listdir(tmp_path) == ["ckpt.pt"]


@pytest.mark.parametrize("content, match", [
    (b"", "not a readable"),
    (b"\x00garbage" * 100, "not a readable"),
])
def test_corrupt_files_give_clear_errors(tmp_path, content, match):
    p = tmp_path / "bad.pt"
    p.write_bytes(content)
    with pytest.raises(C.CheckpointError, match=match) as err:
        C.load_checkpoint(p)
    assert str(p) in str(err.value)


def test_truncated_checkpoint(tmp_path):
    good = C.save_checkpoint(tmp_path / "g.pt", kind="tiny_test", config=TinyConfig(), model=Tiny(TinyConfig()))
    data = good.read_bytes()
    bad = tmp_path / "t.pt"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(C.CheckpointError, match="t.pt"):
        C.load_checkpoint(bad)


def test_foreign_torch_file_and_missing(tmp_path):
    p = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, p)
    with pytest.raises(C.CheckpointError, match="not a sketchvae checkpoint"):
        C.load_checkpoint(p)
    with pytest.raises(C.CheckpointError, match="not found"):
        C.load_checkpoint(tmp_path / "nope.pt")


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {_Evil.marker}",))


def test_pickled_code_never_runs(tmp_path):
    _Evil.marker = tmp_path / "pwned"
    p = tmp_path / "evil.pt"
    torch.save({"format_version": 1, "kind": "tiny_test", "config": {}, "model": _Evil()}, p)
    with pytest.raises(C.CheckpointError):
        C.load_checkpoint(p)
    assert not _Evil.marker.exists()
    raw = tmp_path / "evil.pkl"
    raw.write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(C.CheckpointError):
        C.load_checkpoint(raw)
    assert not _Evil.marker.exists()


def test_unknown_kind_and_bad_config(tmp_path):
    p = C.save_checkpoint(tmp_path / "k.pt", kind="martian", config={}, model={})
    with pytest.raises(C.CheckpointError, match="unknown model kind 'martian'"):
        C.build_model(C.load_checkpoint(p))
    p = C.save_checkpoint(tmp_path / "c.pt", kind="tiny_test", config={"colour": 1}, model={})
    with pytest.raises(C.CheckpointError, match="unknown TinyConfig fields"):
        C.build_model(C.load_checkpoint(p))


def test_version_mismatch(tmp_path):
    p = tmp_path / "v.pt"
    torch.save({"format_version": 99, "kind": "tiny_test", "config": {}, "model": {}}, p)
    with pytest.raises(C.CheckpointError, match="version 99"):
        C.load_checkpoint(p)


def test_rng_state_round_trip_is_weights_only_safe(tmp_path):
    import random
    runtime.seed_everything(3)
    state = runtime.rng_state()
    torch.save(state, tmp_path / "rng.pt")
    a = (torch.rand(3), np.random.rand(3), random.random())
    runtime.set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    b = (torch.rand(3), np.random.rand(3), random.random())
    torch.testing.assert_close(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[2] == b[2]


def test_resolve_device():
    assert runtime.resolve_device("cpu").type == "cpu"
    with pytest.raises(ValueError, match="unknown device"):
        runtime.resolve_device("tpu")


def test_atomic_write_gives_the_usual_permissions(tmp_path):
    """A temporary file is private (0600); the file put in place must follow the umask like any other."""
    old = os.umask(0o022)
    try:
        path = runtime.atomic_write(tmp_path / "out.bin", lambda tmp: open(tmp, "wb").close())
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
