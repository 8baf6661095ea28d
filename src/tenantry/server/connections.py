"""Connection-level limits: no client may hold a connection without sending a request.

uvicorn's h11 protocol has a keep-alive timeout between requests, and nothing else: a
client that opens a connection and sends nothing, or sends a request line and headers one
byte at a time, or stops half-way through a body, holds the connection (and its buffers)
for ever, with no credential at all. :func:`guarded_protocol` returns uvicorn's
``H11Protocol`` with three more rules:

* the headers of each request must be complete within ``header_timeout`` of the connection
  opening or of the request's first byte (else ``408`` if any of it arrived, and close);
* the body must be complete within ``body_timeout`` of the headers (a backstop for every
  route; ``/mcp`` answers its own ``408`` when the body is late, see
  :func:`~tenantry.server.guards.read_checked_body`);
* one client (an address; an IPv6 ``/64``) may hold at most ``max_per_address`` connections
  at once; more are answered ``503`` and closed as soon as they open. Trusted proxies
  carry many clients' connections and are exempt.

Its writes of one loop turn leave in one ``send()`` (a response's headers with its body, see
:mod:`tenantry.server.coalesced_writes`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from tenantry.core.addresses import address_bucket
from tenantry.server.coalesced_writes import CoalescedWrites

__all__ = ["ConnectionPolicy", "guarded_protocol"]


@dataclass(frozen=True)
class ConnectionPolicy:
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_per_address: int = 64
    trusted_proxies: Iterable[str] = ()
    _networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        networks = tuple(ipaddress.ip_network(entry, strict=False) for entry in self.trusted_proxies)
        object.__setattr__(self, "_networks", networks)

    def exempt(self, host: str) -> bool:
        """Whether connections from ``host`` are never capped (a trusted proxy)."""
        if not self._networks:
            return False
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self._networks)


# The backstop fires a little after the /mcp gate's own deadline, so that /mcp answers first.
_BACKSTOP_GRACE = 1.0


def _plain_response(status: int, reason: str, error: str, description: str, extra: str = "") -> bytes:
    body = json.dumps({"error": error, "error_description": description}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
        f"{extra}connection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


_HEADERS_LATE = _plain_response(408, "Request Timeout", "request_timeout", "the request headers took too long")
_TOO_MANY = _plain_response(
    503,
    "Service Unavailable",
    "too_many_connections",
    "too many open connections from this address",
    "retry-after: 5\r\n",
)


class _GuardedH11Protocol(H11Protocol):
    policy: ConnectionPolicy
    open_per_client: dict[str, int]

    _deadline: asyncio.TimerHandle | None = None
    _phase: str | None = None  # "headers" or "body" while a deadline is armed
    _bytes_seen = False
    _counted: str | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescedWrites(transport, self.loop))
        host = self.client[0] if self.client else None
        if host is not None and not self.policy.exempt(host):
            bucket = address_bucket(host)
            count = self.open_per_client.get(bucket, 0)
            if count >= self.policy.max_per_address:
                transport.write(_TOO_MANY)
                transport.close()
                return
            self.open_per_client[bucket] = count + 1
            self._counted = bucket
        self._arm("headers", self.policy.header_timeout, self._headers_late)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._counted is not None:
            count = self.open_per_client.get(self._counted, 0) - 1
            if count > 0:
                self.open_per_client[self._counted] = count
            else:
                self.open_per_client.pop(self._counted, None)
            self._counted = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._phase is None and self.conn.their_state is h11.IDLE:
            # The first bytes of the next request on a kept-alive connection.
            self._arm("headers", self.policy.header_timeout, self._headers_late)
        if self._phase == "headers" and data:
            self._bytes_seen = True
        super().data_received(data)

    def handle_events(self) -> None:
        super().handle_events()
        state = self.conn.their_state
        if state is h11.SEND_BODY:
            if self._phase != "body":
                self._arm("body", self.policy.body_timeout + _BACKSTOP_GRACE, self._body_late)
        elif state is not h11.IDLE:
            self._disarm()

    def _arm(self, phase: str, delay: float, callback: Callable[[], None]) -> None:
        self._disarm()
        self._phase = phase
        self._bytes_seen = False
        self._deadline = self.loop.call_later(delay, callback)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._phase = None

    def _headers_late(self) -> None:
        self._deadline = None
        self._phase = None
        if self.transport.is_closing():
            return
        if self._bytes_seen:
            self.transport.write(_HEADERS_LATE)
        self.transport.close()

    def _body_late(self) -> None:
        self._deadline = None
        self._phase = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_started:
            body = json.dumps({"error": "request_timeout", "error_description": "the request body took too long"})
            try:
                headers = [(b"content-type", b"application/json"), (b"connection", b"close")]
                self.transport.write(self.conn.send(h11.Response(status_code=408, headers=headers)) or b"")
                self.transport.write(self.conn.send(h11.Data(data=body.encode())) or b"")
                self.transport.write(self.conn.send(h11.EndOfMessage()) or b"")
            except h11.LocalProtocolError:
                pass
            cycle.response_started = cycle.response_complete = True
        if cycle is not None:
            # The application's receive() now reports a disconnect and its sends are dropped.
            cycle.disconnected = True
            cycle.message_event.set()
        self.transport.close()


def guarded_protocol(policy: ConnectionPolicy) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol class enforcing ``policy`` (pass as ``uvicorn.Config(http=...)``).

    Each call returns a new class with its own count of open connections per client.
    """

    class GuardedH11Protocol(_GuardedH11Protocol):
        pass

    GuardedH11Protocol.policy = policy
    GuardedH11Protocol.open_per_client = {}
    return GuardedH11Protocol
