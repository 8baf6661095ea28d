"""``tenantry apikey ...``: long-lived tenant API keys (shown once, stored as salted hashes)."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from tenantry.admin.actions import create_api_key, revoke_api_key
from tenantry.auth.apikeys import key_id_of
from tenantry.cli.common import (
    ConfigOption,
    DataDirOption,
    cli_actor,
    iso_time,
    new_table,
    open_runtime,
    print_json,
    print_table,
    split_tools,
    warn_if_halted,
)
from tenantry.core.durations import parse_duration
from tenantry.core.errors import NotFound

__all__ = ["apikey_app"]

apikey_app = typer.Typer(help="Create, list and revoke tenant API keys.", no_args_is_help=True, rich_markup_mode=None)


@apikey_app.command("create")
def create(
    tenant: Annotated[str, typer.Option("--tenant", help="Tenant id.")],
    tools: Annotated[
        str | None, typer.Option(help="Comma-separated tools (default: the tenant's current grants).")
    ] = None,
    name: Annotated[str | None, typer.Option(help="A label to recognise the key by.")] = None,
    expires_in: Annotated[
        str | None, typer.Option("--expires-in", help="Lifetime, e.g. 90d (default: until revoked).")
    ] = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Print a new API key, once (only a salted hash is kept). Use it as a bearer credential, or
    exchange it at /oauth/token (client_id = its key id) for a short-lived token."""
    expires_at = None if expires_in is None else int(time.time()) + parse_duration(expires_in)
    with open_runtime(data_dir, config) as runtime:
        issued, event = create_api_key(
            runtime.store, tenant, actor=cli_actor(), tools=split_tools(tools), name=name, expires_at=expires_at
        )
        runtime.record_admin(event)
        tenant_record = runtime.store.get_tenant(tenant)
    if tenant_record is not None:
        warn_if_halted(tenant_record, "this API key")
    typer.echo(issued.key)


@apikey_app.command("list")
def list_(
    tenant: Annotated[str, typer.Option("--tenant", help="Tenant id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """List a tenant's keys (ids, names, tools, state; never the keys)."""
    now = time.time()
    with open_runtime(data_dir, config) as runtime:
        if runtime.store.get_tenant(tenant) is None:
            raise NotFound(f"no tenant {tenant!r}")
        keys = runtime.store.list_api_keys(tenant)
    rows: list[dict[str, Any]] = [
        {
            "key_id": k.key_id,
            "name": k.name,
            "tools": sorted(k.tools),
            "state": "revoked" if not k.active else "expired" if k.expired(now) else "active",
            "created_at": iso_time(k.created_at),
            "expires_at": iso_time(k.expires_at),
            "revoked_at": iso_time(k.revoked_at),
            "created_by": k.created_by,
        }
        for k in keys
    ]
    if as_json:
        print_json(rows)
        return
    table = new_table("key id", "name", "state", "tools", "created", "expires", "revoked", wrap=("name", "tools"))
    for row in rows:
        table.add_row(
            row["key_id"],
            row["name"],
            row["state"],
            ", ".join(row["tools"]),
            row["created_at"] or "-",
            row["expires_at"] or "-",
            row["revoked_at"] or "-",
        )
    print_table(table)


@apikey_app.command("revoke")
def revoke(
    key: Annotated[str, typer.Argument(metavar="KEY_ID", help="The key id (or the key itself).")],
    reason: Annotated[str | None, typer.Option(help="Why (recorded in the audit trail).")] = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Revoke a key and every token exchanged for it; a running server obeys within a second."""
    with open_runtime(data_dir, config) as runtime:
        record, event = revoke_api_key(
            runtime.store,
            key_id_of(key),
            actor=cli_actor(),
            longest_lifetime=runtime.longest_token_lifetime(),
            reason=reason,
        )
        runtime.record_admin(event)
    typer.echo(f"revoked API key {record.key_id} of tenant {record.tenant_id}")
