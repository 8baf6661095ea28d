"""``tenantry keys ...``: the built-in issuer's signing keys (and the audit checkpoint keys)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from tenantry.audit.events import SYSTEM_STREAM, AuditEvent
from tenantry.cli.common import (
    ConfigOption,
    DataDirOption,
    cli_actor,
    format_time,
    iso_time,
    new_table,
    open_runtime,
    print_json,
    print_table,
)

__all__ = ["keys_app"]

keys_app = typer.Typer(help="List, rotate and retire signing keys.", no_args_is_help=True, rich_markup_mode=None)

AuditOption = Annotated[
    bool, typer.Option("--audit", help="The audit checkpoint signing keys instead of the token keys.")
]


@keys_app.command("list")
def list_(
    audit: AuditOption = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Show every signing key with its state (current, previous, retired) and dates."""
    import time

    with open_runtime(data_dir, config) as runtime:
        ring = runtime.audit_keys if audit else runtime.keys
        ring.ensure()
        now = time.time()
        rows: list[dict[str, Any]] = [
            {
                "kid": key.kid,
                "alg": key.alg,
                "state": key.state(now),
                "created_at": iso_time(key.created_at),
                "retires_at": iso_time(key.retire_after),
                "published": key.state(now) != "retired",
            }
            for key in ring.all()
        ]
    if as_json:
        print_json(rows)
        return
    table = new_table("kid", "alg", "state", "created", "retires", "in JWKS")
    for row in rows:
        table.add_row(
            row["kid"],
            row["alg"],
            row["state"],
            row["created_at"],
            row["retires_at"] or "-",
            "yes" if row["published"] else "no",
        )
    print_table(table)


@keys_app.command("rotate")
def rotate(
    audit: AuditOption = False,
    retire_old_now: Annotated[
        bool,
        typer.Option(
            "--retire-old-now",
            help="Retire every older key at once (one was compromised): tokens they signed stop working now.",
        ),
    ] = False,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Add a new current signing key. The old key keeps verifying the tokens it signed until they
    have all expired (the maximum token lifetime plus clock leeway), then retires by itself."""
    import time

    with open_runtime(data_dir, config) as runtime:
        ring = runtime.audit_keys if audit else runtime.keys
        ring.ensure()
        previous = ring.current()
        live_before = [key.kid for key in ring.all() if key.state(time.time()) != "retired"]
        # Audit checkpoint keys sign no expiring tokens: the old one stays available for verification.
        overlap = 0 if audit else runtime.longest_token_lifetime()
        fresh = ring.rotate(overlap=overlap, retire_old_now=retire_old_now or audit)
        retired = live_before if retire_old_now else []
        runtime.record_admin(
            AuditEvent(
                event_type="key_rotated",
                tenant_id=SYSTEM_STREAM,
                result_status="ok",
                actor=cli_actor(),
                reason="older keys retired at once" if retire_old_now else None,
                detail={
                    "ring": "audit" if audit else "tokens",
                    "new_kid": fresh.kid,
                    "old_kid": previous.kid,
                    "old_retires_at": None if audit else iso_time(fresh.created_at + overlap),
                    "retired_now": retire_old_now,
                    **({"retired_kids": retired} if retire_old_now else {}),
                },
            )
        )
    typer.echo(f"new current key {fresh.kid} ({fresh.alg})")
    if audit:
        typer.echo(f"old checkpoint key {previous.kid} signs no more; it still verifies old checkpoints")
    elif retire_old_now:
        for kid in retired:
            typer.echo(f"old key {kid} retired now: tokens it signed are refused")
    else:
        typer.echo(f"old key {previous.kid} verifies its tokens until {format_time(fresh.created_at + overlap)}")


# A kid is an RFC 7638 thumbprint, base64url: one in 64 begins with "-", which the option parser
# would otherwise take for an option (the command has no short options for it to match).
@keys_app.command("retire", context_settings={"ignore_unknown_options": True})
def retire(
    kid: Annotated[str, typer.Argument(metavar="KID", help="The key id (see `tenantry keys list`).")],
    reason: Annotated[str | None, typer.Option(help="Why (recorded in the audit trail).")] = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Retire a previous signing key now: tokens it signed are refused (a running server obeys
    within a second) and it leaves the JWKS. The current key cannot be retired; rotate first."""
    with open_runtime(data_dir, config) as runtime:
        key, changed = runtime.keys.retire(kid)
        if changed:
            runtime.record_admin(
                AuditEvent(
                    event_type="key_retired",
                    tenant_id=SYSTEM_STREAM,
                    result_status="ok",
                    actor=cli_actor(),
                    reason=reason,
                    detail={"ring": "tokens", "kid": key.kid, "alg": key.alg, "retired_early": True},
                )
            )
    if changed:
        typer.echo(f"retired key {key.kid}: tokens it signed are refused")
    else:
        typer.echo(f"key {key.kid} was already retired")
