"""A call's start record, which every effect a tool makes through Tenantry waits for.

With ``[audit] start_before = "effects"`` a call's start is committed while the tool's own code
runs, and the first thing the tool does through Tenantry (a statement, a file, a vector, a
secret, a message to its client) waits until that start is durable. So every effect is still
preceded by its durable start record, and the flush overlaps the tool's computation instead
of preceding it. The result waits for it too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Generator
from contextvars import ContextVar
from typing import Any

__all__ = ["DurableStart", "CALL_START", "RESPONSE_WAITS", "before_effect", "durable_before_response"]


class DurableStart:
    """Awaitable any number of times: returns once the start is durable.

    :raises AuditUnavailable: (from the sink) the start could not be recorded; the call must
        have no effect and return no result.
    """

    __slots__ = ("_future",)

    def __init__(self, pending: Awaitable[None]) -> None:
        self._future = asyncio.ensure_future(pending)
        self._future.add_done_callback(_retrieve)

    @property
    def recorded(self) -> bool:
        """The start is known to be durable."""
        future = self._future
        return future.done() and not future.cancelled() and future.exception() is None

    @property
    def failed(self) -> bool:
        """The start is known not to be recorded (the call must end with ``audit_unavailable``)."""
        future = self._future
        return future.done() and (future.cancelled() or future.exception() is not None)

    def when_recorded(self, then: Callable[[], None]) -> None:
        """Call ``then`` once the start is durable (never if it is not)."""

        def settle(future: asyncio.Future[None]) -> None:
            if not future.cancelled() and future.exception() is None:
                then()

        self._future.add_done_callback(settle)

    def __await__(self) -> Generator[Any, None, None]:
        # One waiter's cancellation (a halted call) must not cancel the record itself.
        return asyncio.shield(self._future).__await__()


def _retrieve(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()  # retrieved here: a failed start is reported by whoever awaits it


CALL_START: ContextVar[DurableStart | None] = ContextVar("tenantry_call_start", default=None)


RESPONSE_WAITS: ContextVar[list[DurableStart] | None] = ContextVar("tenantry_response_waits", default=None)
"""Set by a response writer that waits itself, just before it sends, for the starts of the calls
its request made (so their flush also overlaps shaping and encoding the result)."""


async def durable_before_response(waits: list[DurableStart]) -> None:
    """:raises AuditUnavailable: a start of this response's call was not recorded: send that error instead."""
    for start in waits:
        await start


async def before_effect() -> None:
    """Wait, inside a call, until its start record is durable (at once outside a call)."""
    start = CALL_START.get()
    if start is not None:
        await start
