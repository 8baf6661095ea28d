"""No tool runs unaudited, at the edges: a SIGKILL while a tool runs, and a restart during an
audit outage. A call's start is durable before its tool runs; its outcome follows; a start a
dead process left without an outcome is recorded as interrupted by the next server."""

from __future__ import annotations

import contextlib
import signal
import sqlite3
import textwrap
import threading
import time
from pathlib import Path

import httpx2
import pytest

from tests.support.rpc import LegacySession, modern_call, post
from tests.support.server import start_server

SLOW_TOOLS = textwrap.dedent(
    """
    import asyncio
    import tenantry

    app = tenantry.App("slow")

    @app.tool()
    async def write_then_hang(ctx: tenantry.ToolContext, name: str) -> str:
        await ctx.files.write_text(name, "written before the crash")
        await asyncio.sleep(60)
        return "never"
    """
)


def call(url: str, token: str, tool: str, arguments: dict) -> httpx2.Response:
    return modern_call(url, token, "tools/call", {"name": tool, "arguments": arguments})


def test_a_sigkill_while_a_tool_runs_leaves_its_start_and_then_an_interrupted_outcome(tmp_path: Path) -> None:
    (tmp_path / "slow_tools.py").write_text(SLOW_TOOLS)
    data = tmp_path / "data"
    server = start_server(data, app="slow_tools:app", cwd=tmp_path)
    server.cli("tenant", "grant", "acme", "write_then_hang")
    time.sleep(0.6)  # the running server picks up the grant
    token = server.token("acme", "alice")
    target = data / "tenants" / "acme" / "files" / "effect.txt"
    thread = threading.Thread(
        target=lambda: _ignore_transport_errors(call, server.mcp_url, token, "write_then_hang", {"name": "effect.txt"})
    )
    thread.start()
    deadline = time.monotonic() + 20
    while not target.exists():
        assert time.monotonic() < deadline, "the tool never wrote its file"
        time.sleep(0.05)
    server.process.send_signal(signal.SIGKILL)
    server.process.wait()
    thread.join()

    restarted = start_server(data, app="slow_tools:app", cwd=tmp_path)
    try:
        records = [r for r in restarted.audit_records("acme") if r.get("tool_name") == "write_then_hang"]
        started = [r for r in records if r["event_type"] == "call_started"]
        assert len(started) == 1, records  # durable before the tool wrote anything
        assert started[0]["subject"] == "alice" and started[0]["args_hash"].startswith("sha256:")
        outcome = [r for r in records if r["event_type"] == "tool_call"]
        assert len(outcome) == 1 and outcome[0]["result_status"] == "interrupted", records
        assert outcome[0]["request_id"] == started[0]["request_id"]
        assert "may have run" in outcome[0]["reason"]
        verify = restarted.cli("audit", "verify", check=False)
        assert verify.returncode == 0, verify.stdout + verify.stderr
        # positive control: a call that finishes gets its real outcome, not "interrupted"
        fresh = restarted.token("acme", "alice")
        assert "result" in call(restarted.mcp_url, fresh, "whoami", {}).json()
        time.sleep(0.3)
        whoami = [r for r in restarted.audit_records("acme") if r.get("tool_name") == "whoami"]
        assert [r["result_status"] for r in whoami if r["event_type"] == "tool_call"] == ["ok"]
    finally:
        restarted.stop()


def _ignore_transport_errors(fn, *args) -> None:  # type: ignore[no-untyped-def]
    with contextlib.suppress(httpx2.TransportError):
        fn(*args)


def test_refusals_recorded_during_an_audit_outage_survive_a_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = start_server(data, env={"TENANTRY_AUDIT__BUSY_TIMEOUT": "0.3"})
    token = server.token("acme", "mallory")
    assert "result" in call(server.mcp_url, token, "whoami", {}).json()
    blocker = sqlite3.connect(data / "audit.sqlite3", isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        refused = call(server.mcp_url, token, "globex_forecast", {"quarter": "Q1"})  # a denial: it happened
        assert refused.json()["error"]["data"]["code"] in ("tool_unavailable", "audit_unavailable")
        not_run = call(server.mcp_url, token, "write_file", {"path": "outage.txt", "content": "x"})
        assert not_run.json()["error"]["data"]["code"] == "audit_unavailable"
        assert "not run" in not_run.json()["error"]["message"]
        assert not (data / "tenants" / "acme" / "files" / "outage.txt").exists()
        server.process.send_signal(signal.SIGKILL)  # the server dies while the store is still down
        server.process.wait()
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    restarted = start_server(data)
    try:
        denied = [
            r
            for r in restarted.audit_records("acme")
            if r["event_type"] == "tool_denied" and r.get("tool_name") == "globex_forecast"
        ]
        assert len(denied) == 1 and denied[0]["subject"] == "mallory"
        assert not (data / "audit-spill.jsonl").exists() or (data / "audit-spill.jsonl").stat().st_size == 0
        verify = restarted.cli("audit", "verify", check=False)
        assert verify.returncode == 0, verify.stdout + verify.stderr
    finally:
        restarted.stop()


@pytest.mark.parametrize("tool", ["whoami"])
def test_every_call_has_a_start_and_an_outcome_with_the_same_request_id(tmp_path: Path, tool: str) -> None:
    server = start_server(tmp_path / "data")
    try:
        token = server.token("acme", "pairs")
        for _ in range(5):
            assert "result" in call(server.mcp_url, token, tool, {}).json()
        time.sleep(0.3)
        records = [r for r in server.audit_records("acme") if r.get("subject") == "pairs" and r.get("request_id")]
        by_request: dict[str, list[str]] = {}
        for record in records:
            by_request.setdefault(record["request_id"], []).append(record["event_type"])
        assert len(by_request) == 5
        assert all(sorted(kinds) == ["call_started", "tool_call"] for kinds in by_request.values()), by_request
    finally:
        server.stop()


@pytest.mark.parametrize("era", ["sessionless", "handshake"])
def test_a_call_whose_start_is_not_recorded_returns_no_result_and_leaves_no_outcome(tmp_path: Path, era: str) -> None:
    data = tmp_path / "data"
    server = start_server(data, env={"TENANTRY_AUDIT__BUSY_TIMEOUT": "0.3"})
    try:
        token = server.token("acme", "alice")
        session = LegacySession(server.mcp_url, token) if era == "handshake" else None

        def whoami(request_id: int) -> httpx2.Response:
            params = {"name": "whoami", "arguments": {}}
            if session is not None:
                return session.call("tools/call", params, id=request_id)
            return modern_call(server.mcp_url, token, "tools/call", params)

        assert "result" in whoami(1).json()  # positive control
        blocker = sqlite3.connect(data / "audit.sqlite3", isolation_level=None, check_same_thread=False)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            # The tool has no effect to hold back, so it runs while its start is flushed; the
            # flush fails, and the answer must be that error, not the tool's result.
            for request_id in (2, 3):
                body = whoami(request_id).json()
                assert "result" not in body, body
                assert body["error"]["data"]["code"] == "audit_unavailable"
                assert "not run" in body["error"]["message"]
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        deadline = time.monotonic() + 10
        while "result" not in (answer := whoami(4).json()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "result" in answer, answer  # the store is back
        time.sleep(0.3)
        whoamis = [r for r in server.audit_records("acme") if r.get("tool_name") == "whoami"]
        assert [r["event_type"] for r in whoamis].count("tool_call") == [r["event_type"] for r in whoamis].count(
            "call_started"
        )  # every outcome has its start: none for the calls that were refused
    finally:
        server.stop()


FAILING_AFTER_RETURN = textwrap.dedent(
    """
    import tenantry

    app = tenantry.App("failing")

    @app.resource("failing://big")
    async def big_report(ctx: tenantry.ToolContext) -> str:
        return "x" * 5000  # over the deployment's result limit: fails after the read returned

    @app.prompt()
    async def broken_prompt(ctx: tenantry.ToolContext) -> list:
        return [{"role": "nobody", "content": 3}]  # not prompt messages
    """
)


def test_a_read_or_prompt_failing_after_it_returned_waits_for_its_start_and_has_an_outcome(tmp_path: Path) -> None:
    (tmp_path / "failing_tools.py").write_text(FAILING_AFTER_RETURN)
    data = tmp_path / "data"
    env = {"TENANTRY_AUDIT__BUSY_TIMEOUT": "0.3", "TENANTRY_TOOLS__MAX_RESULT_BYTES": "1000"}
    server = start_server(data, app="failing_tools:app", cwd=tmp_path, env=env)
    try:
        server.cli("tenant", "grant", "acme", "big_report", "broken_prompt")
        time.sleep(0.6)  # the running server picks up the grant
        token = server.token("acme", "alice")

        def read() -> dict:
            return modern_call(server.mcp_url, token, "resources/read", {"uri": "failing://big"}).json()

        def prompt() -> dict:
            return modern_call(server.mcp_url, token, "prompts/get", {"name": "broken_prompt"}).json()

        # positive control: with the store up, each fails with its own error, start and outcome recorded
        assert read()["error"]["data"]["code"] == "result_too_large"
        assert prompt()["error"]["data"]["code"] == "tool_failed"
        time.sleep(0.3)
        kinds = [(r["event_type"], r["reason"]) for r in server.audit_records("acme") if r.get("request_id")]
        assert kinds.count(("call_started", None)) == 2
        assert ("resource_read", "result_too_large") in kinds and ("prompt_get", "tool_failed") in kinds
        before = len(server.audit_records("acme"))

        blocker = sqlite3.connect(data / "audit.sqlite3", isolation_level=None, check_same_thread=False)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            for answer in (read(), prompt()):
                # the start was not recorded: not the call's own error (sent before the start was
                # durable, with an outcome that has no start), but "not run"
                assert answer["error"]["data"]["code"] == "audit_unavailable", answer
                assert "not run" in answer["error"]["message"]
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        deadline = time.monotonic() + 10
        while "audit_unavailable" in str(answer := read()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert answer["error"]["data"]["code"] == "result_too_large"  # the store is back
        time.sleep(0.3)
        later = server.audit_records("acme")[before:]
        starts = {r["request_id"] for r in later if r["event_type"] == "call_started"}
        outcomes = [r for r in later if r["event_type"] in ("resource_read", "prompt_get")]
        assert outcomes and all(r["request_id"] in starts for r in outcomes), later  # no outcome without its start
        assert server.cli("audit", "verify", check=False).returncode == 0
    finally:
        server.stop()


@pytest.mark.parametrize("mode", ["json", "sse"])
def test_a_call_the_client_cancels_gets_its_outcome_at_once_not_at_shutdown(tmp_path: Path, mode: str) -> None:
    (tmp_path / "slow_tools.py").write_text(SLOW_TOOLS)
    data = tmp_path / "data"
    server = start_server(data, app="slow_tools:app", cwd=tmp_path, env={"TENANTRY_SERVER__RESPONSE_MODE": mode})
    try:
        server.cli("tenant", "grant", "acme", "write_then_hang")
        time.sleep(0.6)  # the running server picks up the grant
        token = server.token("acme", "alice")
        session = LegacySession(server.mcp_url, token)
        answers: list[str] = []
        arguments = {"name": "write_then_hang", "arguments": {"name": "cancelled.txt"}}
        thread = threading.Thread(target=lambda: answers.append(session.call("tools/call", arguments, id=7).text))
        thread.start()
        target = data / "tenants" / "acme" / "files" / "cancelled.txt"
        deadline = time.monotonic() + 20
        while not target.exists():
            assert time.monotonic() < deadline, "the tool never wrote its file"
            time.sleep(0.05)
        assert "result" in session.call("tools/call", {"name": "whoami", "arguments": {}}, id=8).text  # control
        cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 7}}
        assert post(server.mcp_url, cancel, token=token, headers=session.headers()).status_code == 202
        thread.join(20)
        assert "Request cancelled" in answers[0]
        time.sleep(0.3)  # the outcome rides the next group commit
        records = server.audit_records("acme")
        ended = [r for r in records if r["event_type"] == "tool_call"]
        outcomes = {r["tool_name"]: (r["result_status"], r["reason"]) for r in ended}
        assert outcomes["whoami"] == ("ok", None)  # positive control: a call that finished
        # recorded while the server runs, as cancelled (not left open, then "interrupted" at shutdown)
        assert outcomes.get("write_then_hang") == ("cancelled", "request_cancelled"), records
    finally:
        server.stop()
