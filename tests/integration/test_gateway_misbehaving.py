"""A misbehaving upstream (floods stderr, writes garbage or a 10 MB line to stdout, crashes, hangs)
affects only its own session: the server, other tenants and other upstreams carry on."""

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
TOOLS = ["bad__fine", "bad__flood_stderr", "bad__huge_line", "bad__junk_lines", "bad__crash"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    # The upstream names its process by its pid, which its sandbox makes 1 (the sandbox is proven
    # in test_upstream_sandbox.py).
    running = start_server(
        tmp_path_factory.mktemp("gateway-bad") / "data", env={"TENANTRY_GATEWAY__COMMAND_SANDBOX": "off"}
    )
    script = REPO / "tests" / "support" / "misbehaving_upstream.py"
    running.cli("upstream", "add", "bad", "--command", f"{sys.executable} {script}", "--timeout", "5s")
    for tenant in ("acme", "globex"):
        running.cli("tenant", "grant", tenant, *TOOLS)
    yield running
    running.stop()


def call(session: LegacySession, name: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
    response = session.call("tools/call", {"name": name, "arguments": arguments or {}})
    assert response.status_code == 200, response.text
    return response.json()["result"]


def text_of(result: dict[str, Any]) -> str:
    return "".join(c.get("text", "") for c in result["content"])


def code_of(result: dict[str, Any]) -> str | None:
    return result.get("_meta", {}).get("io.tenantry/error", {}).get("code")


def until_fine(session: LegacySession, within: float = 15) -> str:
    deadline = time.monotonic() + within
    while True:
        result = call(session, "bad__fine")
        if not result.get("isError"):
            return text_of(result)
        assert code_of(result) == "upstream_unavailable", result
        assert time.monotonic() < deadline, "the upstream was never restarted"
        time.sleep(0.2)


def sessions(server: RunningServer) -> tuple[LegacySession, LegacySession]:
    return LegacySession(server.mcp_url, server.token("acme")), LegacySession(server.mcp_url, server.token("globex"))


def test_a_stderr_flood_is_drained_and_the_call_answers(server: RunningServer) -> None:
    acme, _ = sessions(server)
    assert text_of(call(acme, "bad__flood_stderr", {"megabytes": 20})) == "flooded stderr"
    assert len(server.logs()) < 1_000_000  # drained, not copied into the server's log


def test_junk_lines_on_stdout_do_not_break_the_session(server: RunningServer) -> None:
    acme, _ = sessions(server)
    assert text_of(call(acme, "bad__junk_lines", {"count": 10_000})) == "after the junk"
    assert text_of(call(acme, "bad__fine")).startswith("fine")


def test_a_10_mb_line_fails_only_that_tenants_session(server: RunningServer) -> None:
    acme, globex = sessions(server)
    globex_before = text_of(call(globex, "bad__fine"))
    result = call(acme, "bad__huge_line", {"megabytes": 10})
    assert result["isError"] is True and code_of(result) == "upstream_unavailable", result
    assert text_of(call(globex, "bad__fine")) == globex_before  # the same process, untouched
    assert until_fine(acme).startswith("fine")


def test_a_crash_mid_call_is_a_clear_error_then_a_restart(server: RunningServer) -> None:
    acme, globex = sessions(server)
    before = until_fine(acme)
    result = call(acme, "bad__crash")
    assert result["isError"] is True and code_of(result) == "upstream_unavailable", result
    assert text_of(call(globex, "bad__fine")).startswith("fine")
    assert until_fine(acme) != before  # a new process (another pid)
