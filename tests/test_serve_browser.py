"""End to end in a real browser: Playwright drives Debian's Chromium against `sketchvae serve`'s app on
uvicorn; draw with the mouse, wait for the model's endings, keep one, undo, see a server error."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("starlette", reason="starlette is not installed (pip install -e '.[test]')")
sync_api = pytest.importorskip("playwright.sync_api",
                               reason="playwright is not installed (pip install -e '.[test]')")

from sketchvae.checkpoint import shipped_checkpoints_dir  # noqa: E402
from sketchvae.serve import create_app, discover  # noqa: E402
from serve_util import ServerThread, tiny_checkpoint  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run", "--disable-sync"]
MODEL_INK = (0xE4, 0x57, 0x2E)  # app.js MODEL_INK
INK = (0x1F, 0x23, 0x28)        # app.js INK

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason="no Chromium at /usr/bin/chromium (apt-get install -y chromium)")


def _pixels_like(png: bytes, rgb, tol: int = 40) -> int:
    from PIL import Image

    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    return int((np.abs(img - np.array(rgb)).sum(axis=-1) < tol).sum())


def _stroke(page, box, points):
    s = box["width"] / 480
    page.mouse.move(box["x"] + points[0][0] * s, box["y"] + points[0][1] * s)
    page.mouse.down()
    for x, y in points[1:]:
        page.mouse.move(box["x"] + x * s, box["y"] + y * s, steps=2)
    page.mouse.up()


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    torch.set_num_threads(1)
    sheep = shipped_checkpoints_dir() / "sheep.pt"
    if sheep.exists():
        models, _ = discover([sheep])
    else:  # a checkout without the shipped models: an untrained tiny model still exercises the page
        models, _ = discover([tiny_checkpoint(tmp_path_factory.mktemp("b") / "sheep.pt", "vae", max_seq_len=60)])
    return create_app(models, workers=2)


@pytest.mark.slow
def test_the_page_finishes_a_drawing(app, tmp_path):
    problems = []
    with ServerThread(app) as url, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.goto(url + "/?seed=1")
            page.locator("body[data-ready=true]").wait_for(timeout=15000)
            assert page.locator("#model").input_value() == "sheep"
            box = page.locator("#canvas").bounding_box()
            # a bumpy half ellipse (a fleecy back) and a round head
            back = [(160 + 120 * math.cos(t) + 7 * math.sin(7 * t), 250 - 90 * math.sin(t))
                    for t in np.linspace(0, math.pi, 24)]
            head = [(70 + 30 * math.cos(t), 230 + 26 * math.sin(t)) for t in np.linspace(0, 2 * math.pi, 14)]
            _stroke(page, box, back)
            _stroke(page, box, head)
            assert page.locator("#hint").is_hidden()
            assert _pixels_like(page.locator("#canvas").screenshot(), INK) > 200

            tiles = page.locator("#suggestions .tile")
            page.locator("#suggestions .tile[data-done=true]").nth(5).wait_for(timeout=30000)
            assert tiles.count() == 6
            drawn = 0
            for k in range(6):
                tile = tiles.nth(k)
                assert tile.get_attribute("data-drawn") == tile.get_attribute("data-points")
                drawn += _pixels_like(tile.screenshot(), MODEL_INK) > 20
            assert drawn >= 5, "the model's endings are not drawn in the suggestion tiles"
            assert "endings in" in page.locator("#status").inner_text()
            page.screenshot(path=str(tmp_path / "serve.png"))
            assert problems == []

            # keep an ending: the model's strokes join the drawing; undo takes them away again
            pick = next(k for k in range(6) if int(tiles.nth(k).get_attribute("data-points")) > 0)
            tiles.nth(pick).click()
            assert "Kept" in page.locator("#suggestions").inner_text()
            assert _pixels_like(page.locator("#canvas").screenshot(), MODEL_INK) > 30
            page.locator("#undo").click()
            assert _pixels_like(page.locator("#canvas").screenshot(), MODEL_INK) < 5

            # a server error is shown in the page, in words
            page.route("**/api/complete", lambda route: route.fulfill(
                status=400, content_type="application/json",
                body='{"error": "strokes: has 2001 points; the limit is 2000", "field": "strokes"}'))
            _stroke(page, box, [(300, 300), (350, 330), (380, 300)])
            page.locator("#error").wait_for(state="visible", timeout=10000)
            assert "limit is 2000" in page.locator("#error-text").inner_text()

            # a finger draws too (pointer events of type touch; the canvas does not scroll the page)
            touch = browser.new_context(has_touch=True, viewport={"width": 800, "height": 900}).new_page()
            touch.on("pageerror", lambda e: problems.append(f"page error (touch): {e}"))
            touch.goto(url + "/?seed=2")
            touch.locator("body[data-ready=true]").wait_for(timeout=15000)
            tb = touch.locator("#canvas").bounding_box()
            cdp = touch.context.new_cdp_session(touch)
            path = [(tb["x"] + tb["width"] * (0.3 + 0.02 * k), tb["y"] + tb["height"] * (0.5 - 0.01 * k * (k % 3)))
                    for k in range(16)]
            cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": path[0][0],
                                                                                         "y": path[0][1]}]})
            for x, y in path[1:]:
                cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [{"x": x, "y": y}]})
            cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
            touch.locator("#suggestions .tile").first.wait_for(timeout=30000)
            assert _pixels_like(touch.locator("#canvas").screenshot(), INK) > 50
            assert touch.evaluate("window.scrollY") == 0
        finally:
            browser.close()
    assert not [p for p in problems if "400" not in p], problems
