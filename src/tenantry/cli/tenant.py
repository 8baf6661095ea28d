"""``tenantry tenant ...``: create, inspect, grant tools to, halt and resume tenants."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from tenantry.admin.actions import halt_tenant, resume_tenant
from tenantry.cli.common import (
    ConfigOption,
    DataDirOption,
    admin_event,
    cli_actor,
    open_runtime,
    print_json,
    split_tools,
)
from tenantry.controlplane.base import Tenant

__all__ = ["tenant_app"]

tenant_app = typer.Typer(help="Manage tenants and their tool grants.", no_args_is_help=True, rich_markup_mode=None)


def _as_dict(tenant: Tenant) -> dict[str, Any]:
    return {
        "id": tenant.id,
        "name": tenant.name,
        "tier": tenant.tier,
        "status": tenant.status,
        "halted_reason": tenant.halted_reason,
        "created_at": datetime.fromtimestamp(tenant.created_at, UTC).isoformat(),
        "grants": sorted(tenant.grants),
    }


def _show(tenant: Tenant) -> None:
    table = Table(show_header=False, box=None)
    for key, value in _as_dict(tenant).items():
        table.add_row(key, ", ".join(value) if isinstance(value, list) else str(value or "-"))
    Console().print(table)


@tenant_app.command("create")
def create(
    tenant_id: Annotated[str, typer.Argument(metavar="ID", help="Tenant id (lowercase letters, digits, hyphens).")],
    name: Annotated[str | None, typer.Option(help="Display name.")] = None,
    tools: Annotated[str | None, typer.Option(help="Comma-separated tools to grant.")] = None,
    tier: Annotated[str, typer.Option(help="Isolation tier: logical or dedicated.")] = "logical",
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Create a tenant."""
    if tier not in ("logical", "dedicated"):
        raise typer.BadParameter("--tier must be logical or dedicated")
    with open_runtime(data_dir, config) as runtime:
        tenant = runtime.store.create_tenant(tenant_id, name=name, tools=split_tools(tools) or [], tier=tier)  # type: ignore[arg-type]
        runtime.record_admin(
            admin_event("tenant_created", tenant.id, detail={"tier": tier, "grants": sorted(tenant.grants)})
        )
    typer.echo(f"created tenant {tenant.id} with {len(tenant.grants)} granted tool(s)")


@tenant_app.command("list")
def list_(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """List tenants."""
    with open_runtime(data_dir, config) as runtime:
        tenants = runtime.store.list_tenants()
    if as_json:
        print_json([_as_dict(t) for t in tenants])
        return
    table = Table("id", "name", "tier", "status", "grants")
    for t in tenants:
        table.add_row(t.id, t.name, t.tier, t.status, ", ".join(sorted(t.grants)))
    Console().print(table)


@tenant_app.command("show")
def show(
    tenant_id: Annotated[str, typer.Argument(metavar="ID")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Show one tenant."""
    from tenantry.core.errors import NotFound

    with open_runtime(data_dir, config) as runtime:
        tenant = runtime.store.get_tenant(tenant_id)
    if tenant is None:
        raise NotFound(f"no tenant {tenant_id!r}")
    if as_json:
        print_json(_as_dict(tenant))
    else:
        _show(tenant)


@tenant_app.command("grant")
def grant(
    tenant_id: Annotated[str, typer.Argument(metavar="ID")],
    tools: Annotated[list[str], typer.Argument(metavar="TOOL...", help="Tools to grant.")],
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Grant tools to a tenant (a running server obeys within a second)."""
    with open_runtime(data_dir, config) as runtime:
        tenant = runtime.store.grant(tenant_id, tools)
        runtime.record_admin(admin_event("tenant_granted", tenant.id, detail={"tools": sorted(set(tools))}))
    typer.echo(f"{tenant.id} is granted: {', '.join(sorted(tenant.grants)) or '(nothing)'}")


@tenant_app.command("ungrant")
def ungrant(
    tenant_id: Annotated[str, typer.Argument(metavar="ID")],
    tools: Annotated[list[str], typer.Argument(metavar="TOOL...", help="Tools to take away.")],
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Take tools away from a tenant (a running server obeys within a second)."""
    with open_runtime(data_dir, config) as runtime:
        tenant = runtime.store.ungrant(tenant_id, tools)
        runtime.record_admin(admin_event("tenant_ungranted", tenant.id, detail={"tools": sorted(set(tools))}))
    typer.echo(f"{tenant.id} is granted: {', '.join(sorted(tenant.grants)) or '(nothing)'}")


@tenant_app.command("halt")
def halt(
    tenant_id: Annotated[str, typer.Argument(metavar="ID")],
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded in the audit trail).")],
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Kill switch: refuse every request of the tenant (HTTP 403) and cancel its calls in flight.

    A running server obeys within a second, on every live session; other tenants are unaffected.
    """
    with open_runtime(data_dir, config) as runtime:
        tenant, event = halt_tenant(runtime.store, tenant_id, actor=cli_actor(), reason=reason)
        runtime.record_admin(event)
    typer.echo(f"halted tenant {tenant.id}: {tenant.halted_reason}")


@tenant_app.command("resume")
def resume(
    tenant_id: Annotated[str, typer.Argument(metavar="ID")],
    reason: Annotated[str | None, typer.Option("--reason", help="Why (recorded in the audit trail).")] = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Switch the tenant's kill switch off again."""
    with open_runtime(data_dir, config) as runtime:
        tenant, event = resume_tenant(runtime.store, tenant_id, actor=cli_actor(), reason=reason)
        runtime.record_admin(event)
    was = "was halted" if event.detail.get("was_halted") else "was not halted"
    typer.echo(f"resumed tenant {tenant.id} ({was})")
