"""No request handler blocks the real server's event loop for more than a few milliseconds.

The server runs with ``TENANTRY_SERVER__DEBUG_SLOW_CALLBACKS`` (asyncio debug mode), so every
callback that holds its loop longer than ``REPORTED`` is logged by asyncio; after a burst of calls
of every demo tool in both protocol eras, from several clients at once, none may have held it
``BLOCKED`` or longer. A tool that calls ``time.sleep`` on the loop is caught the same way
(positive control).

Why two bounds: asyncio measures wall time, and on the shared 2-core machine the suite runs on,
trivial callbacks (accepting a connection, ``connection_lost``) are reported at 20-60 ms now and
then: the process was preempted, or a worker thread held the GIL. A handler that really blocks
(a sync driver call, hashing a megabyte of floats) does so on every call and far longer.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from textwrap import dedent
from typing import Any

import pytest

from tests.support.rpc import LegacySession, modern_call
from tests.support.server import RunningServer, start_server

REPORTED = 0.02  # logged, and shown when the test fails
BLOCKED = 0.1  # fails the test

BLOCKING_APP = dedent(
    '''
    import time
    import tenantry

    app = tenantry.App("blocking")

    @app.tool()
    async def block_the_loop(ctx: tenantry.ToolContext) -> str:
        """A tool author's mistake: a blocking sleep inside an async tool."""
        time.sleep(0.2)
        return "blocked"
    '''
)

ACME_CALLS: list[tuple[str, dict[str, Any]]] = [
    ("whoami", {}),
    ("query_crm", {"filter": "a", "limit": 5}),
    ("search_docs", {"query": "leave and expenses", "limit": 3}),
    ("list_files", {}),
    ("read_file", {"path": "README.md"}),
    ("write_file", {"path": "loop/notes.txt", "content": "hello " * 50}),
    ("send_email", {"to": "bob@acme.example", "subject": "hi", "body": "hello"}),
]
GLOBEX_CALLS: list[tuple[str, dict[str, Any]]] = [("globex_forecast", {"quarter": "Q2"}), ("whoami", {})]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("event-loop")
    (root / "blocking_tools.py").write_text(BLOCKING_APP)
    running = start_server(
        root / "data",
        app="blocking_tools:app",
        cwd=root,
        env={
            "TENANTRY_SERVER__DEBUG_SLOW_CALLBACKS": str(REPORTED),
            "TENANTRY_LIMITS__CALLS_PER_SECOND": "10000",
            "TENANTRY_LIMITS__REQUESTS_PER_SECOND": "100000",
        },
    )
    running.cli("tenant", "create", "initech", "--tools", "block_the_loop")
    yield running
    running.stop()


def slow_callbacks(server: RunningServer, since: int) -> list[tuple[float, str]]:
    """asyncio's reports of callbacks that held the loop, logged after offset ``since``: (seconds, what)."""
    reports = []
    for line in server.logs()[since:].splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        message = str(entry.get("msg", ""))
        if entry.get("logger") == "asyncio" and message.startswith("Executing ") and " took " in message:
            reports.append((float(message.rsplit(" took ", 1)[1].split()[0]), message[:300]))
    return reports


def call_everything(server: RunningServer, tokens: dict[str, str], rounds: int) -> list[str]:
    """``rounds`` of every demo tool, sessionless and on a handshake session; returns any failure."""
    failures: list[str] = []
    for tenant, calls in (("acme", ACME_CALLS), ("globex", GLOBEX_CALLS)):
        session = LegacySession(server.mcp_url, tokens[tenant])
        for _ in range(rounds):
            for name, arguments in calls:
                params = {"name": name, "arguments": arguments}
                for response in (
                    modern_call(server.mcp_url, tokens[tenant], "tools/call", params),
                    session.call("tools/call", params),
                ):
                    body = response.json()
                    if response.status_code != 200 or "error" in body or body["result"].get("isError"):
                        failures.append(f"{tenant} {name}: {response.text[:200]}")
            session.call("tools/list", {})
    return failures


def test_no_handler_blocks_the_event_loop(server: RunningServer) -> None:
    tokens = {tenant: server.token(tenant, "loop-watcher") for tenant in ("acme", "globex")}
    # One round first: what runs once per process (imports, the embedder's first load) is not a handler's cost.
    assert call_everything(server, tokens, 1) == []
    since = len(server.logs())
    failures: list[str] = []

    def client() -> None:
        failures.extend(call_everything(server, tokens, 3))

    clients = [threading.Thread(target=client) for _ in range(4)]
    for thread in clients:
        thread.start()
    for thread in clients:
        thread.join(timeout=120)
    assert failures == []
    reports = slow_callbacks(server, since)
    blocked = [what for seconds, what in reports if seconds >= BLOCKED]
    listed = "\n".join(f"{seconds:.3f} s {what}" for seconds, what in sorted(reports, reverse=True)[:10])
    assert blocked == [], f"the loop was held {BLOCKED} s or longer; the longest holds:\n{listed}"


def test_a_tool_that_blocks_the_loop_is_caught(server: RunningServer) -> None:
    since = len(server.logs())
    token = server.token("initech", "careless-author")
    response = modern_call(server.mcp_url, token, "tools/call", {"name": "block_the_loop", "arguments": {}})
    assert response.status_code == 200 and response.json()["result"]["structuredContent"]["result"] == "blocked"
    assert any(seconds >= 0.2 for seconds, _ in slow_callbacks(server, since)), "a 0.2 s blocking sleep went unseen"


def test_without_the_setting_the_loop_is_not_in_debug_mode(tmp_path: Path) -> None:
    """The setting is what turns the check on: an ordinary server logs no such reports."""
    (tmp_path / "blocking_tools.py").write_text(BLOCKING_APP)
    plain = start_server(tmp_path / "data", app="blocking_tools:app", cwd=tmp_path)
    try:
        plain.cli("tenant", "create", "initech", "--tools", "block_the_loop")
        token = plain.token("initech", "careless-author")
        response = modern_call(plain.mcp_url, token, "tools/call", {"name": "block_the_loop", "arguments": {}})
        assert response.status_code == 200
        assert slow_callbacks(plain, 0) == []
    finally:
        plain.stop()
