"""Suite-wide rules.

* Async tests run on anyio's asyncio backend.
* Tests marked ``postgres`` or ``redis`` talk to the real servers at 127.0.0.1; tests marked
  ``conformance`` or ``idp`` need npm (the MCP conformance suite, the OpenID provider harness).
  Without their runtime they skip with a clear message, except in CI (``CI=true``), where any
  skip of such a test is turned into a failure: a green run must have exercised them all.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from tests.support.ci import IN_CI, RUNTIME_MARKERS


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


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
