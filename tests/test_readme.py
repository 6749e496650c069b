"""The README is the front door: the commands it shows must exist and its install/test lines
must be what .ci/run runs."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from click.testing import CliRunner

from sketchvae.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _commands_in_readme() -> set[tuple[str, ...]]:
    found = set()
    for m in re.finditer(r"`sketchvae ((?:mnist )?[a-z][a-z-]*)", README):
        found.add(tuple(m.group(1).split()))
    for m in re.finditer(r"`mnist ([a-z]+)", README):
        found.add(("mnist", m.group(1)))
    return found


def test_every_command_the_readme_shows_exists_and_has_help():
    commands = _commands_in_readme()
    assert ("sample",) in commands and ("train",) in commands
    runner = CliRunner()
    for cmd in sorted(commands):
        result = runner.invoke(main, [*cmd, "--help"])
        assert result.exit_code == 0, f"README shows `sketchvae {' '.join(cmd)}` but: {result.output}"
        assert "Usage:" in result.output


def test_ci_runs_the_readme_install_and_test_commands():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").replace(" -q -e ", " -e ")
    assert 'pip install -e ".[test]"' in README and 'pip install -e ".[test]"' in ci
    assert "python -m pytest -q" in README and "python -m pytest -q" in ci


def test_files_the_readme_links_exist():
    for link in re.findall(r"\]\(([^)#]+)\)", README):
        if "://" not in link:
            assert (ROOT / link).exists(), f"README links to {link}, which does not exist"


def test_the_first_picture_is_what_the_command_under_it_makes():
    """The README's sample command and scripts/make_gallery.sh's line for checkpoints/samples/sheep.svg
    (the first picture) use the same options, so the README command makes that picture."""
    readme = re.search(r"^sketchvae sample (.*?)-o sheep\.svg", README, re.M)
    gallery = re.search(r'^sketchvae sample (.*?)-o "\$OUT/sheep\.svg"',
                        (ROOT / "scripts" / "make_gallery.sh").read_text(), re.M)
    assert readme and gallery
    assert readme.group(1).split() == gallery.group(1).split()
    assert "--seed" in readme.group(1).split()
    assert "](checkpoints/samples/sheep.svg)" in README.split("## Install")[0]


@pytest.mark.slow
@pytest.mark.skipif(not (ROOT / "checkpoints" / "multiclass.pt").exists(), reason="no shipped multiclass.pt")
def test_the_python_example_runs_from_another_directory(tmp_path):
    code = re.search(r"```python\n(.*?)```", README, re.S).group(1)
    code = code.replace("sk.sample(model, 8,", "sk.sample(model, 8, max_len=40,")  # quicker, same calls
    assert "max_len=40" in code
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True, timeout=300,
                   env={**os.environ, "OMP_NUM_THREADS": "1"})
    svg = (tmp_path / "sheep8.svg").read_text()
    assert svg.startswith("<?xml") and svg.count("<polyline") >= 8
