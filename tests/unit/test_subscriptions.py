"""The registry of sessions' upstream resource subscriptions (tenantry.server.subscriptions)."""

from __future__ import annotations

import dataclasses

import anyio
import pytest

from tenantry.core.calls import Caller
from tenantry.core.errors import UsageError
from tenantry.core.identity import Principal
from tenantry.gateway.errors import UpstreamUnavailable
from tenantry.server.subscriptions import Subscriptions

pytestmark = pytest.mark.anyio

URI = "upstream://live/notes://live"


def caller(tenant: str, session_id: str) -> Caller:
    principal = Principal(
        issuer="https://iss",
        tenant_id=tenant,
        subject="alice",
        allowed_tools=frozenset(),
        token_id="jti-1",
        expires_at=2**31,
        issued_at=0,
    )
    return Caller(principal=principal, request_id="req-1", session_id=session_id)


class Relay:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str, str]] = []
        self.refuse = False

    async def subscribe_resource(self, upstream: str, tenant_id: str, uri: str) -> None:
        if self.refuse:
            raise UpstreamUnavailable("down")
        self.calls.append(("subscribe", upstream, tenant_id, uri))

    async def unsubscribe_resource(self, upstream: str, tenant_id: str, uri: str) -> None:
        self.calls.append(("unsubscribe", upstream, tenant_id, uri))


class Connection:
    def __init__(self, stuck: bool = False) -> None:
        self.heard: list[str] = []
        self.stuck = stuck
        self.told = anyio.Event()

    async def send_resource_updated(self, uri: str) -> None:
        if self.stuck:
            await anyio.sleep(3600)
        self.heard.append(uri)
        self.told.set()


def registry(relay: Relay, *, visible: bool = True, **limits: int) -> Subscriptions:
    return Subscriptions(relay, lambda caller, uri: visible, interval=0.2, send_timeout=0.2, **limits)


async def settle() -> None:
    await anyio.sleep(0.35)


async def test_the_upstreams_own_uri_is_relayed_for_the_calling_tenant() -> None:
    relay = Relay()
    subs = registry(relay)
    await subs.subscribe(caller("acme", "s1"), Connection(), "live", URI)
    assert relay.calls == [("subscribe", "live", "acme", "notes://live")]
    await subs.unsubscribe("s1", URI)
    assert relay.calls[-1] == ("unsubscribe", "live", "acme", "notes://live")


async def test_an_update_reaches_the_tenants_subscribed_sessions_only() -> None:
    relay = Relay()
    subs = registry(relay)
    acme, globex, idle = Connection(), Connection(), Connection()
    await subs.subscribe(caller("acme", "s1"), acme, "live", URI)
    await subs.subscribe(caller("globex", "s2"), globex, "live", URI)
    subs.updated("acme", URI)
    await settle()
    assert acme.heard == [URI] and globex.heard == [] and idle.heard == []
    subs.updated("globex", URI)  # positive control: globex's own update reaches it
    await settle()
    assert globex.heard == [URI]


async def test_an_update_nobody_subscribed_to_is_ignored() -> None:
    subs = registry(Relay())
    acme = Connection()
    await subs.subscribe(caller("acme", "s1"), acme, "live", URI)
    subs.updated("acme", URI + "-other")
    subs.updated("initech", URI)
    await settle()
    assert acme.heard == []


async def test_a_session_that_cannot_see_the_uri_any_more_is_not_told() -> None:
    subs = registry(Relay(), visible=False)
    acme = Connection()
    await subs.subscribe(caller("acme", "s1"), acme, "live", URI)
    subs.updated("acme", URI)
    await settle()
    assert acme.heard == []


async def test_a_flood_is_coalesced_into_one_update_now_and_one_at_the_intervals_end() -> None:
    subs = registry(Relay())
    acme = Connection()
    await subs.subscribe(caller("acme", "s1"), acme, "live", URI)
    subs.updated("acme", URI)
    await anyio.sleep(0.05)
    for _ in range(100):
        subs.updated("acme", URI)
    await anyio.sleep(0.5)
    assert acme.heard == [URI, URI]


async def test_a_stuck_client_does_not_hold_up_the_others() -> None:
    subs = registry(Relay())
    stuck, fine = Connection(stuck=True), Connection()
    await subs.subscribe(caller("acme", "s1"), stuck, "live", URI)
    await subs.subscribe(caller("acme", "s2"), fine, "live", URI)
    with anyio.fail_after(1):
        subs.updated("acme", URI)
        await fine.told.wait()


async def test_the_per_session_limit_is_refused_with_the_reason() -> None:
    subs = registry(Relay(), per_session=2)
    connection = Connection()
    await subs.subscribe(caller("acme", "s1"), connection, "live", URI + "/1")
    await subs.subscribe(caller("acme", "s1"), connection, "live", URI + "/2")
    await subs.subscribe(caller("acme", "s1"), connection, "live", URI + "/2")  # again: no new one
    with pytest.raises(UsageError, match=r"2 resource subscriptions .* per session"):
        await subs.subscribe(caller("acme", "s1"), connection, "live", URI + "/3")
    await subs.subscribe(caller("acme", "s2"), Connection(), "live", URI + "/3")  # another session may


async def test_the_per_tenant_limit_counts_every_session_of_the_tenant() -> None:
    subs = registry(Relay(), per_tenant=2)
    await subs.subscribe(caller("acme", "s1"), Connection(), "live", URI + "/1")
    await subs.subscribe(caller("acme", "s2"), Connection(), "live", URI + "/1")
    with pytest.raises(UsageError, match="per tenant"):
        await subs.subscribe(caller("acme", "s3"), Connection(), "live", URI + "/2")
    await subs.subscribe(caller("globex", "s4"), Connection(), "live", URI + "/2")  # another tenant may
    await subs.release_session("s1")
    await subs.subscribe(caller("acme", "s3"), Connection(), "live", URI + "/2")


async def test_a_refused_relay_keeps_nothing() -> None:
    relay = Relay()
    relay.refuse = True
    subs = registry(relay, per_session=1)
    connection = Connection()
    with pytest.raises(UpstreamUnavailable):
        await subs.subscribe(caller("acme", "s1"), connection, "live", URI)
    assert subs.subscribed("s1") == set()
    relay.refuse = False
    await subs.subscribe(caller("acme", "s1"), connection, "live", URI)  # the slot was given back
    subs.updated("acme", URI)
    await settle()
    assert connection.heard == [URI]


async def test_a_released_session_unsubscribes_everything_and_hears_nothing_more() -> None:
    relay = Relay()
    subs = registry(relay)
    connection = Connection()
    await subs.subscribe(caller("acme", "s1"), connection, "live", URI + "/1")
    await subs.subscribe(caller("acme", "s1"), connection, "live", URI + "/2")
    await subs.release_session("s1")
    assert sorted(c for c in relay.calls if c[0] == "unsubscribe") == [
        ("unsubscribe", "live", "acme", "notes://live/1"),
        ("unsubscribe", "live", "acme", "notes://live/2"),
    ]
    subs.updated("acme", URI + "/1")
    await settle()
    assert connection.heard == []


async def test_a_session_whose_connection_is_gone_is_released_at_the_next_update() -> None:
    relay = Relay()
    subs = registry(relay)
    await subs.subscribe(caller("acme", "s1"), Connection(), "live", URI)  # no reference kept
    subs.updated("acme", URI)
    await settle()
    assert ("unsubscribe", "live", "acme", "notes://live") in relay.calls


async def test_a_session_whose_credential_lapsed_is_told_nothing_and_released() -> None:
    """Expired or revoked since it subscribed (its stream may still be open): no update reaches
    it, its upstream subscription is released; another session of the same tenant is told."""
    relay = Relay()
    lapsed_tokens = {"jti-old"}
    subs = Subscriptions(
        relay,
        lambda caller, uri: True,
        lapsed=lambda principal: "token revoked" if principal.token_id in lapsed_tokens else None,
        interval=0.2,
        send_timeout=0.2,
    )
    old, fresh = Connection(), Connection()
    revoked = caller("acme", "s1")
    revoked.principal = dataclasses.replace(revoked.principal, token_id="jti-old")
    await subs.subscribe(revoked, old, "live", URI)
    await subs.subscribe(caller("acme", "s2"), fresh, "live", URI)
    subs.updated("acme", URI)
    await settle()
    assert fresh.heard == [URI]  # the positive control
    assert old.heard == []
    assert subs.subscribed("s1") == set()
    assert subs.subscribed("s2") == {URI}


async def test_a_tenant_halted_meanwhile_is_told_nothing_and_nothing_raises() -> None:
    from tenantry.core.errors import TenantHalted

    def visible(caller: Caller, uri: str) -> bool:
        if caller.tenant_id == "acme":
            raise TenantHalted()
        return True

    subs = Subscriptions(Relay(), visible, interval=0.2, send_timeout=0.2)
    acme, globex = Connection(), Connection()
    await subs.subscribe(caller("acme", "s1"), acme, "live", URI)
    await subs.subscribe(caller("globex", "s2"), globex, "live", URI)
    subs.updated("acme", URI)
    subs.updated("globex", URI)
    await settle()
    assert acme.heard == [] and globex.heard == [URI]
