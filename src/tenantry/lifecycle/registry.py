"""The registry of per-tenant data: every store that can hold a tenant's data, with its export
and its erasure.

Each adapter class (a control store, an SQL, vector or file scope, the secret scopes, an audit
store) is registered here by its dotted name, with the factory of its :class:`TenantData`
entry. :func:`tenant_data_of` builds the entries of one deployment from its runtime and
refuses a store that has none, so a new adapter cannot be silently left out of an export or
a deletion; ``tests/unit/test_lifecycle_registry.py`` walks the adapter modules and fails
for any adapter class not registered.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from tenantry.core.errors import StorageError

if TYPE_CHECKING:
    from tenantry.lifecycle.bundle import Bundle
    from tenantry.runtime import Runtime

__all__ = ["TenantData", "Advance", "register", "registered", "tenant_data_of", "adapter_name"]

Advance = Callable[[int], None]
"""Reports progress: so many more rows, records or files done."""


class TenantData(Protocol):
    """One store's part of a tenant's life cycle. Every method blocks.

    ``name`` (``family:backend``, e.g. ``sql:postgresql``) labels the store in the bundle
    manifest, the deletion certificate and the evidence log. ``retained`` stores keep the
    tenant's records under a retention duty (the audit stream): :meth:`erase` leaves them and
    :meth:`leftovers` reports nothing for them.
    """

    name: str
    retained: bool

    def export(self, tenant_id: str, bundle: Bundle, advance: Advance) -> None:
        """Write everything the store holds for the tenant into ``bundle``, streaming.

        :raises StorageError: when the store fails.
        """
        ...

    def erase(self, tenant_id: str) -> None:
        """Remove everything the store holds for the tenant. Idempotent: a second run after a
        complete or an interrupted one finishes the job.

        :raises StorageError: when the store fails.
        """
        ...

    def leftovers(self, tenant_id: str) -> list[str]:
        """What the store still holds for the tenant, described without its content; ``[]``
        when nothing is left."""
        ...


Factory = Callable[[object, "Runtime"], TenantData]
_FACTORIES: dict[str, Factory] = {}
_ENTRY_MODULES = (
    "tenantry.lifecycle.control",
    "tenantry.lifecycle.sql",
    "tenantry.lifecycle.files",
    "tenantry.lifecycle.vectors",
    "tenantry.lifecycle.audit",
)


def adapter_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def register(*adapters: str) -> Callable[[Factory], Factory]:
    """Register ``factory(adapter, runtime)`` as the entry of the adapter classes named
    (dotted names, so that registering does not import their drivers)."""

    def decorate(factory: Factory) -> Factory:
        for name in adapters:
            _FACTORIES[name] = factory
        return factory

    return decorate


def registered() -> frozenset[str]:
    """Dotted names of every adapter class with an entry."""
    for module in _ENTRY_MODULES:
        importlib.import_module(module)
    return frozenset(_FACTORIES)


def tenant_data_of(runtime: Runtime) -> list[TenantData]:
    """The entries of every store of the deployment, in erasure order: data stores first, then
    the secrets (crypto-shredding), the control plane, the audit stream (retained), and last the
    sweep of the tenant's directory under the data dir.

    :raises StorageError: a configured store has no registered entry.
    """
    from tenantry.lifecycle.files import TenantDirectoryData

    registered()
    audit = runtime.audit_store()
    audit_type = type(audit)
    audit.close()
    scopes = runtime.scopes
    adapters: list[tuple[object, type]] = [
        (scopes.sql, type(scopes.sql)),
        (scopes.vectors, type(scopes.vectors)),
        (scopes.files, type(scopes.files)),
        (runtime.secrets, type(runtime.secrets)),
        (runtime.store, type(runtime.store)),
        (runtime, audit_type),
    ]
    entries: list[TenantData] = []
    for adapter, cls in adapters:
        factory = _FACTORIES.get(adapter_name(cls))
        if factory is None:
            raise StorageError(
                f"the store {cls.__qualname__} has no export and erasure registered (tenantry.lifecycle.registry);"
                " a tenant cannot be exported or deleted completely"
            )
        entries.append(factory(adapter, runtime))
    entries.append(TenantDirectoryData(runtime.data_dir))
    return entries
