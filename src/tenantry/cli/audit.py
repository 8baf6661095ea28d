"""``tenantry audit ...``: read, export, verify, checkpoint and purge the audit streams."""

from __future__ import annotations

import heapq
import itertools
import json
import sys
import time
from collections.abc import Generator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import pydantic_core
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from tenantry.audit.chain import StoredRecord, to_hex
from tenantry.audit.checkpoints import AUDIT_KEY_FILE, InvalidCheckpoint, TrustedKeys
from tenantry.audit.events import SYSTEM_STREAM
from tenantry.audit.export import StreamNotIntact, sidecar_path, verify_export_file, write_export
from tenantry.audit.store.base import AuditStore
from tenantry.audit.store.factory import open_audit_store
from tenantry.audit.verify import StreamReport, verify_stream
from tenantry.auth.keys import KeyRing
from tenantry.cli.common import ConfigOption, DataDirOption, admin_event, open_runtime, settings_from
from tenantry.core.errors import NotFound, UsageError
from tenantry.core.ids import validate_tenant_id
from tenantry.runtime import Runtime

__all__ = ["audit_app"]

audit_app = typer.Typer(
    help="Read, export, verify and purge the audit streams.", no_args_is_help=True, rich_markup_mode=None
)

TenantOption = Annotated[str | None, typer.Option("--tenant", help="One tenant's stream (default: all).")]

MAX_TAIL_LIMIT = 100_000
"""Most records ``audit tail`` prints before following (they are held in memory)."""
_FOLLOW_INTERVAL = 0.5
_FOLLOW_BATCH = 10_000
"""Most records read from one stream per poll (the rest come at the next poll)."""


def _stream_id(value: str) -> str:
    """A tenant id, or the stream of events that belong to no tenant."""
    return value if value == SYSTEM_STREAM else validate_tenant_id(value)


def _require_tenant(runtime: Runtime, store: AuditStore, tenant_id: str) -> None:
    """:raises NotFound: when ``tenant_id`` is neither in the control plane nor has an audit stream
    (a deleted tenant's stream, or ``_system``, still counts)."""
    if tenant_id == SYSTEM_STREAM or tenant_id in store.heads() or runtime.store.get_tenant(tenant_id) is not None:
        return
    if tenant_id in store.streams():  # records without a head: tampered, and verify must say so
        return
    raise NotFound(f"no tenant {tenant_id!r}: not in the control plane and no audit stream")


_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _one_line(text: str) -> str:
    """``text`` with every character that could end, redraw or reorder a terminal line escaped.

    Backslashes, C0 and C1 controls (ESC included), DEL, line and paragraph separators,
    bidirectional overrides and every other non-printing character become ``\\n``, ``\\xNN``,
    ``\\uNNNN`` escapes, so a record is exactly one line and cannot pass for another.
    """
    if text.isprintable() and "\\" not in text:
        return text
    out: list[str] = []
    for char in text:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif char.isprintable():
            out.append(char)
        elif (code := ord(char)) <= 0xFF:
            out.append(f"\\x{code:02x}")
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return "".join(out)


def _print_record(record: bytes, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(record.decode() + "\n")  # canonical JSON: control characters are already escaped
        return
    fields = pydantic_core.from_json(record)
    parts = [
        fields["timestamp"],
        f"{fields['tenant_id']}#{fields['seq']}",
        fields["event_type"],
        fields.get("result_status"),
        fields.get("tool_name"),
        fields.get("subject"),
        fields.get("reason"),
    ]
    sys.stdout.write("  ".join(_one_line(str(p)) for p in parts if p not in (None, "")) + "\n")


def _by_time(streams: list[list[StoredRecord]]) -> Iterator[StoredRecord]:
    """Records of several streams interleaved by time, each stream still in ``seq`` order."""
    return heapq.merge(*streams, key=lambda r: r.created)


def _window(store: AuditStore, tenant: str | None, limit: int) -> tuple[list[StoredRecord], dict[str, int]]:
    """The newest ``limit`` records to show first, and per stream the last seq they cover.

    Each stream's part of the window is a contiguous run of seqs ending at its head as it was
    read: following on from these cursors then shows every later record exactly once.
    """
    heads = {t: seq for t, (seq, _) in store.heads().items()}
    if tenant is not None:
        records = store.recent(tenant, limit)
        return records, {tenant: records[-1].seq if records else heads.get(tenant, 0)}
    cursors = dict(heads)
    runs: dict[str, list[StoredRecord]] = {}
    for stored in store.recent(None, limit):
        if stored.seq <= heads.get(stored.tenant_id, 0):  # newer ones come with the first poll
            runs.setdefault(stored.tenant_id, []).append(stored)
    for tenant_id, run in runs.items():
        run.sort(key=lambda r: r.seq)
        head = heads[tenant_id]
        if [r.seq for r in run] != list(range(run[0].seq, head + 1)):
            # Records committed out of time order left holes in the time-ordered window: fill them.
            run[:] = [r for r in store.read(tenant_id, after_seq=run[0].seq - 1) if r.seq <= head]
    window = list(_by_time(list(runs.values())))
    return window[-limit:], cursors  # dropping the oldest keeps every stream's run contiguous


def _poll(store: AuditStore, tenant: str | None, cursors: dict[str, int]) -> tuple[list[StoredRecord], bool]:
    """Records committed after ``cursors`` (which advance), interleaved by time, each stream in
    ``seq`` order; and whether a stream had more than one batch (poll again at once)."""
    runs: list[list[StoredRecord]] = []
    behind = False
    for tenant_id, (seq, _) in sorted(store.heads().items()):
        after = cursors.get(tenant_id, 0)
        if (tenant is not None and tenant_id != tenant) or seq <= after:
            continue
        reader = store.read(tenant_id, after_seq=after)
        run = list(itertools.islice(reader, _FOLLOW_BATCH))
        if isinstance(reader, Generator):
            reader.close()  # release its read connection now, not when collected
        if run:
            cursors[tenant_id] = run[-1].seq
            runs.append(run)
            behind = behind or len(run) == _FOLLOW_BATCH
    return list(_by_time(runs)), behind


@audit_app.command("tail")
def tail(
    tenant: TenantOption = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new records.")] = False,
    limit: Annotated[int, typer.Option(help=f"How many recent records to show first (1-{MAX_TAIL_LIMIT}).")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="One canonical JSON record per line.")] = False,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Print the most recent audit records (of one tenant, or all), oldest first.

    Control characters in the records are escaped, so every record is one line. With
    ``--follow``, new records follow in each stream's order, each exactly once.
    """
    if not 1 <= limit <= MAX_TAIL_LIMIT:
        raise UsageError(f"--limit must be between 1 and {MAX_TAIL_LIMIT}")
    if tenant is not None:
        tenant = _stream_id(tenant)
    with open_runtime(data_dir, config) as runtime:
        store = runtime.audit_store()
        try:
            if tenant is not None:
                _require_tenant(runtime, store, tenant)
            records, cursors = _window(store, tenant, limit)
            for stored in records:
                _print_record(stored.record, as_json)
            behind = False
            while follow:
                sys.stdout.flush()
                if not behind:
                    time.sleep(_FOLLOW_INTERVAL)
                records, behind = _poll(store, tenant, cursors)
                for stored in records:
                    _print_record(stored.record, as_json)
        except KeyboardInterrupt:
            pass
        finally:
            store.close()


@audit_app.command("verify")
def verify(
    tenant: TenantOption = None,
    file: Annotated[Path | None, typer.Option("--file", help="Verify an export file offline instead.")] = None,
    checkpoints: Annotated[
        Path | None,
        typer.Option(
            "--checkpoints",
            help="The export's signed checkpoints file (default: next to --file, FILE.checkpoints.json).",
        ),
    ] = None,
    jwks: Annotated[
        Path | None,
        typer.Option(
            "--jwks", help="With --file: trust only the audit public keys in this JWKS (or earlier export's sidecar)."
        ),
    ] = None,
    kid: Annotated[
        list[str] | None,
        typer.Option("--kid", help="With --file: trust only the audit key with this id (repeatable)."),
    ] = None,
    certificate: Annotated[
        Path | None,
        typer.Option(
            "--certificate",
            help="Verify a deletion certificate (tenant delete) against this deployment's audit keys and stream.",
        ),
    ] = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Prove the streams intact, or name the tenant, seq and reason of the first bad record (exit 1).

    With ``--file``, verify an export against its signed export statement and checkpoints;
    ``--data-dir``/``--config`` then mean: trust only that deployment's audit keys.
    With ``--certificate``, verify a deletion certificate: its signature by this deployment's
    audit keys, its tombstone in the tenant's stream, and that stream.
    """
    if certificate is not None:
        if file is not None or tenant is not None or checkpoints is not None or jwks is not None or kid:
            raise UsageError("--certificate goes alone (with --data-dir/--config)")
        _verify_certificate(certificate, data_dir, config)
        return
    if file is not None:
        if tenant is not None:
            raise UsageError("--tenant does not go with --file (an export holds one tenant's stream)")
        _report([_verify_file(file, checkpoints, jwks, kid or [], data_dir, config)])
        return
    if checkpoints is not None or jwks is not None or kid:
        raise UsageError("--checkpoints, --jwks and --kid go with --file")
    if tenant is not None:
        tenant = _stream_id(tenant)
    with open_runtime(data_dir, config) as runtime:
        store = runtime.audit_store()
        try:
            signer = runtime.checkpoint_signer()
            if tenant is not None:
                _require_tenant(runtime, store, tenant)
            heads = store.heads()
            tenants = [tenant] if tenant else store.streams()
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
                    reports.append(
                        verify_stream(
                            store,
                            signer,
                            tenant_id,
                            progress=lambda n: bar.advance(task, n),
                            head=heads.get(tenant_id),
                        )
                    )
        finally:
            store.close()
    _report(reports)


def _verify_certificate(path: Path, data_dir: Path | None, config: Path | None) -> None:
    from tenantry.lifecycle.certificate import verify_certificate_file

    with open_runtime(data_dir, config) as runtime:
        store = runtime.audit_store()
        try:
            keys = TrustedKeys.from_ring(runtime.audit_keys, source=f"the audit keys of {runtime.data_dir}")
            try:
                report = verify_certificate_file(path, keys, store)
            except OSError as exc:
                raise UsageError(f"cannot read {path}: {exc.strerror}") from None
            stream = verify_stream(store, runtime.checkpoint_signer(), report.tenant_id) if report.ok else None
        finally:
            store.close()
    typer.echo(report.line())
    if not report.ok:
        sys.stderr.write(f"error: audit verify failed: tenant {report.tenant_id}: {report.reason}\n")
        raise typer.Exit(1)
    assert stream is not None
    _report([stream])


def _verify_file(
    file: Path,
    checkpoints: Path | None,
    jwks: Path | None,
    kids: list[str],
    data_dir: Path | None,
    config: Path | None,
) -> StreamReport:
    pinned: TrustedKeys | None = None
    if jwks is not None and (data_dir is not None or config is not None):
        raise UsageError("give either --jwks or --data-dir/--config as the keys to trust, not both")
    try:
        if jwks is not None:
            try:
                document = json.loads(jwks.read_bytes())
            except OSError as exc:
                raise UsageError(f"cannot read {jwks}: {exc.strerror}") from None
            except ValueError:
                raise UsageError(f"{jwks} is not JSON") from None
            if isinstance(document, dict) and "keys" not in document and "jwks" in document:
                document = document["jwks"]  # the sidecar of an earlier export kept somewhere safe
            pinned = TrustedKeys.from_jwks(document, source=f"--jwks {jwks.name}", pinned=True)
        elif data_dir is not None or config is not None:
            key_dir = settings_from(data_dir, config).data_dir.resolve() / "keys"
            ring = KeyRing(key_dir, alg="EdDSA", file_name=AUDIT_KEY_FILE)
            if not ring.path.is_file():
                raise UsageError(f"no audit keys at {ring.path} to check the export against")
            pinned = TrustedKeys.from_ring(ring, source=f"the audit keys of {key_dir.parent}")
    except InvalidCheckpoint as exc:
        raise UsageError(str(exc)) from None
    sidecar = checkpoints if checkpoints is not None else sidecar_path(file)
    try:
        return verify_export_file(file, sidecar, pinned, kids=kids)
    except OSError as exc:
        raise UsageError(f"cannot read {file}: {exc.strerror}") from None


def _report(reports: list[StreamReport]) -> None:
    for report in reports:
        typer.echo(report.line())
    failed = [r for r in reports if not r.ok]
    if failed:
        first = failed[0]
        where = f"tenant {first.tenant_id}" + (f", seq {first.seq}" if first.seq is not None else "")
        sys.stderr.write(f"error: audit verify failed: {where}: {first.reason}\n")
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
    """Write one tenant's stream as JSON Lines with its chain fields, plus a signed statement of it.

    ``OUT`` gets one record per line (``prev_hash`` and ``hash`` included);
    ``OUT.checkpoints.json`` gets the signed export statement (where the export starts and
    ends, its record count and file digest), the stream's signed checkpoints and the public
    keys to check them. Re-verify offline with ``tenantry audit verify --file OUT`` or any
    RFC 8785 + SHA-256 implementation. A stream that does not verify is not exported.
    """
    tenant = _stream_id(tenant)
    with open_runtime(data_dir, config) as runtime:
        store = runtime.audit_store()
        try:
            _require_tenant(runtime, store, tenant)
            signer = runtime.checkpoint_signer()
            try:
                outcome = write_export(store, signer, tenant, out)
            except StreamNotIntact as exc:
                report = exc.report
                sys.stderr.write(
                    f"error: refusing to export: tenant {report.tenant_id}, seq {report.seq}: {report.reason}"
                    " (run `tenantry audit verify`)\n"
                )
                raise typer.Exit(1) from None
            except OSError as exc:
                raise UsageError(f"cannot write {out}: {exc.strerror}") from None
        finally:
            store.close()
        runtime.record_admin(
            admin_event(
                "audit_exported",
                tenant,
                detail={
                    "records": outcome.records,
                    "last_seq": outcome.last_seq,
                    "last_hash": to_hex(outcome.last_hash),
                    "file": out.name,
                    "file_sha256": outcome.file_sha256,
                    "kid": outcome.kid,
                },
            )
        )
    typer.echo(
        f"exported {outcome.records} records of {tenant} (through seq {outcome.last_seq}) to {out}"
        f" (signed statement and checkpoints: {outcome.sidecar}; audit key {outcome.kid})"
    )


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
