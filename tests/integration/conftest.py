from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.server import RunningServer, start_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(tmp_path_factory.mktemp("integration") / "data")
    yield running
    running.stop()


@dataclass(frozen=True)
class DatabaseRoles:
    """The two roles ``tenantry db init`` created on a fresh database, as connection URLs."""

    owner_url: str
    app_url: str


@pytest.fixture
def db_roles(postgres_url: str, tmp_path: Path) -> Iterator[DatabaseRoles]:
    """Fresh schemas and a fresh owner/application role pair made by ``tenantry db init``."""
    import uuid

    import psycopg

    from tests.support.server import run_cli

    suffix = uuid.uuid4().hex[:8]
    owner, app, tools = f"t_owner_{suffix}", f"t_app_{suffix}", f"t_tools_{suffix}"

    def drop_schemas(conn: psycopg.Connection) -> None:
        conn.execute("DROP SCHEMA IF EXISTS tenantry_audit CASCADE")
        conn.execute("DROP SCHEMA IF EXISTS tenantry CASCADE")
        conn.execute("DROP SCHEMA IF EXISTS tenantry_rls CASCADE")
        conn.execute("DROP SCHEMA IF EXISTS tenant_data CASCADE")

    with psycopg.connect(postgres_url, autocommit=True) as conn:
        drop_schemas(conn)
    try:
        run_cli(
            "db",
            "init",
            "--admin-url",
            postgres_url,
            "--owner",
            owner,
            "--app-role",
            app,
            "--tools-role",
            tools,
            data_dir=tmp_path / "db-init",
        )
        yield DatabaseRoles(
            owner_url=postgres_url.replace("postgres@", f"{owner}@"),
            app_url=postgres_url.replace("postgres@", f"{app}@"),
        )
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            drop_schemas(conn)
            for role in (owner, app, tools):
                conn.execute(f'DROP OWNED BY "{role}" CASCADE')
                conn.execute(f'DROP ROLE IF EXISTS "{role}"')
