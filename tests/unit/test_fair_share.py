"""While the server is busy, a tenant over its fair share of the requests in progress waits its
turn, and the quietest waiting tenant goes first; idle capacity is always used, a tenant alone
is never held back, and a slow request stops counting after the quantum."""

from __future__ import annotations

import asyncio
import time

import pytest

from tenantry.core.errors import ConcurrencyLimited
from tenantry.ratelimit.fair_share import FairShare, Turn
from tenantry.ratelimit.loop_load import LoopLoad

pytestmark = pytest.mark.anyio


def BUSY() -> bool:  # the loop always has work queued
    return True


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def _pending(fair: FairShare, tenant: str) -> asyncio.Task[Turn]:
    task = asyncio.ensure_future(fair.turn(tenant))
    await asyncio.sleep(0)
    return task


async def test_nothing_waits_while_the_server_has_room() -> None:
    fair = FairShare(capacity=4, loop_busy=BUSY)
    turns = [await fair.turn(t) for t in ("acme", "globex", "acme", "globex")]
    assert fair.in_progress == 4
    for turn in turns:
        turn.end()
    assert fair.in_progress == 0


async def test_a_tenant_alone_on_a_busy_server_is_never_held_back() -> None:
    fair = FairShare(capacity=2, loop_busy=BUSY)
    turns = [await asyncio.wait_for(fair.turn("acme"), 0.5) for _ in range(10)]
    assert fair.in_progress == 10 and fair.waiting("acme") == 0
    for turn in turns:
        turn.end()


async def test_a_flooding_tenant_waits_while_a_quiet_one_goes_straight_in() -> None:
    clock = Clock()
    fair = FairShare(capacity=4, quantum=60, clock=clock, loop_busy=BUSY)
    quiet = await fair.turn("globex")  # globex is active
    quiet.end()
    flood = [await fair.turn("acme") for _ in range(4)]  # the server has room: all four start
    waiting = await _pending(fair, "acme")
    assert not waiting.done() and fair.waiting("acme") == 1  # busy, and acme is over its share (4 // 2)
    # The attack's victim: globex is within its share and starts at once, busy server or not.
    second = await asyncio.wait_for(fair.turn("globex"), 0.5)
    assert fair.waiting("globex") == 0
    # One of acme's requests ends: acme is still over its share while globex's runs.
    flood.pop().end()
    await asyncio.sleep(0)
    assert not waiting.done()
    flood.pop().end()
    flood.pop().end()
    await asyncio.sleep(0)
    assert waiting.done()  # the server has room again
    for turn in [*flood, second, waiting.result()]:
        turn.end()
    assert fair.in_progress == 0


async def test_the_waiting_tenant_with_the_fewest_requests_in_progress_goes_first() -> None:
    fair = FairShare(capacity=4, quantum=60, loop_busy=BUSY)
    acme = [await fair.turn("acme") for _ in range(3)]
    globex = await fair.turn("globex")
    initech = await fair.turn("initech")  # over capacity, but within its share (4 // 3)
    acme_waits = await _pending(fair, "acme")
    globex_waits = await _pending(fair, "globex")
    initech.end()
    await asyncio.sleep(0)
    assert not acme_waits.done() and not globex_waits.done()  # the server is still full
    acme.pop().end()
    await asyncio.sleep(0)
    assert globex_waits.done() and not acme_waits.done()  # globex has 1 in progress, acme 2
    for turn in [*acme, globex, globex_waits.result()]:
        turn.end()
    await asyncio.sleep(0)
    assert acme_waits.done()
    acme_waits.result().end()
    assert fair.in_progress == 0


async def test_a_request_stops_counting_after_the_quantum() -> None:
    fair = FairShare(capacity=1, quantum=0.05, loop_busy=BUSY)
    await fair.turn("globex")  # never ended: a call that waits on its upstream for ever
    slow = await fair.turn("acme")  # within its share
    waiting = await _pending(fair, "acme")
    assert not waiting.done()
    turn = await asyncio.wait_for(waiting, 1.0)  # both earlier turns lapse after 50 ms
    assert fair.in_progress == 1
    turn.end()
    slow.end()  # ending a lapsed turn changes nothing
    assert fair.in_progress == 0


async def test_too_many_waiting_requests_of_one_tenant_are_refused_and_others_still_wait() -> None:
    fair = FairShare(capacity=1, quantum=60, max_waiting=2, loop_busy=BUSY)
    held = await fair.turn("globex")
    first = await fair.turn("acme")
    waiting = [await _pending(fair, "acme") for _ in range(2)]
    with pytest.raises(ConcurrencyLimited) as refused:
        await fair.turn("acme")
    assert refused.value.retry_after == 1
    assert fair.waiting_total == 2 and fair.waited == 2  # the refused one never waited
    assert "other" not in str(refused.value) and "globex" not in str(refused.value)
    first.end()
    held.end()
    for task in waiting:
        (await asyncio.wait_for(task, 0.5)).end()
    assert fair.in_progress == 0 and fair.waiting_total == 0


async def test_a_cancelled_waiter_leaves_the_queue_and_its_turn_passes_on() -> None:
    fair = FairShare(capacity=1, quantum=60, loop_busy=BUSY)
    held = await fair.turn("globex")
    first = await fair.turn("acme")
    gone = await _pending(fair, "acme")
    gone.cancel()
    await asyncio.sleep(0)
    assert fair.waiting("acme") == 0 and fair.waiting_total == 0
    # Cancelled in the same turn its place came: the place goes to the next one.
    raced = await _pending(fair, "acme")
    after = await _pending(fair, "acme")
    first.end()
    held.end()
    raced.cancel()
    (await asyncio.wait_for(after, 0.5)).end()
    assert fair.in_progress == 0


async def test_tenants_idle_for_a_second_no_longer_count_and_are_forgotten() -> None:
    clock = Clock()
    fair = FairShare(capacity=2, quantum=60, clock=clock, loop_busy=BUSY)
    for tenant in (f"t{i}" for i in range(1000)):
        (await fair.turn(tenant)).end()
    clock.now += 2
    turns = [await fair.turn("acme") for _ in range(5)]  # alone again: never held back
    assert fair.waiting("acme") == 0
    assert len(fair._seen) == 1  # the idle tenants are forgotten (bounded state)
    for turn in turns:
        turn.end()


async def test_when_the_other_tenant_goes_idle_the_waiting_requests_start_first_and_in_order() -> None:
    clock = Clock()
    fair = FairShare(capacity=1, quantum=60, clock=clock, loop_busy=BUSY)
    other = await fair.turn("globex")
    first = await fair.turn("acme")
    earlier = await _pending(fair, "acme")
    other.end()
    await asyncio.sleep(0)
    assert not earlier.done()  # globex was active within the second: acme is at its share
    clock.now += 2  # globex idle since: acme is alone
    later = await _pending(fair, "acme")
    await asyncio.sleep(0)
    assert earlier.done() and later.done()
    assert fair.waiting("acme") == 0
    for turn in (first, earlier.result(), later.result()):
        turn.end()
    assert fair.in_progress == 0


# The /mcp gate: a handshake-era initialize holds a place for its session while it waits for
# its turn; a wait that ends in cancellation (shutdown) must give that place back.


class _Records:
    async def record(self, event: object) -> None:
        pass

    def submit(self, event: object) -> None:
        pass


class _Authenticator:
    async def authenticate(self, headers: object, *, address: str | None, request_id: str) -> object:
        from tenantry.core.identity import Principal

        return Principal(
            issuer="test",
            tenant_id="acme",
            subject="alice",
            allowed_tools=frozenset(),
            token_id="t1",
            expires_at=2**40,
            issued_at=0,
        )


def _gate(fair: FairShare) -> tuple[object, object]:
    from tenantry.core.limits import TenantLimits
    from tenantry.server.gate import McpGate
    from tenantry.server.guards import HostOriginPolicy
    from tenantry.server.sessions import SessionRegistry

    sessions = SessionRegistry(
        audit=_Records(),  # type: ignore[arg-type]
        idle_timeout=60,
        limits_for=lambda tenant_id: TenantLimits(sessions=1),
    )

    async def handler(scope: object, receive: object, send: object) -> None:
        raise AssertionError("the waiting request must not reach the SDK")

    gate = McpGate(
        handler,  # type: ignore[arg-type]
        policy=HostOriginPolicy(allowed_hosts=["127.0.0.1:8000"], allowed_origins=[]),
        authenticator=_Authenticator(),  # type: ignore[arg-type]
        sessions=sessions,
        resource_metadata_url="http://127.0.0.1:8000/.well-known/oauth-protected-resource",
        max_body_bytes=1 << 20,
        max_json_depth=64,
        fair_share=fair,
    )
    return gate, sessions


async def _opening_request(gate: object) -> asyncio.Task[None]:
    import json

    body = json.dumps(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "t", "version": "0"},
            },
        }
    ).encode()
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/mcp",
        "client": ("127.0.0.1", 5000),
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"content-type", b"application/json"),
            (b"accept", b"application/json, text/event-stream"),
            (b"authorization", b"Bearer x"),
        ],
    }
    sent: list[object] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: object) -> None:
        sent.append(message)

    task = asyncio.ensure_future(gate(scope, receive, send))  # type: ignore[operator]
    for _ in range(20):
        await asyncio.sleep(0)
    return task


async def _busy(fair: FairShare) -> list[Turn]:
    # acme holds its share (1 of capacity 1, two tenants active): acme's next request waits.
    return [await fair.turn("acme"), await fair.turn("globex")]


async def test_an_opening_request_holds_its_session_place_while_it_waits() -> None:
    # Positive control: the place is held during the wait (so the next test means something).
    from tenantry.core.errors import SessionLimitReached

    fair = FairShare(capacity=1, quantum=10, loop_busy=BUSY)
    turns = await _busy(fair)
    gate, sessions = _gate(fair)
    task = await _opening_request(gate)
    assert fair.waiting("acme") == 1 and not task.done()
    with pytest.raises(SessionLimitReached):
        sessions.reserve("acme")  # type: ignore[attr-defined]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for turn in turns:
        turn.end()


async def test_an_opening_request_cancelled_while_it_waits_gives_its_session_place_back() -> None:
    fair = FairShare(capacity=1, quantum=10, loop_busy=BUSY)
    turns = await _busy(fair)
    gate, sessions = _gate(fair)
    task = await _opening_request(gate)
    assert fair.waiting("acme") == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert fair.waiting("acme") == 0
    sessions.reserve("acme")  # type: ignore[attr-defined]  # the tenant's only place is free again
    for turn in turns:
        turn.end()


async def test_while_the_loop_is_idle_nobody_waits_though_another_tenant_is_active() -> None:
    # Outside review F1: calls that wait on I/O (an upstream, a nap) must not be throttled by
    # another tenant's trickle while the event loop has nothing queued.
    fair = FairShare(capacity=1, quantum=60)
    other = await fair.turn("globex")
    first = await fair.turn("acme")
    held = await _pending(fair, "acme")  # not measured yet: the loop counts as busy
    turn = await asyncio.wait_for(held, 0.5)  # the first probes find the loop idle
    more = [await asyncio.wait_for(fair.turn("acme"), 0.5) for _ in range(5)]
    assert fair.waiting_total == 0
    for t in (other, first, turn, *more):
        t.end()


async def test_while_the_loop_computes_a_tenant_over_its_share_still_waits() -> None:
    fair = FairShare(capacity=1, quantum=60)
    stop = False

    def compute() -> None:  # another tenant's requests, computing back to back
        if not stop:
            until = time.thread_time() + 0.002
            while time.thread_time() < until:
                pass
            asyncio.get_running_loop().call_soon(compute)

    compute()
    try:
        other = await fair.turn("globex")
        first = await fair.turn("acme")
        held = await _pending(fair, "acme")
        await asyncio.sleep(0.2)
        assert not held.done()
    finally:
        stop = True
    turn = await asyncio.wait_for(held, 0.5)  # the loop is idle again
    for t in (other, first, turn):
        t.end()


async def test_waiting_is_bounded_across_tenants_too() -> None:
    fair = FairShare(capacity=1, quantum=60, max_waiting=10, max_waiting_total=3, loop_busy=BUSY)
    held = [await fair.turn("globex"), await fair.turn("acme"), await fair.turn("initech")]
    waiting = [await _pending(fair, t) for t in ("globex", "acme", "initech")]
    with pytest.raises(ConcurrencyLimited) as refused:
        await fair.turn("acme")
    assert "globex" not in str(refused.value) and "initech" not in str(refused.value)
    for turn in held:
        turn.end()
    for task in waiting:
        (await asyncio.wait_for(task, 0.5)).end()
    assert fair.in_progress == 0 and fair.waiting_total == 0


async def test_the_loop_load_is_measured_only_while_asked() -> None:
    load = LoopLoad(interval=0.005)
    assert load.busy()  # not measured yet: the worst is assumed
    for _ in range(10):
        await asyncio.sleep(0.005)
        load.busy()
    assert not load.busy() and load.share < 0.5
    await asyncio.sleep(0.1)  # nobody asked for five probes: the probing stopped
    assert load._ticking is None
