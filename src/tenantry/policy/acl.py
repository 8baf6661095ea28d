"""Tool access decisions: least privilege as an intersection of three sets."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal

from tenantry.core.identity import Principal

__all__ = ["Decision", "DenyReason", "effective_tools", "decide_tool_call"]

DenyReason = Literal["not_registered", "not_granted_to_tenant", "not_in_token", "tenant_unknown"]


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: DenyReason | None = None
    """Why a call was refused; for the audit trail only, never shown to the caller."""


ALLOW = Decision(allowed=True)


def effective_tools(
    principal: Principal, tenant_grants: Collection[str], registered: Collection[str]
) -> frozenset[str]:
    """Tools this principal may see and call: token grant ∩ tenant grant ∩ registered for the tenant."""
    return frozenset(principal.allowed_tools).intersection(tenant_grants).intersection(registered)


def decide_tool_call(
    tool: str, principal: Principal, tenant_grants: Collection[str] | None, registered: Collection[str]
) -> Decision:
    """Decide one ``tools/call``; ``tenant_grants`` is ``None`` when the tenant no longer exists."""
    if tenant_grants is None:
        return Decision(False, "tenant_unknown")
    if tool not in registered:
        return Decision(False, "not_registered")
    if tool not in tenant_grants:
        return Decision(False, "not_granted_to_tenant")
    if tool not in principal.allowed_tools:
        return Decision(False, "not_in_token")
    return ALLOW
