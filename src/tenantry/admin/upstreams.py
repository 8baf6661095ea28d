"""Adding and removing upstream MCP servers (gateway mode), shared by the CLI and any admin API.

A serving gateway lists each upstream's tools and publishes what it found into the control store:
a report (``upstream list`` shows it: exposed tools, and every tool not exposed with the reason)
and a catalogue, so the exposed tools can be granted like any other (see
:mod:`tenantry.admin.grants`).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping
from typing import Any

from tenantry.admin.grants import publish_catalogue
from tenantry.audit.events import SYSTEM_STREAM, AuditEvent
from tenantry.controlplane.base import ControlStore
from tenantry.core.errors import NotFound
from tenantry.core.upstreams import UpstreamSpec, validate_upstream_name
from tenantry.policy.catalogue import Catalogue

__all__ = [
    "REPORT_KEY_PREFIX",
    "add_upstream",
    "remove_upstream",
    "publish_upstream_report",
    "upstream_reports",
    "catalogue_key",
]

REPORT_KEY_PREFIX = "upstream-report:"


def catalogue_key(name: str) -> str:
    """The app name under which an upstream's catalogue is published."""
    return f"upstream:{name}"


def add_upstream(store: ControlStore, spec: UpstreamSpec, *, actor: str) -> AuditEvent:
    """Store a new upstream (a running server starts using it within a second).

    :raises UsageError: an invalid spec. :raises AlreadyExists: the name is taken.
    """
    spec = spec.validated()
    if not spec.created_at:
        spec = dataclasses.replace(spec, created_at=int(time.time()))
    store.add_upstream(spec)
    return AuditEvent(
        event_type="upstream_added",
        tenant_id=SYSTEM_STREAM,
        result_status="ok",
        actor=actor,
        detail={
            "upstream": spec.name,
            "transport": spec.transport,
            "tenants": None if spec.tenants is None else sorted(spec.tenants),
            "tenant_agnostic": spec.tenant_agnostic,
            "allow_private": spec.allow_private,
            "credential_secrets": spec.credential_secrets(),
        },
    )


def remove_upstream(store: ControlStore, name: str, *, actor: str) -> AuditEvent:
    """Remove an upstream: its tools disappear from every running server within a second.

    :raises NotFound: no such upstream.
    """
    validate_upstream_name(name)
    if not store.remove_upstream(name):
        raise NotFound(f"no upstream named {name!r}")
    publish_catalogue(store, catalogue_key(name), Catalogue())
    store.set_meta(REPORT_KEY_PREFIX + name, "")
    return AuditEvent(
        event_type="upstream_removed",
        tenant_id=SYSTEM_STREAM,
        result_status="ok",
        actor=actor,
        detail={"upstream": name},
    )


def publish_upstream_report(store: ControlStore, report: Mapping[str, Any], tenants: frozenset[str] | None) -> None:
    """Record what a gateway found on upstream ``report["name"]``, and make its tools, resources
    and prompts grantable."""
    name = str(report["name"])
    store.set_meta(REPORT_KEY_PREFIX + name, json.dumps(report, separators=(",", ":"), sort_keys=True))
    names = [*report.get("tools", []), *report.get("resources", []), *report.get("prompts", [])]
    publish_catalogue(store, catalogue_key(name), Catalogue.of((item, tenants) for item in names))


def upstream_reports(store: ControlStore) -> dict[str, dict[str, Any]]:
    """The last published report of each upstream, by name (removed ones left out)."""
    reports: dict[str, dict[str, Any]] = {}
    for key, value in store.list_meta(REPORT_KEY_PREFIX).items():
        if value:
            try:
                reports[key[len(REPORT_KEY_PREFIX) :]] = json.loads(value)
            except ValueError:
                continue
    return reports
