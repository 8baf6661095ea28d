"""The suite's slow-callback detector (tests/conftest.py) fails an async test that blocks its loop."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROBE = """
import time

import anyio
import pytest


async def blocking_step() -> None:
    time.sleep(1.5)  # the mistake the detector exists for


async def polite_step() -> None:
    await anyio.sleep(0.2)


@pytest.mark.anyio
async def test_a_task_that_blocks_the_loop() -> None:
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(blocking_step)


@pytest.mark.anyio
async def test_a_task_that_waits_without_blocking() -> None:
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(polite_step)


@pytest.mark.anyio
@pytest.mark.allow_slow_callbacks
async def test_a_task_allowed_to_block() -> None:
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(blocking_step)


def test_a_sync_test_is_not_watched() -> None:
    time.sleep(1.5)
"""


@pytest.fixture(scope="module")
def probe_run() -> subprocess.CompletedProcess[str]:
    probe = ROOT / "tests" / f"test_slow_probe_{os.getpid()}.py"
    probe.write_text(PROBE)
    try:
        return subprocess.run(
            [sys.executable, "-m", "pytest", str(probe), "-v", "-p", "no:cacheprovider", "-n", "0"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        probe.unlink()


def test_a_blocking_sleep_in_an_async_task_fails_its_test(probe_run: subprocess.CompletedProcess[str]) -> None:
    assert "test_a_task_that_blocks_the_loop FAILED" in probe_run.stdout, probe_run.stdout[-3000:]
    assert "the event loop was blocked longer than 1.0 s" in probe_run.stdout
    assert "blocking_step" in probe_run.stdout  # the report names the culprit


@pytest.mark.parametrize(
    "test",
    ["test_a_task_that_waits_without_blocking", "test_a_task_allowed_to_block", "test_a_sync_test_is_not_watched"],
)
def test_what_does_not_block_or_is_exempt_passes(probe_run: subprocess.CompletedProcess[str], test: str) -> None:
    assert f"{test} PASSED" in probe_run.stdout, probe_run.stdout[-3000:]
