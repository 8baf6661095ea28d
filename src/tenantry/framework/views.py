"""The seam through which the dispatcher has each tenant's own catalogue made current before it
serves one of that tenant's requests (gateway mode: what a per-tenant upstream lists through the
tenant's own session, see :meth:`tenantry.framework.app.App.set_tenant_view`)."""

from __future__ import annotations

from typing import Literal, Protocol

__all__ = ["TenantViews", "ViewedTenant"]


class ViewedTenant(Protocol):
    """What a view loader reads of a tenant (a :class:`~tenantry.controlplane.base.Tenant`)."""

    @property
    def id(self) -> str: ...

    @property
    def tier(self) -> Literal["logical", "dedicated"]: ...

    @property
    def grants(self) -> frozenset[str]: ...


class TenantViews(Protocol):
    def views_current(self, tenant: ViewedTenant) -> bool:
        """Cheap: whether ``tenant``'s views need no listing now."""

    async def load_views(self, tenant: ViewedTenant) -> None:
        """List what ``tenant`` has no current view of (failures leave it its last view)."""
