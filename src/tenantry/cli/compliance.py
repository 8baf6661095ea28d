"""``tenantry compliance report``: SOC 2, GDPR and EU AI Act controls with their evidence."""

from __future__ import annotations

import json
import sys
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer

from tenantry.cli.common import ConfigOption, DataDirOption, open_runtime
from tenantry.compliance.controls import DEFAULT_MAX_AGE
from tenantry.compliance.facts import gather
from tenantry.compliance.html import render_html
from tenantry.compliance.markdown import render_markdown
from tenantry.compliance.report import build_report
from tenantry.core.errors import StorageError, UsageError

__all__ = ["compliance_app"]

compliance_app = typer.Typer(
    help="Compliance evidence: SOC 2, GDPR and EU AI Act controls.", no_args_is_help=True, rich_markup_mode=None
)


@compliance_app.command("report")
def report(
    format: Annotated[str, typer.Option("--format", help="md, json or html.")] = "md",
    out: Annotated[Path | None, typer.Option("--out", help="Write the report here (default: stdout).")] = None,
    max_age: Annotated[
        int, typer.Option("--max-age", help="Days after which evidence is stale and no longer counts.")
    ] = DEFAULT_MAX_AGE.days,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Map the running configuration and the latest evidence to controls.

    Each control is met, partial, a gap or not evidenced, with its evidence (settings, an
    `audit verify` run now, the latest stored probe run, key ages, retention, halts, exports
    and deletions) and how old it is. Exit 0 when the report was written, whatever it says.
    """
    if format not in ("md", "json", "html"):
        raise UsageError("--format must be md, json or html")
    if max_age < 1:
        raise UsageError("--max-age must be at least 1 day")
    with open_runtime(data_dir, config) as runtime:
        facts = gather(runtime)
    body = build_report(facts, max_age=timedelta(days=max_age))
    if format == "json":
        text = json.dumps(body, indent=2) + "\n"
    elif format == "html":
        text = render_html(body)
    else:
        text = render_markdown(body)
    if out is None:
        sys.stdout.write(text)
        return
    try:
        temporary = out.with_name(out.name + ".tmp")
        temporary.write_text(text)
        temporary.replace(out)
    except OSError as exc:
        raise StorageError(f"cannot write {out}: {exc.strerror}") from None
    sys.stderr.write(f"report written: {out} ({body['summary']['gap']} gaps)\n")
