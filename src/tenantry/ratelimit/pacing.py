"""Limit refusals answered after a short hold, so a flood slows itself down.

A client that loops as fast as its answers come back (an agent stuck in a retry loop, or a
deliberate flood) is refused by its tenant's limits in well under a millisecond, and asks
again at once: hundreds of refusals a second per connection, each one parsed, authenticated
and answered on the event loop every other tenant shares. Holding each refusal for a moment
(never longer than its own ``retry_after``, which tells the client to wait anyway) turns
that into a few requests a second per connection, at no CPU cost while it waits.

Holds are bounded: per tenant and overall, past which refusals are answered at once, so
holding cannot become a way to pin the server's memory or connections.
"""

from __future__ import annotations

import random

import anyio

__all__ = ["RefusalPacer"]


class RefusalPacer:
    """:param hold: seconds a refusal is held at most (between half of it and all of it).
    :param per_tenant: refusals of one tenant held at once at most.
    :param overall: refusals held at once in all."""

    def __init__(self, *, hold: float = 0.5, per_tenant: int = 64, overall: int = 1024) -> None:
        self._hold = hold
        self._per_tenant = per_tenant
        self._overall = overall
        self._held: dict[str, int] = {}
        self._total = 0

    @property
    def held(self) -> int:
        """Refusals being held now."""
        return self._total

    async def pace(self, tenant_id: str, retry_after: float | None) -> None:
        """Wait before a refusal of ``tenant_id`` is answered (or return at once when the holds
        are full or the refusal asks for no wait)."""
        seconds = min(self._hold, retry_after if retry_after is not None else self._hold)
        # Spread over the second half of the hold: refusals made together must not all come
        # back together (a flood's connections would arrive in lockstep, a burst every hold).
        seconds *= 0.5 + 0.5 * random.random()  # noqa: S311 - scheduling jitter, not a secret
        count = self._held.get(tenant_id, 0)
        if seconds <= 0 or count >= self._per_tenant or self._total >= self._overall:
            return
        self._held[tenant_id] = count + 1
        self._total += 1
        try:
            await anyio.sleep(seconds)
        finally:
            self._total -= 1
            left = self._held[tenant_id] - 1
            if left:
                self._held[tenant_id] = left
            else:
                del self._held[tenant_id]
