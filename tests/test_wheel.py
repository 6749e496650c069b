"""The wheel works on its own: built from a copy of the sources and installed in a fresh virtual
environment in another folder, `sketchvae sample`, `sketchvae serve` and `load("sheep")` find the
shipped checkpoints and the page's static files inside the installed package.

Nothing is downloaded: the wheel is built with this environment's setuptools (`--no-build-isolation
--no-index`) and installed with `--no-deps`; the new environment reaches torch and the other
dependencies through a `.pth` file naming this environment's import folders (less any that holds a
`sketchvae` package), written after the install (so pip never sees them), and runs with PYTHONPATH
unset, so that only the wheel's sketchvae is found.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGED = "sketchvae/shipped_checkpoints"  # = sketchvae.checkpoint.PACKAGED_DIR inside the package
SERVE_START_S = 180  # serve loads every shipped model and draws 32 sketches per model and class first


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python >= 3.11")
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_pyproject_lists_every_package_and_maps_the_checkpoints():
    """The package list is written by hand (for the checkpoints/ mapping): a new subpackage must be in it."""
    tool = _pyproject()["tool"]["setuptools"]
    listed = set(tool["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "sketchvae").rglob("__init__.py")}
    assert found - listed == set(), f"pyproject.toml [tool.setuptools] packages lacks {sorted(found - listed)}"
    mapped = tool["package-dir"]["sketchvae.shipped_checkpoints"]
    assert mapped == "checkpoints" and tool["package-data"]["sketchvae.shipped_checkpoints"] == ["*.pt"]
    assert not (ROOT / PACKAGED).exists(), "sketchvae/shipped_checkpoints/ in the source tree would hide checkpoints/"


def _run(cmd, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=600, **kw)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


def _copy_sources(dst: Path) -> None:
    """What the build reads: pyproject.toml, README.md, the package and the top-level checkpoints."""
    dst.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dst / name)
    shutil.copytree(ROOT / "sketchvae", dst / "sketchvae", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (dst / "checkpoints").mkdir()
    for pt in (ROOT / "checkpoints").glob("*.pt"):
        shutil.copy2(pt, dst / "checkpoints" / pt.name)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv python, venv bin folder, environment for its commands, a working folder, the wheel)."""
    setuptools = pytest.importorskip("setuptools", reason="the wheel is built with this environment's setuptools")
    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip(f"setuptools {setuptools.__version__} < 77 cannot build this pyproject.toml "
                    f"(pip install -e '.[test]' brings a newer one)")
    if not (ROOT / "checkpoints" / "sheep.pt").exists():
        pytest.skip("checkpoints/sheep.pt is missing from this checkout")
    tmp = tmp_path_factory.mktemp("wheel")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(OMP_NUM_THREADS="1", XDG_DATA_HOME=str(tmp / "xdg"), PYTHONNOUSERSITE="1")
    _copy_sources(tmp / "src")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
          "-w", tmp / "dist", tmp / "src"], cwd=tmp, env=env)
    (wheel,) = (tmp / "dist").glob("sketchvae-*.whl")
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv])
    bindir = venv / ("Scripts" if os.name == "nt" else "bin")
    python = bindir / ("python.exe" if os.name == "nt" else "python")
    # PYTHONPATH unset: pip must not see a sketchvae (or its .egg-info) of the checkout as installed already
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q", wheel],
         cwd=tmp, env=env)
    purelib = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                   cwd=tmp, env=env).stdout.strip()
    assert (Path(purelib) / "sketchvae" / "__init__.py").is_file(), "pip did not install the wheel"
    # where this environment finds torch & co. (site-packages, and whatever a .pth or PYTHONPATH adds), but
    # no folder holding a sketchvae package: the checkout, PYTHONPATH=. (an editable install's finder only
    # runs from a .pth file in a site folder, and a folder named in a .pth file is not one)
    ours = [p for p in sys.path if p and Path(p).is_dir() and not (Path(p) / "sketchvae").exists()]
    (Path(purelib) / "_test_wheel_dependencies.pth").write_text("\n".join(dict.fromkeys(ours)) + "\n",
                                                                encoding="utf-8")
    work = tmp / "elsewhere"
    work.mkdir()
    return python, bindir, env, work, wheel


def test_the_wheel_holds_the_checkpoints_and_the_page(installed):
    *_, wheel = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {p.name for p in (ROOT / "checkpoints").glob("*.pt")}
    assert {n.rsplit("/", 1)[1] for n in names if n.startswith(PACKAGED + "/")} == shipped
    assert {"sketchvae/serve/static/index.html", "sketchvae/serve/static/app.js"} <= names
    assert not any(n.startswith(("tests/", "checkpoints/", "scripts/")) for n in names)


@pytest.mark.slow
def test_load_sheep_from_the_installed_package(installed):
    python, _, env, work, _ = installed
    code = ("import json, sketchvae\n"
            "from sketchvae import sample as sk\n"
            "from sketchvae.checkpoint import magenta_checkpoints_dir, shipped_checkpoints\n"
            "s = sk.load('sheep')\n"
            "d = sketchvae.load('multiclass').sample(2, classes='omniglot', seed=0, max_len=40)\n"
            "print(json.dumps({'module': sketchvae.__file__, 'path': str(s.path), 'mode': s.config.mode,\n"
            "                  'names': sorted(shipped_checkpoints()), 'svg': d._repr_svg_()[:4],\n"
            "                  'magenta': str(magenta_checkpoints_dir())}))\n")
    out = json.loads(_run([python, "-c", code], cwd=work, env=env).stdout)
    venv = python.parent.parent.resolve()
    assert Path(out["module"]).resolve().is_relative_to(venv), f"imported {out['module']}, not the wheel's"
    assert Path(out["path"]).resolve().is_relative_to(venv) and PACKAGED in out["path"]
    assert out["mode"] == "vae" and out["svg"] == "<svg"
    assert set(out["names"]) == {p.stem for p in (ROOT / "checkpoints").glob("*.pt")}
    assert Path(out["magenta"]) == Path(env["XDG_DATA_HOME"]) / "sketchvae" / "magenta"  # not into the package


def test_magenta_models_go_to_a_user_folder_when_installed(monkeypatch, tmp_path):
    from sketchvae import checkpoint as C

    monkeypatch.delenv(C.MAGENTA_DIR_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setattr(C, "shipped_checkpoints_dir", lambda: ROOT / "checkpoints")  # a source checkout
    assert C.magenta_checkpoints_dir() == ROOT / "checkpoints" / "magenta"
    monkeypatch.setattr(C, "shipped_checkpoints_dir", lambda: tmp_path / "site" / "sketchvae" / C.PACKAGED_DIR)
    assert C.magenta_checkpoints_dir() == tmp_path / "home" / ".local" / "share" / "sketchvae" / "magenta"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert C.magenta_checkpoints_dir() == tmp_path / "xdg" / "sketchvae" / "magenta"
    monkeypatch.setenv(C.MAGENTA_DIR_ENV, str(tmp_path / "mine"))
    assert C.magenta_checkpoints_dir() == tmp_path / "mine"


@pytest.mark.slow
def test_sketchvae_sample_from_the_installed_package(installed):
    _, bindir, env, work, _ = installed
    _run([bindir / "sketchvae", "sample", "-n", "2", "--seed", "0", "--max-len", "60", "-o", "sheep.svg"],
         cwd=work, env=env)
    svg = (work / "sheep.svg").read_text(encoding="utf-8")
    assert len(re.findall(r'<g class="cell"', svg)) == 2 and "<polyline" in svg


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=10) as r:  # noqa: S310 (127.0.0.1 only)
        return r.status, r.read()


@pytest.mark.slow
def test_sketchvae_serve_from_the_installed_package(installed):
    _, bindir, env, work, _ = installed
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([str(bindir / "sketchvae"), "serve", "--port", str(port)], cwd=work, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + SERVE_START_S
        while True:
            assert proc.poll() is None, f"sketchvae serve exited ({proc.returncode}):\n{proc.stdout.read()}"
            assert time.monotonic() < deadline, f"sketchvae serve did not answer within {SERVE_START_S} s"
            try:
                status, page = _get(url + "/")
                break
            except OSError:
                time.sleep(0.5)
        assert status == 200 and b'src="static/app.js"' in page
        status, script = _get(url + "/static/app.js")
        assert status == 200 and len(script) == (ROOT / "sketchvae/serve/static/app.js").stat().st_size
        status, body = _get(url + "/api/models")
        assert status == 200
        assert {m["name"] for m in json.loads(body)} == {"sheep", "multiclass"}
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
