"""The control plane's and the secrets' part of a tenant's life cycle.

Control plane: the tenant row, grants, limit overrides, API keys (their metadata; a key's salted
hash is never exported), revocations, and the published catalogue entries naming the tenant
(tools an app serves to it alone: the app's, not the tenant's, so exported but not erased).
Secrets: names and dates only, never a value; erasure is crypto-shredding (the tenant's data
key and every value sealed under it are deleted).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tenantry.admin.grants import CATALOGUE_KEY_PREFIX
from tenantry.controlplane.erase import DELETING_KEY_PREFIX, TenantEraser
from tenantry.core.errors import StorageError
from tenantry.lifecycle.registry import Advance, register

if TYPE_CHECKING:
    from tenantry.controlplane.base import ControlStore
    from tenantry.lifecycle.bundle import Bundle
    from tenantry.runtime import Runtime
    from tenantry.scoping.secrets.store import StoredSecretScopes

__all__ = ["ControlPlaneData", "SecretsData"]


@dataclass
class ControlPlaneData:
    store: ControlStore
    name: str
    retained: bool = False

    def export(self, tenant_id: str, bundle: Bundle, advance: Advance) -> None:
        tenant = self.store.get_tenant(tenant_id)
        if tenant is not None:
            bundle.write_json(
                "controlplane/tenant.json",
                self.name,
                {
                    "id": tenant.id,
                    "name": tenant.name,
                    "tier": tenant.tier,
                    "status": tenant.status,
                    "halted_reason": tenant.halted_reason,
                    "created_at": tenant.created_at,
                    "grants": sorted(tenant.grants),
                    "limit_overrides": dict(tenant.limit_overrides),
                },
            )
        keys = [
            {
                "key_id": k.key_id,
                "name": k.name,
                "tools": sorted(k.tools),
                "created_at": k.created_at,
                "expires_at": k.expires_at,
                "revoked_at": k.revoked_at,
                "created_by": k.created_by,
            }
            for k in self.store.list_api_keys(tenant_id)
        ]
        bundle.write_jsonl("controlplane/api_keys.jsonl", self.name, keys)
        revocations = [
            {
                "kind": r.kind,
                "subject": r.subject,
                "jti": r.jti,
                "cutoff": r.cutoff,
                "reason": r.reason,
                "actor": r.actor,
                "created_at": r.created_at,
                "expires_at": r.expires_at,
            }
            for r in self.store.list_revocations(0)
            if r.tenant_id == tenant_id
        ]
        bundle.write_jsonl("controlplane/revocations.jsonl", self.name, revocations)
        bundle.write_json("controlplane/catalogue.json", self.name, self._catalogue_entries(tenant_id))
        advance(1 + len(keys) + len(revocations))

    def _catalogue_entries(self, tenant_id: str) -> dict[str, Any]:
        needle = json.dumps(tenant_id)
        entries: dict[str, Any] = {}
        for key, value in self.store.list_meta(CATALOGUE_KEY_PREFIX).items():
            if needle in value:
                entries[key[len(CATALOGUE_KEY_PREFIX) :]] = json.loads(value)
        return entries

    def erase(self, tenant_id: str) -> None:
        state = self.store.get_meta(DELETING_KEY_PREFIX + tenant_id)
        started = int(json.loads(state)["started"]) if state else 2**62
        self._eraser().erase_tenant(tenant_id, keep_revocations_from=started)

    def leftovers(self, tenant_id: str) -> list[str]:
        footprint = self._eraser().tenant_footprint(tenant_id)
        return [f"{rows} row(s) in {table}" for table, rows in sorted(footprint.items())]

    def _eraser(self) -> TenantEraser:
        if not isinstance(self.store, TenantEraser):
            raise StorageError(f"the control store {type(self.store).__qualname__} cannot erase a tenant")
        return self.store


@register(
    "tenantry.controlplane.sqlite.SqliteTenantStore",
    "tenantry.controlplane.postgres.PostgresTenantStore",
)
def _control_plane(adapter: object, runtime: Runtime) -> ControlPlaneData:
    backend = "postgresql" if type(adapter).__name__.startswith("Postgres") else "sqlite"
    return ControlPlaneData(runtime.store, f"controlplane:{backend}")


@dataclass
class SecretsData:
    secrets: StoredSecretScopes
    store: ControlStore
    name: str = "secrets:envelope"
    retained: bool = False

    def export(self, tenant_id: str, bundle: Bundle, advance: Advance) -> None:
        infos = self.secrets.list_secrets(tenant_id)
        rows = [{"name": i.name, "created_at": i.created_at, "updated_at": i.updated_at} for i in infos]
        bundle.write_jsonl("secrets/secrets.jsonl", self.name, rows)
        key = self.store.get_data_key(tenant_id)
        bundle.write_json(
            "secrets/data_key.json",
            self.name,
            None if key is None else {"master_key_id": key.key_id, "created_at": key.created_at},
        )
        advance(len(rows))

    def erase(self, tenant_id: str) -> None:
        self.secrets.shred_tenant_key(tenant_id)

    def leftovers(self, tenant_id: str) -> list[str]:
        found = [f"secret {i.name!r}" for i in self.store.list_secrets(tenant_id)]
        if self.store.get_data_key(tenant_id) is not None:
            found.append("its data key")
        return found


@register("tenantry.scoping.secrets.store.StoredSecretScopes")
def _secrets(adapter: object, runtime: Runtime) -> SecretsData:
    return SecretsData(runtime.secrets, runtime.store)
