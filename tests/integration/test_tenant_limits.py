"""Per-tenant limits over real HTTP: a tenant over its rate, quota or concurrency is refused with
a stable code and ``retry_after`` while another tenant is served; limits hold across two servers
sharing Redis; Redis down means the configured behaviour, then recovery by itself."""

from __future__ import annotations

import textwrap
import threading
import time
import uuid
from pathlib import Path

import httpx2
import pytest

from tests.support import web
from tests.support.rates import most_admitted
from tests.support.rpc import modern_call
from tests.support.server import RunningServer, start_server
from tests.support.tcp_proxy import TcpProxy
from tests.support.timing import fastest_of

SLOW_APP = textwrap.dedent(
    """
    import asyncio
    import tenantry

    app = tenantry.App("slow")

    @app.tool()
    async def nap(ctx: tenantry.ToolContext, seconds: float = 1.0) -> str:
        await asyncio.sleep(seconds)
        return "rested"
    """
)


def whoami(server: RunningServer, token: str) -> httpx2.Response:
    return modern_call(server.mcp_url, token, "tools/call", {"name": "whoami", "arguments": {}})


def error_code(response: httpx2.Response) -> str | None:
    """The Tenantry error code of a JSON-RPC error, or of a tool's error result."""
    body = response.json()
    if "error" in body:
        return str(body["error"]["data"]["code"])
    tool_error = body.get("result", {}).get("_meta", {}).get("io.tenantry/error")
    return str(tool_error["code"]) if tool_error else None


def set_limits(server: RunningServer, tenant: str, *assignments: str) -> None:
    server.cli("tenant", "limits", tenant, *assignments)
    time.sleep(0.6)  # the server's next control-plane poll


@pytest.fixture
def server(tmp_path: Path):
    running = start_server(tmp_path / "data")
    yield running
    running.stop()


def test_a_tenant_over_its_burst_is_refused_while_another_is_served(server: RunningServer) -> None:
    set_limits(server, "acme", "burst=3", "calls_per_second=0.5")
    acme, globex = server.token("acme", "flooder"), server.token("globex", "quiet")
    began = time.monotonic()
    codes = [error_code(whoami(server, acme)) for _ in range(10)]
    elapsed = time.monotonic() - began
    # a burst of 3 at once, then at most the sustained 5 per 10 s, plus what the sustained rate
    # earns back while a loaded machine answers slowly
    assert codes[:3] == [None, None, None] and codes.count(None) <= most_admitted(0.5, elapsed), (codes, elapsed)
    assert set(codes) == {None, "rate_limited"}, codes
    answers = (whoami(server, acme).json() for _ in range(10))  # the rate may have earned one back meanwhile
    refused = next(answer["error"] for answer in answers if "error" in answer)
    assert refused["data"]["retry_after"] >= 1 and ("burst" in refused["message"] or "rate" in refused["message"])
    assert all(error_code(whoami(server, globex)) is None for _ in range(10))  # untouched
    time.sleep(0.3)
    denials = [r for r in server.audit_records("acme") if r["event_type"] == "tool_denied"]
    assert any(r["reason"] == "rate_limited" for r in denials)


def test_a_tenant_retrying_in_a_tight_loop_is_slowed_by_held_refusals(server: RunningServer) -> None:
    set_limits(server, "acme", "burst=2", "calls_per_second=0.5")
    acme, globex = server.token("acme", "a"), server.token("globex", "g")
    codes: list[str | None] = []
    started = time.monotonic()
    while time.monotonic() - started < 1.5:  # a client that retries as soon as it is answered
        codes.append(error_code(whoami(server, acme)))
    refused = [code for code in codes if code == "rate_limited"]
    # Each refusal was held (limits.refusal_hold, 0.5 s): a handful, not hundreds.
    assert 1 <= len(refused) <= 5, codes
    # The control: another tenant, under its limits, is answered at once meanwhile (the fastest
    # of three: a loaded machine makes one in a while slow).
    codes_of_globex, fastest = fastest_of(3, lambda: error_code(whoami(server, globex)))
    assert codes_of_globex == [None, None, None]
    assert fastest < 0.4


def test_a_tenant_over_its_daily_quota_is_told_when_it_resets(server: RunningServer) -> None:
    set_limits(server, "acme", "daily_calls=4")
    acme = server.token("acme", "a")
    codes = [error_code(whoami(server, acme)) for _ in range(6)]
    assert codes == [None, None, None, None, "quota_exceeded", "quota_exceeded"]
    data = whoami(server, acme).json()["error"]["data"]
    assert 0 < data["retry_after"] <= 86400
    assert error_code(whoami(server, server.token("globex", "g"))) is None


def test_limits_show_and_clear(server: RunningServer) -> None:
    import json

    set_limits(server, "acme", "concurrent_calls=2", "tool_timeout=5s")
    shown = json.loads(server.cli("tenant", "limits", "acme", "--json").stdout)
    assert shown["limits"]["concurrent_calls"] == 2 and shown["limits"]["tool_timeout"] == 5
    assert sorted(shown["overridden"]) == ["concurrent_calls", "tool_timeout"]
    server.cli("tenant", "limits", "acme", "--clear", "concurrent_calls")
    shown = json.loads(server.cli("tenant", "limits", "acme", "--json").stdout)
    assert shown["overridden"] == ["tool_timeout"] and shown["limits"]["concurrent_calls"] == 16
    bad = server.cli("tenant", "limits", "acme", "burst=-1", check=False)
    assert bad.returncode == 2 and "positive" in bad.stderr
    changed = [r for r in server.audit_records("acme") if r["event_type"] == "tenant_limits_changed"]
    assert len(changed) == 2


def test_the_limits_table_shows_each_value_exactly(server: RunningServer) -> None:
    server.cli("tenant", "limits", "globex", "file_bytes=536870913")
    try:
        table = server.cli("tenant", "limits", "globex").stdout
        assert "536870913" in table and "e+08" not in table
    finally:
        server.cli("tenant", "limits", "globex", "--clear", "file_bytes")


def test_concurrency_is_bounded_per_tenant(tmp_path: Path) -> None:
    (tmp_path / "slow_app.py").write_text(SLOW_APP)
    server = start_server(tmp_path / "data", app="slow_app:app", cwd=tmp_path)
    try:
        server.cli("tenant", "grant", "acme", "nap")
        set_limits(server, "acme", "concurrent_calls=2")
        acme = server.token("acme", "a")
        codes: list[str | None] = []

        def nap() -> None:
            response = modern_call(server.mcp_url, acme, "tools/call", {"name": "nap", "arguments": {"seconds": 1.5}})
            codes.append(error_code(response))

        threads = [threading.Thread(target=nap) for _ in range(4)]
        for thread in threads:
            thread.start()
            time.sleep(0.1)
        assert error_code(whoami(server, server.token("globex", "g"))) is None  # globex is not held up
        for thread in threads:
            thread.join()
        assert sorted(codes, key=str) == [None, None, "concurrency_limited", "concurrency_limited"], codes
    finally:
        server.stop()


@pytest.mark.redis
def test_two_servers_sharing_redis_share_one_budget(tmp_path: Path, redis_available: None) -> None:
    env = {
        "TENANTRY_LIMITS__STORAGE": "async+redis://127.0.0.1:6379/0",
        "TENANTRY_LIMITS__KEY_PREFIX": f"test-{uuid.uuid4().hex}",
    }
    data = tmp_path / "data"
    first = start_server(data, env=env)
    second = start_server(data, env=env)
    try:
        set_limits(first, "acme", "daily_calls=6")
        token = first.token("acme", "a")
        codes = [error_code(whoami(target, token)) for _ in range(5) for target in (first, second)]
        assert codes.count(None) == 6 and codes.count("quota_exceeded") == 4, codes  # 6 in all, not 12
    finally:
        second.stop()
        first.stop()


@pytest.mark.redis
def test_redis_down_fails_closed_then_recovers(tmp_path: Path, redis_available: None) -> None:
    proxy = TcpProxy(6379)
    env = {
        "TENANTRY_LIMITS__STORAGE": f"async+redis://127.0.0.1:{proxy.port}/0",
        "TENANTRY_LIMITS__KEY_PREFIX": f"test-{uuid.uuid4().hex}",
    }
    server = start_server(tmp_path / "data", env=env)
    try:
        token = server.token("acme", "a")
        assert error_code(whoami(server, token)) is None
        proxy.cut()
        time.sleep(0.2)  # units leased before the cut are valid for at most 50 ms
        down = whoami(server, token).json()["error"]
        assert down["data"]["code"] == "limits_unavailable" and "refused" in down["message"]
        proxy.restore()
        deadline = time.monotonic() + 15
        while error_code(whoami(server, token)) is not None:
            assert time.monotonic() < deadline, "did not recover by itself"
            time.sleep(0.3)
    finally:
        server.stop()
        proxy.close()


@pytest.mark.redis
def test_redis_down_lets_calls_through_when_configured(tmp_path: Path, redis_available: None) -> None:
    proxy = TcpProxy(6379)
    env = {
        "TENANTRY_LIMITS__STORAGE": f"async+redis://127.0.0.1:{proxy.port}/0",
        "TENANTRY_LIMITS__ON_STORAGE_ERROR": "allow",
        "TENANTRY_LIMITS__KEY_PREFIX": f"test-{uuid.uuid4().hex}",
    }
    server = start_server(tmp_path / "data", env=env)
    try:
        token = server.token("acme", "a")
        proxy.cut()
        assert error_code(whoami(server, token)) is None
    finally:
        server.stop()
        proxy.close()


def test_a_tenant_cannot_take_more_than_its_sessions_and_a_halt_frees_them(server: RunningServer) -> None:
    from tests.support.rpc import LegacySession

    set_limits(server, "acme", "sessions=3")
    acme, globex = server.token("acme", "a"), server.token("globex", "g")
    from tests.support.rpc import HANDSHAKE_VERSION, post, request

    opened = [LegacySession(server.mcp_url, acme) for _ in range(3)]
    init = {"protocolVersion": HANDSHAKE_VERSION, "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}
    refused = post(server.mcp_url, request("initialize", init), token=acme)
    assert refused.status_code == 429 and refused.headers["retry-after"] == "60"
    assert refused.json()["error"]["data"]["code"] == "session_limit"
    LegacySession(server.mcp_url, globex)  # another tenant opens sessions freely
    opened[0].call("tools/call", {"name": "whoami", "arguments": {}})
    import httpx2 as http

    http.request("DELETE", server.mcp_url, headers={**opened[0].headers(), "Authorization": f"Bearer {acme}"})
    LegacySession(server.mcp_url, acme)  # a closed session frees its place
    server.cli("tenant", "halt", "acme", "--reason", "flood")
    time.sleep(0.8)
    server.cli("tenant", "resume", "acme")
    time.sleep(0.6)
    for _ in range(3):
        LegacySession(server.mcp_url, acme)  # the halt closed every acme session


def test_a_tenants_idle_sessions_expire_on_its_own_schedule(server: RunningServer) -> None:
    from tests.support.rpc import LegacySession

    set_limits(server, "acme", "session_idle=1")
    idle = LegacySession(server.mcp_url, server.token("acme", "a"))
    other = LegacySession(server.mcp_url, server.token("globex", "g"))
    time.sleep(4.5)
    assert idle.call("tools/call", {"name": "whoami", "arguments": {}}).status_code == 404
    assert other.call("tools/call", {"name": "whoami", "arguments": {}}).status_code == 200


def test_a_grant_change_is_pushed_to_that_tenants_sessions_only(server: RunningServer) -> None:
    from tests.support.rpc import LegacySession

    acme = LegacySession(server.mcp_url, server.token("acme", "a"))
    globex = LegacySession(server.mcp_url, server.token("globex", "g"))
    for session in (acme, globex):
        session.call("tools/list")  # what a client does first
    heard: dict[str, list[str]] = {"acme": [], "globex": []}

    def listen(name: str, session: LegacySession) -> None:
        headers = {**session.headers(), "Authorization": f"Bearer {session.token}", "Accept": "text/event-stream"}
        try:
            with web.stream("GET", server.mcp_url, headers=headers, timeout=httpx2.Timeout(6.0)) as stream:
                for line in stream.iter_lines():
                    if line.startswith("data:"):
                        heard[name].append(line)
        except httpx2.HTTPError:
            pass

    threads = [threading.Thread(target=listen, args=item, daemon=True) for item in (("acme", acme), ("globex", globex))]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    server.cli("tenant", "ungrant", "acme", "send_email")
    deadline = time.monotonic() + 5
    while not any("tools/list_changed" in line for line in heard["acme"]):
        assert time.monotonic() < deadline, heard
        time.sleep(0.1)
    assert not any("list_changed" in line for line in heard["globex"])  # another tenant hears nothing
    listed = acme.call("tools/list").json()["result"]["tools"]
    assert "send_email" not in {tool["name"] for tool in listed}


def test_a_tenant_whose_database_reaches_its_sql_bytes_is_refused_and_another_is_served(
    server: RunningServer,
) -> None:
    acme, globex = server.token("acme", "mailer"), server.token("globex", "quiet")
    mail = {"to": "a@example.com", "subject": "s", "body": "x" * 20_000}

    def send() -> httpx2.Response:
        return modern_call(server.mcp_url, acme, "tools/call", {"name": "send_email", "arguments": mail})

    assert error_code(send()) is None  # the positive control: within the default quota
    set_limits(server, "acme", "sql_bytes=300000")
    codes = [error_code(send()) for _ in range(20)]
    assert "storage_quota_exceeded" in codes, codes
    refused = send()
    assert error_code(refused) == "storage_quota_exceeded"
    assert "sql_bytes" in refused.json()["result"]["content"][0]["text"]
    crm = modern_call(server.mcp_url, globex, "tools/call", {"name": "query_crm", "arguments": {}})
    assert crm.status_code == 200 and error_code(crm) is None, crm.text
    set_limits(server, "acme", "sql_bytes=100000000")
    assert error_code(send()) is None  # a raised quota applies at the next statement
