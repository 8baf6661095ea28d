"""``tenantry token ...``: issue short-lived tenant tokens from the built-in issuer, and revoke tokens."""

from __future__ import annotations

from typing import Annotated

import typer

from tenantry.admin.actions import revoke_tokens
from tenantry.cli.common import (
    ConfigOption,
    DataDirOption,
    admin_event,
    cli_actor,
    format_time,
    open_runtime,
    split_tools,
)
from tenantry.core.durations import parse_duration
from tenantry.core.errors import NotFound, UsageError

__all__ = ["token_app"]

token_app = typer.Typer(help="Issue and revoke tokens.", no_args_is_help=True, rich_markup_mode=None)


@token_app.command("issue")
def issue(
    tenant: Annotated[str, typer.Option("--tenant", help="Tenant id.")],
    sub: Annotated[str, typer.Option("--sub", help="Subject (the agent or user).")],
    tools: Annotated[
        str | None, typer.Option(help="Comma-separated tools (default: the tenant's current grants).")
    ] = None,
    prefix: Annotated[str | None, typer.Option(help="Resource prefix the token is narrowed to.")] = None,
    ttl: Annotated[
        str | None, typer.Option(help="Lifetime, e.g. 15m (default 15m, at most the configured maximum).")
    ] = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Print a signed JWT for a tenant's agent (and nothing else)."""
    with open_runtime(data_dir, config) as runtime:
        record = runtime.store.get_tenant(tenant)
        if record is None:
            raise NotFound(f"no tenant {tenant!r}")
        requested = split_tools(tools)
        if requested is None:
            allowed = sorted(record.grants)
        else:
            outside = sorted(set(requested) - record.grants)
            if outside:
                raise UsageError(f"not granted to tenant {tenant!r}: {', '.join(outside)}")
            allowed = requested
        issued = runtime.token_issuer().issue(
            tenant_id=tenant,
            subject=sub,
            allowed_tools=allowed,
            resource_prefix=prefix,
            ttl=None if ttl is None else parse_duration(ttl),
        )
        runtime.record_admin(
            admin_event(
                "token_issued",
                tenant,
                subject=sub,
                detail={
                    "jti": issued.claims["jti"],
                    "allowed_tools": issued.claims["allowed_tools"],
                    "resource_prefix": issued.claims.get("resource_prefix"),
                    "expires_at": issued.claims["exp"],
                },
            )
        )
    typer.echo(issued.token)


@token_app.command("revoke")
def revoke(
    jti: Annotated[str | None, typer.Option("--jti", help="Revoke the one token with this id.")] = None,
    tenant: Annotated[
        str | None, typer.Option("--tenant", help="Revoke the tenant's tokens issued until now (or one subject's).")
    ] = None,
    sub: Annotated[str | None, typer.Option("--sub", help="With --tenant: only this subject's tokens.")] = None,
    reason: Annotated[str | None, typer.Option(help="Why (recorded in the audit trail).")] = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Revoke tokens; live sessions are refused at their next request (within a second).

    Tokens issued in the same second as a tenant- or subject-wide revocation are revoked too.
    API keys used directly are revoked with `tenantry apikey revoke`.
    """
    if sub is not None and tenant is None:
        raise UsageError("--sub needs --tenant")
    with open_runtime(data_dir, config) as runtime:
        revoked = revoke_tokens(
            runtime.store,
            actor=cli_actor(),
            longest_lifetime=runtime.longest_token_lifetime(),
            jti=jti,
            tenant_id=tenant,
            subject=sub,
            reason=reason,
        )
        runtime.record_admin(revoked.event)
    entry = revoked.revocation
    if entry.kind == "jti":
        typer.echo(f"revoked token {jti}")
    elif entry.kind == "subject":
        typer.echo(f"revoked every token of {sub} in tenant {tenant} issued until {format_time(entry.cutoff)}")
    else:
        typer.echo(f"revoked every token of tenant {tenant} issued until {format_time(entry.cutoff)}")
