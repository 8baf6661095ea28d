"""``tenantry db init|migrate``: the PostgreSQL roles, schemas and privileges of a deployment."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

import psycopg
import typer
from psycopg import sql

from tenantry.audit.store.postgres import AUDIT_SCHEMA_SQL, audit_grants_sql
from tenantry.cli.common import ConfigOption, DataDirOption, open_runtime, settings_from
from tenantry.controlplane.postgres import CONTROLPLANE_SCHEMA_SQL
from tenantry.core.errors import StorageError, UsageError, driver_error_text
from tenantry.demo.catalogue import DEMO_TENANTS
from tenantry.demo.schema import POSTGRES_DEMO_SCHEMA
from tenantry.runtime import Runtime, sql_tenant_key
from tenantry.scoping.sql.pg_migrations import Migration, SchemaMigrated, migrate_schemas, record_roles, recorded_roles
from tenantry.scoping.sql.pg_schema import DataRoles, install_tenant_proof, tenant_schema_name

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

# What would let SQL a tool runs observe rows it cannot read (row-level security filters rows
# after the scan and the planner's statistics cover every tenant): plans through code that runs
# inside the database (DO blocks in any language; functions executing SQL text), row counts
# and sizes (pg_class.reltuples/relpages/relallvisible/relallfrozen, the *_size functions),
# other sessions' write volume and running transactions (WAL positions, snapshots) and the
# in-statement clocks that time a scan without network noise. Revoked from PUBLIC; the owner and application roles get
# them back, the tools role does not. (EXPLAIN itself is refused by the handle: it is a
# statement, not a privilege.)
_REVOKE_SIDE_CHANNELS_SQL = r"""
DO $$
DECLARE f regprocedure; l name; c text;
BEGIN
    FOR f IN
        SELECT p.oid::regprocedure FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = 'pg_catalog' AND (
            p.proname IN ('query_to_xml', 'query_to_xmlschema', 'query_to_xml_and_xmlschema', 'ts_stat',
                          'pg_relation_size', 'pg_table_size', 'pg_total_relation_size', 'pg_indexes_size',
                          'pg_database_size', 'pg_tablespace_size', 'clock_timestamp', 'timeofday',
                          'pg_current_wal_lsn', 'pg_current_wal_insert_lsn', 'pg_current_wal_flush_lsn',
                          'pg_last_wal_receive_lsn', 'pg_last_wal_replay_lsn', 'pg_current_snapshot',
                          'txid_current_snapshot', 'pg_control_checkpoint', 'pg_control_system',
                          'pg_control_init', 'pg_control_recovery')
            OR p.oid = 'pg_catalog.ts_rewrite(tsquery, text)'::regprocedure)
    LOOP
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f);
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I, %I', f, {owner}, {app});
    END LOOP;
    FOR l IN SELECT lanname FROM pg_language WHERE lanpltrusted AND lanname <> 'sql' LOOP
        EXECUTE format('REVOKE USAGE ON LANGUAGE %I FROM PUBLIC', l);
        EXECUTE format('GRANT USAGE ON LANGUAGE %I TO %I, %I', l, {owner}, {app});
    END LOOP;
    SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) INTO c FROM pg_attribute
        WHERE attrelid = 'pg_catalog.pg_class'::regclass AND attnum > 0 AND NOT attisdropped
        AND attname NOT IN ('reltuples', 'relpages', 'relallvisible', 'relallfrozen');
    REVOKE SELECT ON pg_catalog.pg_class FROM PUBLIC;
    EXECUTE format('GRANT SELECT (%s) ON pg_catalog.pg_class TO PUBLIC', c);
    EXECUTE format('GRANT SELECT ON pg_catalog.pg_class TO %I, %I', {owner}, {app});
END
$$;
"""


@db_app.command("init")
def init(
    admin_url: Annotated[
        str, typer.Option("--admin-url", help="A superuser (or CREATEROLE) URL of the target database.")
    ],
    owner: Annotated[
        str, typer.Option("--owner", help="Role that owns the schemas (migrations, purges).")
    ] = "tenantry_owner",
    app_role: Annotated[str, typer.Option("--app-role", help="Role the servers connect as.")] = "tenantry_app",
    tools_role: Annotated[
        str, typer.Option("--tools-role", help="Role tools' SQL (ctx.sql) runs as: tenant tables only, under RLS.")
    ] = "tenantry_tools",
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Create the roles (if missing), the schemas owned by the owner role, and the privileges:
    the application role gets the control plane and INSERT/SELECT only on audit records; the
    tools role gets only the tenant tables, under row-level security, and the tenant proof.

    Roles are created without passwords; set them (ALTER ROLE ... PASSWORD) for non-local use.
    The role names are recorded in the database, for ``db migrate``. The key proving a
    transaction's tenant is written to ``<data_dir>/keys/sql-tenant.key`` (or taken from
    ``sql.tenant_key``) and installed where only the owner can read it. Safe to run again.
    """
    for role in (owner, app_role, tools_role):
        if not re.fullmatch(_ROLE, role):
            raise UsageError(f"role name {role!r} must be lowercase letters, digits and underscores")
    if len({owner, app_role, tools_role}) != 3:
        raise UsageError("the owner, application and tools roles must all differ")
    settings = settings_from(data_dir, config)
    _ensure_private_dir(settings.data_dir.resolve())
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
            conn.execute(sql.SQL(_REVOKE_SIDE_CHANNELS_SQL).format(owner=sql.Literal(owner), app=sql.Literal(app_role)))
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
            with conn.transaction():
                conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(owner)))
                record_roles(conn, owner=owner, app=app_role, tools=tools_role)
    except psycopg.Error as exc:
        raise StorageError(f"db init failed: {driver_error_text(exc)}") from None
    # `db init` (like `serve`) may create the deployment's store; every other command needs one.
    Runtime(settings, create=True).close()
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
    tools_role: Annotated[
        str | None,
        typer.Option("--tools-role", help="The tools role (default: the one `db init` recorded).", show_default=False),
    ] = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Run schema SQL as the owner, then put every tenant table under row-level security.

    Each script is recorded by its SHA-256 and applied once per data schema: running
    ``db migrate`` again with the same files changes nothing, and new files are applied after
    the recorded ones. With ``sql.isolation = "schema"`` every tenant's schema receives every
    recorded script: after ``tenant create``, ``db migrate`` (no files needed) prepares the new
    tenant's schema; ``--demo`` prepares the demo tenants' schemas before they exist.
    """
    scripts = [Migration("demo", POSTGRES_DEMO_SCHEMA)] if demo else []
    for path in files or []:
        try:
            scripts.append(Migration(path.name, path.read_text(encoding="utf-8")))
        except OSError as exc:
            raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    settings = settings_from(data_dir, config)
    sql_settings = settings.sql
    if sql_settings.isolation == "schema":
        with open_runtime(data_dir, config) as runtime:
            tenants = [t.id for t in runtime.store.list_tenants()]
        if demo:
            tenants += [t for t in DEMO_TENANTS if t not in tenants]
        schemas = [tenant_schema_name(sql_settings.schema_name, t) for t in tenants]
    else:
        schemas = [sql_settings.schema_name]
    done: list[SchemaMigrated] = []
    try:
        with psycopg.connect(owner_url, autocommit=True, connect_timeout=5) as conn:
            roles = _migration_roles(conn, tools_role)
            for result in migrate_schemas(conn, schemas, scripts, roles):
                done.append(result)
                applied = f"{len(result.applied)} script(s) applied" if result.applied else "up to date"
                typer.echo(
                    f"{result.schema}: {applied}; {len(result.tables)} tenant table(s) under row-level security:"
                    f" {', '.join(result.tables)}"
                )
    except psycopg.Error as exc:
        where = _failed_schema(schemas, done)
        raise StorageError(f"db migrate failed{where}: {driver_error_text(exc)}") from None
    except UsageError as exc:
        raise UsageError(f"db migrate refused{_failed_schema(schemas, done)}: {exc.message}") from None
    if not schemas:
        typer.echo("no tenant schema yet: scripts recorded; `db migrate` after `tenant create` applies them")


def _migration_roles(conn: psycopg.Connection[tuple[Any, ...]], tools_role: str | None) -> DataRoles:
    """The roles to migrate with: those ``db init`` recorded; an explicit ``--tools-role`` must agree."""
    owner = str(conn.execute("SELECT current_user").fetchone()[0])  # type: ignore[index]
    schema = conn.execute("SELECT to_regnamespace('tenantry_rls') IS NOT NULL").fetchone()
    if not schema or not schema[0]:
        raise UsageError("the database has no tenantry_rls schema: run `tenantry db init` first")
    recorded = recorded_roles(conn)
    if recorded is None:  # set up by a version that did not record them
        return DataRoles(owner=owner, tools=tools_role or "tenantry_tools")
    recorded_owner, _, recorded_tools = recorded
    if owner != recorded_owner:
        raise UsageError(f"--owner-url connects as {owner}, but db init made {recorded_owner} the owner")
    if tools_role is not None and tools_role != recorded_tools:
        raise UsageError(f"--tools-role {tools_role} differs from the tools role db init recorded ({recorded_tools})")
    return DataRoles(owner=owner, tools=recorded_tools)


def _failed_schema(schemas: list[str], done: list[SchemaMigrated]) -> str:
    if len(done) < len(schemas) and len(schemas) > 1:
        return f" in schema {schemas[len(done)]} ({len(done)} earlier schema(s) migrated)"
    return ""


def _ensure_private_dir(path: Path) -> None:
    """Create the data dir readable by its owner only (every later command warns otherwise)."""
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise StorageError(f"cannot create data dir {path}: {exc.strerror}") from None
