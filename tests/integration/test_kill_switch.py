"""The kill switch over real HTTP: ``tenant halt`` stops a busy tenant at its next request within
a second, cancels its calls in flight, leaves other tenants untouched, and is audited with who
and why; ``tenant resume`` reverses it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from tests.support.nap_app import NAP_APP
from tests.support.rpc import LegacySession, modern_call
from tests.support.server import RunningServer, start_server

WHOAMI = {"name": "whoami", "arguments": {}}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("killswitch")
    (root / "slow_tools.py").write_text(NAP_APP)
    running = start_server(root / "data", app="slow_tools:app", cwd=root)
    for tenant in ("acme", "globex"):
        running.cli("tenant", "grant", tenant, "nap")
    yield running
    running.stop()


class Hammer(threading.Thread):
    """Calls ``whoami`` on one session as fast as it can, recording when each answer came."""

    def __init__(self, session: LegacySession) -> None:
        super().__init__(daemon=True)
        self.session = session
        self.results: list[tuple[float, int, str]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            response = self.session.call("tools/call", WHOAMI)
            self.results.append((time.monotonic(), response.status_code, response.text))

    def first_refusal_after(self, moment: float) -> tuple[float, int, str] | None:
        return next((r for r in self.results if r[0] >= moment and r[1] != 200), None)


def test_halt_stops_a_busy_tenant_within_a_second_and_spares_the_others(server: RunningServer) -> None:
    server.cli("tenant", "create", "halt-busy", "--tools", "whoami")
    busy = Hammer(LegacySession(server.mcp_url, server.token("halt-busy", "agent")))
    bystanders = [Hammer(LegacySession(server.mcp_url, server.token("globex", f"bystander-{i}"))) for i in range(2)]
    for hammer in (busy, *bystanders):
        hammer.start()
    time.sleep(0.5)
    server.cli("tenant", "halt", "halt-busy", "--reason", "suspected prompt injection")
    halted_at = time.monotonic()
    time.sleep(2.5)
    for hammer in (busy, *bystanders):
        hammer.stop.set()
        hammer.join(10)

    refusal = busy.first_refusal_after(halted_at - 0.1)
    assert refusal is not None, "the halted tenant was never refused"
    assert refusal[0] - halted_at < 1.0
    assert refusal[1] == 403 and '"code":"tenant_halted"' in refusal[2] and "halted" in refusal[2]
    assert all(status == 403 for at, status, _ in busy.results if at > refusal[0])
    for hammer in bystanders:  # served on through the halt (a loaded machine answers a few a second)
        assert sum(at > refusal[0] for at, _, _ in hammer.results) >= 2, hammer.results
        assert {status for _, status, _ in hammer.results} == {200}, "another tenant was refused"


def test_a_halt_closes_the_tenants_sessions_and_resume_lets_it_open_new_ones(server: RunningServer) -> None:
    server.cli("tenant", "create", "halt-resume", "--tools", "whoami")
    token = server.token("halt-resume", "agent")
    session = LegacySession(server.mcp_url, token)
    server.cli("tenant", "halt", "halt-resume", "--reason", "maintenance")
    deadline = time.monotonic() + 2
    while session.call("tools/call", WHOAMI).status_code == 200:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(0.5)
    closed = [r for r in server.audit_records("halt-resume") if r["event_type"] == "connection_closed"]
    assert [r["reason"] for r in closed] == ["tenant_halted"]  # the halt frees its sessions
    result = server.cli("tenant", "resume", "halt-resume", "--reason", "all clear")
    assert "was halted" in result.stdout
    time.sleep(0.5)
    assert session.call("tools/call", WHOAMI).status_code == 404  # the old session is gone for good
    fresh = LegacySession(server.mcp_url, token)
    assert fresh.call("tools/call", WHOAMI).status_code == 200
    events = [r for r in server.audit_records("halt-resume") if r["event_type"] in ("tenant_halted", "tenant_resumed")]
    assert [(e["event_type"], e["reason"]) for e in events] == [
        ("tenant_halted", "maintenance"),
        ("tenant_resumed", "all clear"),
    ]
    assert all(e["actor"].startswith("cli:") for e in events)


@pytest.mark.parametrize("era", ["sessionless", "handshake"])
def test_a_call_in_flight_is_cancelled_by_the_halt(server: RunningServer, era: str) -> None:
    # Handshake era: the halt also closes the tenant's sessions, and the cancelled call must
    # still get its answer on its session before that session's transport ends.
    tenant = f"halt-inflight-{era}"
    server.cli("tenant", "create", tenant, "--tools", "nap,whoami")
    token = server.token(tenant, "sleeper")
    outcome: dict[str, httpx2.Response] = {}
    params = {"name": "nap", "arguments": {"seconds": 20}}
    session = LegacySession(server.mcp_url, token) if era == "handshake" else None

    def sleep_call() -> None:
        if session is not None:
            outcome["response"] = session.call("tools/call", params)
        else:
            outcome["response"] = modern_call(server.mcp_url, token, "tools/call", params)

    caller = threading.Thread(target=sleep_call)
    started = time.monotonic()
    caller.start()
    time.sleep(0.5)
    server.cli("tenant", "halt", tenant, "--reason", "runaway agent")
    caller.join(10)
    assert not caller.is_alive()
    assert time.monotonic() - started < 5
    result = outcome["response"].json()["result"]
    assert result["isError"] is True
    assert result["_meta"]["io.tenantry/error"]["code"] == "call_cancelled"
    records = [r for r in server.audit_records(tenant) if r["event_type"] == "tool_call"]
    assert [(r["tool_name"], r["result_status"], r["reason"]) for r in records] == [
        ("nap", "cancelled", "call_cancelled")
    ]


def test_a_slow_call_of_another_tenant_is_not_cancelled(server: RunningServer) -> None:
    server.cli("tenant", "create", "halt-other", "--tools", "whoami")
    globex = server.token("globex", "napper")
    outcome: dict[str, httpx2.Response] = {}
    caller = threading.Thread(
        target=lambda: outcome.setdefault(
            "r", modern_call(server.mcp_url, globex, "tools/call", {"name": "nap", "arguments": {"seconds": 1.5}})
        )
    )
    caller.start()
    time.sleep(0.3)
    server.cli("tenant", "halt", "halt-other", "--reason", "unrelated")
    caller.join(10)
    assert outcome["r"].json()["result"]["content"][0]["text"] == "rested"


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["tenant", "halt", "no-such-tenant", "--reason", "x"], 1),
        (["tenant", "halt", "acme"], 2),
        (["tenant", "halt", "acme", "--reason", "   "], 2),
        (["tenant", "resume", "no-such-tenant"], 1),
    ],
)
def test_bad_halt_commands_fail_cleanly(server: RunningServer, args: list[str], code: int) -> None:
    result = server.cli(*args, check=False)
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr and result.stderr.strip()
    assert modern_call(server.mcp_url, server.token("acme", "x"), "tools/call", WHOAMI).status_code == 200


def test_a_halted_tenant_cannot_start_stdio(server: RunningServer, tmp_path: Path) -> None:
    server.cli("tenant", "create", "halt-stdio", "--tools", "whoami")
    token = server.token("halt-stdio", "agent")
    server.cli("tenant", "halt", "halt-stdio", "--reason", "x")
    result = server.cli("stdio", "--demo", "--token", token, check=False, input="")
    assert result.returncode == 1 and "halted" in result.stderr
