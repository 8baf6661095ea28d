"""A halt closes its tenant's sessions once their requests have sent their answers (or after a
grace): a session's standalone GET stream has no answer to send, so it is not waited for."""

from __future__ import annotations

import time

import pytest

from tenantry.audit.events import AuditEvent
from tenantry.server.sessions import BoundSession, SessionRegistry

pytestmark = pytest.mark.anyio

GRACE = 1.0


class Records:
    def __init__(self) -> None:
        self.events: list[AuditEvent] = []

    async def record(self, event: AuditEvent) -> None:
        self.events.append(event)

    def submit(self, event: AuditEvent) -> None:
        self.events.append(event)


def registry_with(bound: BoundSession) -> tuple[SessionRegistry, list[str], Records]:
    closed: list[str] = []

    async def closer(session_id: str) -> None:
        closed.append(session_id)

    records = Records()
    registry = SessionRegistry(audit=records, idle_timeout=60, closer=closer)  # type: ignore[arg-type]
    registry._sessions["s1"] = bound
    registry._per_tenant[bound.tenant_id] = 1
    return registry, closed, records


def session(in_flight: int, streams: int) -> BoundSession:
    now = time.monotonic()
    owner = ("iss", "acme", "agent")
    return BoundSession(owner, "acme", "agent", now, now, in_flight=in_flight, streams=streams)


@pytest.mark.parametrize(
    ("in_flight", "streams", "waits"),
    [(1, 1, False), (0, 0, False), (2, 1, True), (1, 0, True)],
    ids=["get_stream_only", "idle", "stream_and_request", "request"],
)
async def test_a_halt_waits_for_requests_still_answering_but_not_for_a_get_stream(
    in_flight: int, streams: int, waits: bool
) -> None:
    registry, closed, records = registry_with(session(in_flight, streams))
    started = time.monotonic()
    assert await registry.close_tenant("acme", "tenant_halted", grace=GRACE) == 1
    took = time.monotonic() - started
    assert closed == ["s1"] and [e.reason for e in records.events] == ["tenant_halted"]
    if waits:  # positive control: a request in flight is given the grace to send its answer
        assert took >= GRACE
    else:
        assert took < GRACE / 2
