"""``tenantry db init|migrate``: the PostgreSQL roles, schemas and privileges of a deployment."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import psycopg
import typer
from psycopg import sql

from tenantry.audit.store.postgres import AUDIT_SCHEMA_SQL, audit_grants_sql
from tenantry.cli.common import ConfigOption, DataDirOption, open_runtime, settings_from
from tenantry.controlplane.postgres import CONTROLPLANE_SCHEMA_SQL
from tenantry.core.errors import StorageError, UsageError, driver_error_text
from tenantry.demo.schema import POSTGRES_DEMO_SCHEMA
from tenantry.runtime import sql_tenant_key
from tenantry.scoping.sql.pg_schema import DataRoles, install_tenant_proof, secure_tenant_tables, tenant_schema_name

__all__ = ["db_app"]

db_app = typer.Typer(help="Prepare the PostgreSQL database.", no_args_is_help=True, rich_markup_mode=None)

_ROLE = r"^[a-z_][a-z0-9_]{0,62}$"

# Every tenant's SQL runs as the one tools role, so whatever PostgreSQL lets a role see or do to
# its own other sessions, or keep outside any table, is a channel between tenants: other
# sessions' query texts, prepared statements, cursors and locks; per-table row statistics
# (every pg_stat_get_* function); killing their backends;
# session-level advisory locks and lastval() on a pooled connection; large objects (storage
# outside row-level security). Revoked from PUBLIC in this database (grant them back to a
# monitoring role explicitly if needed).
_REVOKE_CROSS_SESSION_SQL = r"""
DO $$
DECLARE f regprocedure;
BEGIN
    FOR f IN
        SELECT p.oid::regprocedure FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = 'pg_catalog' AND (
            p.proname IN ('pg_stat_get_activity', 'pg_stat_get_progress_info', 'pg_terminate_backend',
                          'pg_cancel_backend', 'lastval', 'pg_prepared_statement', 'pg_cursor', 'pg_lock_status',
                          'pg_blocking_pids', 'pg_safe_snapshot_blocking_pids', 'pg_advisory_lock',
                          'pg_advisory_lock_shared', 'pg_try_advisory_lock', 'pg_try_advisory_lock_shared',
                          'pg_advisory_unlock', 'pg_advisory_unlock_shared', 'pg_advisory_unlock_all',
                          'loread', 'lowrite')
            OR p.proname LIKE 'pg\_stat\_get\_%'
            OR p.proname LIKE 'lo\_%')
    LOOP
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f);
    END LOOP;
END
$$;
REVOKE SELECT ON pg_catalog.pg_stat_activity, pg_catalog.pg_prepared_statements, pg_catalog.pg_cursors,
    pg_catalog.pg_locks, pg_catalog.pg_largeobject_metadata FROM PUBLIC;
"""


@db_app.command("init")
def init(
    admin_url: Annotated[
        str, typer.Option("--admin-url", help="A superuser (or CREATEROLE) URL of the target database.")
    ],
    owner: Annotated[str, typer.Option(help="Role that owns the schemas (migrations, purges).")] = "tenantry_owner",
    app_role: Annotated[str, typer.Option(help="Role the servers connect as.")] = "tenantry_app",
    tools_role: Annotated[
        str, typer.Option(help="Role tools' SQL (ctx.sql) runs as: tenant tables only, under RLS.")
    ] = "tenantry_tools",
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Create the roles (if missing), the schemas owned by the owner role, and the privileges:
    the application role gets the control plane and INSERT/SELECT only on audit records; the
    tools role gets only the tenant tables, under row-level security, and the tenant proof.

    Roles are created without passwords; set them (ALTER ROLE ... PASSWORD) for non-local use.
    The key proving a transaction's tenant is written to ``<data_dir>/keys/sql-tenant.key``
    (or taken from ``sql.tenant_key``) and installed where only the owner can read it.
    """
    for role in (owner, app_role, tools_role):
        if not re.fullmatch(_ROLE, role):
            raise UsageError(f"role name {role!r} must be lowercase letters, digits and underscores")
    if len({owner, app_role, tools_role}) != 3:
        raise UsageError("the owner, application and tools roles must all differ")
    settings = settings_from(data_dir, config)
    key = sql_tenant_key(settings, create=True)
    schema = settings.sql.schema_name
    try:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
            database = conn.info.dbname
            for role, options in (
                (owner, "LOGIN"),
                (app_role, "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS"),
                (tools_role, "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS NOINHERIT"),
            ):
                exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
                if not exists:
                    conn.execute(sql.SQL("CREATE ROLE {} " + options).format(sql.Identifier(role)))
            conn.execute(
                sql.SQL("GRANT CONNECT, CREATE ON DATABASE {} TO {}").format(
                    sql.Identifier(database), sql.Identifier(owner)
                )
            )
            for role in (app_role, tools_role):
                conn.execute(
                    sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(database), sql.Identifier(role))
                )
            # Session-scoped tables would outlive a transaction and meet the next tenant on a pooled
            # connection; before PostgreSQL 15 anyone may also create tables in schema public.
            conn.execute(
                sql.SQL(
                    "REVOKE TEMPORARY ON DATABASE {} FROM PUBLIC; REVOKE CREATE ON SCHEMA public FROM PUBLIC"
                ).format(sql.Identifier(database))
            )
            conn.execute(_REVOKE_CROSS_SESSION_SQL)
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
                conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
            install_tenant_proof(conn, DataRoles(owner=owner, tools=tools_role), key)
    except psycopg.Error as exc:
        raise StorageError(f"db init failed: {driver_error_text(exc)}") from None
    typer.echo(f"database {database}: roles {owner} (owner), {app_role} (application), {tools_role} (tools) ready")
    typer.echo(f"  servers:      controlplane.url and audit.url as {app_role}")
    typer.echo(f"  tools' SQL:   sql.url as {tools_role}")
    typer.echo(f"  migrations:   tenantry db migrate --owner-url (as {owner}); audit.admin_url as {owner}")


@db_app.command("migrate")
def migrate(
    owner_url: Annotated[str, typer.Option("--owner-url", help="URL of the owner role made by `db init`.")],
    files: Annotated[
        list[Path] | None, typer.Argument(help="SQL files creating tenant tables (each with tenant_id text).")
    ] = None,
    demo: Annotated[bool, typer.Option("--demo", help="Also create the demo tools' tables.")] = False,
    tools_role: Annotated[str, typer.Option(help="The tools role made by `db init`.")] = "tenantry_tools",
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Run schema SQL as the owner, then put every tenant table under row-level security.

    With ``sql.isolation = "schema"`` the SQL runs once in each tenant's own schema (tenants
    created later need another ``db migrate``).
    """
    scripts = [POSTGRES_DEMO_SCHEMA] if demo else []
    for path in files or []:
        try:
            scripts.append(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    with open_runtime(data_dir, config) as runtime:
        sql_settings = runtime.settings.sql
        if sql_settings.isolation == "schema":
            schemas = [tenant_schema_name(sql_settings.schema_name, t.id) for t in runtime.store.list_tenants()]
        else:
            schemas = [sql_settings.schema_name]
    try:
        with psycopg.connect(owner_url, autocommit=True, connect_timeout=5) as conn:
            owner = str(conn.execute("SELECT current_user").fetchone()[0])  # type: ignore[index]
            roles = DataRoles(owner=owner, tools=tools_role)
            for schema in schemas:
                with conn.transaction():
                    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
                    conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(schema)))
                    for script in scripts:
                        conn.execute(script.encode())
                    tables = secure_tenant_tables(conn, schema, roles)
                typer.echo(f"{schema}: {len(tables)} tenant table(s) under row-level security: {', '.join(tables)}")
    except psycopg.Error as exc:
        raise StorageError(f"db migrate failed: {driver_error_text(exc)}") from None
