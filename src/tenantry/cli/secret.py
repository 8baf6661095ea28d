"""``tenantry secret ...``: per-tenant secrets, encrypted at rest, read by tools at call time.

Values come in on standard input (or a no-echo prompt on a terminal) and never go out: no
command prints, logs or audits a value, only names and dates.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from tenantry.admin.actions import delete_secret, set_secret
from tenantry.cli.common import (
    ConfigOption,
    DataDirOption,
    cli_actor,
    iso_time,
    new_table,
    open_runtime,
    print_json,
    print_table,
)
from tenantry.core.errors import NotFound, UsageError
from tenantry.core.secrets import MAX_SECRET_BYTES, validate_secret_name
from tenantry.runtime import Runtime
from tenantry.scoping.secrets.store import StoredSecretScopes

__all__ = ["secret_app"]

secret_app = typer.Typer(
    help="Set, list and delete tenant secrets (encrypted at rest, never printed).",
    no_args_is_help=True,
    rich_markup_mode=None,
)

TenantOption = Annotated[str, typer.Option("--tenant", help="Tenant id.")]
NameArgument = Annotated[str, typer.Argument(metavar="NAME", help="Secret name, e.g. mail_api_key.")]


def _secret_scopes(runtime: Runtime) -> StoredSecretScopes:
    return runtime.secrets


def read_secret_value() -> str:
    """The value from standard input (one trailing newline dropped), or from a no-echo prompt
    when standard input is a terminal.

    :raises UsageError: input that is not UTF-8 or is too large (the message never quotes it).
    """
    if sys.stdin.isatty():
        return str(typer.prompt("Secret value", hide_input=True, confirmation_prompt=True))
    data = sys.stdin.buffer.read(MAX_SECRET_BYTES + 3)
    if len(data) > MAX_SECRET_BYTES + 2:
        raise UsageError(f"the secret value exceeds {MAX_SECRET_BYTES // 1024} KiB")
    if data.endswith(b"\r\n"):
        data = data[:-2]
    elif data.endswith(b"\n"):
        data = data[:-1]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError("the secret value on standard input is not valid UTF-8") from None


@secret_app.command("set")
def set_(
    name: NameArgument,
    tenant: TenantOption,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Create or replace a secret; the value is read from standard input (e.g.
    `printf %s "$KEY" | tenantry secret set --tenant acme mail_api_key`). Tools read it at call time."""
    validate_secret_name(name)
    value = read_secret_value()
    with open_runtime(data_dir, config) as runtime:
        event = set_secret(runtime.store, _secret_scopes(runtime), tenant, name, value, actor=cli_actor())
        runtime.record_admin(event)
    verb = "created" if event.detail.get("created") else "replaced"
    typer.echo(f"{verb} secret {name} of tenant {tenant}")


@secret_app.command("list")
def list_(
    tenant: TenantOption,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """List a tenant's secrets: names and dates, never values."""
    with open_runtime(data_dir, config) as runtime:
        if runtime.store.get_tenant(tenant) is None:
            raise NotFound(f"no tenant {tenant!r}")
        infos = runtime.store.list_secrets(tenant)
    rows: list[dict[str, Any]] = [
        {"name": i.name, "created_at": iso_time(i.created_at), "updated_at": iso_time(i.updated_at)} for i in infos
    ]
    if as_json:
        print_json(rows)
        return
    table = new_table("name", "created", "updated")
    for row in rows:
        table.add_row(row["name"], row["created_at"] or "-", row["updated_at"] or "-")
    print_table(table)


@secret_app.command("delete")
def delete(
    name: NameArgument,
    tenant: TenantOption,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Delete a secret; tools no longer find it."""
    with open_runtime(data_dir, config) as runtime:
        event = delete_secret(runtime.store, _secret_scopes(runtime), tenant, name, actor=cli_actor())
        runtime.record_admin(event)
    typer.echo(f"deleted secret {name} of tenant {tenant}")
