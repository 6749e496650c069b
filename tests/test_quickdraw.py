"""sketchvae.data.quickdraw: downloads against a local HTTP server (Range resume, verification,
offline message) and `prepare` on mixed npz + ndjson fixtures."""

from __future__ import annotations

import http.server
import json
import socket
import threading
import urllib.parse

import numpy as np
import pytest

from sketchvae.data import quickdraw
from sketchvae.data.cache import open_cache
from sketchvae.data.formats import DataError
from sketchvae.data.quickdraw import DownloadError, download, download_file, prepare, resolve_class


# --------------------------------------------------------------------------------------------------
# fixtures: a small HTTP server with Range support


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves `server.files` (url path -> bytes); honours `Range: bytes=N-`; records requests.

    `server.drop_first` (url path -> byte count): the first GET of that path sends only that
    many bytes of the body (with the full Content-Length) and closes the connection.
    """

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):
        srv = self.server
        path = urllib.parse.urlsplit(self.path).path
        srv.requests.append({"path": path, "range": self.headers.get("Range")})
        body = srv.files.get(path)
        if body is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        start, status = 0, 200
        rng = self.headers.get("Range")
        if rng and srv.ranges:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        part = body[start:]
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(part)))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.end_headers()
        cut = srv.drop_first.pop(path, None)
        if cut is not None:
            self.wfile.write(part[:cut])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(part)


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    srv.files, srv.requests, srv.drop_first, srv.ranges = {}, [], {}, True
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


def object_array(items):
    arr = np.empty(len(items), dtype=object)
    for i, a in enumerate(items):
        arr[i] = a
    return arr


def sketches(k, n=6, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(k):
        s = np.zeros((n, 3), np.int16)
        s[:, :2] = rng.integers(-30, 31, size=(n, 2))
        s[n // 2, 2] = s[-1, 2] = 1
        out.append(s)
    return out


def npz_bytes(tmp_path, name="fixture", counts=(20, 4, 4), seed=0) -> bytes:
    path = tmp_path / f"{name}-src.npz"
    np.savez(path, **{s: object_array(sketches(c, seed=seed + i)) for i, (s, c) in
                      enumerate(zip(("train", "valid", "test"), counts))})
    return path.read_bytes()


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# --------------------------------------------------------------------------------------------------
# download


def test_full_download_then_kept(tmp_path, server):
    body = npz_bytes(tmp_path)
    server.files["/sketchrnn/cat.npz"] = body
    out = download(["Cat"], tmp_path / "data", base=server.url, backoff=0)
    assert [(f.cls, f.kind, f.downloaded) for f in out] == [("cat", "npz", True)]
    dest = tmp_path / "data" / "cat.npz"
    assert dest.read_bytes() == body and not (tmp_path / "data" / "cat.npz.part").exists()
    assert server.requests == [{"path": "/sketchrnn/cat.npz", "range": None}]
    again = download(["cat"], tmp_path / "data", base=server.url)
    assert not again[0].downloaded and len(server.requests) == 1
    download(["cat"], tmp_path / "data", base=server.url, force=True)
    assert len(server.requests) == 2


def test_resume_of_partial_part_file_uses_range(tmp_path, server):
    body = npz_bytes(tmp_path, counts=(200, 10, 10))
    server.files["/sketchrnn/cat.npz"] = body
    data = tmp_path / "data"
    data.mkdir()
    half = len(body) // 2
    (data / "cat.npz.part").write_bytes(body[:half])
    download(["cat"], data, base=server.url, backoff=0)
    assert (data / "cat.npz").read_bytes() == body
    assert server.requests == [{"path": "/sketchrnn/cat.npz", "range": f"bytes={half}-"}]


def test_dropped_connection_is_resumed(tmp_path, server):
    body = npz_bytes(tmp_path, counts=(200, 10, 10))
    server.files["/sketchrnn/pig.npz"] = body
    server.drop_first["/sketchrnn/pig.npz"] = 1000
    download(["pig"], tmp_path, base=server.url, backoff=0, retries=3, timeout=10)
    assert (tmp_path / "pig.npz").read_bytes() == body
    assert [r["range"] for r in server.requests] == [None, "bytes=1000-"]


def test_whole_part_file_gets_416_and_is_accepted(tmp_path, server):
    body = npz_bytes(tmp_path)
    server.files["/sketchrnn/cat.npz"] = body
    (tmp_path / "cat.npz.part").write_bytes(body)
    download(["cat"], tmp_path, base=server.url, backoff=0)
    assert (tmp_path / "cat.npz").read_bytes() == body


def test_server_without_range_support_restarts(tmp_path, server):
    body = npz_bytes(tmp_path)
    server.files["/sketchrnn/cat.npz"] = body
    server.ranges = False
    (tmp_path / "cat.npz.part").write_bytes(b"garbage-prefix")
    download(["cat"], tmp_path, base=server.url, backoff=0)
    assert (tmp_path / "cat.npz").read_bytes() == body


def test_corrupt_download_is_refused_and_removed(tmp_path, server):
    server.files["/sketchrnn/cat.npz"] = b"<html>this is not an npz</html>" * 10
    with pytest.raises(DownloadError, match="failed verification"):
        download(["cat"], tmp_path, base=server.url, backoff=0)
    assert not (tmp_path / "cat.npz").exists() and not (tmp_path / "cat.npz.part").exists()


def test_download_missing_split_is_refused(tmp_path, server):
    path = tmp_path / "two.npz"
    np.savez(path, train=object_array(sketches(3)), test=object_array(sketches(3)))
    server.files["/sketchrnn/cat.npz"] = path.read_bytes()
    with pytest.raises(DownloadError, match="valid"):
        download(["cat"], tmp_path / "d", base=server.url, backoff=0)
    assert not (tmp_path / "d" / "cat.npz").exists()


def test_class_name_with_space_is_url_encoded(tmp_path, server):
    body = npz_bytes(tmp_path)
    server.files["/sketchrnn/ice%20cream.npz"] = body
    server.files["/sketchrnn/The%20Eiffel%20Tower.npz"] = body
    out = download(["ice cream", "the eiffel tower"], tmp_path, base=server.url, backoff=0)
    assert [f.path.name for f in out] == ["ice cream.npz", "The Eiffel Tower.npz"]
    assert [r["path"] for r in server.requests] == ["/sketchrnn/ice%20cream.npz", "/sketchrnn/The%20Eiffel%20Tower.npz"]


def test_ndjson_download_and_env_base_url(tmp_path, server, monkeypatch):
    line = json.dumps({"word": "cat", "key_id": "1", "drawing": [[[0, 1], [0, 1]]]}) + "\n"
    server.files["/full/simplified/cat.ndjson"] = line.encode() * 3
    monkeypatch.setenv(quickdraw.BASE_URL_ENV, server.url + "/")
    out = download(["cat"], tmp_path, npz=False, simplified=True, backoff=0)
    assert out[0].kind == "simplified" and (tmp_path / "cat.ndjson").read_text() == line * 3


def test_offline_gives_clear_message(tmp_path):
    base = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(DownloadError) as info:
        download(["cat"], tmp_path, base=base, backoff=0, retries=1)
    msg = str(info.value)
    assert "offline" in msg and quickdraw.BASE_URL_ENV in msg and "127.0.0.1" in msg
    assert not (tmp_path / "cat.npz").exists()


def test_404_and_unknown_class(tmp_path, server):
    with pytest.raises(DownloadError, match="not found"):
        download(["cat"], tmp_path, base=server.url, backoff=0)
    with pytest.raises(ValueError, match="did you mean 'cat'"):
        download(["catt"], tmp_path, base=server.url)
    assert resolve_class("ICE_cream") == "ice cream"


def test_download_file_size_check(tmp_path, server):
    """A body longer than announced: the .part is removed rather than trusted."""
    server.files["/x.bin"] = b"0123456789"
    (tmp_path / "x.bin.part").write_bytes(b"0123456789ABC")  # longer than the file: 416, size mismatch
    with pytest.raises(DownloadError):
        download_file(server.url + "/x.bin", tmp_path / "x.bin", retries=0, backoff=0)
    # and a fresh download of the plain file works
    download_file(server.url + "/x.bin", tmp_path / "y.bin", backoff=0)
    assert (tmp_path / "y.bin").read_bytes() == b"0123456789"


# --------------------------------------------------------------------------------------------------
# prepare


def _draw_obj(key, word, n_points=5, raw=False, seed=0):
    rng = np.random.default_rng(seed)
    xs = rng.integers(0, 256, n_points).tolist()
    ys = rng.integers(0, 256, n_points).tolist()
    if raw:
        xs = [x * 2.5 + 0.25 for x in xs]
        ys = [y * 2.5 + 0.25 for y in ys]
        return {"word": word, "key_id": key, "drawing": [[xs, ys, list(range(n_points))]]}
    return {"word": word, "key_id": key, "drawing": [[xs, ys]]}


@pytest.fixture
def mixed(tmp_path):
    """a.npz (with 1 bad, 2 too long), simp/cat.ndjson, raw/cat.ndjson (overlapping key_ids), dog.ndjson."""
    root = tmp_path / "src"
    (root / "simp").mkdir(parents=True)
    (root / "raw").mkdir()
    train = sketches(30, n=8, seed=1) + [np.zeros((5, 2))] + sketches(2, n=40, seed=2)
    np.savez(root / "a.npz", train=object_array(train), valid=object_array(sketches(5, seed=3)),
             test=object_array(sketches(6, seed=4)))
    with open(root / "simp" / "cat.ndjson", "w") as f:
        for k in range(40):
            f.write(json.dumps(_draw_obj(f"c{k}", "cat", seed=k)) + "\n")
    with open(root / "raw" / "cat.ndjson", "w") as f:
        for k in range(30, 50):  # c30..c39 duplicate the simplified ones
            f.write(json.dumps(_draw_obj(f"c{k}", "cat", raw=True, seed=k)) + "\n")
    with open(root / "dog.ndjson", "w") as f:
        for k in range(12):
            f.write(json.dumps(_draw_obj(f"d{k}", "dog", seed=100 + k)) + "\n")
        f.write("{broken json\n")
        f.write(json.dumps({"word": "dog", "key_id": "dx", "drawing": []}) + "\n")
    return root


def _sources(root):
    return [root / "a.npz", root / "simp", root / "raw", root / "dog.ndjson"]


def test_prepare_mixed_accounts_for_every_sketch(tmp_path, mixed):
    rep = prepare(_sources(mixed), tmp_path / "out.h5", max_len=20, skip_bad=True, valid_frac=0.1, test_frac=0.1)
    assert rep.class_names == ["a", "cat", "dog"]
    n_input = 33 + 5 + 6 + 40 + 20 + 14
    assert rep.input == n_input and rep.kept + sum(rep.skipped.values()) == n_input
    for s in rep.sources:
        assert s.input == sum(s.kept.values()) + sum(s.skipped.values()), s
    assert rep.skipped["longer than max_len=20"] == 2
    assert rep.skipped["duplicate key_id (same drawing read from an earlier source)"] == 10
    assert rep.skipped["invalid JSON"] == 1 and rep.skipped["empty drawing"] == 1
    assert rep.skipped["bad shape"] == 1
    assert any("a.npz" in e and "train[30]" in e for e in rep.examples["bad shape"])
    assert rep.counts[0].tolist() == [30, 5, 6]
    assert rep.counts[1].sum() == 50 and rep.counts[2].sum() == 12
    assert rep.counts[1].tolist() == [40, 5, 5] and rep.counts[2].tolist() == [10, 1, 1]
    with open_cache(rep.path) as cache:
        assert cache.class_names == ["a", "cat", "dog"]
        for j, s in enumerate(("train", "valid", "test")):
            assert cache.split(s).class_counts(3).tolist() == rep.counts[:, j].tolist()
        assert cache.scale_factor == pytest.approx(rep.scale_factor)
        assert set(cache.attrs["source_checksums"]) == {"a.npz", "simp/cat.ndjson", "raw/cat.ndjson", "dog.ndjson"}
        assert cache.attrs["preprocessing"]["max_len"] == 20
        # raw drawings were converted into the 0..255 frame
        xy = np.concatenate([np.cumsum(cache.split(s)[i][:, :2].astype(int), axis=0)
                             for s in cache.splits for i in range(len(cache.split(s)))
                             if cache.split(s).labels[i] == 1])
        assert xy.min() >= 0 and xy.max() <= 255


def test_prepare_without_skip_bad_names_file_and_place(tmp_path, mixed):
    with pytest.raises(DataError, match=r"a\.npz: train\[30\]"):
        prepare(_sources(mixed), tmp_path / "out.h5")
    with pytest.raises(DataError, match=r"dog\.ndjson: line 13: invalid JSON"):
        prepare([mixed / "dog.ndjson"], tmp_path / "out.h5")
    assert not (tmp_path / "out.h5").exists()
    assert not list(tmp_path.glob(".*spool"))


def _split_contents(path):
    with open_cache(path) as c:
        return {s: sorted(tuple(map(tuple, c.split(s)[i].tolist())) + (int(c.split(s).labels[i]),)
                          for i in range(len(c.split(s)))) for s in c.splits}


def test_prepare_splits_are_deterministic_and_order_independent(tmp_path, mixed):
    a = prepare(_sources(mixed), tmp_path / "a.h5", skip_bad=True, valid_frac=0.2, test_frac=0.2, seed=3)
    b = prepare(_sources(mixed), tmp_path / "b.h5", skip_bad=True, valid_frac=0.2, test_frac=0.2, seed=3)
    assert _split_contents(a.path) == _split_contents(b.path)
    # the ndjson assignment depends on (seed, key_id), not on the order of the lines
    lines = (mixed / "simp" / "cat.ndjson").read_text().splitlines()
    shuffled = tmp_path / "shuf" / "cat.ndjson"
    shuffled.parent.mkdir()
    shuffled.write_text("\n".join(lines[::-1]) + "\n")
    c1 = prepare([mixed / "simp" / "cat.ndjson"], tmp_path / "c1.h5", valid_frac=0.2, test_frac=0.2, seed=3)
    c2 = prepare([shuffled], tmp_path / "c2.h5", valid_frac=0.2, test_frac=0.2, seed=3)
    assert _split_contents(c1.path) == _split_contents(c2.path)
    c3 = prepare([shuffled], tmp_path / "c3.h5", valid_frac=0.2, test_frac=0.2, seed=4)
    assert _split_contents(c3.path)["test"] != _split_contents(c1.path)["test"]
    assert c3.counts.tolist() == c1.counts.tolist()


def test_prepare_reuses_up_to_date_output(tmp_path, mixed):
    out = tmp_path / "out.h5"
    first = prepare(_sources(mixed), out, skip_bad=True)
    assert not first.reused
    stamp = out.stat().st_mtime_ns
    again = prepare(_sources(mixed), out, skip_bad=True)
    assert again.reused and out.stat().st_mtime_ns == stamp
    assert again.counts.tolist() == first.counts.tolist() and again.skipped == first.skipped
    assert again.class_names == first.class_names and again.scale_factor == pytest.approx(first.scale_factor)
    # other options, changed bytes, or force: rebuilt
    assert not prepare(_sources(mixed), out, skip_bad=True, max_len=100).reused
    assert not prepare(_sources(mixed), out, skip_bad=True, max_len=100, force=True).reused
    with open(mixed / "dog.ndjson", "a") as f:
        f.write(json.dumps(_draw_obj("d99", "dog", seed=7)) + "\n")
    rebuilt = prepare(_sources(mixed), out, skip_bad=True, max_len=100)
    assert not rebuilt.reused and rebuilt.counts[2].sum() == 13


def test_prepare_class_name_downloads_from_server(tmp_path, server):
    server.files["/sketchrnn/ice%20cream.npz"] = npz_bytes(tmp_path, counts=(10, 2, 2))
    rep = prepare(["ice cream"], tmp_path / "ic.h5", data_dir=tmp_path / "qd", base=server.url)
    assert rep.class_names == ["ice cream"] and rep.counts.tolist() == [[10, 2, 2]]
    assert (tmp_path / "qd" / "ice cream.npz").exists()
    with pytest.raises(FileNotFoundError, match="not downloaded"):
        prepare(["pig"], tmp_path / "p.h5", data_dir=tmp_path / "qd", download_missing=False)


def test_prepare_rejects_bad_arguments(tmp_path, mixed):
    with pytest.raises(ValueError, match="min_len"):
        prepare([mixed / "a.npz"], tmp_path / "x.h5", min_len=10, max_len=5)
    with pytest.raises(ValueError, match="valid_frac"):
        prepare([mixed / "a.npz"], tmp_path / "x.h5", valid_frac=0.6, test_frac=0.5)
    with pytest.raises(FileNotFoundError):
        prepare([tmp_path / "nope.npz"], tmp_path / "x.h5")
    with pytest.raises(ValueError, match="unsupported file type"):
        (tmp_path / "notes.txt").write_text("hi")
        prepare([tmp_path / "notes.txt"], tmp_path / "x.h5")
    with pytest.raises(ValueError, match="no training sketches"):
        prepare([mixed / "a.npz"], tmp_path / "x.h5", skip_bad=True, min_len=100, max_len=200)
