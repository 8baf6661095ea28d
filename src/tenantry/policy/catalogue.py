"""What servers serve, for deciding whether a grant names something that exists.

A *catalogue* maps capability names (tools, resources and prompts share one namespace) to
the tenants each is registered for: ``None`` for every tenant, else a set of tenant ids.
Servers publish theirs into the control store when they start; the union of every
published catalogue (and the built-in demo tools) is what an operator can grant.

A grant is a promise to the tenant, not a capability on its own: a server still serves a
tool only to the tenants it is registered for (:func:`tenantry.policy.acl.effective_tools`).
Checking grants against the catalogue catches mistyped names and a tool private to other
tenants before they sit silently in the control store.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from tenantry.core.errors import UsageError

__all__ = ["Catalogue", "GrantRefusal", "Availability"]

Availability = frozenset[str] | None
"""``None``: registered for every tenant; else the tenants it is registered for."""

GrantRefusal = Literal["not_served", "other_tenants_only"]
"""Why a name cannot be granted to a tenant: no catalogue knows it, or every catalogue that
knows it registers it for other tenants only."""

_FORMAT = 1


def _merge(a: Availability, b: Availability) -> Availability:
    if a is None or b is None:
        return None
    return a | b


@dataclass(frozen=True)
class Catalogue:
    """Capability names and who each is registered for. Pure data; merging is a union that
    makes a name available to a tenant when any part makes it so."""

    capabilities: Mapping[str, Availability] = field(default_factory=dict)

    @classmethod
    def of(cls, items: Iterable[tuple[str, Iterable[str] | None]]) -> Catalogue:
        merged: dict[str, Availability] = {}
        for name, tenants in items:
            availability = None if tenants is None else frozenset(tenants)
            merged[name] = availability if name not in merged else _merge(merged[name], availability)
        return cls(merged)

    def merged(self, *others: Catalogue) -> Catalogue:
        merged = dict(self.capabilities)
        for other in others:
            for name, availability in other.capabilities.items():
                merged[name] = availability if name not in merged else _merge(merged[name], availability)
        return Catalogue(merged)

    def knows(self, name: str) -> bool:
        return name in self.capabilities

    def serves(self, name: str, tenant_id: str) -> bool:
        """Whether ``name`` is registered for ``tenant_id`` somewhere in the catalogue."""
        if name not in self.capabilities:
            return False
        availability = self.capabilities[name]
        return availability is None or tenant_id in availability

    def servable_to(self, tenant_id: str) -> list[str]:
        """Every name registered for ``tenant_id``, sorted."""
        return sorted(name for name in self.capabilities if self.serves(name, tenant_id))

    def refusal(self, name: str, tenant_id: str, *, pending: bool = False) -> GrantRefusal | None:
        """Why ``name`` cannot be granted to ``tenant_id``, or ``None`` when it can.

        :param pending: accept a name no catalogue knows yet (a tool that will appear later);
            a name known to be registered for other tenants only is refused all the same.
        """
        if self.serves(name, tenant_id):
            return None
        if self.knows(name):
            return "other_tenants_only"
        return None if pending else "not_served"

    # -- storage form -----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form; :meth:`from_dict` reads it back."""
        capabilities = {
            name: None if tenants is None else sorted(tenants) for name, tenants in sorted(self.capabilities.items())
        }
        return {"format": _FORMAT, "capabilities": capabilities}

    @classmethod
    def from_dict(cls, data: Any) -> Catalogue:
        """The catalogue :meth:`to_dict` made. :raises UsageError: for anything else."""
        capabilities = data.get("capabilities") if isinstance(data, dict) else None
        if not isinstance(capabilities, dict) or data.get("format") != _FORMAT:
            raise UsageError("catalogue has an unknown format")
        items: list[tuple[str, Iterable[str] | None]] = []
        for name, tenants in capabilities.items():
            well_formed = tenants is None or (isinstance(tenants, list) and all(isinstance(t, str) for t in tenants))
            if not isinstance(name, str) or not well_formed:
                raise UsageError(f"catalogue entry {name!r} is malformed")
            items.append((name, tenants))
        return cls.of(items)
