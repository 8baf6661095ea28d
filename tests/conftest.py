"""Suite-wide rules.

* Async tests run on anyio's asyncio backend, in asyncio debug mode: a task step or callback
  that holds the event loop longer than ``SLOW_CALLBACK_SECONDS`` (blocking I/O, a CPU-bound
  step, a sync driver call) fails the test that ran it. The test's own task (its body, and
  what it awaits directly) is exempt, since test bodies build stores and servers synchronously;
  every task the code under test spawns (servers, task groups, writers, streams) and every
  plain callback is watched. The real server process is checked the same way, whole, by
  ``tests/integration/test_event_loop.py``. ``@pytest.mark.allow_slow_callbacks`` exempts a
  test that blocks a loop on purpose.
* Tests marked ``postgres`` or ``redis`` talk to the real servers at 127.0.0.1; tests marked
  ``conformance`` or ``idp`` need npm (the MCP conformance suite, the OpenID provider harness).
  Without their runtime they skip with a clear message, except in CI (``CI=true``), where any
  skip of such a test is turned into a failure: a green run must have exercised them all.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Generator, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from tests.support.ci import IN_CI, RUNTIME_MARKERS

# asyncio's own default in debug mode. Wall time on a shared 2-core machine: steps that block
# nothing are seen at 20-60 ms now and then (preemption, a worker thread holding the GIL), so a
# tighter bound here would be flaky; a blocking call (sync I/O, a driver, a sleep) shows far above it.
SLOW_CALLBACK_SECONDS = 1.0  # wall time: four workers share two cores; only gross blocking is caught here


def _debug_event_loop() -> asyncio.AbstractEventLoop:
    loop = asyncio.new_event_loop()
    loop.slow_callback_duration = SLOW_CALLBACK_SECONDS
    return loop


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, Any]]:
    return "asyncio", {"debug": True, "loop_factory": _debug_event_loop}


# How asyncio names the tasks anyio runs each test body in: the runner task, and the one that
# hands each test and fixture to it (a 1.03 s step of the latter, which runs no code under test,
# failed a CI run on a loaded host).
_TEST_TASKS = ("TestRunner._run_tests_and_fixtures", "TestRunner._call_in_runner_task")


class SlowCallbacks(logging.Handler):
    """Collects asyncio's debug-mode reports of callbacks that held the loop too long."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.reports: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if (
            message.startswith("Executing ")
            and " took " in message
            and not any(task in message for task in _TEST_TASKS)
        ):
            self.reports.append(message)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    watching = "anyio" in item.keywords and item.get_closest_marker("allow_slow_callbacks") is None
    if not watching:
        return (yield)
    slow = SlowCallbacks()
    asyncio_logger = logging.getLogger("asyncio")
    asyncio_logger.addHandler(slow)
    try:
        result = yield
    finally:
        asyncio_logger.removeHandler(slow)
    if slow.reports:
        listed = "\n".join(f"  {report}" for report in slow.reports[:10])
        pytest.fail(f"the event loop was blocked longer than {SLOW_CALLBACK_SECONDS} s:\n{listed}", pytrace=False)
    return result


def _reachable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def postgres_available() -> None:
    if not _reachable(5432):
        pytest.skip("PostgreSQL is not reachable at 127.0.0.1:5432 (required when CI=true)")


@pytest.fixture(scope="session")
def redis_available() -> None:
    if not _reachable(6379):
        pytest.skip("Redis is not reachable at 127.0.0.1:6379 (required when CI=true)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if not (IN_CI and report.skipped):
        return
    needs = [what for marker, what in RUNTIME_MARKERS.items() if item.get_closest_marker(marker)]
    if needs:
        report.outcome = "failed"
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr
        report.longrepr = f"CI=true forbids skipping a test that needs {' and '.join(needs)}: {reason}"


@pytest.fixture(scope="session")
def postgres_url(postgres_available: None) -> Iterator[str]:
    """A throwaway database on the local server (trust auth, user postgres), dropped afterwards."""
    import uuid

    import psycopg

    name = f"tenantry_test_{uuid.uuid4().hex[:12]}"
    admin = "postgresql://postgres@127.0.0.1:5432/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if TYPE_CHECKING:
    from tests.support.s3 import MotoServer


@pytest.fixture(scope="session")
def s3_server() -> Iterator[MotoServer]:
    """A real moto S3 server for the whole session; each test makes its own bucket."""
    from tests.support.s3 import start_moto_server

    server = start_moto_server()
    yield server
    server.stop()
