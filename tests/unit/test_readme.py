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


def test_the_documented_configuration_loads(tmp_path: Path) -> None:
    """Every TOML example in the README and the docs is a valid configuration."""
    import re

    from tenantry.core.settings import load_settings

    examples = []
    for doc in (ROOT / "README.md", *(ROOT / "docs").glob("*.md")):
        examples += re.findall(r"```toml\n(.*?)```", doc.read_text(), flags=re.S)
    assert len(examples) >= 3
    for number, example in enumerate(examples):
        config = tmp_path / f"example-{number}.toml"
        config.write_text(example.replace("...", "placeholder"))
        load_settings(config)
