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

from tenantry.audit.events import AuditEvent, EventType
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


def format_time(epoch: int | float | None) -> str:
    if epoch is None:
        return "-"
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
