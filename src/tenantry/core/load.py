"""How many requests a server is handling right now (one event loop, no locking needed)."""

from __future__ import annotations

__all__ = ["InFlight"]


class InFlight:
    """Incremented when a request enters ``/mcp``, decremented when its response is sent.

    The audit writer reads it to choose between committing a lone call's record inline and
    batching concurrent calls' records into one transaction.
    """

    __slots__ = ("arrived", "count")

    def __init__(self) -> None:
        self.count = 0
        self.arrived = 0
        """Requests whose first bytes reached the server and whose response is not complete yet,
        counted by the connection layer. Unlike ``count`` it sees requests still waiting for the
        event loop: while a lone call's commit holds the loop, the next ones queue up unseen by
        ``count``, and committing each of them inline too would put every fsync in a row."""
