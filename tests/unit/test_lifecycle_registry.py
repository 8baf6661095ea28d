"""Every store that can hold a tenant's data has an export and an erasure registered.

The adapter modules are walked, not listed: a new store class (a new backend in scoping/, a new
control or audit store) fails here until ``tenantry.lifecycle`` knows how to export and erase it.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import types
from pathlib import Path

import pytest

import tenantry.audit.store
import tenantry.controlplane
import tenantry.scoping
from tenantry.lifecycle.registry import adapter_name, registered

_PACKAGES = (tenantry.scoping, tenantry.controlplane, tenantry.audit.store)


def _is_store(cls: type) -> bool:
    """A concrete class holding tenants' data: tenant scopes (``for_tenant``), a control store
    (``create_tenant``) or an audit store (``append`` and ``chain``)."""
    if inspect.isabstract(cls) or getattr(cls, "_is_protocol", False):
        return False
    audit_store = hasattr(cls, "append") and hasattr(cls, "chain")
    return hasattr(cls, "for_tenant") or hasattr(cls, "create_tenant") or audit_store


def _stores_in(module: types.ModuleType) -> set[str]:
    return {
        adapter_name(cls)
        for _, cls in inspect.getmembers(module, inspect.isclass)
        if cls.__module__ == module.__name__ and _is_store(cls)
    }


def _all_stores() -> set[str]:
    found: set[str] = set()
    for package in _PACKAGES:
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            found |= _stores_in(importlib.import_module(info.name))
    return found


# Classes shaped like stores that hold nothing at rest, each with the reason.
HOLD_NOTHING_AT_REST = {
    # A dedicated worker's ctx.secrets: its one tenant's values, handed over in its environment by
    # the server, in memory only; the values at rest are in StoredSecretScopes (registered).
    "tenantry.scoping.secrets.pinned.PinnedSecretScopes",
}


def test_every_store_class_has_a_registered_export_and_erasure() -> None:
    stores = _all_stores()
    assert stores >= HOLD_NOTHING_AT_REST  # each exemption names a class that exists
    assert stores - registered() - HOLD_NOTHING_AT_REST == set()


def test_the_walk_finds_every_known_backend() -> None:
    # The positive control of the walk above: it must see each family's backends, or it proves nothing.
    assert {
        "tenantry.scoping.sql.sqlite.SqliteSqlScopes",
        "tenantry.scoping.sql.postgres.PostgresSqlScopes",
        "tenantry.scoping.vectors.sqlite.SqliteVectorScopes",
        "tenantry.scoping.vectors.qdrant.QdrantVectorScopes",
        "tenantry.scoping.files.local.LocalFileScopes",
        "tenantry.scoping.files.s3.S3FileScopes",
        "tenantry.scoping.secrets.store.StoredSecretScopes",
        "tenantry.controlplane.sqlite.SqliteTenantStore",
        "tenantry.controlplane.postgres.PostgresTenantStore",
        "tenantry.audit.store.sqlite.SqliteAuditStore",
        "tenantry.audit.store.postgres.PostgresAuditStore",
    } <= _all_stores()


def test_a_planted_unregistered_store_is_caught() -> None:
    planted = types.ModuleType("tenantry.scoping.planted")

    class RedisVectorScopes:
        def for_tenant(self, tenant_id: str) -> object:
            return object()

    RedisVectorScopes.__module__ = planted.__name__
    RedisVectorScopes.__qualname__ = "RedisVectorScopes"
    planted.RedisVectorScopes = RedisVectorScopes  # type: ignore[attr-defined]
    assert _stores_in(planted) - registered() == {"tenantry.scoping.planted.RedisVectorScopes"}


def test_a_runtime_store_without_an_entry_is_refused(tmp_path: Path) -> None:
    from tenantry.core.errors import StorageError
    from tenantry.core.settings import load_settings
    from tenantry.lifecycle.registry import tenant_data_of
    from tenantry.runtime import Runtime

    runtime = Runtime(load_settings(data_dir=tmp_path), create=True)
    try:
        assert [e.name for e in tenant_data_of(runtime)][:3] == ["sql:sqlite", "vectors:sqlite-vec", "files:local"]

        class UnknownFiles:
            def for_tenant(self, tenant_id: str) -> object:
                return object()

        object.__setattr__(runtime.scopes, "files", UnknownFiles())
        with pytest.raises(StorageError, match="UnknownFiles has no export and erasure registered"):
            tenant_data_of(runtime)
    finally:
        runtime.close()
