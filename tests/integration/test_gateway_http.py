"""Gateway mode over streamable HTTP: a real third-party MCP server (``tests/support/upstream_server.py``)
behind a real Tenantry server, driven through the CLI and the wire only."""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.support import web
from tests.support.rpc import LegacySession
from tests.support.server import RunningServer, free_port, start_server

REPO = Path(__file__).parent.parent.parent
ACME_CREDENTIAL = "acme-upstream-credential-7f3a"
GLOBEX_CREDENTIAL = "globex-upstream-credential-91bc"
TOOLS = [
    "echo__echo",
    "echo__add",
    "echo__seen_headers",
    "echo__credential",
    "echo__nap",
    "echo__big",
    "echo__request_id",
    "echo__shaped",
    "echo__pictured",
    "echo__attached",
]


def start_upstream(*extra: str, port: int | None = None) -> tuple[subprocess.Popen[bytes], str]:
    port = port or free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.upstream_server", str(port), *extra],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return process, f"http://127.0.0.1:{port}/mcp"
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise AssertionError("the test upstream did not start")


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    process, url = start_upstream()
    yield url
    process.terminate()
    process.wait(10)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, upstream: str) -> Iterator[RunningServer]:
    # No health check during these tests: one landing between an upstream's restart and the next
    # call would renew the session first, and the restart test would not see the session lost.
    running = start_server(
        tmp_path_factory.mktemp("gateway-http") / "data", env={"TENANTRY_GATEWAY__HEALTH_INTERVAL": "3600"}
    )
    running.cli("secret", "set", "--tenant", "acme", "api_token", input=ACME_CREDENTIAL)
    running.cli("secret", "set", "--tenant", "globex", "api_token", input=GLOBEX_CREDENTIAL)
    added = running.cli(
        "upstream",
        "add",
        "echo",
        "--url",
        upstream,
        "--allow-private",
        "--header",
        "Authorization=Bearer {secret:api_token}",
    )
    assert "echo__echo" in added.stdout
    running.cli("tenant", "grant", "acme", *TOOLS)
    running.cli("tenant", "grant", "globex", "echo__credential", "echo__seen_headers", "echo__nap")
    wait_for_tool(running, "acme", "echo__echo")
    yield running
    running.stop()


def wait_for_tool(server: RunningServer, tenant: str, tool: str, *, present: bool = True, within: float = 10) -> float:
    session = LegacySession(server.mcp_url, server.token(tenant))
    started = time.monotonic()
    while time.monotonic() - started < within:
        if (tool in tool_names(session)) == present:
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"{tool} {'never appeared' if present else 'never went'} for {tenant}")


def tool_names(session: LegacySession) -> list[str]:
    return [t["name"] for t in session.call("tools/list", {}).json()["result"]["tools"]]


def call(session: LegacySession, name: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
    response = session.call("tools/call", {"name": name, "arguments": arguments or {}})
    assert response.status_code == 200, response.text
    return response.json()


def text_of(answer: dict[str, Any]) -> str:
    return "".join(c.get("text", "") for c in answer["result"]["content"])


def test_upstream_tools_are_served_under_the_naming_rule(server: RunningServer) -> None:
    session = LegacySession(server.mcp_url, server.token("acme"))
    names = tool_names(session)
    assert set(TOOLS) <= set(names) and "whoami" in names
    assert text_of(call(session, "echo__echo", {"text": "hello through the gateway"})) == "hello through the gateway"
    assert call(session, "echo__add", {"a": 2, "b": 40})["result"]["structuredContent"] == {"result": 42}


def test_the_upstream_sees_none_of_the_clients_headers(server: RunningServer) -> None:
    token = server.token("acme")
    session = LegacySession(server.mcp_url, token)
    response = session.call("tools/call", {"name": "echo__seen_headers", "arguments": {}}, token=token)
    seen = json.loads(text_of(response.json()))
    assert token not in json.dumps(seen)
    assert session.session_id not in json.dumps(seen)
    assert seen["authorization"] == "Bearer [redacted]"  # the tenant's own upstream credential, redacted
    assert not any(name.startswith(("x-forwarded", "cookie", "origin")) for name in seen)
    # Positive control: the client really sent its token to Tenantry (the call was authorised by it).
    assert response.status_code == 200


def test_each_tenant_reaches_the_upstream_with_its_own_credential_only(server: RunningServer) -> None:
    acme = LegacySession(server.mcp_url, server.token("acme"))
    globex = LegacySession(server.mcp_url, server.token("globex"))
    acme_text = text_of(call(acme, "echo__credential"))
    globex_text = text_of(call(globex, "echo__credential"))
    # Each echo is redacted of the caller's own secret; the other tenant's never shows up at all.
    assert acme_text == globex_text == "I was called with Bearer [redacted]"
    assert GLOBEX_CREDENTIAL not in acme_text and ACME_CREDENTIAL not in globex_text


def test_an_upstream_result_quoting_the_credential_is_redacted(server: RunningServer) -> None:
    session = LegacySession(server.mcp_url, server.token("acme"))
    answer = call(session, "echo__echo", {"text": f"leak {ACME_CREDENTIAL} please"})
    assert ACME_CREDENTIAL not in json.dumps(answer)
    assert "[redacted]" in text_of(answer)


def test_a_credential_inside_base64_content_is_redacted(server: RunningServer) -> None:
    session = LegacySession(server.mcp_url, server.token("acme"))
    image, embedded, plain = call(session, "echo__pictured")["result"]["content"]
    for encoded in (image["data"], embedded["resource"]["blob"]):
        decoded = base64.b64decode(encoded)
        assert ACME_CREDENTIAL.encode() not in decoded and decoded.startswith(b"token=Bearer ")
    # Positive control: binary content without a secret value arrives as the upstream sent it.
    assert base64.b64decode(plain["data"]) == b"plain pixels"
    # Content blocks returned as values are in the structured content too, base64 and all.
    answer = call(session, "echo__attached")["result"]
    blocks = [*answer["content"], *answer["structuredContent"]["result"]]
    encoded = [b.get("data") or b["resource"]["blob"] for b in blocks]
    assert len(encoded) == 4
    assert all(ACME_CREDENTIAL.encode() not in base64.b64decode(e) for e in encoded), encoded


def test_arguments_are_validated_against_the_upstreams_schema(server: RunningServer) -> None:
    session = LegacySession(server.mcp_url, server.token("acme"))
    refused = call(session, "echo__add", {"a": 1, "b": "two"})
    assert refused["error"]["data"]["code"] == "invalid_arguments"
    missing = call(session, "echo__add", {"a": 1})
    assert missing["error"]["data"]["code"] == "invalid_arguments"
    assert call(session, "echo__add", {"a": 1, "b": 2})["result"]["structuredContent"] == {"result": 3}


def test_a_catastrophic_upstream_pattern_costs_its_budget_not_the_servers_loop(server: RunningServer) -> None:
    # echo__shaped's schema has the pattern ^(a|a)*$: a backtracking engine would take hours for this value.
    acme = LegacySession(server.mcp_url, server.token("acme"))
    globex = LegacySession(server.mcp_url, server.token("globex"))
    started = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        attacks = [pool.submit(call, acme, "echo__shaped", {"code": "a" * 60 + "!"}) for _ in range(3)]
        others = []
        while not all(a.done() for a in attacks):
            began = time.monotonic()
            call(globex, "echo__credential")
            others.append(time.monotonic() - began)
        refused = [a.result() for a in attacks]
    assert all(r["error"]["data"]["code"] == "invalid_arguments" for r in refused), refused
    assert "took too long" in refused[0]["error"]["message"]
    assert time.monotonic() - started < 10
    assert max(others) < 1.0, others  # the other tenant was served meanwhile
    # Positive controls: a matching value passes the same pattern, a plainly wrong one is told why.
    assert text_of(call(acme, "echo__shaped", {"code": "aaaa"})) == "shaped aaaa"
    assert "does not match" in call(acme, "echo__shaped", {"code": "b"})["error"]["message"]


def test_an_ungranted_upstream_tool_is_refused_exactly_like_an_unknown_one(server: RunningServer) -> None:
    session = LegacySession(server.mcp_url, server.token("globex"))
    assert "echo__echo" not in tool_names(session)
    ungranted = call(session, "echo__echo", {"text": "x"})
    unknown = call(session, "echo__no_such_tool", {"text": "x"})
    assert ungranted["error"]["code"] == unknown["error"]["code"]
    assert ungranted["error"]["data"]["code"] == unknown["error"]["data"]["code"] == "tool_unavailable"
    assert ungranted["error"]["message"].replace("echo__echo", "X") == unknown["error"]["message"].replace(
        "echo__no_such_tool", "X"
    )
    # Positive control: a granted upstream tool works for the same session.
    assert text_of(call(session, "echo__credential")).startswith("I was called with")


def test_a_token_without_the_upstream_tool_cannot_call_it(server: RunningServer) -> None:
    session = LegacySession(server.mcp_url, server.token("acme", tools="whoami"))
    assert call(session, "echo__echo", {"text": "x"})["error"]["data"]["code"] == "tool_unavailable"
    assert "result" in call(session, "whoami")


def test_an_upstream_for_some_tenants_cannot_be_granted_to_others(server: RunningServer, upstream: str) -> None:
    server.cli("upstream", "add", "acme-only", "--url", upstream, "--allow-private", "--tenants", "acme")
    refused = server.cli("tenant", "grant", "globex", "acme-only__echo", check=False)
    assert refused.returncode == 1 and "other tenants only" in refused.stderr
    server.cli("tenant", "grant", "acme", "acme-only__echo")
    wait_for_tool(server, "acme", "acme-only__echo")
    server.cli("upstream", "remove", "acme-only")


def test_the_ssrf_guard_refuses_a_loopback_upstream_unless_allowed(server: RunningServer, upstream: str) -> None:
    refused = server.cli("upstream", "add", "loopback", "--url", upstream, check=False)
    assert refused.returncode == 1
    assert "private, loopback or link-local" in refused.stderr and "nothing was added" in refused.stderr
    assert "loopback" not in server.cli("upstream", "list", "--json").stdout
    for url in ("http://169.254.169.254/mcp", "http://[::1]:1/mcp", "http://10.0.0.1/mcp"):
        again = server.cli("upstream", "add", "metadata", "--url", url, "--connect-timeout", "2s", check=False)
        assert again.returncode == 1 and "private, loopback or link-local" in again.stderr, again.stderr
    # Positive control: the same URL with --allow-private is the fixture's upstream, which works.
    assert any(
        u["name"] == "echo" and u["state"] == "ready"
        for u in json.loads(server.cli("upstream", "list", "--json").stdout)
    )


def test_server_to_client_requests_of_an_upstream_are_refused(server: RunningServer) -> None:
    server.cli("tenant", "grant", "acme", "echo__ask_client")
    wait_for_tool(server, "acme", "echo__ask_client")
    session = LegacySession(server.mcp_url, server.token("acme"))
    assert text_of(call(session, "echo__ask_client")).startswith("refused: refused by the Tenantry gateway")


def test_an_oversized_upstream_result_is_refused_and_the_session_survives(server: RunningServer) -> None:
    session = LegacySession(server.mcp_url, server.token("acme"))
    answer = call(session, "echo__big", {"size": 10 * 1024 * 1024})
    assert answer["result"]["isError"] is True
    assert answer["result"]["_meta"]["io.tenantry/error"]["code"] == "result_too_large"
    assert text_of(call(session, "echo__echo", {"text": "still here"})) == "still here"


def test_a_halt_cancels_an_upstream_call_in_flight_and_tells_the_upstream(server: RunningServer) -> None:
    server.cli("tenant", "create", "napper", "--tools", "whoami")
    server.cli("secret", "set", "--tenant", "napper", "api_token", input="napper-credential")
    server.cli("tenant", "grant", "napper", "echo__nap")
    wait_for_tool(server, "napper", "echo__nap")
    session = LegacySession(server.mcp_url, server.token("napper"))
    label = f"halt-{time.time_ns()}"
    answers: list[dict[str, Any]] = []
    caller = threading.Thread(
        target=lambda: answers.append(call(session, "echo__nap", {"seconds": 30, "label": label}))
    )
    caller.start()
    time.sleep(1.0)
    server.cli("tenant", "halt", "napper", "--reason", "gateway test")
    halted_at = time.monotonic()  # the halt is stored (the CLI itself is slow on a loaded machine)
    caller.join(10)
    assert answers, "the call was not answered after the halt"
    assert time.monotonic() - halted_at < 3
    assert "result" in answers[0], answers[0]
    result = answers[0]["result"]
    assert result["isError"] is True and result["_meta"]["io.tenantry/error"]["code"] == "call_cancelled"
    # The upstream got notifications/cancelled for the request and stopped the nap.
    server.cli("tenant", "grant", "acme", "echo__cancellations")
    wait_for_tool(server, "acme", "echo__cancellations")
    bystander = LegacySession(server.mcp_url, server.token("acme"))
    deadline = time.monotonic() + 5
    while label not in text_of(call(bystander, "echo__cancellations")):
        assert time.monotonic() < deadline, "the upstream never heard of the cancellation"
        time.sleep(0.1)


def test_upstream_calls_are_audited_with_the_upstream_named(server: RunningServer) -> None:
    session = LegacySession(server.mcp_url, server.token("acme", "auditor-check"))
    call(session, "echo__echo", {"text": "audit me"})
    records = [r for r in server.audit_records("acme") if r.get("subject") == "auditor-check"]
    done = [r for r in records if r["event_type"] == "tool_call" and r["tool_name"] == "echo__echo"]
    assert done and done[-1]["detail"]["upstream"] == "echo" and done[-1]["detail"]["upstream_tool"] == "echo"
    assert "audit me" not in json.dumps(records)  # arguments are hashed, never stored
    assert done[-1]["args_hash"].startswith("sha256:")


def test_an_unreachable_upstream_answers_upstream_unavailable(server: RunningServer) -> None:
    url = f"http://127.0.0.1:{free_port()}/mcp"
    server.cli("upstream", "add", "gone", "--url", url, "--allow-private", "--no-check", "--connect-timeout", "2s")
    assert "gone" in server.cli("upstream", "list").stdout
    server.cli("upstream", "remove", "gone")


def test_a_removed_upstream_disappears_within_a_second_and_comes_back(server: RunningServer, upstream: str) -> None:
    server.cli("upstream", "add", "transient", "--url", upstream, "--allow-private")
    server.cli("tenant", "grant", "acme", "transient__echo")
    wait_for_tool(server, "acme", "transient__echo")
    session = LegacySession(server.mcp_url, server.token("acme"))
    server.cli("upstream", "remove", "transient")
    assert wait_for_tool(server, "acme", "transient__echo", present=False, within=1.5) <= 1.0
    gone = call(session, "transient__echo", {"text": "x"})
    assert gone["error"]["data"]["code"] == "tool_unavailable"
    server.cli("upstream", "add", "transient", "--url", upstream, "--allow-private")
    wait_for_tool(server, "acme", "transient__echo")
    assert text_of(call(session, "transient__echo", {"text": "back"})) == "back"
    server.cli("upstream", "remove", "transient")


def test_a_down_upstream_gives_a_clear_error_and_other_tenants_and_tools_carry_on(
    tmp_path: Path, server: RunningServer
) -> None:
    process, url = start_upstream()
    server.cli("upstream", "add", "fragile", "--url", url, "--allow-private", "--tenant-agnostic")
    server.cli("tenant", "grant", "acme", "fragile__echo")
    wait_for_tool(server, "acme", "fragile__echo")
    session = LegacySession(server.mcp_url, server.token("acme"))
    assert text_of(call(session, "fragile__echo", {"text": "up"})) == "up"
    process.kill()
    process.wait(10)
    down = call(session, "fragile__echo", {"text": "down?"})
    assert down["result"]["isError"] is True, down
    assert down["result"]["_meta"]["io.tenantry/error"]["code"] == "upstream_unavailable", down
    assert text_of(call(session, "echo__echo", {"text": "other upstream fine"})) == "other upstream fine"
    assert "result" in call(LegacySession(server.mcp_url, server.token("globex")), "whoami")
    server.cli("upstream", "remove", "fragile")


def test_an_upstream_listing_10000_tools_is_capped_and_reported(server: RunningServer) -> None:
    process, url = start_upstream("10000")
    try:
        added = server.cli("upstream", "add", "flood", "--url", url, "--allow-private", "--max-tools", "500")
        assert "added upstream flood with 500 tool(s)" in added.stdout
        assert "more tools than its --max-tools limit" in added.stderr
        listed = {u["name"]: u for u in json.loads(server.cli("upstream", "list", "--json").stdout)}["flood"]
        assert len(listed["tools"]) == 500
        assert {s["reason"] for s in listed["skipped"]} >= {"tool_limit"}
        session = LegacySession(server.mcp_url, server.token("acme"))
        assert text_of(call(session, "echo__echo", {"text": "unaffected"})) == "unaffected"
    finally:
        server.cli("upstream", "remove", "flood", check=False)
        process.terminate()
        process.wait(10)


def test_overlong_and_invalid_upstream_tool_names_are_reported_not_dropped(server: RunningServer) -> None:
    process, url = start_upstream("3")
    try:
        added = server.cli("upstream", "add", "oddnames", "--url", url, "--allow-private")
        listed = {u["name"]: u for u in json.loads(server.cli("upstream", "list", "--json").stdout)}["oddnames"]
        reasons = {s["tool"]: s["reason"] for s in listed["skipped"]}
        assert reasons["x" * 127] == "name_too_long"
        assert reasons["has space"] == "invalid_name"
        assert "oddnames__t00000" in listed["tools"]
        assert "name_too_long" in server.cli("upstream", "list").stdout
        assert "not exposed" in added.stderr
    finally:
        server.cli("upstream", "remove", "oddnames", check=False)
        process.terminate()
        process.wait(10)


def test_the_upstreams_tools_list_changed_is_honoured(server: RunningServer, upstream: str) -> None:
    process, url = start_upstream()
    try:
        server.cli("upstream", "add", "growing", "--url", url, "--allow-private", "--tenant-agnostic")
        server.cli("tenant", "grant", "acme", "growing__grow", "growing__sprouted", "--pending")
        session = LegacySession(server.mcp_url, server.token("acme"))
        wait_for_tool(server, "acme", "growing__grow")
        assert "growing__sprouted" not in tool_names(session)
        assert text_of(call(session, "growing__grow", {"name": "sprouted"})) == "grown"
        wait_for_tool(server, "acme", "growing__sprouted", within=5)
        assert text_of(call(session, "growing__sprouted")) == "sprouted is here"
    finally:
        server.cli("upstream", "remove", "growing", check=False)
        process.terminate()
        process.wait(10)


def test_a_hanging_upstream_call_times_out_and_others_carry_on(server: RunningServer, upstream: str) -> None:
    server.cli("upstream", "add", "slowpoke", "--url", upstream, "--allow-private", "--timeout", "2s")
    server.cli("tenant", "grant", "acme", "slowpoke__nap")
    wait_for_tool(server, "acme", "slowpoke__nap")
    session = LegacySession(server.mcp_url, server.token("acme"))
    answers: list[dict[str, Any]] = []
    caller = threading.Thread(target=lambda: answers.append(call(session, "slowpoke__nap", {"seconds": 60})))
    started = time.monotonic()
    caller.start()
    time.sleep(0.3)
    other = LegacySession(server.mcp_url, server.token("globex"))
    assert text_of(call(other, "echo__credential")).startswith("I was called with")  # not held up
    caller.join(15)
    assert answers and time.monotonic() - started < 10
    result = answers[0]["result"]
    assert result["isError"] is True and result["_meta"]["io.tenantry/error"]["code"] == "tool_timeout"
    server.cli("upstream", "remove", "slowpoke")


def test_upstream_calls_are_counted_in_the_metrics_under_their_tool_name(server: RunningServer) -> None:

    session = LegacySession(server.mcp_url, server.token("acme"))
    call(session, "echo__echo", {"text": "count me"})
    token = (server.data_dir / "keys" / "metrics.token").read_text().strip()
    text = web.get(server.base_url + "/metrics", headers={"Authorization": f"Bearer {token}"}).text
    assert any('tool="echo__echo"' in line and 'tenant="acme"' in line for line in text.splitlines())


def test_calls_to_an_http_upstream_take_the_direct_path(server: RunningServer) -> None:
    # The direct path's request ids are its own strings (the SDK session numbers its requests), so
    # every other test here exercises it; this one proves it is taken.
    session = LegacySession(server.mcp_url, server.token("acme"))
    assert text_of(call(session, "echo__request_id")).startswith("'tenantry-")
    assert text_of(call(session, "echo__echo", {"text": "and answers"})) == "and answers"


def test_an_upstream_answering_in_json_is_served_and_its_answers_are_bounded(server: RunningServer) -> None:
    process, url = start_upstream("--json")
    try:
        server.cli("upstream", "add", "jsonly", "--url", url, "--allow-private")
        server.cli("tenant", "grant", "acme", "jsonly__echo", "jsonly__big")
        wait_for_tool(server, "acme", "jsonly__big")
        session = LegacySession(server.mcp_url, server.token("acme"))
        assert text_of(call(session, "jsonly__echo", {"text": "plain json"})) == "plain json"
        assert text_of(call(session, "jsonly__big", {"size": 1000})) == "x" * 1000  # positive control
        answer = call(session, "jsonly__big", {"size": 10 * 1024 * 1024})
        assert answer["result"]["_meta"]["io.tenantry/error"]["code"] == "result_too_large", answer
        assert text_of(call(session, "jsonly__echo", {"text": "still here"})) == "still here"
    finally:
        server.cli("upstream", "remove", "jsonly", check=False)
        process.terminate()
        process.wait(10)


def test_an_upstream_that_restarts_loses_its_session_and_the_gateway_starts_a_new_one(server: RunningServer) -> None:
    port = free_port()
    process, url = start_upstream(port=port)
    try:
        server.cli("upstream", "add", "phoenix", "--url", url, "--allow-private")
        server.cli("tenant", "grant", "acme", "phoenix__echo")
        wait_for_tool(server, "acme", "phoenix__echo")
        session = LegacySession(server.mcp_url, server.token("acme"))
        assert text_of(call(session, "phoenix__echo", {"text": "first life"})) == "first life"
        process.terminate()
        process.wait(10)
        process, _ = start_upstream(port=port)  # the same address; it knows nothing of the old session
        lost = call(session, "phoenix__echo", {"text": "which session?"})
        assert lost["result"]["_meta"]["io.tenantry/error"]["code"] == "upstream_unavailable", lost
        deadline = time.monotonic() + 15
        while "result" not in (answer := call(session, "phoenix__echo", {"text": "second life"})) or answer[
            "result"
        ].get("isError"):
            assert time.monotonic() < deadline, answer
            time.sleep(0.2)
        assert text_of(answer) == "second life"
    finally:
        server.cli("upstream", "remove", "phoenix", check=False)
        process.terminate()
        process.wait(10)


def test_a_call_whose_event_stream_the_upstream_closes_early_is_resumed(server: RunningServer) -> None:
    process, url = start_upstream("--resumable")
    try:
        server.cli("upstream", "add", "resumer", "--url", url, "--allow-private")
        server.cli("tenant", "grant", "acme", "resumer__interrupted", "resumer__echo")
        wait_for_tool(server, "acme", "resumer__interrupted")
        session = LegacySession(server.mcp_url, server.token("acme"))
        assert text_of(call(session, "resumer__echo", {"text": "resumable"})) == "resumable"
        answer = call(session, "resumer__interrupted")
        assert text_of(answer) == "answered after the stream was resumed", answer
    finally:
        server.cli("upstream", "remove", "resumer", check=False)
        process.terminate()
        process.wait(10)
