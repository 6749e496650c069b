"""The README is the front door: the commands it shows must exist and its install/test lines
must be what .ci/run runs."""

import re
from pathlib import Path

from click.testing import CliRunner

from sketchvae.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _commands_in_readme() -> set[tuple[str, ...]]:
    found = set()
    for m in re.finditer(r"`sketchvae ((?:mnist )?[a-z]+)", README):
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
