"""Gateway mode: ``resources/subscribe`` of an upstream's resource relayed to the upstream through
the calling tenant's own session, and the upstream's updates pushed to that tenant's subscribed
sessions only. A real Tenantry server in front of a real MCP server over streamable HTTP
(``tests/support/upstream_server.py``), driven through the wire only."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

from tests.integration.test_gateway_http import start_upstream, upstream  # noqa: F401 - the shared upstream fixture
from tests.support import web
from tests.support.rpc import LegacySession
from tests.support.server import RunningServer, free_port, start_server

ACME_CREDENTIAL = "acme-subscription-credential-6b2e"
GLOBEX_CREDENTIAL = "globex-subscription-credential-0d4f"
LIVE = "upstream://live/notes://live"
UPDATED = "notifications/resources/updated"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, upstream: str) -> Iterator[RunningServer]:  # noqa: F811
    running = start_server(tmp_path_factory.mktemp("gateway-subscriptions") / "data")
    running.cli("secret", "set", "--tenant", "acme", "api_token", input=ACME_CREDENTIAL)
    running.cli("secret", "set", "--tenant", "globex", "api_token", input=GLOBEX_CREDENTIAL)
    running.cli(
        "upstream",
        "add",
        "live",
        "--url",
        upstream,
        "--allow-private",
        "--header",
        "Authorization=Bearer {secret:api_token}",
    )
    shared = ("live__live_notes", "live__topic_notes", "live__touch")
    running.cli("tenant", "grant", "acme", *shared, "live__subscriptions")
    running.cli("tenant", "grant", "globex", *shared)
    yield running
    running.stop()


class Listener:
    """What one session's standalone stream pushes, collected in a thread."""

    def __init__(self, server: RunningServer, session: LegacySession, seconds: float = 20) -> None:
        self.heard: list[dict[str, Any]] = []
        self._opened = threading.Event()
        headers = {**session.headers(), "Authorization": f"Bearer {session.token}", "Accept": "text/event-stream"}

        def run() -> None:
            try:
                with web.stream("GET", server.mcp_url, headers=headers, timeout=httpx2.Timeout(seconds)) as stream:
                    self._opened.set()
                    for line in stream.iter_lines():
                        if line.startswith("data:"):
                            self.heard.append(json.loads(line[5:]))
            except httpx2.HTTPError:
                pass

        threading.Thread(target=run, daemon=True).start()
        assert self._opened.wait(10)
        time.sleep(0.3)  # the server side of the stream is attached

    def updates(self) -> list[str]:
        return [m["params"]["uri"] for m in self.heard if m.get("method") == UPDATED]

    def wait_for(self, uri: str, seconds: float = 5.0) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if uri in self.updates():
                return True
            time.sleep(0.05)
        return False


def session_of(server: RunningServer, tenant: str) -> LegacySession:
    session = LegacySession(server.mcp_url, server.token(tenant))
    session.call("resources/list", {})  # the tenant's view of the upstream is listed
    return session


def ok(response: httpx2.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert "error" not in body, body
    return body


def subscribe(session: LegacySession, uri: str) -> dict[str, Any]:
    return ok(session.call("resources/subscribe", {"uri": uri}))


def touch(session: LegacySession, uri: str, times: int = 1) -> None:
    answer = ok(session.call("tools/call", {"name": "live__touch", "arguments": {"uri": uri, "times": times}}))
    assert not answer["result"].get("isError"), answer


def upstream_log(session: LegacySession) -> list[list[str]]:
    answer = ok(session.call("tools/call", {"name": "live__subscriptions", "arguments": {}}))
    log: list[list[str]] = answer["result"]["structuredContent"]["result"]
    return log


def topic() -> tuple[str, str]:
    """A fresh upstream URI (of the upstream's template) and its exposed form."""
    own = f"notes://by-topic/t{uuid.uuid4().hex[:8]}"
    return own, f"upstream://live/{own}"


def test_a_subscribed_session_hears_its_upstreams_update_under_the_exposed_uri(server: RunningServer) -> None:
    acme = session_of(server, "acme")
    listener = Listener(server, acme)
    subscribe(acme, LIVE)
    touch(acme, "notes://live")
    assert listener.wait_for(LIVE), listener.heard
    assert "notes://live" not in listener.updates()  # never the upstream's own URI
    # Relayed through acme's own session: the upstream saw acme's credential (redacted in the answer).
    assert ["subscribe", "notes://live", "Bearer [redacted]"] in upstream_log(acme)


def test_another_tenants_update_never_reaches_a_session_subscribed_to_the_same_uri(server: RunningServer) -> None:
    """acme's upstream session is told of an update: globex's session, subscribed to the same
    exposed URI (through its own upstream session), hears nothing. Positive control: globex's
    own update reaches it, on the same stream."""
    acme, globex = session_of(server, "acme"), session_of(server, "globex")
    acme_hears, globex_hears = Listener(server, acme), Listener(server, globex)
    subscribe(acme, LIVE)
    subscribe(globex, LIVE)
    touch(acme, "notes://live")
    assert acme_hears.wait_for(LIVE)
    time.sleep(1.5)
    assert globex_hears.updates() == [], globex_hears.heard
    touch(globex, "notes://live")
    assert globex_hears.wait_for(LIVE), globex_hears.heard
    # Each tenant subscribed with its own credential (acme's answer shows globex's, which is not redacted for acme).
    log = upstream_log(acme)
    assert ["subscribe", "notes://live", f"Bearer {GLOBEX_CREDENTIAL}"] in log


def test_a_session_that_subscribed_to_nothing_hears_no_update(server: RunningServer) -> None:
    """Positive control: the tenant's subscribed session hears the same update."""
    subscribed, idle = session_of(server, "acme"), session_of(server, "acme")
    subscribed_hears, idle_hears = Listener(server, subscribed), Listener(server, idle)
    subscribe(subscribed, LIVE)
    touch(idle, "notes://live")
    assert subscribed_hears.wait_for(LIVE)
    time.sleep(1.0)
    assert idle_hears.updates() == [], idle_hears.heard


def test_an_update_nobody_subscribed_to_is_not_pushed(server: RunningServer) -> None:
    acme = session_of(server, "acme")
    listener = Listener(server, acme)
    own, exposed = topic()
    subscribe(acme, LIVE)
    touch(acme, own)
    touch(acme, "notes://live")  # positive control, after the other
    assert listener.wait_for(LIVE)
    assert exposed not in listener.updates()


def test_unsubscribe_stops_updates_and_the_last_one_releases_the_upstream_subscription(
    server: RunningServer,
) -> None:
    own, exposed = topic()
    first, second = session_of(server, "acme"), session_of(server, "acme")
    first_hears, second_hears = Listener(server, first), Listener(server, second)
    subscribe(first, exposed)
    subscribe(second, exposed)
    assert [e[:2] for e in upstream_log(first)].count(["subscribe", own]) == 1  # once per tenant and URI
    ok(first.call("resources/unsubscribe", {"uri": exposed}))
    assert ["unsubscribe", own] not in [e[:2] for e in upstream_log(first)]  # the second still subscribes
    touch(first, own)
    assert second_hears.wait_for(exposed)  # positive control
    time.sleep(1.0)
    assert first_hears.updates() == [], first_hears.heard
    ok(second.call("resources/unsubscribe", {"uri": exposed}))
    assert ["unsubscribe", own] in [e[:2] for e in upstream_log(first)]


def test_a_closed_session_releases_its_upstream_subscriptions(server: RunningServer) -> None:
    own, exposed = topic()
    acme = session_of(server, "acme")
    subscribe(acme, exposed)
    closed = web.delete(server.mcp_url, headers={**acme.headers(), "Authorization": f"Bearer {acme.token}"}, timeout=10)
    assert closed.status_code in (200, 204), closed.text
    observer = session_of(server, "acme")
    deadline = time.monotonic() + 5
    while ["unsubscribe", own] not in [e[:2] for e in upstream_log(observer)]:
        assert time.monotonic() < deadline, "the closed session's subscription was never released"
        time.sleep(0.1)


def test_a_flood_of_updates_reaches_the_client_coalesced(server: RunningServer) -> None:
    acme = session_of(server, "acme")
    listener = Listener(server, acme)
    own, exposed = topic()
    subscribe(acme, exposed)
    touch(acme, own, times=200)
    assert listener.wait_for(exposed)
    time.sleep(1.5)  # the coalesced trailing update, if any
    assert 1 <= listener.updates().count(exposed) <= 3, listener.updates()


def test_a_sessions_subscriptions_beyond_its_limit_are_refused_with_the_reason(server: RunningServer) -> None:
    acme = session_of(server, "acme")
    exposed = [topic()[1] for _ in range(101)]
    for uri in exposed[:100]:
        subscribe(acme, uri)
    refused = acme.call("resources/subscribe", {"uri": exposed[100]}).json()
    assert "100 resource subscriptions" in refused["error"]["message"], refused
    # Positive control: with one released, the same subscription is accepted.
    ok(acme.call("resources/unsubscribe", {"uri": exposed[0]}))
    subscribe(acme, exposed[100])


def test_a_uri_the_tenant_cannot_see_is_refused_and_not_relayed(server: RunningServer) -> None:
    """globex is not granted ``live__readme``; acme is not either, but sees ``live__live_notes``."""
    globex = session_of(server, "globex")
    refused = globex.call("resources/subscribe", {"uri": "upstream://live/notes://readme"}).json()
    assert "error" in refused, refused
    acme = session_of(server, "acme")
    assert ["subscribe", "notes://readme"] not in [e[:2] for e in upstream_log(acme)]


def test_a_shared_session_tells_only_the_tenants_subscribed_that_can_still_see_it(server: RunningServer) -> None:
    """A tenant-agnostic upstream: one session for everyone. Its update reaches acme (subscribed),
    not globex (not subscribed); once globex subscribes, it does (positive control); and once
    globex's grant is taken away, it does not any more."""
    process, url = start_upstream()
    shared = "upstream://common/notes://live"
    try:
        server.cli("upstream", "add", "common", "--url", url, "--allow-private", "--tenant-agnostic")
        server.cli("tenant", "grant", "acme", "common__live_notes", "common__touch")
        server.cli("tenant", "grant", "globex", "common__live_notes")
        acme, globex = session_of(server, "acme"), session_of(server, "globex")
        deadline = time.monotonic() + 10
        while "error" in acme.call("resources/subscribe", {"uri": shared}).json():
            assert time.monotonic() < deadline, "the shared upstream's resource never appeared"
            time.sleep(0.1)
        acme_hears, globex_hears = Listener(server, acme), Listener(server, globex)

        def common_touch() -> None:
            answer = ok(acme.call("tools/call", {"name": "common__touch", "arguments": {"uri": "notes://live"}}))
            assert not answer["result"].get("isError"), answer

        common_touch()
        assert acme_hears.wait_for(shared)
        time.sleep(1.0)
        assert shared not in globex_hears.updates()
        subscribe(globex, shared)
        common_touch()
        assert globex_hears.wait_for(shared), globex_hears.heard
        server.cli("tenant", "ungrant", "globex", "common__live_notes")
        time.sleep(1.5)  # the grant change reaches the server
        before = globex_hears.updates().count(shared)
        acme_before = acme_hears.updates().count(shared)
        common_touch()
        deadline = time.monotonic() + 5
        while acme_hears.updates().count(shared) == acme_before:
            assert time.monotonic() < deadline, "acme stopped hearing the shared upstream"
            time.sleep(0.05)
        time.sleep(1.0)
        assert globex_hears.updates().count(shared) == before, globex_hears.heard
    finally:
        server.cli("upstream", "remove", "common", check=False)
        process.terminate()
        process.wait(10)


def test_a_restarted_upstream_session_subscribes_again_to_what_is_still_subscribed(server: RunningServer) -> None:
    port = free_port()
    process, url = start_upstream(port=port)
    exposed = "upstream://phoenix/notes://live"
    try:
        server.cli(
            "upstream",
            "add",
            "phoenix",
            "--url",
            url,
            "--allow-private",
            "--header",
            "Authorization=Bearer {secret:api_token}",
        )
        server.cli("tenant", "grant", "acme", "phoenix__live_notes", "phoenix__touch", "phoenix__subscriptions")
        acme = session_of(server, "acme")
        deadline = time.monotonic() + 10
        while "error" in acme.call("resources/subscribe", {"uri": exposed}).json():
            assert time.monotonic() < deadline, "the upstream's resource never appeared"
            time.sleep(0.1)
        listener = Listener(server, acme, seconds=40)
        process.terminate()
        process.wait(10)
        process, _ = start_upstream(port=port)  # the same address; it knows nothing of the old session

        def phoenix(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
            return ok(acme.call("tools/call", {"name": name, "arguments": arguments}))

        deadline = time.monotonic() + 20
        while True:  # the first call finds the session lost; the gateway starts a new one
            log = phoenix("phoenix__subscriptions", {})["result"]
            if not log.get("isError") and ["subscribe", "notes://live"] in [
                e[:2] for e in log["structuredContent"]["result"]
            ]:
                break
            assert time.monotonic() < deadline, log
            time.sleep(0.2)
        phoenix("phoenix__touch", {"uri": "notes://live"})
        assert listener.wait_for(exposed), listener.heard
    finally:
        server.cli("upstream", "remove", "phoenix", check=False)
        process.terminate()
        process.wait(10)
