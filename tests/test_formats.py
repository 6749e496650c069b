"""sketchvae.data.formats: the safe npz loader, ndjson reading and raw -> simplified conversion."""

from __future__ import annotations

import io
import json
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

from sketchvae.data import formats
from sketchvae.data.formats import (DataError, drawing_to_stroke3, iter_ndjson, load_ndjson, load_npz,
                                    npz_members, read_npz_member, read_npz_split, simplify_drawing,
                                    validate_stroke3)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
NPZ_DIR = SHARED / "sketchrnn_datasets"
QD_DIR = SHARED / "quickdraw"
QD_SIMPLIFIED = QD_DIR / "simplified_first25_per_class"
QD_RAW = QD_DIR / "raw_subset_per_class"


# --------------------------------------------------------------------------------------------------
# helpers


def sketch(n=5, seed=0, lift_every=3):
    rng = np.random.default_rng(seed)
    s = np.zeros((n, 3), np.int16)
    s[:, :2] = rng.integers(-20, 21, size=(n, 2))
    s[lift_every - 1::lift_every, 2] = 1
    s[-1, 2] = 1
    return s


def object_array(items):
    arr = np.empty(len(items), dtype=object)
    for i, a in enumerate(items):
        arr[i] = a
    return arr


def write_npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def npy_bytes_with_pickle(payload: bytes, shape=(1,)) -> bytes:
    """A .npy member with an object dtype header followed by an arbitrary pickle."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|O", "fortran_order": False, "shape": shape})
    return buf.getvalue() + payload


class _Evil:
    """Pickles as a call to os.system (what a hostile .npz would hold)."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def evil_npz(tmp_path, marker: Path) -> Path:
    payload = pickle.dumps(_Evil(f"touch '{marker}'"), protocol=2)
    path = tmp_path / "evil.npz"
    good = io.BytesIO()
    np.lib.format.write_array(good, object_array([sketch()]), allow_pickle=True)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("train.npy", npy_bytes_with_pickle(payload))
        zf.writestr("valid.npy", good.getvalue())
        zf.writestr("test.npy", good.getvalue())
    return path


def write_ndjson(path, objs_or_lines):
    with open(path, "w") as f:
        for o in objs_or_lines:
            f.write((o if isinstance(o, str) else json.dumps(o)) + "\n")
    return path


def simplified_obj(key="1", word="cat"):
    return {"word": word, "key_id": key, "recognized": True,
            "drawing": [[[0, 10, 20], [0, 5, 0]], [[30, 40], [30, 30]]]}


# --------------------------------------------------------------------------------------------------
# safe npz loader


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = evil_npz(tmp_path, marker)
    with pytest.raises(DataError) as info:
        read_npz_member(path, "train")
    msg = str(info.value)
    assert "refusing" in msg and "system" in msg
    assert str(path) in msg and "train.npy" in msg
    with pytest.raises(DataError):
        load_npz(path)
    assert not marker.exists(), "the pickle's code ran"
    # the other members of the same file are fine
    assert len(read_npz_member(path, "valid")) == 1


def test_malicious_fixture_really_runs_code_with_an_unsafe_loader(tmp_path):
    """Guard for the test above: the crafted file is dangerous with np.load(allow_pickle=True)."""
    marker = tmp_path / "pwned"
    path = evil_npz(tmp_path, marker)
    with np.load(path, allow_pickle=True, encoding="latin1") as d:
        d["train"]
    assert marker.exists()


@pytest.mark.parametrize("payload", [
    pickle.dumps(eval, protocol=2),                                     # builtins.eval
    b"cbuiltins\nexec\n(S'open(\"x\",\"w\")'\ntR.",                     # protocol 0 call
    pickle.dumps({"a": 1}, protocol=2),                                  # not an array
])
def test_other_unsafe_or_odd_pickles_are_refused(tmp_path, payload):
    path = tmp_path / "odd.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("train.npy", npy_bytes_with_pickle(payload))
    with pytest.raises(DataError, match="odd.npz"):
        read_npz_member(path, "train")


def test_object_array_roundtrip_and_latin1_py2_pickles(tmp_path):
    items = [sketch(4, 1), sketch(7, 2), sketch(1, 3)]
    path = write_npz(tmp_path / "a.npz", train=object_array(items), valid=object_array(items[:1]),
                     test=object_array(items[1:]))
    data = load_npz(path)
    assert [len(data[s]) for s in ("train", "valid", "test")] == [3, 1, 2]
    for got, want in zip(data["train"], items):
        assert got.dtype == np.int16 and np.array_equal(got, want)
    # the same data written the way Python 2 did (protocol 2, bytes read back as latin1)
    path2 = tmp_path / "py2.npz"
    buf = io.BytesIO()
    buf.write(npy_bytes_with_pickle(pickle.dumps(object_array(items), protocol=2), shape=(3,)))
    with zipfile.ZipFile(path2, "w") as zf:
        zf.writestr("train.npy", buf.getvalue())
    assert all(np.array_equal(a, b) for a, b in zip(load_npz(path2, ["train"])["train"], items))


def test_plain_numeric_members_are_read_without_pickle(tmp_path):
    block = np.stack([sketch(6, i) for i in range(4)]).astype(np.int32)  # (S, n, 3)
    one = sketch(9, 7).astype(np.float64)                                  # (n, 3) = one sketch
    fortran = np.asfortranarray(np.stack([sketch(5, i) for i in range(2)]))
    path = write_npz(tmp_path / "plain.npz", train=block, valid=one, test=fortran)
    data = load_npz(path)
    assert len(data["train"]) == 4 and np.array_equal(data["train"][2], block[2])
    assert len(data["valid"]) == 1 and np.array_equal(data["valid"][0], one)
    assert np.array_equal(data["test"][1], fortran[1])
    assert sorted(npz_members(path)) == ["test", "train", "valid"]


def test_missing_split_names_file_and_what_exists(tmp_path):
    path = write_npz(tmp_path / "two.npz", train=object_array([sketch()]), test=object_array([sketch()]))
    with pytest.raises(DataError) as info:
        load_npz(path)
    msg = str(info.value)
    assert "two.npz" in msg and "'valid'" in msg and "train" in msg and info.value.reason == "missing split"


def test_not_a_zip(tmp_path):
    path = tmp_path / "junk.npz"
    path.write_bytes(b"hello, not a zip")
    with pytest.raises(DataError, match="junk.npz.*not an .npz"):
        npz_members(path)
    with pytest.raises(DataError, match="junk.npz"):
        read_npz_member(path, "train")


def test_truncated_numeric_member(tmp_path):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.zeros((10, 3), np.int16))
    path = tmp_path / "trunc.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("train.npy", buf.getvalue()[:-7])
    with pytest.raises(DataError, match="trunc.npz.*truncated"):
        read_npz_member(path, "train")


@pytest.mark.parametrize("bad, reason, needle", [
    (np.zeros((4, 2), np.int16), "bad shape", "shape"),
    (np.zeros((0, 3), np.int16), "empty sketch", "empty"),
    (np.array([[0, 0, 1]], dtype=object).astype(str), "bad dtype", "dtype"),
    (np.array([[1.0, np.nan, 0], [1, 1, 1]]), "non-finite value", "non-finite"),
    (np.array([[1.0, np.inf, 1]]), "non-finite value", "non-finite"),
    (np.array([[0.5, 1, 1]]), "non-integer offset", "non-integer"),
    (np.array([[10 ** 6, 0, 1]], np.int64), "offset out of range", "out of range"),
    (np.array([[1, 1, 2]], np.int16), "bad pen value", "pen value 2"),
    ("a string", "bad type", "str"),
])
def test_bad_sketches_named_by_file_and_index(tmp_path, bad, reason, needle):
    items = [sketch(4, 0), sketch(5, 1), sketch(3, 2), bad, sketch(6, 4)]
    path = write_npz(tmp_path / "bad.npz", train=object_array(items))
    with pytest.raises(DataError) as info:
        read_npz_split(path, "train")
    err = info.value
    assert err.place == "train[3]" and err.reason == reason
    assert str(path) in str(err) and "train[3]" in str(err) and needle in str(err)
    # on_bad: skip and count, keep the others in order
    seen = []
    points, lengths, n_input = read_npz_split(path, "train", on_bad=seen.append)
    assert n_input == 5 and [e.place for e in seen] == ["train[3]"]
    assert lengths.tolist() == [4, 5, 3, 6]
    assert np.array_equal(points[:4], items[0]) and np.array_equal(points[-6:], items[4])


def test_several_bad_sketches_are_all_counted(tmp_path):
    items = [sketch(3, i) for i in range(10)]
    items[2] = items[2].astype(np.float32)
    items[2][1, 0] = np.nan
    items[5] = np.array([[20000, 0, 1]])
    items[7] = np.zeros((3, 4))
    path = write_npz(tmp_path / "many.npz", train=object_array(items))
    seen = []
    _, lengths, n_input = read_npz_split(path, "train", on_bad=seen.append)
    assert sorted(e.place for e in seen) == ["train[2]", "train[5]", "train[7]"]
    assert n_input == 10 and len(lengths) == 7


def test_object_array_of_wrong_rank_and_numeric_of_wrong_shape(tmp_path):
    arr = np.empty((2, 2), dtype=object)
    for i in range(4):
        arr.flat[i] = sketch()
    p1 = write_npz(tmp_path / "obj2d.npz", train=arr)
    with pytest.raises(DataError, match=r"obj2d.npz: train: object array of shape \(2, 2\)"):
        read_npz_split(p1, "train")
    p2 = write_npz(tmp_path / "num.npz", train=np.zeros((4, 5), np.int16))
    with pytest.raises(DataError, match=r"num.npz: train: array of shape \(4, 5\)"):
        read_npz_split(p2, "train")


def test_validate_stroke3_adds_final_lift_and_copies():
    s = np.array([[1, 2, 0], [3, 4, 0]], np.int32)
    out = validate_stroke3(s)
    assert out.dtype == np.int16 and out[-1, 2] == 1 and s[-1, 2] == 0
    assert validate_stroke3([[1.0, 2.0, 1.0]]).tolist() == [[1, 2, 1]]
    with pytest.raises(DataError, match="rectangular"):
        validate_stroke3([[1, 2, 0], [1, 2]])


# --------------------------------------------------------------------------------------------------
# ndjson


def test_ndjson_simplified_reads_key_word_and_strokes(tmp_path):
    path = write_ndjson(tmp_path / "cat.ndjson", [simplified_obj("11"), "", simplified_obj("12")])
    ds = load_ndjson(path)
    assert [d.key_id for d in ds] == ["11", "12"] and [d.line for d in ds] == [1, 3]
    d = ds[0]
    assert d.word == "cat" and not d.raw
    assert d.strokes.tolist() == [[0, 0, 0], [10, 5, 0], [10, -5, 1], [10, 30, 0], [10, 0, 1]]
    assert formats.count_ndjson_lines(path) == 2


@pytest.mark.parametrize("line, reason, needle", [
    ('{"drawing": [[[0, 1], [0, 1]]', "invalid JSON", "invalid JSON"),
    ("not json at all", "invalid JSON", "invalid JSON"),
    ('{"word": "cat", "key_id": "1"}', "missing key 'drawing'", "missing key 'drawing'"),
    ('[1, 2, 3]', "not a JSON object", "JSON object"),
    ('{"drawing": []}', "empty drawing", "empty drawing"),
    ('{"drawing": [[[], []]]}', "empty drawing", "empty drawing"),
    ('{"drawing": "abc"}', "bad drawing structure", "list of strokes"),
    ('{"drawing": [[[0, 1, 2], [0, 1]]]}', "bad drawing structure", "different lengths"),
    ('{"drawing": [[[0, "a"], [0, 1]]]}', "non-numeric coordinate", "not all numbers"),
    ('{"drawing": [[[0, 1.5], [0, 1]]]}', "non-integer coordinate", "non-integer"),
    ('{"drawing": [[[0, 99999], [0, 1]]]}', "offset out of range", "out of range"),
])
def test_bad_ndjson_line_named_by_file_and_line(tmp_path, line, reason, needle):
    good = json.dumps(simplified_obj())
    path = write_ndjson(tmp_path / "bad file.ndjson", [good, good, line, good])
    with pytest.raises(DataError) as info:
        load_ndjson(path)
    err = info.value
    assert err.place == "line 3" and err.reason == reason
    assert "bad file.ndjson" in str(err) and "line 3" in str(err) and needle in str(err)
    seen = []
    ds = load_ndjson(path, on_bad=seen.append)
    assert [d.line for d in ds] == [1, 2, 4] and len(seen) == 1 and seen[0].place == "line 3"


def test_ndjson_skip_bad_counts_every_bad_line(tmp_path):
    good = simplified_obj()
    lines = [good, "{oops", {"nodrawing": 1}, good, {"drawing": []}, good, "[]"]
    path = write_ndjson(tmp_path / "mixed.ndjson", lines)
    seen = []
    ds = load_ndjson(path, on_bad=seen.append)
    assert len(ds) + len(seen) == len(lines) == formats.count_ndjson_lines(path)
    from collections import Counter
    assert Counter(e.reason for e in seen) == {"invalid JSON": 1, "missing key 'drawing'": 1, "empty drawing": 1,
                                               "not a JSON object": 1}


def test_ndjson_format_choice(tmp_path):
    raw = {"key_id": "9", "drawing": [[[0, 50.5, 100], [0, 25.25, 50], [0, 10, 20]]]}
    d, was_raw = drawing_to_stroke3(raw)
    assert was_raw and d.dtype == np.int16
    # forcing raw on a simplified drawing rescales it; forcing simplified on raw floats fails
    s3, was_raw = drawing_to_stroke3(simplified_obj(), "raw")
    assert was_raw
    with pytest.raises(DataError, match="non-integer"):
        drawing_to_stroke3({"drawing": [[[0, 50.5], [0, 25.25]]]}, "simplified")
    with pytest.raises(ValueError, match="unknown ndjson format"):
        list(iter_ndjson(write_ndjson(tmp_path / "x.ndjson", [raw]), fmt="bogus"))


# --------------------------------------------------------------------------------------------------
# raw -> simplified


def _abs_points(polys):
    return np.concatenate(polys)


def test_simplify_scales_to_0_255_keeping_aspect():
    # two edges of a 510 x 200 rectangle drawn at an offset, densely sampled
    t = np.linspace(0, 1, 101)[:, None]
    edges = [np.array([[100, 50]]) + t * np.array([[510, 0]]), np.array([[610, 50]]) + t * np.array([[0, 200]])]
    polys = simplify_drawing(edges)
    pts = _abs_points(polys)
    assert pts.min(axis=0).tolist() == [0, 0]
    assert pts.max(axis=0).tolist() == [255, 100]  # 200 / 510 * 255
    # straight lines collapse to their end points
    assert [len(p) for p in polys] == [2, 2]
    assert all(p.dtype == np.int64 for p in polys)


def test_simplify_keeps_corners_and_drops_noise_under_epsilon():
    # an L with 0.5 px jitter: RDP (eps 2) keeps 3 points, the corner exact
    rng = np.random.default_rng(0)
    a = np.stack([np.linspace(0, 255, 200), np.zeros(200)], axis=1)
    b = np.stack([np.full(200, 255.0), np.linspace(0, 255, 200)], axis=1)
    line = np.concatenate([a, b[1:]])
    line[1:-1] += rng.uniform(-0.5, 0.5, size=line[1:-1].shape)
    (p,) = simplify_drawing([line])
    assert len(p) == 3
    assert np.abs(p[1] - [255, 0]).max() <= 1


def test_simplify_dot_and_degenerate_inputs():
    polys = simplify_drawing([np.array([[5.0, 5.0]]), np.array([[10.0, 10.0], [20.0, 20.0]])])
    assert [len(p) for p in polys] == [2, 2] and polys[0].tolist() == [[0, 0], [0, 0]]
    assert simplify_drawing([]) == []
    # a single point drawing: nothing to scale, no division by zero
    (p,) = simplify_drawing([np.array([[3.0, 4.0]])])
    assert p.tolist() == [[0, 0], [0, 0]]


def test_simplified_input_stays_in_frame_after_raw_conversion():
    s3, _ = drawing_to_stroke3({"drawing": [[[0, 255, 255], [0, 0, 100], [0, 1, 2]]]})
    xy = np.cumsum(s3[:, :2].astype(int), axis=0)
    assert xy.min() >= 0 and xy.max() <= 255 and xy[:, 0].max() == 255


# --------------------------------------------------------------------------------------------------
# real data (skips when /work/shared/data is absent)

needs_npz = pytest.mark.skipif(not NPZ_DIR.is_dir(), reason=f"shared sketch-rnn datasets not found at {NPZ_DIR}")
needs_qd = pytest.mark.skipif(not (QD_SIMPLIFIED.is_dir() and QD_RAW.is_dir()),
                              reason=f"shared Quick, Draw! subset not found at {QD_DIR}")


@needs_npz
@pytest.mark.parametrize("name, counts", [
    ("aaron_sheep.npz", (7400, 300, 300)),
    ("omniglot.npz", (30000, 1000, 1000)),
    ("short_kanji.npz", (10000, 600, 500)),
])
def test_real_npz_files_load_safely_and_match_numpy(name, counts):
    path = NPZ_DIR / name
    ref = np.load(path, allow_pickle=True, encoding="latin1")  # trusted reference only
    for split, want in zip(("train", "valid", "test"), counts):
        points, lengths, n_input = read_npz_split(path, split)
        assert n_input == len(lengths) == want
        r = ref[split]
        assert lengths.tolist() == [len(a) for a in r]
        assert np.array_equal(points[:lengths[0]], np.asarray(r[0], np.int16))
        assert points[lengths.cumsum() - 1, 2].all()
        assert np.abs(points[:, :2]).max() <= 600


@needs_qd
def test_real_quickdraw_simplified_and_raw_files():
    names = ["cat", "The Eiffel Tower", "bracelet"]
    for n in names:
        ds = load_ndjson(QD_SIMPLIFIED / f"{n}.ndjson")
        assert len(ds) == 25 and all(d.word == n and not d.raw for d in ds)
        for d in ds:
            xy = np.cumsum(d.strokes[:, :2].astype(int), axis=0)
            assert xy.min() >= 0 and xy.max() <= 255
        raws = load_ndjson(QD_RAW / f"{n}.ndjson")
        assert len(raws) == formats.count_ndjson_lines(QD_RAW / f"{n}.ndjson")
        assert all(d.raw for d in raws)
        for d in raws:
            xy = np.cumsum(d.strokes[:, :2].astype(int), axis=0)
            # an extreme point inside a stroke can be dropped by RDP (it is within 2 px of the chord, whose
            # end points may lie well inside the frame), so the extent is 255 only before RDP
            assert xy.min() >= 0 and 200 <= xy.max() <= 255
    assert max(len(d.strokes) for d in load_ndjson(QD_SIMPLIFIED / "bracelet.ndjson")) == 503


@needs_qd
def test_real_raw_conversion_reproduces_google_simplified_for_cat():
    simp = {d.key_id: d.strokes for d in load_ndjson(QD_SIMPLIFIED / "cat.ndjson")}
    raw = {d.key_id: d.strokes for d in load_ndjson(QD_RAW / "cat.ndjson")}
    common = sorted(simp.keys() & raw.keys())
    assert len(common) >= 20
    exact = sum(np.array_equal(simp[k], raw[k]) for k in common)
    assert exact / len(common) >= 0.7
    ratio = np.median([len(raw[k]) / len(simp[k]) for k in common])
    assert 0.9 <= ratio <= 1.1


@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.int64, np.uint16, np.uint32, np.float32, np.float64])
def test_vectorised_row_check_matches_the_scalar_check_at_the_limits(dtype):
    """`_row_problems` (integers compared in their own dtype) flags exactly the rows validate_stroke3 refuses."""
    from sketchvae.data.formats import MAX_ABS_OFFSET, _row_problems

    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    values = [0, 1, -1, MAX_ABS_OFFSET, MAX_ABS_OFFSET + 1, -MAX_ABS_OFFSET, -MAX_ABS_OFFSET - 1, 255, -600]
    if info is not None:
        values += [int(info.min), int(info.max), int(info.min) + 1]
    rows = []
    for v in values:
        for pen in (0, 1, 2):
            for col in (0, 1):
                r = [3, 3, pen]
                r[col] = v
                rows.append(r)
    rows = np.array([r for r in rows if info is None or all(info.min <= x <= info.max for x in r)], dtype=dtype)
    expected = []
    for r in rows:
        try:
            validate_stroke3(r[None])
            expected.append(False)
        except DataError:
            expected.append(True)
    assert any(expected) and not all(expected)
    np.testing.assert_array_equal(_row_problems(rows), np.array(expected))
