import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from sketchvae import strokes as S


@st.composite
def stroke3(draw, min_len=1, max_len=60, ends_lifted=True):
    n = draw(st.integers(min_len, max_len))
    xy = draw(arrays(np.int16, (n, 2), elements=st.integers(-200, 200)))
    pen = draw(arrays(np.int16, (n,), elements=st.integers(0, 1)))
    if ends_lifted:
        pen[-1] = 1
    return np.column_stack([xy, pen]).astype(np.int16)


def n_strokes(s3):
    return int((np.asarray(s3)[:, 2] > 0.5).sum())


@given(stroke3(), st.integers(0, 20))
def test_stroke5_round_trip_exact(s3, extra):
    s5 = S.to_stroke5(s3, max_len=len(s3) + extra)
    assert s5.shape == (len(s3) + extra, 5)
    assert np.all(s5[:, 2:].sum(axis=1) == 1)          # one-hot pen states
    assert np.all(s5[len(s3):] == S.END_ROW)            # end padding
    np.testing.assert_array_equal(S.to_stroke3(s5), s3.astype(np.float32))


def test_stroke5_rejects_too_long():
    with pytest.raises(ValueError, match="max_len=2"):
        S.to_stroke5(np.zeros((3, 3)), max_len=2)


@given(stroke3())
def test_polylines_round_trip_exact(s3):
    polys = S.to_polylines(s3)
    assert len(polys) == n_strokes(s3)
    assert sum(len(p) for p in polys) == len(s3)
    np.testing.assert_array_equal(S.from_polylines(polys, dtype=np.int16), s3)


def test_polylines_absolute_coordinates():
    s3 = np.array([[1, 2, 0], [3, 0, 1], [0, 5, 0], [-1, -1, 1]])
    polys = S.to_polylines(s3, start=(10, 10))
    np.testing.assert_array_equal(polys[0], [[11, 12], [14, 12]])
    np.testing.assert_array_equal(polys[1], [[14, 17], [13, 16]])
    assert S.bounds(s3) == (1.0, 4.0, 2.0, 7.0)


@given(stroke3(min_len=2))
def test_normalize_inverts(s3):
    scale = 3.7
    back = S.denormalize(S.normalize(s3, scale), scale)
    np.testing.assert_allclose(back, s3, rtol=1e-5, atol=1e-4)


def test_scale_factor_is_std_of_offsets():
    a = np.array([[1, 2, 0], [3, -4, 1]])
    b = np.array([[0, 7, 1]])
    assert S.scale_factor([a, b]) == pytest.approx(np.std([1, 2, 3, -4, 0, 7]))
    with pytest.raises(ValueError, match="degenerate"):
        S.scale_factor([np.zeros((4, 3))])


def test_clamp_keeps_pen():
    s3 = np.array([[100.0, -100.0, 1.0], [2.0, 3.0, 0.0]])
    np.testing.assert_array_equal(S.clamp(s3, 10), [[10, -10, 1], [2, 3, 0]])


@settings(max_examples=60)
@given(stroke3(min_len=2), st.floats(0.0, 1.0), st.integers(0, 2**32 - 1))
def test_augment_keeps_pen_structure(s3, drop, seed):
    rng = np.random.default_rng(seed)
    out = S.augment(s3, rng, scale_range=0.2, drop_prob=drop)
    assert n_strokes(out) == n_strokes(s3)
    assert len(out) <= len(s3)
    polys_in, polys_out = S.to_polylines(s3), S.to_polylines(out)
    for a, b in zip(polys_in, polys_out):
        assert len(b) >= min(len(a), 2)  # each stroke keeps its first and last point


@given(stroke3(min_len=2), st.integers(0, 2**32 - 1))
def test_augment_drop_keeps_endpoints_exactly(s3, seed):
    # without scaling, dropping interior points must keep every stroke's end points in place
    out = S.augment(s3, np.random.default_rng(seed), scale_range=0.0, drop_prob=0.5)
    for a, b in zip(S.to_polylines(s3), S.to_polylines(out)):
        np.testing.assert_allclose(b[0], a[0], atol=1e-3)
        np.testing.assert_allclose(b[-1], a[-1], atol=1e-3)


def test_augment_is_deterministic_under_seed():
    s3 = np.array([[1, 1, 0]] * 20 + [[1, 1, 1]], dtype=np.int16)
    a = S.augment(s3, np.random.default_rng(5), drop_prob=0.3)
    b = S.augment(s3, np.random.default_rng(5), drop_prob=0.3)
    np.testing.assert_array_equal(a, b)
    assert len(a) < len(s3)


def reference_augment_strokes(s3, draws, prob):
    """magenta's utils.augment_strokes written out as its loop (our own transcription), with the
    reference's np.random.rand() call at each point replaced by draws[k]."""
    kept = []
    last_kept_pen = 1  # the loop starts as if after a pen lift
    since_reset = 0
    for k in range(len(s3)):
        row = s3[k].copy()  # the row's own dtype: float32 sums as the reference's float32 rows
        pen = row[2]
        if pen == 1 or last_kept_pen == 1:
            since_reset = 0
        else:
            since_reset += 1
        if pen == 0 and last_kept_pen == 0 and since_reset > 2 and draws[k] < prob:
            kept[-1][0] += row[0]  # merged into the previous KEPT point
            kept[-1][1] += row[1]
        else:
            kept.append(row)
            last_kept_pen = pen
    return np.array(kept).reshape(-1, 3)


@settings(max_examples=150)
@given(stroke3(min_len=1, max_len=80, ends_lifted=False), st.floats(0.0, 1.0), st.integers(0, 2**32 - 1),
       st.floats(0.05, 1.0))
def test_drop_points_equals_the_reference_loop(s3, prob, seed, pen_up_rate):
    """Random sketches (long strokes: runs of drops; short ones: nothing droppable), the same draws."""
    rng = np.random.default_rng(seed)
    s3 = s3.astype(np.float32)
    s3[:, 2] = rng.random(len(s3)) < pen_up_rate * 0.5
    s3[:, 0:2] /= 7.3  # normalised offsets: float32 sums whose rounding the order decides
    draws = rng.random(len(s3))
    got = S.drop_points(s3, draws, prob)
    ref = reference_augment_strokes(s3, draws, prob)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, ref)


def test_drop_points_hand_example():
    """One stroke of 8 points + a second of 3: points 3, 4 (a run) and 6 drop into point 2 and 5."""
    s3 = np.array([[1, 0, 0], [2, 0, 0], [4, 0, 0], [8, 0, 0], [16, 0, 0], [32, 0, 0], [64, 0, 0], [128, 0, 1],
                   [1, 1, 0], [1, 1, 0], [1, 1, 1]], dtype=np.float32)
    draws = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.9, 0.0, 0.0, 0.0, 0.0, 0.0])
    out = S.drop_points(s3, draws, 0.5)
    # points 0-2 are the stroke's first three (kept whatever the draws); 7 lifts the pen (kept);
    # the second stroke has only three points; 5 draws 0.9 >= 0.5
    np.testing.assert_array_equal(out, [[1, 0, 0], [2, 0, 0], [4 + 8 + 16, 0, 0], [32 + 64, 0, 0], [128, 0, 1],
                                        [1, 1, 0], [1, 1, 0], [1, 1, 1]])
    assert out[:, 0].sum() == s3[:, 0].sum()
    np.testing.assert_array_equal(S.drop_points(s3, draws, 0.0), s3)  # prob 0: nothing dropped


def test_augment_scales_then_drops_with_one_draw_per_point():
    s3 = np.array([[1, 1, 0]] * 30 + [[1, 1, 1]], dtype=np.float32)
    rng = np.random.default_rng(9)
    sx, sy = rng.uniform(0.8, 1.2, size=2)
    draws = rng.random(len(s3))
    scaled = s3.copy()
    scaled[:, 0] *= sx
    scaled[:, 1] *= sy
    expected = S.drop_points(scaled, draws, 0.4)
    assert len(expected) < len(s3)
    np.testing.assert_array_equal(S.augment(s3, np.random.default_rng(9), scale_range=0.2, drop_prob=0.4), expected)


@given(arrays(np.float64, st.tuples(st.integers(0, 80), st.just(2)),
              elements=st.floats(-500, 500, allow_nan=False)), st.floats(0.0, 20.0))
def test_rdp_never_adds_points_and_keeps_endpoints(pts, eps):
    out = S.rdp(pts, eps)
    assert len(out) <= len(pts)
    if len(pts):
        np.testing.assert_array_equal(out[0], pts[0])
        np.testing.assert_array_equal(out[-1], pts[-1])
    # every output point is an input point, in order
    idx = [int(np.flatnonzero((pts == p).all(axis=1))[0]) for p in out]
    assert idx == sorted(idx) or len(set(map(tuple, pts))) < len(pts)


def test_rdp_reference_cases():
    line = np.column_stack([np.arange(10.0), np.zeros(10)])
    np.testing.assert_array_equal(S.rdp(line, 0.5), [[0, 0], [9, 0]])
    tri = np.array([[0, 0], [5, 5], [10, 0.0]])
    assert len(S.rdp(tri, 1.0)) == 3   # the apex is 5 away from the base
    assert len(S.rdp(tri, 6.0)) == 2
    # every dropped point lies within epsilon of the simplified polyline
    rng = np.random.default_rng(0)
    walk = np.cumsum(rng.normal(size=(200, 2)), axis=0)
    simp = S.rdp(walk, 2.0)
    assert 2 < len(simp) < 200
    assert _max_dist_to_polyline(walk, simp) <= 2.0 + 1e-9


def _max_dist_to_polyline(points, poly):
    worst = 0.0
    for p in points:
        best = np.inf
        for a, b in zip(poly[:-1], poly[1:]):
            ab, ap = b - a, p - a
            t = np.clip(ap @ ab / max(ab @ ab, 1e-12), 0, 1)
            best = min(best, np.linalg.norm(ap - t * ab))
        worst = max(worst, best)
    return worst
