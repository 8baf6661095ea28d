"""The suite's CI rule: with CI=true a skipped PostgreSQL/Redis test is a failure."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROBE = """
import pytest

@pytest.mark.postgres
def test_needs_postgres():
    pytest.skip("PostgreSQL is not reachable")

@pytest.mark.redis
def test_needs_redis():
    pytest.skip("Redis is not reachable")

def test_plain_skip_is_fine():
    pytest.skip("not a service test")
"""


@pytest.mark.parametrize(("ci", "expect_failures"), [("true", 2), ("", 0)])
def test_service_skips_fail_only_in_ci(tmp_path: Path, ci: str, expect_failures: int) -> None:
    probe = ROOT / "tests" / f"test_ci_probe_{os.getpid()}_{ci or 'local'}.py"
    probe.write_text(PROBE)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "pytest", str(probe), "-q", "-p", "no:cacheprovider"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            env={**os.environ, "CI": ci},
            timeout=120,
        )
    finally:
        probe.unlink()
    summary = result.stdout.strip().splitlines()[-1]
    if expect_failures:
        assert result.returncode == 1
        assert f"{expect_failures} failed" in summary and "1 skipped" in summary
        assert "CI=true forbids skipping a PostgreSQL/Redis test" in result.stdout
    else:
        assert result.returncode == 0 and "3 skipped" in summary
