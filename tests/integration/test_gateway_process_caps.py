"""The cap on command-upstream processes, end to end: set in the settings (here through the
environment), a tenant whose call needs one process too many gets ``upstream_unavailable``
naming the limit, the tenant already running keeps working, and once its process is reaped as
idle the other tenant's starts."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.rpc import LegacySession
from tests.support.server import RunningServer, start_server

REPO = Path(__file__).parent.parent.parent
IDLE = 4.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    env = {
        "TENANTRY_GATEWAY__MAX_STDIO_PROCESSES": "1",
        "TENANTRY_GATEWAY__IDLE_TIMEOUT": str(IDLE),
        "TENANTRY_GATEWAY__HEALTH_INTERVAL": "0.5",
        "TENANTRY_GATEWAY__COMMAND_SANDBOX": "off",  # its upstream names its process by its own pid
    }
    running = start_server(tmp_path_factory.mktemp("gateway-caps") / "data", env=env)
    script = REPO / "tests" / "support" / "misbehaving_upstream.py"
    running.cli("upstream", "add", "bad", "--command", f"{sys.executable} {script}", "--no-check")
    for tenant in ("acme", "globex"):
        running.cli("tenant", "grant", tenant, "bad__fine")
    yield running
    running.stop()


def call(session: LegacySession) -> dict[str, Any]:
    response = session.call("tools/call", {"name": "bad__fine", "arguments": {}})
    assert response.status_code == 200, response.text
    return response.json()["result"]


def text_of(result: dict[str, Any]) -> str:
    return "".join(c.get("text", "") for c in result["content"])


def code_of(result: dict[str, Any]) -> str | None:
    return result.get("_meta", {}).get("io.tenantry/error", {}).get("code")


def test_a_process_beyond_the_cap_is_refused_until_an_idle_one_is_reaped(server: RunningServer) -> None:
    acme = LegacySession(server.mcp_url, server.token("acme"))
    globex = LegacySession(server.mcp_url, server.token("globex"))
    deadline = time.monotonic() + 20
    while "bad__fine" not in [t["name"] for t in acme.call("tools/list", {}).json()["result"]["tools"]]:
        assert time.monotonic() < deadline, "the upstream's tools never appeared"
        time.sleep(0.1)
    first = call(acme)  # acme's process (discovery started it) is the one allowed
    assert not first.get("isError"), first
    refused = call(globex)
    assert refused["isError"] is True and code_of(refused) == "upstream_unavailable", refused
    assert "limit of 1 upstream processes is reached" in text_of(refused)
    assert "acme" not in text_of(refused)
    assert text_of(call(acme)) == text_of(first)  # the running process carries on, the same pid
    deadline = time.monotonic() + IDLE + 20
    while True:
        result = call(globex)
        if not result.get("isError"):
            break
        assert "limit" in text_of(result), result
        assert time.monotonic() < deadline, "acme's idle process was never reaped"
        time.sleep(0.25)
    assert text_of(result).startswith("fine from pid ") and text_of(result) != text_of(first)
