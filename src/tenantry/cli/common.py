"""What every command shares: the --data-dir/--config options, opening the runtime, output."""

from __future__ import annotations

import getpass
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.measure import Measurement
from rich.table import Column, Table

from tenantry.audit.events import AuditEvent, EventType
from tenantry.controlplane.base import Tenant
from tenantry.core.errors import UsageError
from tenantry.core.settings import Settings, load_settings
from tenantry.runtime import Runtime

__all__ = [
    "DataDirOption",
    "ConfigOption",
    "settings_from",
    "open_runtime",
    "print_json",
    "split_tools",
    "admin_event",
    "cli_actor",
    "format_time",
    "iso_time",
    "warn",
    "warn_if_halted",
    "new_table",
    "print_table",
]

DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", help="Data directory (default ./tenantry-data, env TENANTRY_DATA_DIR).", show_default=False
    ),
]
ConfigOption = Annotated[Path | None, typer.Option("--config", help="TOML configuration file.", show_default=False)]


def settings_from(data_dir: Path | None, config: Path | None, **overrides: Any) -> Settings:
    return load_settings(config, data_dir=data_dir, **overrides)


@contextmanager
def open_runtime(
    data_dir: Path | None, config: Path | None, *, serving: bool = False, **overrides: Any
) -> Iterator[Runtime]:
    """The runtime on the data dir; only ``serving`` (``tenantry serve``) may create a new store."""
    runtime = Runtime(settings_from(data_dir, config, **overrides), serving=serving, create=serving)
    try:
        yield runtime
    finally:
        runtime.close()


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=True, default=str) + "\n")


def split_tools(value: str | None) -> list[str] | None:
    if value is None:
        return None
    tools = [t.strip() for t in value.split(",") if t.strip()]
    if not tools:
        raise UsageError("--tools needs at least one tool name (comma-separated)")
    return tools


def admin_event(
    event_type: EventType,
    tenant_id: str,
    *,
    detail: dict[str, Any] | None = None,
    subject: str | None = None,
    reason: str | None = None,
) -> AuditEvent:
    """An administrative action taken from the CLI, for the tenant's audit stream."""
    return AuditEvent(
        event_type=event_type,
        tenant_id=tenant_id,
        result_status="ok",
        subject=subject,
        reason=reason,
        detail=detail or {},
    )


def cli_actor() -> str:
    """Who is acting, for the audit trail: the operating-system user running the CLI."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


def iso_time(epoch: int | float | None) -> str | None:
    """UTC ISO 8601 to the second (``2026-11-26T12:00:00Z``); ``None`` stays ``None`` (JSON null)."""
    if epoch is None:
        return None
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_time(epoch: int | float | None) -> str:
    """:func:`iso_time` for people: ``-`` when there is no time."""
    return iso_time(epoch) or "-"


def warn(message: str) -> None:
    """One line on stderr that does not change the exit status."""
    sys.stderr.write(f"warning: {message}\n")


def warn_if_halted(tenant: Tenant, credential: str) -> None:
    """Say that a credential just made for a halted tenant will be refused until it is resumed."""
    if tenant.status == "halted":
        reason = f" ({tenant.halted_reason})" if tenant.halted_reason else ""
        warn(
            f"tenant {tenant.id} is halted{reason}: {credential} is refused until `tenantry tenant resume {tenant.id}`"
        )


def new_table(*headers: str, wrap: tuple[str, ...] = (), **options: Any) -> Table:
    """A table whose cells are never cut short (print it with :func:`print_table`): columns
    named in ``wrap`` (free text, lists) wrap onto more lines, every other column (ids,
    timestamps, states) stays whole on one line. ``options`` go to :class:`rich.table.Table`."""
    columns = [
        Column(header, overflow="fold") if header in wrap else Column(header, no_wrap=True, overflow="ignore")
        for header in headers
    ]
    return Table(*columns, **options)


def print_table(table: Table) -> None:
    """Print ``table`` without cutting a value short: wrapping columns give way first, and when
    the others still do not fit, the table is printed wider than the terminal (which wraps the
    lines; into a pipe they stay whole)."""
    console = Console()
    wide = console.options.update_width(100_000)
    needed = Measurement.get(console, wide, table).maximum
    for column in table.columns:
        if not column.no_wrap:
            natural = max(
                (Measurement.get(console, wide, cell).maximum for cell in [column.header, *column.cells]), default=0
            )
            needed -= natural - min(natural, _WRAPPED_MIN_WIDTH)
    if needed > console.width:
        console = Console(width=needed)
    console.print(table)


_WRAPPED_MIN_WIDTH = 16
