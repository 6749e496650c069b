"""`Drawing` / `Drawings` (sketchvae.drawing): what the sampling API returns draws itself as SVG in
Jupyter and still goes wherever plain stroke-3 arrays went (numpy, strokes, render, torch, the
sampler's own inputs, the cache, pickles and the safe .npz reader)."""

from __future__ import annotations

import json
import pickle
import re

import numpy as np
import pytest
import torch

from sketchvae import render
from sketchvae import sample as S
from sketchvae.drawing import ROW, Drawing, Drawings
from sketchvae.strokes import bounds, model_input, to_polylines, to_stroke5
from serve_util import tiny_checkpoint


@pytest.fixture(scope="module")
def vae(tmp_path_factory):
    sampler = S.load(tiny_checkpoint(tmp_path_factory.mktemp("d") / "vae.pt", "vae", max_seq_len=30))
    with torch.no_grad():
        sampler.model.output.bias[2] -= 4.0  # p_end (split_output's layout): untrained, it would end at once
    return sampler


@pytest.fixture(scope="module")
def drawings(vae):
    return S.sample(vae, 5, temperature=0.8, seed=1)


def _cells(svg: str) -> int:
    return len(re.findall(r'class="cell"', svg))


def _size(svg: str) -> tuple[float, float]:
    m = re.search(r'viewBox="0,0,([\d.]+),([\d.]+)"', svg)
    return float(m.group(1)), float(m.group(2))


def test_every_sampling_function_returns_drawings(vae, drawings):
    a, b = drawings[0], drawings[1]
    results = {
        "sample": drawings,
        "Sampler.sample": vae.sample(2, seed=0),
        "sample_sequential": S.sample_sequential(vae, 2, seed=0),
        "complete": vae.complete(a[:3], n=2, seed=0),
        "interpolation_strip": vae.interpolation_strip(a, b, steps=3, seed=0),
        "analogy": S.analogy(vae, a, b, drawings[2], n=2, seed=0),
    }
    for name, result in results.items():
        assert type(result) is Drawings and all(type(d) is Drawing for d in result), name
        assert all(d.dtype == np.float32 and d.ndim == 2 and d.shape[1] == 3 for d in result), name
    recon = vae.reconstruct([a, b], n=3, seed=0)
    assert type(recon) is Drawings and [len(row) for row in recon] == [3, 3]
    assert all(type(row) is Drawings and all(type(d) is Drawing for d in row) for row in recon)


def test_wrapping_changes_no_value(vae):
    """The batched sampler's arrays, wrapped: the same numbers as the one-at-a-time reference."""
    gen = torch.Generator().manual_seed(4)
    noise = torch.cat([torch.rand(30, 3, 2, generator=gen), torch.randn(30, 3, 2, generator=gen)], dim=-1)
    z = torch.randn(3, vae.config.z_size, generator=gen)
    batched = S.sample(vae, 3, temperature=0.6, z=z, noise=noise)
    plain = [np.asarray(d) for d in S.sample_sequential(vae, 3, temperature=0.6, z=z, noise=noise)]
    assert all(type(p) is np.ndarray for p in plain)
    for d, p in zip(batched, plain):  # the batched loop's fused LSTM step rounds differently: ~1e-6
        assert d.shape == p.shape and np.array_equal(d[:, 2], p[:, 2])
        np.testing.assert_allclose(np.asarray(d), p, rtol=1e-5, atol=1e-5)


def test_a_drawing_draws_its_strokes():
    d = Drawing(np.array([[5, 0, 0], [5, 5, 1], [-10, 0, 0], [0, 5, 0], [3, 3, 1], [2, 2, 1]], np.float32))
    svg = d._repr_svg_()
    assert svg.startswith("<svg") and _cells(svg) == 1
    strokes = to_polylines(d)
    assert len(re.findall(r"<polyline", svg)) + len(re.findall(r"<circle", svg)) == len(strokes) == 3
    assert svg == render.sketch_svg(np.asarray(d), size=2 * render.DEFAULT_CELL)


def test_what_is_not_a_drawing_shows_as_an_array(drawings):
    d = drawings[0]
    assert d[:, 0]._repr_svg_() is None  # a column
    assert Drawing(np.zeros((0, 3)))._repr_svg_() is None
    assert Drawing(np.array([[np.nan, 0, 1]]))._repr_svg_() is None
    assert Drawings()._repr_svg_() is None
    with pytest.raises(ValueError, match=r"stroke-3 array \(n, 3\), got shape \(4,\)"):
        Drawing(np.zeros(4))
    with pytest.raises(ValueError, match=r"got shape \(2, 2\)"):
        Drawings([np.zeros((2, 2))])


def test_grids_rows_strips_and_completions(vae, drawings):
    grid = drawings._repr_svg_()
    assert grid == render.grid_svg([np.asarray(d) for d in drawings], cols=5)
    assert _cells(grid) == 5 and _size(grid) == (5 * render.DEFAULT_CELL, render.DEFAULT_CELL)  # one row
    many = Drawings(list(drawings) * 2)._repr_svg_()
    assert _cells(many) == 10 and _size(many) == (ROW * render.DEFAULT_CELL, 2 * render.DEFAULT_CELL)
    recon = vae.reconstruct(drawings[:2], n=3, seed=0)
    svg = recon._repr_svg_()
    assert _cells(svg) == 6 and _size(svg) == (3 * render.DEFAULT_CELL, 2 * render.DEFAULT_CELL)  # a row per input
    strip = vae.interpolation_strip(drawings[0], drawings[1], steps=4, seed=0)
    assert _size(strip._repr_svg_()) == (4 * render.DEFAULT_CELL, render.DEFAULT_CELL)  # one row
    given = drawings[0][:4]
    ends = vae.complete(given, n=3, seed=0)
    svg = ends._repr_svg_()
    assert svg == render.completion_svg(given, [np.asarray(e)[len(given):] for e in ends], cols=3, show_given=False)
    assert _cells(svg) == 3 and 'class="stroke given"' in svg
    assert type(ends[1:]) is Drawings and ends[1:].given is ends.given  # slices keep the type and the prefix


def test_numpy_and_torch_take_drawings(drawings):
    d = drawings[0]
    plain = np.asarray(d)
    assert type(plain) is np.ndarray and np.shares_memory(plain, d)
    assert type(d.sum()) is np.float32 and d.sum() == plain.sum()
    assert type(d[:, 0:2].sum(axis=0)) is np.ndarray
    assert type(d * 2) is Drawing and type(np.cumsum(d, axis=0)) is Drawing  # still drawings
    assert type(d > 0) is np.ndarray and type(np.isfinite(d).all()) is np.bool_
    np.testing.assert_array_equal(np.concatenate([d, d]), np.concatenate([plain, plain]))
    np.testing.assert_array_equal(np.round(d).astype(np.int16), np.round(plain).astype(np.int16))
    assert torch.equal(torch.as_tensor(d), torch.from_numpy(plain))
    assert json.dumps(d.tolist()) == json.dumps(plain.tolist())
    rows = list(d)
    assert all(type(r) is np.ndarray for r in rows) and np.array_equal(np.stack(rows), plain)


def test_the_package_takes_drawings(vae, drawings):
    from sketchvae.data.batching import collate_stroke5
    from sketchvae.serve.engine import to_json

    d, plain = drawings[0], [np.asarray(x) for x in drawings]
    np.testing.assert_array_equal(to_stroke5(d), to_stroke5(plain[0]))
    np.testing.assert_array_equal(model_input(d, 2.0), model_input(plain[0], 2.0))
    assert bounds(d) == bounds(plain[0])
    batch, ref = collate_stroke5([(x, 0) for x in drawings]), collate_stroke5([(x, 0) for x in plain])
    assert torch.equal(batch.strokes, ref.strokes) and torch.equal(batch.lengths, ref.lengths)
    mu, sigma = S.encode(vae, drawings)
    mu_ref, sigma_ref = S.encode(vae, plain)
    assert torch.equal(mu, mu_ref) and torch.equal(sigma, sigma_ref)
    assert to_json(d) == to_json(plain[0])
    assert render.interpolation_svg(drawings) == render.interpolation_svg(plain)


def test_pickles_and_npz_files_hold_plain_arrays(tmp_path, drawings):
    from sketchvae.data.cache import open_cache, write_cache
    from sketchvae.data.formats import load_npz

    back = pickle.loads(pickle.dumps(drawings, protocol=pickle.HIGHEST_PROTOCOL))
    assert type(back) is list and all(type(x) is np.ndarray for x in back)
    ints = Drawings(np.round(d).astype(np.int16) for d in drawings)
    arr = np.empty(len(ints), dtype=object)
    arr[:] = list(ints)
    np.savez(tmp_path / "mine.npz", train=arr)  # what a user does to keep samples as a data set
    loaded = load_npz(tmp_path / "mine.npz", splits=("train",))["train"]  # the restricted unpickler
    assert len(loaded) == len(ints) and all(np.array_equal(a, b) for a, b in zip(loaded, ints))
    write_cache(tmp_path / "mine.h5", {"train": [(d, 0) for d in ints]}, ["sheep"])
    split = open_cache(tmp_path / "mine.h5").split("train")
    assert len(split) == len(ints) and np.array_equal(split[0], np.asarray(ints[0]))
