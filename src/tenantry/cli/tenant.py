"""``tenantry tenant ...``: create, inspect, grant tools to, halt and resume tenants."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import Progress

from tenantry.admin.actions import halt_tenant, resume_tenant
from tenantry.admin.grants import create_tenant, grant_tools, published_catalogue, unserved_grants
from tenantry.audit.events import AuditEvent
from tenantry.cli.common import (
    ConfigOption,
    DataDirOption,
    admin_event,
    cli_actor,
    iso_time,
    new_table,
    open_runtime,
    print_json,
    print_table,
    split_tools,
)
from tenantry.controlplane.base import ControlStore, Tenant
from tenantry.demo.catalogue import DEMO_CATALOGUE
from tenantry.policy.catalogue import Catalogue

__all__ = ["tenant_app"]

tenant_app = typer.Typer(help="Manage tenants and their tool grants.", no_args_is_help=True, rich_markup_mode=None)


PendingOption = Annotated[
    bool,
    typer.Option(
        "--pending",
        help="Also grant tools no server here serves yet (an --app not started yet); "
        "a tool registered for other tenants only is refused all the same.",
    ),
]


def _catalogue(store: ControlStore) -> Catalogue:
    """What can be granted: the demo tools (they ship with Tenantry) and every published catalogue."""
    return DEMO_CATALOGUE.merged(published_catalogue(store))


def _as_dict(tenant: Tenant, catalogue: Catalogue) -> dict[str, Any]:
    return {
        "id": tenant.id,
        "name": tenant.name,
        "tier": tenant.tier,
        "status": tenant.status,
        "halted_reason": tenant.halted_reason,
        "created_at": iso_time(tenant.created_at),
        "grants": sorted(tenant.grants),
        "pending_grants": unserved_grants(tenant, catalogue),
    }


def _show(tenant: Tenant, catalogue: Catalogue) -> None:
    table = new_table("field", "value", wrap=("value",), show_header=False, box=None)
    shown = _as_dict(tenant, catalogue)
    pending = shown.pop("pending_grants")
    for key, value in shown.items():
        table.add_row(key, ", ".join(value) if isinstance(value, list) else str(value or "-"))
    if pending:
        table.add_row("pending", ", ".join(pending) + "  (granted, but no server here serves them to this tenant yet)")
    print_table(table)


def _pending_note(event: AuditEvent) -> str:
    pending = event.detail.get("pending")
    return f" (pending until a server serves them: {', '.join(pending)})" if pending else ""


@tenant_app.command("create")
def create(
    tenant_id: Annotated[str, typer.Argument(metavar="ID", help="Tenant id (lowercase letters, digits, hyphens).")],
    name: Annotated[str | None, typer.Option(help="Display name.")] = None,
    tools: Annotated[str | None, typer.Option(help="Comma-separated tools to grant.")] = None,
    tier: Annotated[str, typer.Option(help="Isolation tier: logical or dedicated.")] = "logical",
    pending: PendingOption = False,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Create a tenant. Every granted tool must be served by a server here (see --pending)."""
    if tier not in ("logical", "dedicated"):
        raise typer.BadParameter("--tier must be logical or dedicated")
    with open_runtime(data_dir, config) as runtime:
        tenant, event = create_tenant(
            runtime.store,
            tenant_id,
            _catalogue(runtime.store),
            actor=cli_actor(),
            name=name,
            tools=split_tools(tools) or [],
            tier=tier,  # type: ignore[arg-type]
            pending=pending,
        )
        runtime.record_admin(event)
    typer.echo(f"created tenant {tenant.id} with {len(tenant.grants)} granted tool(s){_pending_note(event)}")


@tenant_app.command("list")
def list_(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """List tenants."""
    with open_runtime(data_dir, config) as runtime:
        tenants = runtime.store.list_tenants()
        catalogue = _catalogue(runtime.store)
    if as_json:
        print_json([_as_dict(t, catalogue) for t in tenants])
        return
    table = new_table("id", "name", "tier", "status", "grants", wrap=("name", "grants"))
    for t in tenants:
        table.add_row(t.id, t.name, t.tier, t.status, ", ".join(sorted(t.grants)))
    print_table(table)


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
        catalogue = _catalogue(runtime.store)
    if as_json:
        print_json(_as_dict(tenant, catalogue))
    else:
        _show(tenant, catalogue)


@tenant_app.command("grant")
def grant(
    tenant_id: Annotated[str, typer.Argument(metavar="ID")],
    tools: Annotated[list[str], typer.Argument(metavar="TOOL...", help="Tools to grant.")],
    pending: PendingOption = False,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Grant tools to a tenant (a running server obeys within a second).

    Every tool must be served by a server here: the demo tools, or those of an --app whose
    server has started on this store. Add --pending for a tool that will appear later.
    """
    with open_runtime(data_dir, config) as runtime:
        tenant, event = grant_tools(
            runtime.store, tenant_id, tools, _catalogue(runtime.store), actor=cli_actor(), pending=pending
        )
        runtime.record_admin(event)
    typer.echo(f"{tenant.id} is granted: {', '.join(sorted(tenant.grants)) or '(nothing)'}{_pending_note(event)}")


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


@tenant_app.command("move")
def move(
    tenant_id: Annotated[str, typer.Argument(metavar="ID")],
    tier: Annotated[str, typer.Option("--tier", help="logical (the shared process) or dedicated (its own process).")],
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Move a tenant between isolation tiers, keeping its data and without a restart.

    A running server sends the tenant's next calls to the new tier within a second; calls in
    flight finish where they started.
    """
    from tenantry.admin.actions import move_tenant

    if tier not in ("logical", "dedicated"):
        raise typer.BadParameter("--tier must be logical or dedicated")
    with open_runtime(data_dir, config) as runtime:
        tenant, event = move_tenant(runtime.store, tenant_id, tier, actor=cli_actor())
        runtime.record_admin(event)
    if event.detail["changed"]:
        typer.echo(f"moved tenant {tenant.id} from the {event.detail['from']} to the {tenant.tier} tier")
    else:
        typer.echo(f"tenant {tenant.id} is already on the {tenant.tier} tier")


@tenant_app.command("limits")
def limits(
    tenant_id: Annotated[str, typer.Argument(metavar="ID")],
    assignments: Annotated[
        list[str] | None,
        typer.Argument(metavar="[NAME=VALUE]...", help="Limits to override, e.g. calls_per_second=20 burst=40."),
    ] = None,
    clear: Annotated[
        list[str] | None, typer.Option("--clear", help="Return a limit to the configured default (repeatable).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Show the tenant's effective limits, or override some (a running server obeys within a second)."""
    from tenantry.admin.actions import parse_limit_assignments, set_tenant_limits
    from tenantry.core.errors import NotFound

    values = parse_limit_assignments(assignments or [])
    with open_runtime(data_dir, config) as runtime:
        if values or clear:
            tenant, event = set_tenant_limits(runtime.store, tenant_id, values, clear=clear or [], actor=cli_actor())
            runtime.record_admin(event)
        else:
            found = runtime.store.get_tenant(tenant_id)
            if found is None:
                raise NotFound(f"no tenant {tenant_id!r}")
            tenant = found
        effective = tenant.limits(runtime.settings.tenant_limits()).as_dict()
    overridden = dict(tenant.limit_overrides)
    if as_json:
        print_json({"tenant_id": tenant.id, "limits": effective, "overridden": sorted(overridden)})
        return
    table = new_table("limit", "value", "source")
    for name, value in effective.items():
        table.add_row(name, _shown(value), "tenant" if name in overridden else "default")
    print_table(table)


def _shown(value: float) -> str:
    """A limit as written in the configuration: exactly (``536870912``, not ``5.36871e+08``)."""
    return str(int(value)) if float(value).is_integer() else str(value)


@tenant_app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(metavar="FILE", help='JSON Lines: {"id": ..., "name": ..., "tools": [...]}.')],
    pending: PendingOption = False,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Create many tenants from a file, fast (thousands per second); all or none of them."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from tenantry.admin.grants import import_tenants, parse_tenant_specs
    from tenantry.core.errors import UsageError

    try:
        with file.open(encoding="utf-8") as lines:
            specs = parse_tenant_specs(lines, source=str(file))
    except OSError as exc:
        raise UsageError(f"cannot read {file}: {exc.strerror}") from None
    with (
        open_runtime(data_dir, config) as runtime,
        Progress(
            TextColumn("creating tenants"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
            disable=not sys.stderr.isatty(),
        ) as bar,
    ):
        task = bar.add_task("tenants", total=len(specs))
        events = import_tenants(
            runtime.store,
            specs,
            _catalogue(runtime.store),
            actor=cli_actor(),
            pending=pending,
            progress=lambda n: bar.advance(task, n),
        )
        store = runtime.audit_store()
        try:
            for start in range(0, len(events), 2000):
                store.append(events[start : start + 2000])
        finally:
            store.close()
    typer.echo(f"created {len(specs)} tenants")


def _lifecycle_progress(what: str) -> Progress:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn(what + " {task.description}"),
        BarColumn(),
        TextColumn("{task.completed} items"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
        disable=not sys.stderr.isatty(),
    )


@tenant_app.command("export")
def export(
    tenant_id: Annotated[str, typer.Argument(metavar="ID")],
    out: Annotated[Path, typer.Option("--out", help="New directory to write the bundle to (never overwritten).")],
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Write everything held for a tenant, from every store, to a bundle directory.

    The bundle holds the control-plane records, SQL rows, files, vector documents, secret names
    and dates (never values) and the audit stream with its chain and signed checkpoints
    (re-verify it offline: ``tenantry audit verify --file OUT/audit/stream.jsonl``); its
    ``manifest.json`` lists the size and SHA-256 of every part. See docs/compliance.md.
    """
    from tenantry.audit.export import StreamNotIntact
    from tenantry.lifecycle.export import export_tenant

    with open_runtime(data_dir, config) as runtime, _lifecycle_progress("exporting") as bar:
        task = bar.add_task("", total=None)
        try:
            outcome = export_tenant(
                runtime,
                tenant_id,
                out,
                actor=cli_actor(),
                advance=lambda n: bar.advance(task, n),
                on_store=lambda name: bar.update(task, description=name),
            )
        except StreamNotIntact as exc:
            report = exc.report
            sys.stderr.write(
                f"error: refusing to export: the audit stream of {report.tenant_id} does not verify at seq"
                f" {report.seq}: {report.reason} (run `tenantry audit verify`)\n"
            )
            raise typer.Exit(1) from None
    typer.echo(
        f"exported tenant {outcome.tenant_id} to {outcome.path}: {outcome.parts} part(s), {outcome.bytes} bytes"
        f" from {', '.join(outcome.stores)} (manifest {outcome.manifest_sha256})"
    )


@tenant_app.command("delete")
def delete(
    tenant_id: Annotated[str, typer.Argument(metavar="ID")],
    yes: Annotated[bool, typer.Option("--yes", help="Confirm: the tenant's data cannot be restored.")] = False,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Erase a tenant from every store, crypto-shred its data key, and certify it.

    Every credential of the tenant is revoked first (a running server refuses its sessions
    within a second); its audit stream is retained (docs/compliance.md) and receives a
    tombstone; a signed deletion certificate is written under DATA_DIR/evidence/deletions/
    (check it with ``tenantry audit verify --certificate FILE``). A deletion that stopped
    part-way finishes when run again.
    """
    from tenantry.core.errors import UsageError
    from tenantry.lifecycle.delete import delete_tenant

    if not yes:
        raise UsageError("deleting a tenant erases its data for good; add --yes to confirm")
    with open_runtime(data_dir, config) as runtime, _lifecycle_progress("deleting") as bar:
        task = bar.add_task("", total=None)
        outcome = delete_tenant(
            runtime, tenant_id, actor=cli_actor(), on_step=lambda step: bar.update(task, description=step)
        )
    resumed = " (resumed an interrupted deletion)" if outcome.resumed else ""
    typer.echo(
        f"deleted tenant {outcome.tenant_id}{resumed}: erased from {', '.join(outcome.erased)};"
        f" retained: {', '.join(outcome.retained) or 'nothing'}; certificate: {outcome.certificate}"
    )
