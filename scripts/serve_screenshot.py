"""Screenshot of `sketchvae serve` finishing a drawing (the picture in the README).

    python scripts/serve_screenshot.py                          # -> checkpoints/samples/serve.png
    python scripts/serve_screenshot.py -o /tmp/page.png --seed 3 --chromium /usr/bin/chromium

Starts `python -m sketchvae serve` (the shipped checkpoints) on a free 127.0.0.1 port, opens the page in
Chromium (Playwright), draws the back and head of a sheep with the mouse, waits until the model's six
endings have been drawn, fills the interpolation strip (A: the drawing, B: a sampled sheep) and saves
a screenshot of the page.  `?seed=` makes the page's requests reproducible.
"""

from __future__ import annotations

import argparse
import math
import re
import subprocess
import sys
from pathlib import Path

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run", "--disable-sync"]


def half_sheep() -> list[list[tuple[float, float]]]:
    """Page-pixel strokes: a fleecy back (a bumpy arch) and a head with an ear, as a person draws them."""
    back = []
    for k in range(61):
        t = math.pi * k / 60
        bump = 9 * abs(math.sin(7 * t))
        back.append((250 + (125 + bump) * math.cos(t), 265 - (85 + bump) * math.sin(t)))
    head = [(118 + 34 * math.cos(t), 228 + 26 * math.sin(t)) for t in (2 * math.pi * k / 24 for k in range(25))]
    ear = [(105, 206), (90, 196), (100, 214)]
    return [back, head, ear]


def main() -> None:
    root = Path(__file__).resolve().parents[1]
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--out", default=str(root / "checkpoints" / "samples" / "serve.png"))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--width", type=int, default=1280)
    args = ap.parse_args()

    from playwright.sync_api import sync_playwright

    proc = subprocess.Popen([sys.executable, "-m", "sketchvae", "serve", "--port", "0", "--device", "cpu"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline()
        m = re.search(r"open (http://\S+/)", line)
        if not m:
            raise SystemExit(f"the server did not start: {line!r}")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, args=ARGS)
            page = browser.new_page(viewport={"width": args.width, "height": 900}, device_scale_factor=1)
            errors = []
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            page.on("pageerror", lambda err: errors.append(str(err)))
            page.goto(f"{m.group(1)}?seed={args.seed}")
            page.locator("body[data-ready=true]").wait_for(timeout=20000)
            page.select_option("#model", "sheep")
            box = page.locator("#canvas").bounding_box()
            scale = box["width"] / 480
            for stroke in half_sheep():
                page.mouse.move(box["x"] + stroke[0][0] * scale, box["y"] + stroke[0][1] * scale)
                page.mouse.down()
                for x, y in stroke[1:]:
                    page.mouse.move(box["x"] + x * scale, box["y"] + y * scale, steps=2)
                page.mouse.up()
                page.wait_for_timeout(150)
            page.locator("#suggestions .tile[data-done=true]").nth(5).wait_for(timeout=60000)
            page.click("[data-slot=a][data-from=canvas]")
            page.click("[data-slot=b][data-from=random]")
            page.locator("#slot-b:not([data-points='0'])").wait_for(timeout=30000)
            page.click("#interpolate")
            page.locator("#strip .tile[data-done=true]").last.wait_for(timeout=60000)
            page.locator("#strip .tile:not([data-done])").first.wait_for(state="detached", timeout=60000)
            page.wait_for_timeout(300)
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=args.out, full_page=True)
            browser.close()
        if errors:
            raise SystemExit(f"the page logged errors: {errors}")
        print(f"wrote {args.out}")
    finally:
        proc.terminate()
        proc.wait(20)


if __name__ == "__main__":
    main()
