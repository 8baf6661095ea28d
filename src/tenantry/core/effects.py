"""A call's start record, which every effect a tool makes through Tenantry waits for.

With ``[audit] start_before = "effects"`` a call's start is committed while the tool's own code
runs, and the first thing the tool does through Tenantry (a statement, a file, a vector, a
secret, a message to its client) waits until that start is durable. So every effect is still
preceded by its durable start record, and the flush overlaps the tool's computation instead
of preceding it. The result waits for it too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Generator
from contextvars import ContextVar
from typing import Any

__all__ = ["DurableStart", "CALL_START", "before_effect"]


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
    def failed(self) -> bool:
        """The start is known not to be recorded (the call must end with ``audit_unavailable``)."""
        future = self._future
        return future.done() and (future.cancelled() or future.exception() is not None)

    def __await__(self) -> Generator[Any, None, None]:
        # One waiter's cancellation (a halted call) must not cancel the record itself.
        return asyncio.shield(self._future).__await__()


def _retrieve(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()  # retrieved here: a failed start is reported by whoever awaits it


CALL_START: ContextVar[DurableStart | None] = ContextVar("tenantry_call_start", default=None)


async def before_effect() -> None:
    """Wait, inside a call, until its start record is durable (at once outside a call)."""
    start = CALL_START.get()
    if start is not None:
        await start
