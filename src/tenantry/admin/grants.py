"""Granting tools to tenants, checked against what servers serve.

A server publishes its catalogue (:class:`~tenantry.policy.catalogue.Catalogue`) into the
control store when it starts, one entry per app name; several apps may share a store, and
what can be granted is the union of them all plus whatever the caller knows is built in
(the CLI adds the demo tools, which ship with Tenantry). A grant naming something no
catalogue knows is refused unless the operator says it is ``pending`` (a tool of an app
not started yet); a name registered for other tenants only is refused even then.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from typing import Any

from tenantry.audit.events import AuditEvent
from tenantry.controlplane.base import ControlStore, Tenant, TenantSpec, Tier
from tenantry.controlplane.erase import DELETING_KEY_PREFIX, deletion_in_progress
from tenantry.core.errors import GrantRefused, NotFound, StorageError, UsageError
from tenantry.core.ids import validate_tenant_id, validate_tool_name
from tenantry.policy.catalogue import Catalogue

__all__ = [
    "CATALOGUE_KEY_PREFIX",
    "publish_catalogue",
    "published_catalogue",
    "check_grants",
    "create_tenant",
    "grant_tools",
    "parse_tenant_specs",
    "import_tenants",
    "unserved_grants",
]

CATALOGUE_KEY_PREFIX = "catalogue:"
"""Control-store meta key of an app's published catalogue: this prefix and the app name."""

_SHOWN_KNOWN = 6


def publish_catalogue(store: ControlStore, app_name: str, catalogue: Catalogue, *, now: int | None = None) -> None:
    """Record what the app ``app_name`` serves, replacing what it published before.

    :raises UsageError: an empty or overlong app name. :raises StorageError: the store failed.
    """
    if not 0 < len(app_name) <= 200 or not app_name.isprintable():
        raise UsageError("an app's name must be 1-200 printable characters")
    published_at = int(time.time()) if now is None else now
    body = {"app": app_name, "published_at": published_at, **catalogue.to_dict()}
    store.set_meta(CATALOGUE_KEY_PREFIX + app_name, json.dumps(body, separators=(",", ":"), sort_keys=True))


def published_catalogue(store: ControlStore) -> Catalogue:
    """The union of every catalogue published into ``store``.

    :raises StorageError: the store failed, or holds an entry that is not a catalogue.
    """
    parts: list[Catalogue] = []
    for key, value in sorted(store.list_meta(CATALOGUE_KEY_PREFIX).items()):
        app_name = key[len(CATALOGUE_KEY_PREFIX) :]
        try:
            parts.append(Catalogue.from_dict(json.loads(value)))
        except (ValueError, UsageError):
            raise StorageError(
                f"the catalogue published for app {app_name!r} is unreadable; restart its server to publish it again"
            ) from None
    return Catalogue().merged(*parts)


def _quoted(names: Iterable[str]) -> str:
    return ", ".join(repr(name) for name in names)


def _known(catalogue: Catalogue, tenant_id: str) -> str:
    servable = catalogue.servable_to(tenant_id)
    if not servable:
        return "none known"
    shown = ", ".join(servable[:_SHOWN_KNOWN])
    more = len(servable) - _SHOWN_KNOWN
    return f"known: {shown}" + (f", ... and {more} more" if more > 0 else "")


def check_grants(catalogue: Catalogue, tenant_id: str, tools: Iterable[str], *, pending: bool = False) -> list[str]:
    """Check that every name in ``tools`` may be granted to ``tenant_id``; return, sorted, those
    granted as pending (no catalogue knows them yet; only when ``pending``).

    :raises UsageError: an invalid tool name.
    :raises GrantRefused: a name registered for other tenants only, or (without ``pending``) a
        name no catalogue knows.
    """
    names = sorted({validate_tool_name(tool) for tool in tools})
    private = [n for n in names if catalogue.refusal(n, tenant_id) == "other_tenants_only"]
    if private:
        verb = "is" if len(private) == 1 else "are"
        raise GrantRefused(f"{_quoted(private)} {verb} registered for other tenants only, not for {tenant_id!r}")
    unknown = [n for n in names if not catalogue.knows(n)]
    if unknown and not pending:
        what = "a tool named" if len(unknown) == 1 else "tools named"
        raise GrantRefused(
            f"no server here serves {what} {_quoted(unknown)} ({_known(catalogue, tenant_id)}); "
            "to grant a tool that will appear later, add --pending"
        )
    return unknown


def create_tenant(
    store: ControlStore,
    tenant_id: str,
    catalogue: Catalogue,
    *,
    actor: str,
    name: str | None = None,
    tools: Iterable[str] = (),
    tier: Tier = "logical",
    pending: bool = False,
) -> tuple[Tenant, AuditEvent]:
    """Create a tenant granted ``tools``, each checked by :func:`check_grants`.

    :raises GrantRefused: see :func:`check_grants`; nothing is created then.
    :raises AlreadyExists: the tenant exists. :raises UsageError: an invalid id or name.
    """
    validate_tenant_id(tenant_id)
    _refuse_while_deleting(store, [tenant_id])
    wanted = list(tools)
    pending_names = check_grants(catalogue, tenant_id, wanted, pending=pending)
    tenant = store.create_tenant(tenant_id, name=name, tools=wanted, tier=tier)
    detail: dict[str, Any] = {"tier": tier, "grants": sorted(tenant.grants)}
    if pending_names:
        detail["pending"] = pending_names
    event = AuditEvent(event_type="tenant_created", tenant_id=tenant.id, result_status="ok", actor=actor, detail=detail)
    return tenant, event


def _refuse_while_deleting(store: ControlStore, tenant_ids: list[str]) -> None:
    """A deletion that stopped part-way would erase a new tenant of the same id when resumed.

    :raises UsageError: naming the first such id.
    """
    busy = deletion_in_progress(store.list_meta(DELETING_KEY_PREFIX))
    for tenant_id in tenant_ids:
        if tenant_id in busy:
            raise UsageError(
                f"tenant {tenant_id!r} is being deleted; finish that first: tenantry tenant delete {tenant_id} --yes"
            )


def parse_tenant_specs(lines: Iterable[str], *, source: str = "input") -> list[TenantSpec]:
    """Tenants to create in bulk, one JSON object per line: ``{"id": "t1", "name": "...",
    "tools": ["whoami"], "tier": "logical"}`` (only ``id`` is required; blank lines and lines
    starting with ``#`` are skipped).

    :raises UsageError: naming the first bad line (nothing is created then).
    """
    specs: list[TenantSpec] = []
    seen: set[str] = set()
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        try:
            entry = json.loads(text)
            if not isinstance(entry, dict):
                raise ValueError("not an object")
            tenant_id = validate_tenant_id(entry["id"])
            name = entry.get("name") or tenant_id
            tools = entry.get("tools") or []
            tier = entry.get("tier", "logical")
            if not isinstance(name, str) or not 0 < len(name) <= 200 or not name.isprintable():
                raise ValueError("name must be 1-200 printable characters")
            if not isinstance(tools, list) or not all(isinstance(t, str) for t in tools):
                raise ValueError("tools must be a list of names")
            if tier not in ("logical", "dedicated"):
                raise ValueError("tier must be logical or dedicated")
            if tenant_id in seen:
                raise ValueError(f"tenant {tenant_id!r} appears twice")
        except (ValueError, KeyError, TypeError, UsageError) as exc:
            reason = exc.message if isinstance(exc, UsageError) else str(exc) or type(exc).__name__
            raise UsageError(f"{source} line {number}: {reason}") from None
        seen.add(tenant_id)
        specs.append(TenantSpec(tenant_id, name, tuple(sorted({validate_tool_name(t) for t in tools})), tier))
    if not specs:
        raise UsageError(f"{source} holds no tenants")
    return specs


def import_tenants(
    store: ControlStore,
    specs: list[TenantSpec],
    catalogue: Catalogue,
    *,
    actor: str,
    pending: bool = False,
    chunk: int = 2000,
    progress: Callable[[int], None] | None = None,
) -> list[AuditEvent]:
    """Create many tenants fast: every grant is checked first (nothing is created if one is
    refused), then the tenants go in a few large transactions. Returns one ``tenant_created``
    event per tenant for the caller to record.

    :raises GrantRefused: see :func:`check_grants`. :raises AlreadyExists: an id that exists.
    """
    _refuse_while_deleting(store, [spec.id for spec in specs])
    pending_by_tenant = {spec.id: check_grants(catalogue, spec.id, spec.tools, pending=pending) for spec in specs}
    events: list[AuditEvent] = []
    for start in range(0, len(specs), chunk):
        part = specs[start : start + chunk]
        store.create_tenants(part)
        for spec in part:
            detail: dict[str, Any] = {"tier": spec.tier, "grants": list(spec.tools), "bulk": True}
            if pending_by_tenant[spec.id]:
                detail["pending"] = pending_by_tenant[spec.id]
            events.append(
                AuditEvent(
                    event_type="tenant_created", tenant_id=spec.id, result_status="ok", actor=actor, detail=detail
                )
            )
        if progress is not None:
            progress(len(part))
    return events


def grant_tools(
    store: ControlStore,
    tenant_id: str,
    tools: Iterable[str],
    catalogue: Catalogue,
    *,
    actor: str,
    pending: bool = False,
) -> tuple[Tenant, AuditEvent]:
    """Grant ``tools`` to the tenant, each checked by :func:`check_grants`.

    :raises NotFound: unknown tenant. :raises GrantRefused: see :func:`check_grants`; nothing is
        granted then. :raises UsageError: an invalid tool name.
    """
    if store.get_tenant(tenant_id) is None:
        raise NotFound(f"no tenant {tenant_id!r}")
    wanted = list(tools)
    pending_names = check_grants(catalogue, tenant_id, wanted, pending=pending)
    tenant = store.grant(tenant_id, wanted)
    detail: dict[str, Any] = {"tools": sorted(set(wanted))}
    if pending_names:
        detail["pending"] = pending_names
    event = AuditEvent(event_type="tenant_granted", tenant_id=tenant.id, result_status="ok", actor=actor, detail=detail)
    return tenant, event


def unserved_grants(tenant: Tenant, catalogue: Catalogue) -> list[str]:
    """The tenant's grants no catalogue serves to it (yet), sorted: pending ones, and any whose
    tool has since gone or been restricted to other tenants."""
    return sorted(name for name in tenant.grants if not catalogue.serves(name, tenant.id))
