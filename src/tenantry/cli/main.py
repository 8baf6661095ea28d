"""The ``tenantry`` command. Exit 0 on success, 1 when an operation or check fails, 2 on a
usage error; errors are one line on stderr, never a traceback."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from tenantry import __version__
from tenantry.cli.apikey import apikey_app
from tenantry.cli.audit import audit_app
from tenantry.cli.common import ConfigOption, DataDirOption
from tenantry.cli.compliance import compliance_app
from tenantry.cli.db import db_app
from tenantry.cli.keys import keys_app
from tenantry.cli.probe import probe
from tenantry.cli.secret import secret_app
from tenantry.cli.tenant import tenant_app
from tenantry.cli.token import token_app
from tenantry.cli.upstream import upstream_app
from tenantry.core.errors import AlreadyExists, GrantRefused, NotFound, TenantryError, UsageError

__all__ = ["app", "main"]

app = typer.Typer(
    name="tenantry",
    help="Tenantry: a multi-tenant MCP server that keeps tenants strictly apart.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    add_completion=False,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"tenantry {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """Tenantry: a multi-tenant MCP server that keeps tenants strictly apart."""


@app.command("serve")
def serve(
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
    host: Annotated[str | None, typer.Option(help="Address to bind (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port to bind (default 8750).")] = None,
    demo: Annotated[bool, typer.Option("--demo", help="Seed and serve the demo tenants and tools.")] = False,
    app_spec: Annotated[
        str | None, typer.Option("--app", help="Your tools, as module:object (a tenantry.App).")
    ] = None,
) -> None:
    """Start the MCP server (streamable HTTP at /mcp)."""
    from tenantry.cli.serve import run_http

    run_http(data_dir, config, host=host, port=port, demo=demo, app_spec=app_spec)


@app.command("stdio")
def stdio(
    token: Annotated[
        str | None, typer.Option("--token", help="The tenant's token; it is the session's credential.")
    ] = None,
    token_file: Annotated[
        Path | None,
        typer.Option("--token-file", help="Read the token from this file (keeps it out of the process list)."),
    ] = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
    demo: Annotated[bool, typer.Option("--demo", help="Serve the demo tools.")] = False,
    app_spec: Annotated[str | None, typer.Option("--app", help="Your tools, as module:object.")] = None,
) -> None:
    """Serve one tenant over stdio (for local agents that launch the server)."""
    from tenantry.cli.serve import run_stdio

    if (token is None) == (token_file is None):
        raise typer.BadParameter("give exactly one of --token or --token-file")
    if token_file is not None:
        try:
            token = token_file.read_text().strip()
        except OSError as exc:
            raise typer.BadParameter(f"cannot read --token-file: {exc.strerror}") from None
    assert token is not None
    run_stdio(data_dir, config, token=token, demo=demo, app_spec=app_spec)


app.add_typer(tenant_app, name="tenant")
app.add_typer(audit_app, name="audit")
app.add_typer(db_app, name="db")
app.add_typer(token_app, name="token")
app.add_typer(apikey_app, name="apikey")
app.add_typer(keys_app, name="keys")
app.add_typer(secret_app, name="secret")
app.command("probe")(probe)
app.add_typer(compliance_app, name="compliance")
app.add_typer(upstream_app, name="upstream")


@app.command("version")
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


def _exit_code(error: TenantryError) -> int:
    if isinstance(error, NotFound | AlreadyExists | GrantRefused):
        return 1
    return 2 if isinstance(error, UsageError) else 1


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    logging.getLogger().setLevel(logging.WARNING)
    try:
        # Standalone mode: Typer reports its own usage errors (exit 2) and raises SystemExit.
        app(args=argv)
    except TenantryError as exc:
        sys.stderr.write(f"error: {exc.message}\n")
        sys.exit(_exit_code(exc))
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        logging.getLogger("tenantry.cli").debug("unexpected failure", exc_info=True)
        sys.stderr.write(
            f"error: unexpected failure ({type(exc).__name__}); rerun with TENANTRY_LOGGING__LEVEL=DEBUG\n"
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
