"""Outside attack on per-tenant upstream views (gateway mode): what one tenant's use of a
per-tenant upstream tells, or costs, another tenant.

A tenant's view of a per-tenant upstream is listed through its own session at its first request;
nothing of that may reach another tenant, not even the moment it happened. Each negative test has
a positive control beside it.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from tests.support import web
from tests.support.rpc import LegacySession, modern_call
from tests.support.server import RunningServer, start_server

NOTES = Path(__file__).resolve().parents[1] / "support" / "notes_upstream.py"
ACME_ONLY = "notes__merger-plan.txt"
ACME_ONLY_URI = "upstream://notes/notes://merger-plan.txt"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    data = tmp_path_factory.mktemp("views") / "data"
    running = start_server(data)
    (data / "tenants" / "acme" / "files" / "merger-plan.txt").write_text("acme-secret-merger\nwith initech\n")
    running.cli("upstream", "add", "notes", "--command", f"{sys.executable} {NOTES} {{tenant_dir}}")
    # The worst case: globex is even granted the name of a file only acme has.
    running.cli("tenant", "grant", "--pending", "globex", "notes__count", "notes__README.md", ACME_ONLY, "notes__nope")
    running.cli("tenant", "grant", "acme", "notes__count", "notes__README.md", ACME_ONLY, "send_email")
    time.sleep(0.6)  # the server's next control-plane poll
    yield running
    running.stop()


def listen(server: RunningServer, session: LegacySession, heard: list[str], seconds: float) -> threading.Thread:
    """Collect what the session's standalone stream pushes, for ``seconds``."""

    def run() -> None:
        headers = {**session.headers(), "Authorization": f"Bearer {session.token}", "Accept": "text/event-stream"}
        try:
            with web.stream("GET", server.mcp_url, headers=headers, timeout=httpx2.Timeout(seconds)) as stream:
                for line in stream.iter_lines():
                    if line.startswith("data:"):
                        heard.append(line)
        except httpx2.HTTPError:
            pass

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def wait_for(heard: list[str], needle: str, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while not any(needle in line for line in heard):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_another_tenants_view_loading_is_not_pushed_to_this_tenants_sessions(server: RunningServer) -> None:
    """globex's first request lists globex's own view of the upstream; acme's session must not be
    told anything changed (it would learn when globex, a stranger, started using the server).
    Positive control: acme's own grant change is pushed to the same stream."""
    acme = LegacySession(server.mcp_url, server.token("acme", "a"))
    assert acme.call("tools/list").status_code == 200  # acme's own view is loaded now
    heard: list[str] = []
    listen(server, acme, heard, 12.0)
    time.sleep(1.0)  # the stream is open
    globex = server.token("globex", "g")
    listed = modern_call(server.mcp_url, globex, "resources/list", {})  # globex's first request: its view
    assert "globex-canary" in listed.text, listed.text
    time.sleep(2.0)
    assert not any("list_changed" in line for line in heard), heard
    server.cli("tenant", "ungrant", "acme", "send_email")
    assert wait_for(heard, "tools/list_changed"), heard  # the stream works: acme hears its own change


def refusal(response: httpx2.Response, name: str) -> str:
    """What a refusal says, with the name asked for and the request's own id taken out (to
    compare two refusals)."""
    body = response.json()
    body.pop("id", None)
    return f"{response.status_code} {json.dumps(body, sort_keys=True)}".replace(name, "NAME")


@pytest.mark.parametrize("era", ["sessionless", "handshake"])
def test_a_name_only_in_another_tenants_view_is_answered_as_one_that_never_existed(
    server: RunningServer, era: str
) -> None:
    """globex, even granted the name of acme's own file, is neither shown it nor can read it, and
    the refusal is the one for a name nobody has. Positive control: acme reads it."""
    token = server.token("globex", "g")
    if era == "handshake":
        session = LegacySession(server.mcp_url, token)
        call = session.call
    else:

        def call(method: str, params: dict[str, object] | None = None) -> httpx2.Response:
            return modern_call(server.mcp_url, token, method, params or {})

    for method in ("tools/list", "resources/list", "resources/templates/list", "prompts/list"):
        listed = call(method, {})
        assert listed.status_code == 200, listed.text
        assert "merger" not in listed.text and "acme-secret" not in listed.text, listed.text
    assert "globex-canary" in call("resources/list", {}).text  # its own view is there
    never = "upstream://notes/notes://no-such-file.txt"
    for method, key, name, other in (
        ("resources/read", "uri", ACME_ONLY_URI, never),
        ("resources/subscribe", "uri", ACME_ONLY_URI, never),
        ("tools/call", "name", ACME_ONLY, "notes__nope"),
        ("prompts/get", "name", ACME_ONLY, "notes__nope"),
    ):
        params: dict[str, object] = {key: name} | ({"arguments": {}} if key == "name" else {})
        asked, unknown = call(method, params), call(method, {**params, key: other})
        assert "acme-secret" not in asked.text, asked.text
        assert refusal(asked, name) == refusal(unknown, other), (method, asked.text, unknown.text)
    acme = server.token("acme", "a")
    own = modern_call(server.mcp_url, acme, "resources/read", {"uri": ACME_ONLY_URI})
    assert "acme-secret-merger" in own.text, own.text


def test_a_tenant_whose_upstream_hangs_waits_alone(server: RunningServer) -> None:
    """globex's own upstream process hangs at its start: globex's first request waits for it
    (bounded by the upstream's start timeout), acme's requests meanwhile do not. globex is then
    served its granted tool without a description, and calling it answers upstream_unavailable,
    audited as such."""
    script = f"if [ -e $0/hang ]; then sleep 60; fi; exec {sys.executable} {NOTES} $0"
    server.cli("upstream", "add", "slow", "--connect-timeout", "4s", "--command", f"sh -c '{script}' {{tenant_dir}}")
    server.cli("tenant", "grant", "--pending", "globex", "slow__count")
    server.cli("tenant", "grant", "--pending", "acme", "slow__count")
    time.sleep(0.6)
    (server.data_dir / "tenants" / "globex" / "files" / "hang").write_text("")
    acme, globex = server.token("acme", "a"), server.token("globex", "g")
    assert modern_call(server.mcp_url, acme, "tools/list", {}).status_code == 200  # acme's views are listed
    waited: dict[str, float] = {}
    listed: dict[str, httpx2.Response] = {}

    def globex_first() -> None:
        started = time.monotonic()
        listed["globex"] = modern_call(server.mcp_url, globex, "tools/list", {})
        waited["globex"] = time.monotonic() - started

    thread = threading.Thread(target=globex_first)
    thread.start()
    time.sleep(0.5)
    slowest = 0.0
    while thread.is_alive():
        started = time.monotonic()
        answer = modern_call(server.mcp_url, acme, "tools/call", {"name": "slow__count", "arguments": {}})
        slowest = max(slowest, time.monotonic() - started)
        assert answer.json().get("result", {}).get("isError") is False, answer.text
        time.sleep(0.05)  # well within acme's call rate (50 a second): a refusal there is not what is tested
    thread.join()
    assert waited["globex"] > 3.0  # the hang happened, on globex's own request
    assert slowest < 1.5, slowest  # acme never waited for it
    tools = {t["name"]: t for t in listed["globex"].json()["result"]["tools"]}
    assert "slow__count" in tools and not tools["slow__count"].get("description"), tools.get("slow__count")
    called = modern_call(server.mcp_url, globex, "tools/call", {"name": "slow__count", "arguments": {}})
    assert called.json()["result"]["_meta"]["io.tenantry/error"]["code"] == "upstream_unavailable", called.text
    records = [r for r in server.audit_records("globex") if r.get("tool_name") == "slow__count"]
    assert any("upstream_unavailable" in json.dumps(r) for r in records), records


def upstream_dirs(server: RunningServer, upstream: str) -> set[str]:
    """The tenants for which a process of ``upstream`` was started (each runs in its own directory)."""
    return {p.parents[1].name for p in (server.data_dir / "tenants").glob(f"*/upstreams/{upstream}")}


def test_a_halted_tenant_is_never_the_one_an_upstream_is_listed_through(server: RunningServer) -> None:
    """The kill switch refuses every request of the tenant: the gateway must not start a process
    (or use its credentials) in its name either, to list a newly added upstream. Positive control:
    the next tenant is listed through instead."""
    server.cli("tenant", "halt", "acme", "--reason", "attack test")
    time.sleep(0.6)
    try:
        added = server.cli("upstream", "add", "probe", "--command", f"{sys.executable} {NOTES} {{tenant_dir}}")
        assert "probe__count" in added.stdout, added.stdout
        time.sleep(2.0)  # the server's own discovery of it
        assert "acme" not in upstream_dirs(server, "probe")
        assert "globex" in upstream_dirs(server, "probe")
    finally:
        server.cli("tenant", "resume", "acme")
        time.sleep(0.6)


def test_a_tenant_granted_nothing_of_an_upstream_starts_no_process_of_it(server: RunningServer) -> None:
    """A new tenant with no grant of the per-tenant upstream lists nothing through it, whatever it
    asks. Positive control: globex, granted some of it, had its process started by its requests."""
    server.cli("tenant", "create", "initech", "--tools", "whoami")
    time.sleep(0.6)
    initech = server.token("initech", "i")
    for method in ("tools/list", "resources/list", "resources/templates/list", "prompts/list"):
        assert modern_call(server.mcp_url, initech, method, {}).status_code == 200
    called = modern_call(server.mcp_url, initech, "tools/call", {"name": "notes__count", "arguments": {}})
    assert called.status_code in (200, 400), called.text
    time.sleep(1.0)
    assert "initech" not in upstream_dirs(server, "notes")
    modern_call(server.mcp_url, server.token("globex", "g"), "tools/list", {})
    assert "globex" in upstream_dirs(server, "notes")
