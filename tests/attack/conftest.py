"""Black-box attack suite: a real server in a subprocess, two tenants with canary data.

Nothing here imports ``tenantry``; the server is driven through its CLI and HTTP only, as
an attacker (or ``tenantry probe``) would.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.server import RunningServer, start_server


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    data_dir = tmp_path_factory.mktemp("attack") / "data"
    # No clock leeway, so a 1-second token is really expired a moment later.
    # Every refusal of the attack suite is checked in the audit trail: lift the per-address budget.
    running = start_server(
        data_dir,
        env={
            "TENANTRY_AUTH__CLOCK_LEEWAY": "0",
            "TENANTRY_AUDIT__REFUSED_RECORDS_PER_SOURCE": "100000/minute",
            # The suite makes thousands of calls as acme in a few seconds; its limits are tested elsewhere.
            "TENANTRY_LIMITS__CALLS_PER_SECOND": "100000",
            "TENANTRY_LIMITS__REQUESTS_PER_SECOND": "100000",
            "TENANTRY_AUTH__FAILED_ATTEMPTS": "100000/minute",  # refused tokens are answered at once
            "TENANTRY_LIMITS__BURST": "1000000",
            "TENANTRY_LIMITS__CONCURRENT_CALLS": "1000",
        },
    )
    yield running
    running.stop()


@pytest.fixture(scope="session")
def acme_token(server: RunningServer) -> str:
    return server.token("acme", "alice", ttl="30m")


@pytest.fixture(scope="session")
def globex_token(server: RunningServer) -> str:
    # Same subject name in both tenants: session ownership must still tell them apart.
    return server.token("globex", "alice", ttl="30m")


@pytest.fixture
def canaries() -> dict[str, str]:
    return {"acme": "acme-canary", "globex": "globex-canary"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).parent.name == "attack":
            item.add_marker(pytest.mark.attack)
