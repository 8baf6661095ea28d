"""A bounded set of per-tenant open resources (database files), least recently used closed first."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

__all__ = ["OpenPerTenant"]


class _Closable(Protocol):
    def close(self) -> None: ...


_R = TypeVar("_R", bound=_Closable)


class OpenPerTenant(Generic[_R]):
    """Thread-safe; ``opener`` runs under the lock, so a tenant's resource is opened once."""

    def __init__(self, opener: Callable[[str], _R], *, limit: int = 256) -> None:
        self._opener = opener
        self._limit = limit
        self._lock = threading.Lock()
        self._open: OrderedDict[str, _R] = OrderedDict()

    def get(self, tenant_id: str) -> _R:
        with self._lock:
            existing = self._open.get(tenant_id)
            if existing is not None:
                self._open.move_to_end(tenant_id)
                return existing
            opened = self._opener(tenant_id)
            self._open[tenant_id] = opened
            while len(self._open) > self._limit:
                _, evicted = self._open.popitem(last=False)
                evicted.close()
            return opened

    def discard(self, tenant_id: str, then: Callable[[], None] = lambda: None) -> None:
        """Close the tenant's resource if open, and run ``then`` before anyone can reopen it."""
        with self._lock:
            opened = self._open.pop(tenant_id, None)
            if opened is not None:
                opened.close()
            then()

    def close(self) -> None:
        with self._lock:
            for opened in self._open.values():
                opened.close()
            self._open.clear()
