"""``tenantry probe URL``: the isolation suite against any running MCP deployment."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import anyio
import httpx2
import typer
from rich.console import Console
from rich.text import Text

from tenantry.cli.common import new_table, print_table
from tenantry.compliance.evidence import store_probe_run
from tenantry.core.errors import UsageError
from tenantry.probe import ProbeOptions, ProbeRun, run_probe

__all__ = ["probe"]

_STYLE = {"pass": "green", "fail": "bold red", "not_checked": "yellow"}
_LABEL = {"pass": "PASS", "fail": "FAIL", "not_checked": "NOT CHECKED"}


def _print_run(run: ProbeRun) -> None:
    table = new_table(
        "result", "group", "check", "detail", "positive control", wrap=("check", "detail", "positive control")
    )
    for check in run.checks:
        table.add_row(
            Text(_LABEL[check.status], style=_STYLE[check.status]),
            check.group,
            check.title,
            check.detail,
            check.control,
        )
    print_table(table)
    counts = run.counts()
    verdict = "FAILED" if run.failed else "passed"
    Console().print(
        f"probe {verdict}: {counts['pass']} passed, {counts['fail']} failed, {counts['not_checked']} not checked"
        f" ({run.exchanges} requests to {run.url})",
        style="bold red" if run.failed else "bold green",
        highlight=False,
    )


def probe(
    url: Annotated[str, typer.Argument(help="The deployment's MCP endpoint, e.g. https://mcp.example.com/mcp.")],
    token_a: Annotated[
        str, typer.Option("--token-a", envvar="TENANTRY_PROBE_TOKEN_A", help="A credential of tenant A.")
    ],
    token_b: Annotated[
        str, typer.Option("--token-b", envvar="TENANTRY_PROBE_TOKEN_B", help="A credential of another tenant, B.")
    ],
    token_expired: Annotated[
        str | None,
        typer.Option(
            "--token-expired",
            envvar="TENANTRY_PROBE_TOKEN_EXPIRED",
            help="A genuinely signed token of A that has expired (else that check is reported not checked).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run as JSON (for CI).")] = False,
    out: Annotated[Path | None, typer.Option("--out", help="Also write the run as JSON to this file.")] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            help="Store the run as evidence in DIR/evidence/ for `tenantry compliance report` (only when given).",
            show_default=False,
        ),
    ] = None,
    audit_data_dir: Annotated[
        Path | None,
        typer.Option(
            "--audit-data-dir",
            help="Audit access: a Tenantry data dir whose streams are checked for the probe's calls.",
            show_default=False,
        ),
    ] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Also fail when a check could not be made.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each reply.")] = 30.0,
) -> None:
    """Prove tenant isolation of a running deployment from the outside, with two tenants' tokens.

    Every refusal is paired with a positive control, so a server that refuses everything
    fails. Exit 0 when nothing failed (with --strict: when everything passed), 1 otherwise.
    The probe calls the tools it finds with placeholder arguments: point it at test tenants.
    """
    if out is not None and out.exists():
        raise UsageError(f"{out} exists; refusing to overwrite it")
    if audit_data_dir is not None and not audit_data_dir.is_dir():
        raise UsageError(f"--audit-data-dir {audit_data_dir} is not a directory")
    if data_dir is not None and not data_dir.is_dir():
        raise UsageError(f"--data-dir {data_dir} is not a directory")
    if timeout <= 0:
        raise UsageError("--timeout must be positive")
    options = ProbeOptions(
        url=url,
        token_a=token_a.strip(),
        token_b=token_b.strip(),
        token_expired=token_expired.strip() if token_expired else None,
        audit_data_dir=audit_data_dir,
        timeout=timeout,
    )
    try:
        run = anyio.run(run_probe, options)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    except httpx2.TransportError as exc:
        raise UsageError(f"cannot reach {url}: {type(exc).__name__}") from None
    body = run.to_json(strict=strict)
    if out is not None:
        out.write_text(json.dumps(body, indent=2) + "\n")
    if data_dir is not None:
        stored = store_probe_run(data_dir, body)
        sys.stderr.write(f"evidence stored: {stored}\n")
    if as_json:
        sys.stdout.write(json.dumps(body, indent=2) + "\n")
    else:
        _print_run(run)
    if not run.ok(strict=strict):
        raise typer.Exit(1)
