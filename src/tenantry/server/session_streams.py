"""Handshake-era sessions that do not keep their last message alive.

The SDK's per-session loops read their streams with ``async for item in stream``: while a
loop waits for the next message, its loop variable still holds the previous one. On the
receiving side that is the whole last request (the parsed JSON-RPC message, the Starlette
``Request`` with its body bytes, and the sender's context); on the sending side the last
response. One 1 MiB request (refused or not) thus kept ~3 MiB alive per idle session, for
as long as the session lived: a tenant with a hundred sessions could pin hundreds of MiB.

Here the streams a session's loops read from are wrapped so that each real item is
followed by a tiny sentinel the loop discards; an idle loop then holds the sentinel, never
a caller's message. The SDK's session manager builds its transports itself, so
:class:`ReleasingSessionManager` overrides the one method that does (SDK pinned; the
regression test ``tests/unit/test_session_memory.py`` fails if this stops working).
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import os
from collections.abc import AsyncIterator, Iterator
from types import TracebackType
from typing import Any, Self

import anyio
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser, AuthorizationContext, authorization_context
from mcp.server.streamable_http import StreamableHTTPServerTransport
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared._stream_protocols import ReadStream, WriteStream
from mcp.shared.message import SessionMessage
from mcp_types import JSONRPCError, JSONRPCResponse

__all__ = ["ReleasingSessionManager", "ReleasingTransport"]


class _Released(Exception):
    """Read by a session's dispatcher in place of a consumed message (it only logs it at debug)."""


_RELEASED_INBOUND = _Released("previous message released")

# A response to a request id no client can have in flight (random per process, never sent):
# the transport's router finds no stream for it and drops it.
_RELEASED_OUTBOUND = SessionMessage(
    JSONRPCResponse(jsonrpc="2.0", id=f"tenantry-released-{os.urandom(16).hex()}", result={})
)


class _ReleasingReadStream:
    """Yields each inbound item, then one sentinel, so that a waiting reader holds no message."""

    def __init__(self, inner: ReadStream[SessionMessage | Exception]) -> None:
        self._inner = inner
        self._owed = False
        self.last_context: contextvars.Context | None = None

    async def receive(self) -> SessionMessage | Exception:
        if self._owed:
            self._owed = False
            self.last_context = None
            return _RELEASED_INBOUND
        item = await self._inner.receive()
        # The SDK's context-carrying stream remembers the last sender's context: pass it on
        # once, keep nothing.
        self.last_context = getattr(self._inner, "last_context", None)
        if self.last_context is not None:
            self._inner.last_context = None  # type: ignore[attr-defined]
        self._owed = True
        return item

    async def aclose(self) -> None:
        await self._inner.aclose()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> SessionMessage | Exception:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> bool | None:
        await self.aclose()
        return None


class _ReleasingWriteStream:
    """Follows each final message (response or error) with a sentinel the transport's router
    drops, so that the router, waiting for the next one, no longer holds a result."""

    def __init__(self, inner: WriteStream[SessionMessage]) -> None:
        self._inner = inner

    async def send(self, item: SessionMessage, /) -> None:
        await self._inner.send(item)
        if isinstance(item.message, JSONRPCResponse | JSONRPCError):
            await self._inner.send(_RELEASED_OUTBOUND)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> bool | None:
        await self.aclose()
        return None


class ReleasingTransport(StreamableHTTPServerTransport):
    """The SDK's session transport, with streams that release each message once handled."""

    @contextlib.asynccontextmanager
    async def connect(
        self,
    ) -> AsyncIterator[tuple[ReadStream[SessionMessage | Exception], WriteStream[SessionMessage]]]:
        async with super().connect() as (read_stream, write_stream):
            yield _ReleasingReadStream(read_stream), _ReleasingWriteStream(write_stream)


class ReleasingSessionManager(StreamableHTTPSessionManager):
    """The SDK's session manager, creating :class:`ReleasingTransport` sessions."""

    def serves(self, session_id: str, user: object) -> bool:
        """Whether ``session_id`` is a live session of this manager opened with ``user``'s
        credential (what the manager itself checks before a request reaches the session)."""
        transport = self._server_instances.get(session_id)
        if transport is None or transport.is_terminated:
            return False
        requestor = authorization_context(user) if isinstance(user, AuthenticatedUser) else None
        return bool(requestor == self._session_owners.get(session_id))

    @contextlib.contextmanager
    def request_in_flight(self, session_id: str) -> Iterator[None]:
        """Hold the session's idle countdown while one of its requests is answered outside its
        transport, as the transport does for its own (private to the pinned SDK)."""
        transport = self._server_instances.get(session_id)
        idle = transport.idle_scope if transport is not None else None
        timeout = getattr(transport, "_idle_timeout", None)
        if transport is None or idle is None or timeout is None:
            yield
            return
        transport._requests_in_flight += 1
        idle.deadline = math.inf
        try:
            yield
        finally:
            transport._requests_in_flight -= 1
            if not transport._requests_in_flight:
                idle.deadline = anyio.current_time() + timeout

    @property
    def lifespan_state(self) -> Any:
        """What the MCP server's lifespan yielded (entered once, when the manager runs)."""
        return self._lifespan_state

    def _admit_session(self, requestor: AuthorizationContext | None) -> StreamableHTTPServerTransport | None:
        transport = super()._admit_session(requestor)
        if transport is not None:
            # Same object, same state: only connect() differs (no new attributes).
            transport.__class__ = ReleasingTransport
        return transport
