"""A handshake session must not keep a caller's last (large) message alive while it idles.

The SDK's per-session loops hold their last item in a loop variable; before
:mod:`tenantry.server.session_streams`, every 1 MiB request (refused or not) kept ~3 MiB
alive per session until the session ended (twelve sessions: +37 MB RSS).
"""

from __future__ import annotations

import gc
import json
import tracemalloc
from pathlib import Path

import pytest

from tests.support.inprocess import inprocess_server

_MIB = 1024 * 1024


def _big_call(name: str) -> bytes:
    filler = "x" * (_MIB - 400)
    return json.dumps(
        {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": name, "arguments": {"a": filler}}}
    ).encode()


def _refused_by_the_sdk() -> bytes:
    # Passes the gate's envelope checks; the SDK's own validation refuses it ("_meta" must be an object).
    filler = "x" * (_MIB - 400)
    return json.dumps(
        {
            "jsonrpc": "2.0",
            "id": 7,
            "method": "tools/call",
            "params": {"name": "whoami", "arguments": {"a": filler}, "_meta": []},
        }
    ).encode()


@pytest.mark.anyio
@pytest.mark.parametrize("response_mode", ["json", "sse"])
async def test_refused_megabyte_bodies_are_not_kept_by_idle_sessions(tmp_path: Path, response_mode: str) -> None:
    async with inprocess_server(tmp_path / "data", server={"response_mode": response_mode}) as server:
        token = server.token("acme", "alice", tools=["whoami"])
        sessions = [await server.open_session(token) for _ in range(10)]
        bodies = [_big_call("no_such_tool"), _big_call("whoami"), _refused_by_the_sdk()]
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for index, session in enumerate(sessions * 2):
                answer = await server.client.post("/mcp", headers=session, content=bodies[index % len(bodies)])
                assert answer.status_code in (200, 400), answer.text[:200]
                assert '"error"' in answer.text[:2000]
            gc.collect()
            retained = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        # 20 refused 1 MiB bodies over 10 live sessions: nothing of them may stay behind.
        assert retained < 4 * _MIB, f"{retained / _MIB:.1f} MiB still held by idle sessions"
        # Positive control: the sessions still work.
        who = await server.client.post(
            "/mcp",
            headers=sessions[0],
            json={"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": "whoami", "arguments": {}}},
        )
        assert who.status_code == 200 and "acme" in who.text
