"""``tenantry audit ...``: read, export, verify, checkpoint and purge the audit streams."""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import pydantic_core
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from tenantry.audit.chain import export_line, genesis, to_hex
from tenantry.audit.checkpoints import InvalidCheckpoint
from tenantry.audit.store.factory import open_audit_store
from tenantry.audit.verify import StreamReport, verify_export_lines, verify_stream
from tenantry.cli.common import ConfigOption, DataDirOption, admin_event, open_runtime
from tenantry.core.errors import NotFound, UsageError
from tenantry.core.ids import validate_tenant_id

__all__ = ["audit_app"]

audit_app = typer.Typer(
    help="Read, export, verify and purge the audit streams.", no_args_is_help=True, rich_markup_mode=None
)

TenantOption = Annotated[str | None, typer.Option("--tenant", help="One tenant's stream (default: all).")]


def _print_record(record: bytes, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(record.decode() + "\n")
        return
    fields = pydantic_core.from_json(record)
    parts = [
        fields["timestamp"],
        f"{fields['tenant_id']}#{fields['seq']}",
        fields["event_type"],
        fields.get("result_status") or "",
        fields.get("tool_name") or "",
        fields.get("subject") or "",
        fields.get("reason") or "",
    ]
    sys.stdout.write("  ".join(str(p) for p in parts if p != "") + "\n")


@audit_app.command("tail")
def tail(
    tenant: TenantOption = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new records.")] = False,
    limit: Annotated[int, typer.Option(help="How many recent records to show first.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="One canonical JSON record per line.")] = False,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Print the most recent audit records (of one tenant, or all)."""
    with open_runtime(data_dir, config) as runtime:
        store = runtime.audit_store()
        try:
            records = store.recent(tenant, limit)
            for stored in records:
                _print_record(stored.record, as_json)
            seen = {(r.tenant_id, r.seq) for r in records}
            since = records[-1].created if records else time.time() - 1
            while follow:
                sys.stdout.flush()
                time.sleep(0.5)
                for stored in store.recent(tenant, 1000, after_created=since - 1):
                    if (stored.tenant_id, stored.seq) not in seen:
                        seen.add((stored.tenant_id, stored.seq))
                        since = max(since, stored.created)
                        _print_record(stored.record, as_json)
        except KeyboardInterrupt:
            pass
        finally:
            store.close()


@audit_app.command("verify")
def verify(
    tenant: TenantOption = None,
    file: Annotated[Path | None, typer.Option("--file", help="Verify an export file offline instead.")] = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Prove the streams intact, or name the tenant, seq and reason of the first bad record (exit 1)."""
    if file is not None:
        try:
            with file.open() as lines:
                offline = verify_export_lines(lines)
        except OSError as exc:
            raise UsageError(f"cannot read {file}: {exc.strerror}") from None
        _report(offline)
        return
    with open_runtime(data_dir, config) as runtime:
        store = runtime.audit_store()
        try:
            signer = runtime.checkpoint_signer()
            heads = store.heads()
            tenants = [tenant] if tenant else store.streams()
            if tenant and tenant not in heads and tenant not in tenants:
                raise NotFound(f"no audit stream for {tenant!r}")
            total = sum(heads.get(t, (0, b""))[0] for t in tenants)
            reports: list[StreamReport] = []
            with Progress(
                TextColumn("verifying {task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=True,
                disable=total < 200_000 or not sys.stderr.isatty(),
            ) as bar:
                task = bar.add_task("audit streams", total=total)
                for tenant_id in tenants:
                    reports.append(verify_stream(store, signer, tenant_id, progress=lambda n: bar.advance(task, n)))
        finally:
            store.close()
    _report(reports)


def _report(reports: list[StreamReport]) -> None:
    for report in reports:
        typer.echo(report.line())
    failed = [r for r in reports if not r.ok]
    if failed:
        first = failed[0]
        sys.stderr.write(f"error: audit verify failed: tenant {first.tenant_id}, seq {first.seq}: {first.reason}\n")
        raise typer.Exit(1)
    if not reports:
        typer.echo("no audit streams")


@audit_app.command("export")
def export(
    tenant: Annotated[str, typer.Option("--tenant", help="The tenant whose stream to export.")],
    out: Annotated[Path, typer.Option("--out", help="Output file (JSON Lines).")],
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Write one tenant's stream as JSON Lines with its chain fields, plus its signed checkpoints.

    ``OUT`` gets one record per line (``prev_hash`` and ``hash`` included); ``OUT.checkpoints.json``
    gets the signed checkpoints and the public keys to check them. Re-verify offline with
    ``tenantry audit verify --file OUT`` or any RFC 8785 + SHA-256 implementation.
    """
    validate_tenant_id(tenant)
    with open_runtime(data_dir, config) as runtime:
        store = runtime.audit_store()
        try:
            checkpoints = store.checkpoints(tenant)
            signer = runtime.checkpoint_signer()
            anchors = []
            for checkpoint in checkpoints:
                try:
                    claims = signer.verify(checkpoint.token)
                except InvalidCheckpoint:
                    continue
                if claims.kind == "purge":
                    anchors.append(claims)
            previous = max(anchors, key=lambda c: c.seq).hash if anchors else genesis(tenant)
            count = 0
            with out.open("w") as handle:
                for stored in store.read(tenant):
                    handle.write(json.dumps(export_line(stored, previous), separators=(",", ":"), ensure_ascii=False))
                    handle.write("\n")
                    previous = stored.hash
                    count += 1
            sidecar = out.with_name(out.name + ".checkpoints.json")
            sidecar.write_text(
                json.dumps(
                    {
                        "tenant_id": tenant,
                        "head": to_hex(previous),
                        "checkpoints": [c.token for c in checkpoints],
                        "jwks": runtime.audit_keys.jwks(),
                    },
                    indent=2,
                )
            )
        finally:
            store.close()
        runtime.record_admin(admin_event("audit_exported", tenant, detail={"records": count, "file": out.name}))
    typer.echo(f"exported {count} records of {tenant} to {out} (checkpoints: {sidecar})")


@audit_app.command("checkpoint")
def checkpoint(data_dir: DataDirOption = None, config: ConfigOption = None) -> None:
    """Sign the current head of every stream now (the server also does this periodically)."""
    with open_runtime(data_dir, config) as runtime:
        store = runtime.audit_store()
        try:
            count = runtime.checkpointer().checkpoint_now(store)
        finally:
            store.close()
    typer.echo(f"signed {count} checkpoint(s)")


@audit_app.command("purge")
def purge(
    before: Annotated[str, typer.Option("--before", help="Purge records created before this date (YYYY-MM-DD, UTC).")],
    tenant: TenantOption = None,
    yes: Annotated[bool, typer.Option("--yes", help="Confirm: deleted records cannot be restored.")] = False,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Delete records older than a date (never younger than the retention period), leaving a signed
    checkpoint so that ``audit verify`` still proves what remains. The purge is itself audited."""
    try:
        cutoff = datetime.strptime(before, "%Y-%m-%d").replace(tzinfo=UTC).timestamp()
    except ValueError:
        raise UsageError("--before must be a date like 2025-01-31") from None
    if not yes:
        raise UsageError("purging deletes audit records for good; add --yes to confirm")
    with open_runtime(data_dir, config) as runtime:
        retention = runtime.settings.audit.retention
        oldest_allowed = time.time() - retention
        if cutoff > oldest_allowed:
            limit = datetime.fromtimestamp(oldest_allowed, UTC).date().isoformat()
            raise UsageError(f"retention is {retention // 86400} days: --before must be {limit} or earlier")
        audit = runtime.settings.audit
        store = open_audit_store(audit.admin_url or audit.url, runtime.data_dir, busy_timeout=audit.busy_timeout)
        signer = runtime.checkpoint_signer()
        try:
            tenants = [tenant] if tenant else store.streams()
            outcomes = [store.purge(t, cutoff, signer.sign) for t in tenants]
        finally:
            store.close()
        for outcome in outcomes:
            if outcome is None:
                continue
            runtime.record_admin(
                admin_event(
                    "audit_purged",
                    outcome.tenant_id,
                    reason=f"records before {before} purged",
                    detail={"through_seq": outcome.through_seq, "records": outcome.purged, "before": before},
                )
            )
            typer.echo(f"{outcome.tenant_id}: purged {outcome.purged} records (through seq {outcome.through_seq})")
    if not any(outcomes):
        typer.echo("nothing to purge")
