"""Gateway mode: an upstream's resources, resource templates and prompts, served through a real
Tenantry server in front of a real third-party MCP server (``tests/support/upstream_server.py``)
over streamable HTTP, driven through the CLI and the wire only."""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.test_gateway_http import start_upstream, upstream  # noqa: F401 - the shared upstream fixture
from tests.support.rpc import LegacySession, modern_call
from tests.support.server import RunningServer, start_server

ACME_CREDENTIAL = "acme-resource-credential-5d1e"
GLOBEX_CREDENTIAL = "globex-resource-credential-2c7a"
ITEMS = ["notes__readme", "notes__topic_notes", "notes__raw_notes", "notes__summarise", "notes__big_notes"]
README = "upstream://notes/notes://readme"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, upstream: str) -> Iterator[RunningServer]:  # noqa: F811
    running = start_server(tmp_path_factory.mktemp("gateway-resources") / "data")
    running.cli("secret", "set", "--tenant", "acme", "api_token", input=ACME_CREDENTIAL)
    running.cli("secret", "set", "--tenant", "globex", "api_token", input=GLOBEX_CREDENTIAL)
    added = running.cli(
        "upstream",
        "add",
        "notes",
        "--url",
        upstream,
        "--allow-private",
        "--header",
        "Authorization=Bearer {secret:api_token}",
    )
    assert "notes__readme" in added.stdout and "notes__summarise" in added.stdout
    running.cli("tenant", "grant", "acme", *ITEMS, "notes__completions", "notes__linked")
    running.cli("tenant", "grant", "globex", "notes__echo")
    wait_for(running, "acme", README)
    yield running
    running.stop()


def resource_uris(session: LegacySession) -> list[str]:
    return [r["uri"] for r in session.call("resources/list", {}).json()["result"]["resources"]]


def wait_for(server: RunningServer, tenant: str, uri: str, *, within: float = 10) -> None:
    session = LegacySession(server.mcp_url, server.token(tenant))
    deadline = time.monotonic() + within
    while uri not in resource_uris(session):
        assert time.monotonic() < deadline, f"{uri} never appeared for {tenant}"
        time.sleep(0.05)


def read(session: LegacySession, uri: str) -> dict[str, Any]:
    response = session.call("resources/read", {"uri": uri})
    assert response.status_code == 200, response.text
    return response.json()


def get_prompt(session: LegacySession, name: str, arguments: dict[str, str]) -> dict[str, Any]:
    response = session.call("prompts/get", {"name": name, "arguments": arguments})
    assert response.status_code == 200, response.text
    return response.json()


def test_upstream_resources_templates_and_prompts_are_listed_under_the_naming_rule(server: RunningServer) -> None:
    session = LegacySession(server.mcp_url, server.token("acme"))
    resources = session.call("resources/list", {}).json()["result"]["resources"]
    assert {"uri": README, "name": "notes__readme"}.items() <= next(r for r in resources if r["uri"] == README).items()
    templates = session.call("resources/templates/list", {}).json()["result"]["resourceTemplates"]
    assert {t["uriTemplate"]: t["name"] for t in templates} == {
        "upstream://notes/notes://by-topic/{topic}": "notes__topic_notes",
        "upstream://notes/notes://raw/{topic}": "notes__raw_notes",
        "upstream://notes/big://{size}": "notes__big_notes",
    }
    prompts = session.call("prompts/list", {}).json()["result"]["prompts"]
    assert [(p["name"], [a["name"] for a in p["arguments"]]) for p in prompts] == [
        ("notes__summarise", ["topic", "style"])
    ]
    listed = {u["name"]: u for u in json.loads(server.cli("upstream", "list", "--json").stdout)}["notes"]
    assert "notes__readme" in listed["resources"] and listed["prompts"] == ["notes__summarise"]


def test_a_granted_tenant_reads_the_upstreams_resources(server: RunningServer) -> None:
    session = LegacySession(server.mcp_url, server.token("acme"))
    contents = read(session, README)["result"]["contents"]
    assert contents == [{"uri": README, "mimeType": "text/markdown", "text": "# the upstream's readme"}]
    topic = read(session, "upstream://notes/notes://by-topic/q3")["result"]["contents"][0]
    assert topic["uri"] == "upstream://notes/notes://by-topic/q3"
    assert topic["text"].startswith("notes on q3; I was called with Bearer ")


def test_a_secret_echoed_by_an_upstream_resource_or_prompt_is_redacted(server: RunningServer) -> None:
    session = LegacySession(server.mcp_url, server.token("acme"))
    text = read(session, "upstream://notes/notes://by-topic/q3")
    blob = read(session, "upstream://notes/notes://raw/q3")
    prompt = get_prompt(session, "notes__summarise", {"topic": "q3"})
    for answer in (text, blob, prompt):
        assert ACME_CREDENTIAL not in json.dumps(answer), answer
    assert text["result"]["contents"][0]["text"] == "notes on q3; I was called with Bearer [redacted]"
    raw = base64.b64decode(blob["result"]["contents"][0]["blob"])
    assert raw == b"raw q3; I was called with Bearer [redacted]"  # inside the base64 as well
    message = prompt["result"]["messages"][0]["content"]["text"]
    assert message == "Summarise q3 (short) for the holder of Bearer [redacted]"


def test_the_same_uri_reaches_each_tenants_own_upstream_session_only(server: RunningServer) -> None:
    server.cli("tenant", "grant", "globex", "notes__topic_notes")
    wait_for_template(server, "globex", "upstream://notes/notes://by-topic/{topic}")
    uri = "upstream://notes/notes://by-topic/shared"
    acme = read(LegacySession(server.mcp_url, server.token("acme")), uri)
    globex = read(LegacySession(server.mcp_url, server.token("globex")), uri)
    # Each read carried the caller's own credential: redacted by the caller's own secrets. Had
    # globex's read gone through acme's session, acme's credential would show in clear.
    for answer in (acme, globex):
        assert answer["result"]["contents"][0]["text"] == "notes on shared; I was called with Bearer [redacted]"
    assert ACME_CREDENTIAL not in json.dumps(globex) and GLOBEX_CREDENTIAL not in json.dumps(acme)
    server.cli("tenant", "ungrant", "globex", "notes__topic_notes")


def test_an_ungranted_upstream_resource_is_refused_exactly_like_an_unknown_one(server: RunningServer) -> None:
    session = LegacySession(server.mcp_url, server.token("globex"))
    assert README not in resource_uris(session)
    ungranted = read(session, README)
    unknown = read(session, "upstream://notes/notes://no-such-note")
    assert ungranted["error"]["code"] == unknown["error"]["code"]
    assert ungranted["error"]["message"] == unknown["error"]["message"] == "Resource not found"
    assert ungranted["error"]["data"]["uri"] == README and unknown["error"]["data"]["uri"].endswith("no-such-note")
    assert {k: v for k, v in ungranted["error"]["data"].items() if k != "uri"} == {
        k: v for k, v in unknown["error"]["data"].items() if k != "uri"
    }
    assert GLOBEX_CREDENTIAL not in json.dumps(ungranted)
    # Positive control: the same URI is readable by the tenant it is granted to.
    assert "result" in read(LegacySession(server.mcp_url, server.token("acme")), README)


def test_an_ungranted_upstream_prompt_is_refused_exactly_like_an_unknown_one(server: RunningServer) -> None:
    session = LegacySession(server.mcp_url, server.token("globex"))
    ungranted = get_prompt(session, "notes__summarise", {"topic": "q3"})
    unknown = get_prompt(session, "notes__no_such_prompt", {"topic": "q3"})
    assert ungranted["error"]["code"] == unknown["error"]["code"]
    assert ungranted["error"]["data"]["code"] == unknown["error"]["data"]["code"]
    assert ungranted["error"]["message"].replace("notes__summarise", "X") == unknown["error"]["message"].replace(
        "notes__no_such_prompt", "X"
    )
    assert "result" in get_prompt(
        LegacySession(server.mcp_url, server.token("acme")), "notes__summarise", {"topic": "a"}
    )


def test_a_token_without_the_upstream_resource_cannot_read_it(server: RunningServer) -> None:
    session = LegacySession(server.mcp_url, server.token("acme", tools="notes__topic_notes"))
    assert read(session, README)["error"]["message"] == "Resource not found"
    assert "result" in read(session, "upstream://notes/notes://by-topic/x")  # the one it holds


def test_undeclared_or_missing_prompt_arguments_never_reach_the_upstream(server: RunningServer) -> None:
    session = LegacySession(server.mcp_url, server.token("acme"))
    assert get_prompt(session, "notes__summarise", {})["error"]["data"]["code"] == "invalid_arguments"
    extra = get_prompt(session, "notes__summarise", {"topic": "a", "sneaky": "b"})
    assert extra["error"]["data"]["code"] == "invalid_arguments"
    assert "result" in get_prompt(session, "notes__summarise", {"topic": "a", "style": "long"})


def test_upstream_reads_and_prompts_are_audited_with_the_upstream_named(server: RunningServer) -> None:
    session = LegacySession(server.mcp_url, server.token("acme", "resource-auditor"))
    read(session, "upstream://notes/notes://by-topic/private-topic")
    get_prompt(session, "notes__summarise", {"topic": "private-prompt-topic"})
    records = [r for r in server.audit_records("acme") if r.get("subject") == "resource-auditor"]
    reads = [r for r in records if r["event_type"] == "resource_read"]
    prompts = [r for r in records if r["event_type"] == "prompt_get"]
    assert reads and reads[-1]["tool_name"] == "notes__topic_notes" and reads[-1]["result_status"] == "ok"
    assert reads[-1]["detail"] == {"upstream": "notes", "upstream_resource": "topic_notes"}
    assert prompts and prompts[-1]["detail"] == {"upstream": "notes", "upstream_prompt": "summarise"}
    assert "private-topic" not in json.dumps(records) and "private-prompt-topic" not in json.dumps(records)
    assert reads[-1]["args_hash"].startswith("sha256:")


def test_an_oversized_upstream_resource_is_refused_and_the_session_survives(server: RunningServer) -> None:
    session = LegacySession(server.mcp_url, server.token("acme"))
    answer = read(session, f"upstream://notes/big://{10 * 1024 * 1024}")
    assert answer["error"]["data"]["code"] == "result_too_large", answer
    assert "result" in read(session, README)


def test_a_halt_cancels_an_upstream_read_in_flight_and_tells_the_upstream(server: RunningServer) -> None:
    server.cli("tenant", "create", "reader", "--tools", "whoami")
    server.cli("secret", "set", "--tenant", "reader", "api_token", input="reader-credential")
    server.cli("tenant", "grant", "reader", "notes__slow_notes")
    wait_for_template(server, "reader", "upstream://notes/naps://{label}")
    token = server.token("reader", "halted-reader")
    label = f"halt-{time.time_ns()}"
    answers: list[dict[str, Any]] = []
    # Sessionless (2026-07-28): no session for the halt to close under the request, so its answer shows.
    caller = threading.Thread(
        target=lambda: answers.append(
            modern_call(server.mcp_url, token, "resources/read", {"uri": f"upstream://notes/naps://{label}"}).json()
        )
    )
    caller.start()
    time.sleep(1.0)
    server.cli("tenant", "halt", "reader", "--reason", "gateway resource test")
    halted_at = time.monotonic()
    caller.join(10)
    assert answers, "the read was not answered after the halt"
    assert time.monotonic() - halted_at < 3
    assert answers[0]["error"]["data"]["code"] == "call_cancelled", answers[0]
    records = [r for r in server.audit_records("reader") if r.get("subject") == "halted-reader"]
    assert [r["result_status"] for r in records if r["event_type"] == "resource_read"] == ["cancelled"]
    # The upstream got notifications/cancelled for the read and stopped it.
    server.cli("tenant", "grant", "acme", "notes__cancellations", "--pending")
    bystander = LegacySession(server.mcp_url, server.token("acme"))
    deadline = time.monotonic() + 10
    while label not in json.dumps(bystander.call("tools/call", {"name": "notes__cancellations"}).json()):
        assert time.monotonic() < deadline, "the upstream never heard of the cancellation"
        time.sleep(0.1)


def wait_for_template(server: RunningServer, tenant: str, template: str, within: float = 10) -> None:
    session = LegacySession(server.mcp_url, server.token(tenant))
    deadline = time.monotonic() + within
    while True:
        listed = session.call("resources/templates/list", {}).json()["result"]["resourceTemplates"]
        if template in [t["uriTemplate"] for t in listed]:
            return
        assert time.monotonic() < deadline, f"{template} never appeared for {tenant}"
        time.sleep(0.05)


def test_a_down_upstream_answers_upstream_unavailable_for_reads_and_prompts(server: RunningServer) -> None:
    process, url = start_upstream()
    server.cli("upstream", "add", "fragile", "--url", url, "--allow-private", "--tenant-agnostic")
    server.cli("tenant", "grant", "acme", "fragile__readme", "fragile__summarise")
    wait_for(server, "acme", "upstream://fragile/notes://readme")
    session = LegacySession(server.mcp_url, server.token("acme"))
    assert "result" in read(session, "upstream://fragile/notes://readme")
    process.kill()
    process.wait(10)
    down = read(session, "upstream://fragile/notes://readme")
    assert down["error"]["data"]["code"] == "upstream_unavailable", down
    prompt = get_prompt(session, "fragile__summarise", {"topic": "x"})
    assert prompt["error"]["data"]["code"] == "upstream_unavailable", prompt
    assert "result" in read(session, README)  # the other upstream carries on
    server.cli("upstream", "remove", "fragile")


def test_an_upstream_listing_10000_resources_is_capped_and_reported(server: RunningServer) -> None:
    process, url = start_upstream("10000")
    try:
        server.cli("upstream", "add", "heaps", "--url", url, "--allow-private", "--max-tools", "500")
        listed = {u["name"]: u for u in json.loads(server.cli("upstream", "list", "--json").stdout)}["heaps"]
        reasons = {(s["kind"], s["tool"]): s["reason"] for s in listed["skipped"]}
        generated = [r for r in listed["resources"] if re.fullmatch(r"heaps__r\d{5}", r)]
        assert len(generated) == 498 and "heaps__readme" in listed["resources"]  # 500 with readme and live_notes
        assert reasons[("resource", "r00498")] == "item_limit"
        session = LegacySession(server.mcp_url, server.token("acme"))
        assert "result" in read(session, README)  # nobody else is affected
    finally:
        server.cli("upstream", "remove", "heaps", check=False)
        process.terminate()
        process.wait(10)


def test_odd_resource_names_and_uris_are_reported_not_dropped(server: RunningServer) -> None:
    process, url = start_upstream("3")
    try:
        added = server.cli("upstream", "add", "oddres", "--url", url, "--allow-private")
        listed = {u["name"]: u for u in json.loads(server.cli("upstream", "list", "--json").stdout)}["oddres"]
        reasons = {(s["kind"], s["tool"]): s["reason"] for s in listed["skipped"]}
        assert reasons[("resource", "Has Space")] == "invalid_name"
        assert reasons[("resource", "long_uri")] == "uri_too_long"
        assert "oddres__r00000" in listed["resources"]
        assert "not exposed: resource 'Has Space'" in added.stderr
    finally:
        server.cli("upstream", "remove", "oddres", check=False)
        process.terminate()
        process.wait(10)


def test_the_upstreams_resources_list_changed_is_honoured(server: RunningServer) -> None:
    process, url = start_upstream()
    try:
        server.cli("upstream", "add", "growing", "--url", url, "--allow-private", "--tenant-agnostic")
        server.cli("tenant", "grant", "acme", "growing__add_note", "growing__sprouted", "--pending")
        session = LegacySession(server.mcp_url, server.token("acme"))
        deadline = time.monotonic() + 10
        while "growing__add_note" not in json.dumps(session.call("tools/list", {}).json()):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert "upstream://growing/notes://added/sprouted" not in resource_uris(session)
        noted = session.call("tools/call", {"name": "growing__add_note", "arguments": {"name": "sprouted"}}).json()
        assert "noted" in json.dumps(noted)
        wait_for(server, "acme", "upstream://growing/notes://added/sprouted", within=5)
        contents = read(session, "upstream://growing/notes://added/sprouted")["result"]["contents"]
        assert contents[0]["text"] == "note sprouted"
    finally:
        server.cli("upstream", "remove", "growing", check=False)
        process.terminate()
        process.wait(10)


TOPIC_TEMPLATE = "upstream://notes/notes://by-topic/{topic}"


def complete(
    session: LegacySession, ref: dict[str, str], argument: str, value: str, context: dict[str, str] | None = None
) -> dict[str, Any]:
    params: dict[str, Any] = {"ref": ref, "argument": {"name": argument, "value": value}}
    if context is not None:
        params["context"] = {"arguments": context}
    response = session.call("completion/complete", params)
    assert response.status_code == 200, response.text
    return response.json()


def prompt_ref(name: str) -> dict[str, str]:
    return {"type": "ref/prompt", "name": name}


def template_ref(uri: str) -> dict[str, str]:
    return {"type": "ref/resource", "uri": uri}


def upstream_completions(session: LegacySession) -> list[dict[str, Any]]:
    answer = session.call("tools/call", {"name": "notes__completions", "arguments": {}}).json()
    log: list[dict[str, Any]] = answer["result"]["structuredContent"]["result"]
    return log


def test_completions_of_an_upstream_prompt_and_template_come_from_the_upstream(server: RunningServer) -> None:
    session = LegacySession(server.mcp_url, server.token("acme"))
    by_prompt = complete(session, prompt_ref("notes__summarise"), "topic", "inv", {"style": "long"})
    assert by_prompt["result"]["completion"]["values"] == ["inventory", "invoices"]
    by_template = complete(session, template_ref(TOPIC_TEMPLATE), "topic", "in")
    assert by_template["result"]["completion"]["values"] == ["interviews", "inventory", "invoices"]
    # The upstream was asked about its own items, by their own names, with the chosen context.
    asked = upstream_completions(session)[-2:]
    assert asked == [
        {"ref": "summarise", "argument": "topic", "context": {"style": "long"}},
        {"ref": "notes://by-topic/{topic}", "argument": "topic", "context": None},
    ]


def test_completion_cannot_probe_for_another_tenants_items(server: RunningServer) -> None:
    globex = LegacySession(server.mcp_url, server.token("globex"))
    answers = [
        complete(globex, prompt_ref("notes__summarise"), "topic", "in"),  # exists, not granted to globex
        complete(globex, prompt_ref("notes__no_such_prompt"), "topic", "in"),
        complete(globex, template_ref(TOPIC_TEMPLATE), "topic", "in"),
        complete(globex, template_ref("upstream://notes/notes://nothing/{topic}"), "topic", "in"),
    ]
    assert all(a["result"] == {"completion": {"values": []}} for a in answers), answers
    # Positive control: the tenant it is granted to gets the upstream's values.
    acme = LegacySession(server.mcp_url, server.token("acme"))
    assert complete(acme, prompt_ref("notes__summarise"), "topic", "in")["result"]["completion"]["values"]


def test_a_completion_for_an_undeclared_argument_never_reaches_the_upstream(server: RunningServer) -> None:
    session = LegacySession(server.mcp_url, server.token("acme"))
    before = len(upstream_completions(session))
    answer = complete(session, prompt_ref("notes__summarise"), "not_an_argument", "in", {"undeclared": "x"})
    assert answer["result"] == {"completion": {"values": []}}
    assert len(upstream_completions(session)) == before
    # Undeclared context arguments are dropped before the upstream sees them.
    complete(session, prompt_ref("notes__summarise"), "topic", "in", {"undeclared": "x", "style": "s"})
    assert upstream_completions(session)[-1]["context"] == {"style": "s"}


def test_completions_are_redacted_and_bounded(server: RunningServer) -> None:
    session = LegacySession(server.mcp_url, server.token("acme"))
    leaked = complete(session, prompt_ref("notes__summarise"), "topic", "leak")
    assert leaked["result"]["completion"]["values"], leaked  # the upstream answered...
    assert ACME_CREDENTIAL not in json.dumps(leaked)  # ...without the tenant's credential
    many = complete(session, template_ref(TOPIC_TEMPLATE), "topic", "many")["result"]["completion"]
    assert len(many["values"]) == 100 and many["hasMore"] is True and many["total"] == 500
    too_long = complete(session, prompt_ref("notes__summarise"), "topic", "x" * 5000)
    assert "longer than 4096 characters" in too_long["error"]["message"]


def test_resources_named_in_an_upstream_answer_are_named_by_their_exposed_uri(server: RunningServer) -> None:
    session = LegacySession(server.mcp_url, server.token("acme"))
    answer = session.call("tools/call", {"name": "notes__linked", "arguments": {}}).json()
    link, embedded = answer["result"]["content"]
    assert link["type"] == "resource_link" and link["uri"] == README
    assert embedded["type"] == "resource" and embedded["resource"]["uri"] == README
    # The link leads back through Tenantry, to the same upstream, under the caller's grants.
    assert read(session, link["uri"])["result"]["contents"][0]["uri"] == README
