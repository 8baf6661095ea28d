"""The control plane: tenants, their grants and deployment facts, shared by CLI and server."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal, Protocol

__all__ = ["Tenant", "TenantStore", "Tier", "TenantStatus"]

Tier = Literal["logical", "dedicated"]
TenantStatus = Literal["active", "halted"]


@dataclass(frozen=True, slots=True)
class Tenant:
    id: str
    name: str
    tier: Tier
    status: TenantStatus
    created_at: int
    grants: frozenset[str] = field(default_factory=frozenset)
    halted_reason: str | None = None

    @property
    def halted(self) -> bool:
        return self.status == "halted"


class TenantStore(Protocol):
    """Durable tenant records. Every write bumps :meth:`revision`, which readers poll.

    Methods raise :class:`~tenantry.core.errors.NotFound` for an unknown tenant,
    :class:`~tenantry.core.errors.AlreadyExists` for a duplicate and
    :class:`~tenantry.core.errors.StorageError` when the store itself fails.
    """

    def create_tenant(
        self, tenant_id: str, *, name: str | None = None, tools: Iterable[str] = (), tier: Tier = "logical"
    ) -> Tenant: ...

    def get_tenant(self, tenant_id: str) -> Tenant | None: ...

    def list_tenants(self) -> list[Tenant]: ...

    def grant(self, tenant_id: str, tools: Iterable[str]) -> Tenant: ...

    def ungrant(self, tenant_id: str, tools: Iterable[str]) -> Tenant: ...

    def set_status(self, tenant_id: str, status: TenantStatus, reason: str | None = None) -> Tenant: ...

    def revision(self) -> int: ...

    def get_meta(self, key: str) -> str | None: ...

    def set_meta(self, key: str, value: str) -> None: ...

    def close(self) -> None: ...
