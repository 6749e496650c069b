"""Dynamic batching in `sketchvae serve`: concurrent requests share a decoder pass and get the answers
they get alone; a request given up on is dropped from its pass; a full queue answers 503 at once."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

pytest.importorskip("starlette", reason="starlette is not installed (pip install -e '.[test]')")
httpx = pytest.importorskip("httpx", reason="httpx is not installed (pip install -e '.[test]')")

from click.testing import CliRunner  # noqa: E402

from sketchvae.cli import main  # noqa: E402
from sketchvae.serve import create_app, discover  # noqa: E402
from sketchvae.serve.engine import ModelError  # noqa: E402
from serve_util import DRAWING, ServerThread, tiny_checkpoint  # noqa: E402

LONGER = DRAWING + [[-20, 50, 0], [10, 40, 0], [35, -5, 1], [-60, -60, 0], [5, 70, 1]]


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("batching")
    for mode in ("vae", "class_vae", "decoder"):
        tiny_checkpoint(root / f"{mode}.pt", mode, max_seq_len=60)
    models, _ = discover([root / "vae.pt", root / "class_vae.pt", root / "decoder.pt"])
    return models


def requests_mix() -> list[tuple[str, dict]]:
    """Completions of different drawings with different n, temperatures, classes and seeds, and samples."""
    out = []
    for k in range(3):
        out.append(("complete", {"model": "class_vae", "strokes": DRAWING if k % 2 else LONGER, "n": 1 + 2 * k,
                                 "temperature": 0.3 + 0.4 * k, "class": ["cat", "pig", "hot air balloon"][k],
                                 "seed": 10 + k}))
        out.append(("complete", {"model": "decoder", "strokes": LONGER if k % 2 else DRAWING, "n": 6 - k,
                                 "temperature": 1.0 - 0.3 * k, "seed": 20 + k}))
        out.append(("sample", {"model": "vae", "n": 2 + k, "temperature": 0.5 + 0.5 * k, "seed": 30 + k}))
    return out


def spy_submits(monkeypatch, served) -> list[list[dict]]:
    """Records the jobs of every hand-over to a decoding thread (one list per submit)."""
    submits = []
    for model in served.values():
        real = model.submit

        def spy(jobs, *a, real=real):
            submits.append([args for _, args, _ in jobs])
            return real(jobs, *a)

        monkeypatch.setattr(model, "submit", spy)
    return submits


def spy_rows(monkeypatch) -> list[int]:
    from sketchvae import continuous as C

    rows = []
    real = C.ContinuousBatch.step

    def spy(self):
        rows.append(self.rows)
        return real(self)

    monkeypatch.setattr(C.ContinuousBatch, "step", spy)
    return rows


def alone(served, endpoint: str, body: dict):
    args = dict(body)
    model = served[args.pop("model")]
    if "class" in args:
        args["cls"] = args.pop("class")
    (answer,) = model.run_batch([(endpoint, args)])
    return answer


def test_concurrent_requests_are_decoded_together_and_get_their_answers_alone(served, monkeypatch):
    mix = requests_mix()
    expected = [alone(served, e, b) for e, b in mix]
    submits, rows = spy_submits(monkeypatch, served), spy_rows(monkeypatch)
    barrier = threading.Barrier(len(mix))

    def send(item):
        with httpx.Client(base_url=url, timeout=60) as http:
            barrier.wait()  # all at once, within the window
            return http.post(f"/api/{item[0]}", json=item[1])

    with ServerThread(create_app(served, workers=1, batch_window_ms=300)) as url:
        with ThreadPoolExecutor(len(mix)) as pool:
            answers = list(pool.map(send, mix))
    assert all(r.status_code == 200 for r in answers), [r.text for r in answers if r.status_code != 200]
    assert [r.json()["sketches"] for r in answers] == expected
    assert sum(len(p) for p in submits) == len(mix) and max(len(p) for p in submits) > 1, submits
    assert max(rows) > max(b["n"] for _, b in mix), "no decoder step held more than one request"


def test_models_that_cannot_be_packed_skip_the_decoding_thread(tmp_path, monkeypatch):
    """A layer-norm model's requests go to the worker threads (several at once), not one after another
    through a decoding thread that could not batch them anyway."""
    models, _ = discover([tiny_checkpoint(tmp_path / "ln.pt", "vae", cell="layer_norm")])
    assert not models["ln"].packable
    body = {"model": "ln", "strokes": DRAWING, "n": 2, "temperature": 0.5, "seed": 3}
    expected = alone(models, "complete", dict(body))
    submits = spy_submits(monkeypatch, models)
    with ServerThread(create_app(models, workers=2, batch_window_ms=50)) as url:
        with httpx.Client(base_url=url, timeout=60) as http:
            answer = http.post("/api/complete", json=body)
    assert answer.status_code == 200 and answer.json()["sketches"] == expected
    assert submits == []


def test_a_bad_request_in_a_pass_fails_alone(served):
    model = served["class_vae"]
    good = ("complete", {"strokes": np.array(DRAWING, float), "n": 2, "temperature": 0.4,
                         "cls": "pig", "seed": 1})
    bad = ("complete", {**good[1], "cls": "dog"})
    sample = ("sample", {"n": 3, "temperature": 0.4, "cls": None, "seed": 2})
    out = model.run_batch([good, bad, sample])
    assert isinstance(out[1], ModelError) and "unknown class 'dog'" in str(out[1])
    assert out[0] == model.run_batch([good])[0] and out[2] == model.run_batch([sample])[0]
    with pytest.raises(ValueError, match="interpolate"):
        model.run_batch([("interpolate", {})])


def test_requests_given_up_are_dropped_before_and_during_decoding(served, monkeypatch):
    from sketchvae import continuous as C

    model = served["decoder"]
    planned, dropped, answered = [], [], []
    started, release = threading.Event(), threading.Event()
    real_plan, real_step, real_drop = model._plan_sample, C.ContinuousBatch.step, C.ContinuousBatch.drop

    def plan(n, *a, **k):
        planned.append(n)
        return real_plan(n, *a, **k)

    def step(self):  # the decoding thread stops at its first step until released
        if not started.is_set():
            started.set()
            release.wait(30)
        out = real_step(self)
        answered.extend(sum(len(sk) for sk in [r]) for _, r in out)
        return out

    def drop(self, tag):
        dropped.append(tag[0].args["n"])
        return real_drop(self, tag)

    # a seed whose sketch is long, so that the request is still being decoded when its client leaves
    lengths = {s: len(model.run_batch([("sample", {"n": 1, "temperature": 0.4, "seed": s})])[0][0]) for s in range(40)}
    seed = max(lengths, key=lengths.get)
    assert lengths[seed] > 3
    monkeypatch.setattr(model, "_plan_sample", plan)
    monkeypatch.setattr(C.ContinuousBatch, "step", step)
    monkeypatch.setattr(C.ContinuousBatch, "drop", drop)
    with ServerThread(create_app(served, batch_window_ms=5)) as url:
        with ThreadPoolExecutor(2) as pool:
            with pytest.raises(httpx.TimeoutException):  # joins the batch, which is held, and gives up
                httpx.post(f"{url}/api/sample", json={"model": "decoder", "n": 1, "seed": seed}, timeout=0.5)
            assert started.is_set()
            with pytest.raises(httpx.TimeoutException):  # waits for the next step, gives up before it
                httpx.post(f"{url}/api/sample", json={"model": "decoder", "n": 2}, timeout=0.5)
            stays = pool.submit(httpx.post, f"{url}/api/sample", json={"model": "decoder", "n": 3}, timeout=60)
            threading.Event().wait(0.3)  # it has reached the decoding thread's intake
            release.set()
            r = stays.result()
            assert r.status_code == 200 and len(r.json()["sketches"]) == 3
    assert planned == [1, 3]  # the n=2 request left before it was taken from the intake
    assert dropped == [1]  # the n=1 request left the batch before its rows' second step


@pytest.mark.parametrize("window", [0, 5], ids=["unbatched", "batched"])
def test_a_full_queue_answers_503_at_once(served, monkeypatch, window):
    method = "sample" if window == 0 else "_plan_sample"  # unbatched: in a worker; batched: decoding thread
    started, release = threading.Event(), threading.Event()
    real = getattr(served["vae"], method)

    def gated(*a, **k):
        started.set()
        release.wait(30)
        return real(*a, **k)

    monkeypatch.setattr(served["vae"], method, gated)
    app = create_app(served, workers=1, batch_window_ms=window, max_queue=2)
    with ServerThread(app) as url:
        with ThreadPoolExecutor(2) as pool:
            running = pool.submit(httpx.post, f"{url}/api/sample", json={"model": "vae", "n": 1}, timeout=60)
            assert started.wait(20)
            waiting = pool.submit(httpx.post, f"{url}/api/sample", json={"model": "vae", "n": 2}, timeout=60)
            try:
                for _ in range(500):  # until the second request is admitted (it waits for the worker)
                    if app.state.admitted[0] == 2:
                        break
                    threading.Event().wait(0.02)
                r = httpx.post(f"{url}/api/sample", json={"model": "vae", "n": 1}, timeout=5)
                assert r.status_code == 503  # answered at once (timeout 5 s) while the worker is blocked
                assert r.headers["retry-after"] == "1"
                assert r.json()["error"].startswith("busy: 2 requests")
                assert httpx.get(f"{url}/api/models", timeout=5).status_code == 200  # the page still loads
            finally:
                release.set()
            assert running.result().status_code == 200 and waiting.result().status_code == 200
        # the queue drains: new requests are admitted again
        assert httpx.post(f"{url}/api/sample", json={"model": "vae", "n": 1}, timeout=20).status_code == 200


def test_options_are_checked(served):
    with pytest.raises(ValueError, match="batch_window_ms=-1"):
        create_app(served, batch_window_ms=-1)
    with pytest.raises(ValueError, match="max_queue=0"):
        create_app(served, max_queue=0)
    runner = CliRunner()
    r = runner.invoke(main, ["serve", "--help"])
    assert r.exit_code == 0 and "--batch-window-ms" in r.output and "--max-queue" in r.output
    r = runner.invoke(main, ["serve", "--batch-window-ms", "-1"])
    assert r.exit_code != 0 and "--batch-window-ms" in r.output and "Traceback" not in r.output


def test_the_decoding_thread_holds_at_most_max_batch_rows(served, monkeypatch):
    from sketchvae.serve import engine as E

    monkeypatch.setattr(E, "MAX_BATCH_ROWS", 6)
    rows = spy_rows(monkeypatch)
    model = served["decoder"]
    jobs = [("complete", {"strokes": np.array(DRAWING, float), "n": n, "temperature": 0.8, "seed": n})
            for n in (4, 2, 3, 5)]
    assert model.run_batch(jobs) == [model.run_batch([job])[0] for job in jobs]
    assert max(rows) == 6  # 4 + 2 joined; 3 and 5 waited for rows to free up
