"""``tenantry token ...``: issue short-lived tenant tokens from the built-in issuer, and revoke tokens."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from tenantry.admin.actions import revoke_tokens
from tenantry.admin.issued import IssuedTokenRecord, find_issued_token, refuse_non_token_id
from tenantry.cli.common import (
    ConfigOption,
    DataDirOption,
    admin_event,
    cli_actor,
    format_time,
    open_runtime,
    print_json,
    split_tools,
    warn,
    warn_if_halted,
)
from tenantry.core.durations import parse_duration
from tenantry.core.errors import AuditUnavailable, NotFound, UsageError
from tenantry.runtime import Runtime

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
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the token with its jti, tenant, subject, expiry, tools and prefix.")
    ] = False,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Print a signed JWT for a tenant's agent (and nothing else; --json adds its jti and claims)."""
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
    warn_if_halted(record, "this token")
    if as_json:
        claims = issued.claims
        print_json(
            {
                "token": issued.token,
                "jti": claims["jti"],
                "tenant_id": claims["tenant_id"],
                "sub": claims["sub"],
                "expires_at": format_time(claims["exp"]),
                "tools": claims["allowed_tools"],
                "prefix": claims.get("resource_prefix"),
            }
        )
    else:
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
        known: IssuedTokenRecord | None = None
        if jti is not None:
            refuse_non_token_id(jti, runtime.store)
            known = _issued_by_us(runtime, jti, tenant)
            if known is not None and tenant is None and runtime.store.get_tenant(known.tenant_id) is not None:
                tenant = known.tenant_id  # the revocation is recorded in the token's own tenant's stream
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
        owner = "" if known is None else f" of tenant {known.tenant_id} (subject {known.subject})"
        typer.echo(f"revoked token {jti}{owner}")
    elif entry.kind == "subject":
        typer.echo(f"revoked every token of {sub} in tenant {tenant} issued until {format_time(entry.cutoff)}")
    else:
        typer.echo(f"revoked every token of tenant {tenant} issued until {format_time(entry.cutoff)}")


def _issued_by_us(runtime: Runtime, jti: str, tenant: str | None) -> IssuedTokenRecord | None:
    """The audit record of our own token ``jti``; warns (without refusing) when there is none."""
    try:
        store = runtime.audit_store()
        try:
            known = find_issued_token(store, jti, tenant_id=tenant)
        finally:
            store.close()
    except AuditUnavailable as exc:
        warn(f"cannot check the audit trail for token {jti} ({exc.message}); revoking it anyway")
        return None
    if known is None:
        where = f"tenant {tenant!r}" if tenant is not None else "this deployment"
        warn(
            f"no token with id {jti} was issued by this deployment's issuer for {where} (no token_issued "
            "audit record names it); the revocation is recorded anyway and refuses any token with this jti, "
            "e.g. an external identity provider's"
        )
    elif known.expires_at is not None and known.expires_at <= time.time():
        warn(f"token {jti} already expired at {format_time(known.expires_at)}; revoking it changes nothing")
    return known
