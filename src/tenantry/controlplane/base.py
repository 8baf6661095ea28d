"""The control plane: tenants, their grants, credentials state and deployment facts, shared by
CLI and server. Every write bumps one revision counter, which readers poll."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from tenantry.core.credentials import ApiKeyRecord, Revocation
from tenantry.core.limits import TenantLimits, parse_limit_overrides
from tenantry.core.secrets import SecretInfo, SecretStore, WrappedKey
from tenantry.core.upstreams import UpstreamSpec

__all__ = [
    "Tenant",
    "TenantSpec",
    "TenantStore",
    "RevocationStore",
    "ApiKeyStore",
    "SecretStore",
    "SecretInfo",
    "WrappedKey",
    "UpstreamStore",
    "ControlStore",
    "Tier",
    "TenantStatus",
]

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
    limit_overrides: tuple[tuple[str, float], ...] = ()
    """``(name, value)`` of the limits an operator set for this tenant (see ``tenantry.core.limits``)."""

    @property
    def halted(self) -> bool:
        return self.status == "halted"

    def limits(self, defaults: TenantLimits) -> TenantLimits:
        """The tenant's effective limits: ``defaults`` with its overrides."""
        if not self.limit_overrides:
            return defaults
        return defaults.with_overrides(parse_limit_overrides(dict(self.limit_overrides)))


@dataclass(frozen=True, slots=True)
class TenantSpec:
    """A tenant to create in bulk (already validated)."""

    id: str
    name: str
    tools: tuple[str, ...] = ()
    tier: Tier = "logical"


class TenantStore(Protocol):
    """Durable tenant records. Every write bumps :meth:`revision`, which readers poll.

    Methods raise :class:`~tenantry.core.errors.NotFound` for an unknown tenant,
    :class:`~tenantry.core.errors.AlreadyExists` for a duplicate and
    :class:`~tenantry.core.errors.StorageError` when the store itself fails.
    """

    def create_tenant(
        self, tenant_id: str, *, name: str | None = None, tools: Iterable[str] = (), tier: Tier = "logical"
    ) -> Tenant: ...

    def create_tenants(self, tenants: Sequence[TenantSpec]) -> int:
        """Create many tenants in one transaction (all or none); returns how many.

        :raises AlreadyExists: naming the first id that exists (nothing is created then).
        """
        ...

    def get_tenant(self, tenant_id: str) -> Tenant | None: ...

    def list_tenants(self) -> list[Tenant]: ...

    def grant(self, tenant_id: str, tools: Iterable[str]) -> Tenant: ...

    def ungrant(self, tenant_id: str, tools: Iterable[str]) -> Tenant: ...

    def set_status(self, tenant_id: str, status: TenantStatus, reason: str | None = None) -> Tenant: ...

    def set_tier(self, tenant_id: str, tier: Tier) -> Tenant:
        """Move the tenant to ``tier`` (its data stays where it is: the tier decides where its
        tools run, not where its data lives)."""
        ...

    def set_limits(self, tenant_id: str, values: Mapping[str, float], clear: Iterable[str] = ()) -> Tenant:
        """Set the tenant's limit overrides in ``values`` and drop those named in ``clear``."""
        ...

    def revision(self) -> int: ...

    def get_meta(self, key: str) -> str | None: ...

    def set_meta(self, key: str, value: str) -> None: ...

    def list_meta(self, prefix: str) -> dict[str, str]:
        """Every entry :meth:`set_meta` wrote whose key starts with ``prefix``, by key."""
        ...

    def close(self) -> None: ...


class RevocationStore(Protocol):
    """Persisted revocations (see :class:`~tenantry.core.credentials.Revocation`).

    Raises :class:`~tenantry.core.errors.StorageError` when the store fails.
    """

    def add_revocation(self, revocation: Revocation) -> None: ...

    def list_revocations(self, now: int) -> list[Revocation]:
        """Entries that can still catch an unexpired token (``expires_at > now``)."""
        ...

    def prune_revocations(self, now: int) -> int:
        """Delete entries that expired before ``now``; returns how many."""
        ...


class ApiKeyStore(Protocol):
    """Persisted API keys (salted hashes only).

    Raises :class:`~tenantry.core.errors.NotFound` for an unknown key or tenant,
    :class:`~tenantry.core.errors.AlreadyExists` for a duplicate key id and
    :class:`~tenantry.core.errors.StorageError` when the store fails.
    """

    def add_api_key(self, record: ApiKeyRecord) -> None: ...

    def get_api_key(self, key_id: str) -> ApiKeyRecord | None: ...

    def list_api_keys(self, tenant_id: str | None = None) -> list[ApiKeyRecord]: ...

    def revoke_api_key(self, key_id: str, at: int) -> ApiKeyRecord:
        """Mark the key revoked at ``at`` (idempotent: an already revoked key keeps its time)."""
        ...


class UpstreamStore(Protocol):
    """Upstream MCP servers of gateway mode (see :mod:`tenantry.core.upstreams`). Writes bump the revision.

    Raises :class:`~tenantry.core.errors.AlreadyExists` for a duplicate name and
    :class:`~tenantry.core.errors.StorageError` when the store fails.
    """

    def add_upstream(self, spec: UpstreamSpec) -> None: ...

    def list_upstreams(self) -> list[UpstreamSpec]: ...

    def remove_upstream(self, name: str) -> bool:
        """``True`` if it existed."""
        ...


# SecretStore (sealed secret values and wrapped data keys) is defined in tenantry.core.secrets,
# because the secret scopes, which may not import the control plane, are typed against it too.


class ControlStore(TenantStore, RevocationStore, ApiKeyStore, SecretStore, UpstreamStore, Protocol):
    """Everything the control plane keeps; one database, one revision counter."""
