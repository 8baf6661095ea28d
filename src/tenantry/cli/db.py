"""``tenantry db init``: the PostgreSQL roles, schemas and privileges of a deployment."""

from __future__ import annotations

import re
from typing import Annotated

import psycopg
import typer
from psycopg import sql

from tenantry.audit.store.postgres import AUDIT_SCHEMA_SQL, audit_grants_sql
from tenantry.controlplane.postgres import CONTROLPLANE_SCHEMA_SQL
from tenantry.core.errors import StorageError, UsageError

__all__ = ["db_app"]

db_app = typer.Typer(help="Prepare the PostgreSQL database.", no_args_is_help=True, rich_markup_mode=None)

_ROLE = r"^[a-z_][a-z0-9_]{0,62}$"


@db_app.command("init")
def init(
    admin_url: Annotated[
        str, typer.Option("--admin-url", help="A superuser (or CREATEROLE) URL of the target database.")
    ],
    owner: Annotated[str, typer.Option(help="Role that owns the schemas (migrations, purges).")] = "tenantry_owner",
    app_role: Annotated[str, typer.Option(help="Role the servers connect as.")] = "tenantry_app",
) -> None:
    """Create the two roles (if missing), the schemas owned by the owner role, and the application
    role's privileges: full use of the control plane, INSERT and SELECT only on audit records.

    Roles are created without passwords; set them (ALTER ROLE ... PASSWORD) for non-local use.
    """
    for role in (owner, app_role):
        if not re.fullmatch(_ROLE, role):
            raise UsageError(f"role name {role!r} must be lowercase letters, digits and underscores")
    if owner == app_role:
        raise UsageError("the owner and the application role must differ")
    try:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
            database = conn.info.dbname
            for role, options in (
                (owner, "LOGIN"),
                (app_role, "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS"),
            ):
                exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
                if not exists:
                    conn.execute(sql.SQL("CREATE ROLE {} " + options).format(sql.Identifier(role)))
            conn.execute(
                sql.SQL("GRANT CONNECT, CREATE ON DATABASE {} TO {}").format(
                    sql.Identifier(database), sql.Identifier(owner)
                )
            )
            conn.execute(
                sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(database), sql.Identifier(app_role))
            )
            with conn.transaction():
                conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(owner)))
                conn.execute(CONTROLPLANE_SCHEMA_SQL)
                conn.execute(
                    sql.SQL(
                        "GRANT USAGE ON SCHEMA tenantry TO {app};"
                        " GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA tenantry TO {app};"
                        " GRANT USAGE ON ALL SEQUENCES IN SCHEMA tenantry TO {app}"
                    ).format(app=sql.Identifier(app_role))
                )
                conn.execute(AUDIT_SCHEMA_SQL)
                conn.execute(audit_grants_sql(app_role))
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StorageError(f"db init failed: {first}") from None
    typer.echo(f"database {database}: roles {owner} (owner) and {app_role} (application) ready")
    typer.echo(f"  servers:      controlplane.url and audit.url as {app_role}")
    typer.echo(f"  audit purges: audit.admin_url as {owner}")
