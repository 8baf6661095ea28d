"""Erasing one tenant from the control plane, and reading back what it still holds there.

One list of statements for both dialects (SQLite ``?`` and PostgreSQL ``%s`` placeholders,
tables with or without the ``tenantry.`` schema), so the two stores cannot drift apart.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

__all__ = ["TenantEraser", "DELETING_KEY_PREFIX", "deletion_in_progress", "erase_statements", "footprint_queries"]

DELETING_KEY_PREFIX = "lifecycle:deleting:"
"""Meta key (this prefix and the tenant id) of a tenant deletion: its progress as JSON, with
``completed`` set once done (see ``tenantry.lifecycle.delete``)."""


def deletion_in_progress(meta: dict[str, str]) -> set[str]:
    """Tenant ids whose deletion started and did not complete, from ``list_meta(DELETING_KEY_PREFIX)``."""
    import json

    busy = set()
    for key, value in meta.items():
        try:
            done = bool(value) and json.loads(value).get("completed") is not None
        except (ValueError, AttributeError):
            done = False
        if not done:
            busy.add(key[len(DELETING_KEY_PREFIX) :])
    return busy


# The tenant-wide revocation written when the deletion began stays until it expires: a token
# issued before the deletion must stay refused even if a tenant of the same id is made again.
_ERASE = (
    "DELETE FROM {s}secrets WHERE tenant_id = {p}",
    "DELETE FROM {s}tenant_data_keys WHERE tenant_id = {p}",
    "DELETE FROM {s}api_keys WHERE tenant_id = {p}",
    "DELETE FROM {s}tenant_limits WHERE tenant_id = {p}",
    "DELETE FROM {s}grants WHERE tenant_id = {p}",
    "DELETE FROM {s}revocations WHERE tenant_id = {p} AND NOT (kind = 'tenant' AND cutoff >= {p})",
    "DELETE FROM {s}tenants WHERE id = {p}",
)
_FOOTPRINT = (
    ("tenants", "SELECT count(*) FROM {s}tenants WHERE id = {p}"),
    ("grants", "SELECT count(*) FROM {s}grants WHERE tenant_id = {p}"),
    ("tenant_limits", "SELECT count(*) FROM {s}tenant_limits WHERE tenant_id = {p}"),
    ("api_keys", "SELECT count(*) FROM {s}api_keys WHERE tenant_id = {p}"),
    ("secrets", "SELECT count(*) FROM {s}secrets WHERE tenant_id = {p}"),
    ("tenant_data_keys", "SELECT count(*) FROM {s}tenant_data_keys WHERE tenant_id = {p}"),
    ("revocations", "SELECT count(*) FROM {s}revocations WHERE tenant_id = {p} AND kind <> 'tenant'"),
)


def erase_statements(schema: str, placeholder: str) -> list[tuple[str, int]]:
    """``(statement, number of parameters)``: the tenant id, and for revocations the cutoff kept."""
    return [(sql.format(s=schema, p=placeholder), sql.count("{p}")) for sql in _ERASE]


def footprint_queries(schema: str, placeholder: str) -> list[tuple[str, str]]:
    """``(table, count query)`` of every control-plane table that can hold a tenant's rows."""
    return [(table, sql.format(s=schema, p=placeholder)) for table, sql in _FOOTPRINT]


@runtime_checkable
class TenantEraser(Protocol):
    """A control store that can erase one tenant (``tenant delete``)."""

    def erase_tenant(self, tenant_id: str, *, keep_revocations_from: int) -> None:
        """Delete the tenant and every row keyed by it (grants, limits, API keys, secrets, its data
        key, revocations), keeping tenant-wide revocations whose cutoff is ``keep_revocations_from``
        or later. Idempotent; bumps the revision so every server drops the tenant within a second.

        :raises StorageError: when the store fails.
        """
        ...

    def tenant_footprint(self, tenant_id: str) -> dict[str, int]:
        """Rows the tenant still has, by table (tables without rows are left out)."""
        ...
