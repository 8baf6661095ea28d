"""An in-memory view of the tenant store for the request path, kept fresh by polling.

Lookups on the hot path never touch the database; a background loop re-reads the store
whenever its revision moves (a CLI ``grant`` or ``halt`` reaches a running server within
one poll interval, 250 ms by default).
"""

from __future__ import annotations

import logging
import threading

import anyio
import anyio.to_thread

from tenantry.controlplane.base import Tenant, TenantStore
from tenantry.core.errors import StorageError

__all__ = ["TenantDirectory"]

logger = logging.getLogger(__name__)


class TenantDirectory:
    def __init__(self, store: TenantStore, *, poll_interval: float = 0.25) -> None:
        self._store = store
        self._poll_interval = poll_interval
        self._tenants: dict[str, Tenant] = {}
        self._revision: int | None = None
        self._lock = threading.Lock()
        self.healthy = False

    @property
    def store(self) -> TenantStore:
        return self._store

    def get(self, tenant_id: str) -> Tenant | None:
        return self._tenants.get(tenant_id)

    def all(self) -> list[Tenant]:
        return sorted(self._tenants.values(), key=lambda t: t.id)

    def refresh(self, *, force: bool = False) -> bool:
        """Re-read the store if it changed; returns whether the view changed.

        :raises StorageError: when the store cannot be read (the last good view is kept).
        """
        with self._lock:
            revision = self._store.revision()
            if not force and revision == self._revision:
                self.healthy = True
                return False
            tenants = {t.id: t for t in self._store.list_tenants()}
            self._tenants = tenants
            self._revision = revision
            self.healthy = True
            return True

    async def run(self) -> None:
        """Poll until cancelled. Store failures keep the last view and mark the directory unhealthy."""
        while True:
            try:
                await anyio.to_thread.run_sync(self.refresh)
            except StorageError as exc:
                if self.healthy:
                    logger.error("tenant store unavailable; serving the last known view", extra={"code": exc.code})
                self.healthy = False
            await anyio.sleep(self._poll_interval)
