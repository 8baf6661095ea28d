"""The README's commands are the ones CI runs."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SETUP = "python3 -m venv .venv && .venv/bin/pip install -e '.[dev]' && .venv/bin/tenantry serve --demo"
TESTS = ".venv/bin/python -m pytest"


def test_readme_names_exactly_two_setup_commands_and_ci_runs_the_test_one() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert SETUP in readme
    assert f"\n{TESTS}\n" in readme
    assert "python3 -m venv .venv" in ci and "-e '.[dev]'" in ci
    assert f"\n{TESTS}\n" in ci
