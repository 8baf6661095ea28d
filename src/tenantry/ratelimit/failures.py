"""Failed credential attempts, counted per client (an address; an IPv6 ``/64``).

Only failures count and only failures are refused: a valid credential is always verified
and always accepted, whatever its address did before (verifying an API key is a dictionary
lookup and one SHA-256, so there is nothing to save by refusing it unverified; refusing it
let ten garbage keys from a shared address lock every tenant behind that address out).
Once a client is over its limit, its further *failing* attempts are answered ``429`` with
``Retry-After`` instead of ``401``, the same whether or not the key exists. Memory is
bounded (:class:`~tenantry.ratelimit.windows.MovingWindow`); the count is per replica.
"""

from __future__ import annotations

from tenantry.core.errors import RateLimited
from tenantry.ratelimit.windows import MovingWindow

__all__ = ["FailedAttempts"]


class FailedAttempts:
    """:param limit: e.g. ``"10/minute"``; :param max_clients: clients remembered at once."""

    def __init__(self, limit: str, *, max_clients: int = 100_000) -> None:
        self._window = MovingWindow(limit, max_keys=max_clients)

    def __len__(self) -> int:
        return len(self._window)

    def failed(self, key: str | None) -> None:
        """Count a failed attempt by ``key`` (``None``: an unknown client, not counted).

        :raises RateLimited: the client is over its limit: answer this failure with ``429``.
        """
        if key is None or self._window.hit(key):
            return
        retry_after = self._window.retry_after(key)
        raise RateLimited(f"too many failed attempts; retry in {retry_after}s", retry_after=retry_after)
