"""``tenantry upstream ...``: put existing MCP servers behind Tenantry (gateway mode).

See ``docs/gateway.md``: the naming rule (``<upstream>__<tool>``), per-tenant credentials
(``{secret:NAME}``, ``{tenant}``, ``{tenant_dir}``), the SSRF guard and the lifecycle.
"""

from __future__ import annotations

import logging
import shlex
from typing import Annotated, Any

import anyio
import typer

from tenantry.admin.upstreams import add_upstream, remove_upstream, upstream_reports
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
)
from tenantry.core.durations import parse_duration
from tenantry.core.errors import TenantryError, UsageError
from tenantry.core.upstreams import UpstreamSpec
from tenantry.runtime import Runtime

__all__ = ["upstream_app"]

upstream_app = typer.Typer(
    help="Upstream MCP servers whose tools Tenantry serves to tenants (gateway mode).",
    no_args_is_help=True,
    rich_markup_mode=None,
)


def _pairs(values: list[str] | None, option: str) -> tuple[tuple[str, str], ...]:
    pairs = []
    for value in values or []:
        key, sep, template = value.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{option} takes NAME=VALUE, e.g. {option} 'Authorization=Bearer {{secret:api_token}}'")
        pairs.append((key.strip(), template))
    return tuple(pairs)


def _seconds(value: str, option: str) -> float:
    try:
        return float(parse_duration(value))
    except UsageError:
        raise UsageError(f"{option} takes a duration such as 30s, 2m") from None


@upstream_app.command("add")
def add(
    name: Annotated[str, typer.Argument(metavar="NAME", help="Upstream name: lowercase letters, digits, hyphens.")],
    args: Annotated[
        list[str] | None, typer.Argument(metavar="[ARGS]...", help="More arguments for --command (after --).")
    ] = None,
    url: Annotated[str | None, typer.Option("--url", help="A streamable HTTP MCP endpoint.")] = None,
    command: Annotated[
        str | None, typer.Option("--command", help="A stdio MCP server: the command line (split like a shell).")
    ] = None,
    header: Annotated[
        list[str] | None, typer.Option("--header", help="NAME=VALUE sent to an HTTP upstream; may use {secret:NAME}.")
    ] = None,
    env: Annotated[
        list[str] | None, typer.Option("--env", help="NAME=VALUE in a command upstream's environment; {secret:NAME}.")
    ] = None,
    tenants: Annotated[
        str | None,
        typer.Option("--tenants", help="Comma-separated tenants that may be granted its tools (default all)."),
    ] = None,
    timeout: Annotated[str, typer.Option("--timeout", help="Longest a call may take.")] = "30s",
    connect_timeout: Annotated[str, typer.Option("--connect-timeout", help="Longest a start may take.")] = "10s",
    tenant_agnostic: Annotated[
        bool, typer.Option("--tenant-agnostic", help="HTTP: one session shared by every tenant (no credentials).")
    ] = False,
    allow_private: Annotated[
        bool, typer.Option("--allow-private", help="HTTP: allow private, loopback and link-local addresses.")
    ] = False,
    max_tools: Annotated[int, typer.Option("--max-tools", help="Expose at most this many of its tools.")] = 1000,
    check: Annotated[
        bool, typer.Option("--check/--no-check", help="Connect now and list its tools (default) or not.")
    ] = True,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Add an upstream: --url URL or --command 'CMD ARGS'. Its tools become NAME__TOOL, grantable to tenants."""
    if (url is None) == (command is None):
        raise UsageError("give exactly one of --url or --command")
    if args and command is None:
        raise UsageError("extra arguments are for --command")
    allowed = split_tools(tenants)
    spec = UpstreamSpec(
        name=name,
        transport="http" if url is not None else "stdio",
        url=url,
        command=tuple(shlex.split(command) + list(args or [])) if command is not None else (),
        headers=_pairs(header, "--header"),
        env=_pairs(env, "--env"),
        tenants=None if allowed is None else frozenset(allowed),
        call_timeout=_seconds(timeout, "--timeout"),
        connect_timeout=_seconds(connect_timeout, "--connect-timeout"),
        tenant_agnostic=tenant_agnostic,
        allow_private=allow_private,
        max_tools=max_tools,
    ).validated()
    with open_runtime(data_dir, config) as runtime:
        event = add_upstream(runtime.store, spec, actor=cli_actor())
        if check:
            try:
                report = anyio.run(_check, runtime, runtime.store.list_upstreams(), name)
            except BaseException:
                runtime.store.remove_upstream(name)
                raise
            if report["state"] != "ready":
                runtime.store.remove_upstream(name)
                raise TenantryError(
                    f"upstream {name!r} could not be listed: {report['error']}; nothing was added"
                    " (--no-check adds it anyway)"
                )
        runtime.record_admin(event)
    if check:
        tools = report["tools"]
        typer.echo(f"added upstream {name} with {len(tools)} tool(s): {', '.join(tools) or '-'}")
        for kind in ("resources", "prompts"):
            if report.get(kind):
                typer.echo(f"  {kind} ({len(report[kind])}): {', '.join(report[kind])}")
        for skipped in report["skipped"]:
            typer.echo(f"  not exposed: {_kind(skipped)}{skipped['tool']!r}: {skipped['why']}", err=True)
    else:
        typer.echo(f"added upstream {name} (its tools are listed when a server starts using it)")


def _kind(skipped: dict[str, Any]) -> str:
    """``""`` for a tool, else ``"resource "``, ``"resource template "`` or ``"prompt "``."""
    kind = str(skipped.get("kind", "tool"))
    return "" if kind == "tool" else kind.replace("_", " ") + " "


async def _check(runtime: Runtime, specs: list[UpstreamSpec], name: str) -> dict[str, Any]:
    from tenantry.framework.app import App
    from tenantry.server.upstreams import build_gateway

    logging.getLogger("tenantry.gateway").setLevel(logging.CRITICAL)  # the report says what went wrong
    await runtime.bulkheads.run_system(lambda: runtime.directory.refresh(force=True))
    gateway = build_gateway(runtime, App("tenantry-upstream-check"))
    spec = next(s for s in specs if s.name == name)
    async with gateway.running():
        return (await gateway.check(spec)).to_dict()


def _as_dict(spec: UpstreamSpec, report: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "name": spec.name,
        "transport": spec.transport,
        "target": spec.url if spec.transport == "http" else shlex.join(spec.command),
        "headers": [h for h, _ in spec.headers],
        "env": [v for v, _ in spec.env],
        "credential_secrets": spec.credential_secrets(),
        "tenants": None if spec.tenants is None else sorted(spec.tenants),
        "tenant_agnostic": spec.tenant_agnostic,
        "allow_private": spec.allow_private,
        "timeout": spec.call_timeout,
        "connect_timeout": spec.connect_timeout,
        "max_tools": spec.max_tools,
        "created_at": iso_time(spec.created_at),
        "state": (report or {}).get("state", "pending"),
        "error": (report or {}).get("error"),
        "tools": (report or {}).get("tools", []),
        "resources": (report or {}).get("resources", []),
        "prompts": (report or {}).get("prompts", []),
        "skipped": (report or {}).get("skipped", []),
        "listed_at": iso_time((report or {}).get("discovered_at")),
    }


@upstream_app.command("list")
def list_(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """List upstreams, the tools, resources and prompts each exposes, and every one not exposed with the reason."""
    with open_runtime(data_dir, config) as runtime:
        reports = upstream_reports(runtime.store)
        rows = [_as_dict(spec, reports.get(spec.name)) for spec in runtime.store.list_upstreams()]
    if as_json:
        print_json(rows)
        return
    table = new_table(
        "name", "transport", "target", "state", "tools", "not exposed", wrap=("target", "tools", "not exposed")
    )
    for row in rows:
        skipped = "; ".join(f"{_kind(s)}{s['tool']} ({s['reason']})" for s in row["skipped"]) or "-"
        state = row["state"] + (f": {row['error']}" if row["error"] else "")
        exposed = ", ".join([*row["tools"], *row["resources"], *row["prompts"]]) or "-"
        table.add_row(row["name"], row["transport"], row["target"], state, exposed, skipped)
    print_table(table)


@upstream_app.command("remove")
def remove(
    name: Annotated[str, typer.Argument(metavar="NAME")],
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Remove an upstream: its tools disappear for every tenant (grants stay, and apply if it returns)."""
    with open_runtime(data_dir, config) as runtime:
        event = remove_upstream(runtime.store, name, actor=cli_actor())
        runtime.record_admin(event)
    typer.echo(f"removed upstream {name}")
