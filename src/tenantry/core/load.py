"""How many requests a server is handling right now (one event loop, no locking needed)."""

from __future__ import annotations

__all__ = ["InFlight"]


class InFlight:
    """Incremented when a request enters ``/mcp``, decremented when its response is sent.

    The audit writer reads it to choose between committing a lone call's record inline and
    batching concurrent calls' records into one transaction.
    """

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0
