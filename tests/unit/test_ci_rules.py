"""The suite's CI rule: with CI=true a test whose runtime is missing fails instead of skipping.

Runtimes: PostgreSQL and Redis (markers ``postgres``, ``redis``) and npm for the MCP conformance
suite and the OpenID provider harness (markers ``conformance``, ``idp``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MARKER_PROBE = """
import pytest

@pytest.mark.postgres
def test_needs_postgres():
    pytest.skip("PostgreSQL is not reachable")

@pytest.mark.redis
def test_needs_redis():
    pytest.skip("Redis is not reachable")

@pytest.mark.conformance
def test_needs_the_conformance_suite():
    pytest.skip("npm not found")

@pytest.mark.idp
def test_needs_the_idp_harness():
    pytest.skip("npm not found")

def test_plain_skip_is_fine():
    pytest.skip("not a service test")
"""
# The real harness entry points, unmarked: they must fail in CI by themselves, too.
HARNESS_PROBE = """
from tests.conformance.test_conformance import ensure_harness
from tests.support.idp import ensure_idp_harness

def test_conformance_harness_without_npm():
    ensure_harness()

def test_idp_harness_without_npm():
    ensure_idp_harness()
"""


def run_probe(name: str, text: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    probe = ROOT / "tests" / f"test_ci_probe_{os.getpid()}_{name}.py"
    probe.write_text(text)
    try:
        return subprocess.run(
            # One process: the suite's ``-n 4`` would start four workers for a five-test probe.
            [sys.executable, "-m", "pytest", str(probe), "-q", "-rs", "-p", "no:cacheprovider", "-n", "0"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            env={**os.environ, **env},
            timeout=120,
        )
    finally:
        probe.unlink()


@pytest.mark.parametrize(("ci", "expect_failures"), [("true", 4), ("", 0)])
def test_runtime_skips_fail_only_in_ci(ci: str, expect_failures: int) -> None:
    result = run_probe(f"markers_{ci or 'local'}", MARKER_PROBE, {"CI": ci})
    summary = result.stdout.strip().splitlines()[-1]
    if expect_failures:
        assert result.returncode == 1
        assert f"{expect_failures} failed" in summary and "1 skipped" in summary
        for needs in ("PostgreSQL", "Redis", "npm (the MCP conformance suite)", "npm (the OpenID provider harness)"):
            assert f"CI=true forbids skipping a test that needs {needs}" in result.stdout
    else:
        assert result.returncode == 0 and "5 skipped" in summary


@pytest.mark.parametrize(("ci", "outcome"), [("true", "2 failed"), ("", "2 skipped")])
def test_npm_harnesses_fail_without_npm_in_ci(ci: str, outcome: str) -> None:
    # A PATH holding only the venv's executables: no npm (and no node) on it.
    result = run_probe(f"harness_{ci or 'local'}", HARNESS_PROBE, {"CI": ci, "PATH": str(Path(sys.executable).parent)})
    summary = result.stdout.strip().splitlines()[-1]
    assert outcome in summary, result.stdout[-2000:]
    for purpose in ("the conformance suite", "the OpenID provider harness"):
        prefix = "CI=true forbids skipping: " if ci else ""
        assert f"{prefix}npm not found, needed by {purpose}" in result.stdout, result.stdout[-2000:]


def test_every_test_module_using_an_npm_harness_is_marked() -> None:
    """Marked, so that the CI rule above covers it whatever path leads it to skip."""
    uses = re.compile(r"\b(start_idp|ensure_idp_harness|ensure_harness)\(")
    modules = [
        path
        for path in sorted((ROOT / "tests").rglob("test_*.py"))
        if path.name != Path(__file__).name and uses.search(path.read_text())
    ]
    assert len(modules) >= 3  # conformance, the idp fixture's own tests, the identity-provider integration tests
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--collect-only",
            "-q",
            "-n",
            "0",
            "-p",
            "no:cacheprovider",
            "-m",
            "not (conformance or idp)",
        ]
        + [str(path) for path in modules],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    unmarked = [line for line in result.stdout.splitlines() if "::" in line]
    assert unmarked == [], f"tests that need npm but carry neither the conformance nor the idp marker: {unmarked}"
    assert "deselected" in result.stdout, result.stdout[-1000:]
