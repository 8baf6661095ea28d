"""The data plane end to end over HTTP: the demo's search_docs and send_email, secret redaction,
and the same demo on PostgreSQL (RLS) + S3 (moto server) + Qdrant, chosen in the TOML config."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from textwrap import dedent
from typing import Any

import psycopg
import pytest
from mcp.shared.exceptions import MCPError

from tests.support.mcp_clients import mcp_client
from tests.support.s3 import MotoServer
from tests.support.server import RunningServer, run_cli, start_server
from tests.support.tenant_sql import TenantDatabase, tenant_database, write_scaled_config

pytestmark = pytest.mark.anyio

LEAKY_MODULE = dedent(
    '''
    import tenantry

    app = tenantry.App("leaky")

    @app.tool()
    async def leak_secret(ctx: tenantry.ToolContext, shout: bool = False) -> dict:
        """A careless tool: logs and returns the tenant's mail key."""
        key = await ctx.secrets.get("mail_api_key")
        ctx.log.warning("using key %s", key)
        if shout:
            raise ValueError(f"bad key {key}")
        return {"key": key, "note": f"the key is {key}!"}

    @app.tool()
    async def leak_via_sql(ctx: tenantry.ToolContext) -> list:
        """Returns a secret that reached the tool some other way (here: copied into a table)."""
        key = await ctx.secrets.get("mail_api_key")
        await ctx.sql.execute("CREATE TABLE IF NOT EXISTS t (v TEXT)")
        await ctx.sql.execute("INSERT INTO t VALUES (?)", "copy:" + key)
        return await ctx.sql.fetch("SELECT v FROM t")

    @app.tool()
    async def protocol_error_with_secret(ctx: tenantry.ToolContext) -> str:
        from mcp.shared.exceptions import MCPError

        key = await ctx.secrets.get("mail_api_key")
        raise MCPError(code=-32602, message=f"upstream rejected key {key}")

    @app.tool()
    async def logs_directly(ctx: tenantry.ToolContext) -> str:
        import logging

        key = await ctx.secrets.get("mail_api_key")
        logging.getLogger("leaky.vendor").warning("DIRECT %s", key)
        return "ok"

    @app.tool()
    async def logs_exception_with_secret(ctx: tenantry.ToolContext) -> str:
        key = await ctx.secrets.get("mail_api_key")
        try:
            raise RuntimeError(f"upstream said no to {key}")
        except RuntimeError:
            ctx.log.exception("LOGEXC call failed")
        return "ok"

    @app.resource("leaky://usage")
    async def usage_error_resource(ctx: tenantry.ToolContext) -> str:
        key = await ctx.secrets.get("mail_api_key")
        raise tenantry.UsageError(f"RESUSAGE bad key {key}")

    @app.resource("leaky://crash")
    async def crashing_resource(ctx: tenantry.ToolContext) -> str:
        key = await ctx.secrets.get("mail_api_key")
        raise ValueError(f"RESCRASH {key}")

    @app.resource("leaky://bytes", mime_type="application/octet-stream")
    async def bytes_resource(ctx: tenantry.ToolContext) -> bytes:
        key = await ctx.secrets.get("mail_api_key")
        return f"api_key={key}".encode()

    @app.tool()
    async def sql_error_with_secret(ctx: tenantry.ToolContext) -> list:
        key = await ctx.secrets.get("mail_api_key")
        return await ctx.sql.fetch("SELECT CAST(? AS INTEGER) + nosuchcolumn", key)
    '''
)


def texts(result: Any) -> str:
    return json.dumps([c.model_dump() for c in result.content]) + json.dumps(result.structured_content)


def mail_key(server: RunningServer, tenant: str) -> str:
    """Read the seeded secret the way an operator's own script would (never through a tool)."""
    from tenantry.core.settings import load_settings
    from tenantry.runtime import Runtime

    runtime = Runtime(load_settings(data_dir=server.data_dir))
    try:
        return runtime.secrets.read_secret(tenant, "mail_api_key")
    finally:
        runtime.close()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("dataplane")
    (root / "leaky_tools.py").write_text(LEAKY_MODULE)
    server = start_server(root / "data", app="leaky_tools:app", cwd=root)
    for tenant in ("acme", "globex"):
        server.cli(
            "tenant", "grant", tenant, "leak_secret", "leak_via_sql", "sql_error_with_secret", "search_docs",
            "protocol_error_with_secret", "logs_exception_with_secret", "usage_error_resource", "crashing_resource",
            "bytes_resource", "logs_directly",
        )  # fmt: skip
    yield server
    server.stop()


async def test_search_docs_finds_only_the_callers_documents(demo: RunningServer) -> None:
    async with mcp_client(demo.mcp_url, demo.token("acme")) as client:
        hits = (await client.call_tool("search_docs", {"query": "pricing policy discounts"})).structured_content
        assert hits["result"][0]["id"] == "pricing"
        assert "acme-canary" in json.dumps(hits)
        for probe in ("globex-canary", "Globex pricing policy", "globex handbook"):
            found = await client.call_tool("search_docs", {"query": probe, "limit": 20})
            assert "globex" not in texts(found).lower()
    async with mcp_client(demo.mcp_url, demo.token("globex")) as client:  # positive control
        found = await client.call_tool("search_docs", {"query": "globex-canary"})
        assert "globex-canary" in texts(found)


async def test_send_email_records_to_the_outbox_and_never_returns_the_key(demo: RunningServer) -> None:
    key = mail_key(demo, "acme")
    async with mcp_client(demo.mcp_url, demo.token("acme")) as client:
        result = await client.call_tool("send_email", {"to": "bob@example.com", "subject": "hi", "body": "hello"})
    assert not result.is_error
    assert result.structured_content["status"] == "queued"
    assert key not in texts(result)
    with sqlite3.connect(demo.data_dir / "tenants" / "acme" / "data.sqlite3") as db:
        assert db.execute("SELECT recipient, subject FROM outbox").fetchall() == [("bob@example.com", "hi")]
    assert not (demo.data_dir / "tenants" / "globex" / "data.sqlite3").exists() or "bob@example.com" not in (
        demo.data_dir / "tenants" / "globex" / "data.sqlite3"
    ).read_bytes().decode("latin-1")


@pytest.mark.parametrize("tool", ["leak_secret", "leak_via_sql"])
async def test_a_secret_value_in_a_tool_result_is_redacted(demo: RunningServer, tool: str) -> None:
    key = mail_key(demo, "acme")
    async with mcp_client(demo.mcp_url, demo.token("acme")) as client:
        result = await client.call_tool(tool, {})
    body = texts(result)
    assert key not in body
    assert "[redacted]" in body


async def test_a_secret_value_never_reaches_errors_logs_or_audit(demo: RunningServer) -> None:
    key = mail_key(demo, "acme")
    async with mcp_client(demo.mcp_url, demo.token("acme")) as client:
        shouted = await client.call_tool("leak_secret", {"shout": True})
        sql_error = await client.call_tool("sql_error_with_secret", {})
    assert shouted.is_error and sql_error.is_error
    assert key not in texts(shouted) and key not in texts(sql_error)
    assert key not in demo.logs()
    assert "using key [redacted]" in demo.logs()
    export = demo.data_dir.parent / "acme-audit.jsonl"
    demo.cli("audit", "export", "--tenant", "acme", "--out", str(export))
    assert key not in export.read_text()
    assert key not in (demo.data_dir / "audit.sqlite3").read_bytes().decode("latin-1")


async def test_secret_values_in_protocol_errors_resources_and_logged_exceptions_are_redacted(
    demo: RunningServer,
) -> None:
    import base64

    key = mail_key(demo, "acme")
    async with mcp_client(demo.mcp_url, demo.token("acme")) as client:
        with pytest.raises(MCPError) as protocol:
            await client.call_tool("protocol_error_with_secret", {})
        logged = await client.call_tool("logs_exception_with_secret", {})
        direct = await client.call_tool("logs_directly", {})
        with pytest.raises(MCPError) as usage:
            await client.read_resource("leaky://usage")
        with pytest.raises(MCPError) as crash:
            await client.read_resource("leaky://crash")
        blob = (await client.read_resource("leaky://bytes")).contents[0]
    assert "upstream rejected key [redacted]" in str(protocol.value) and key not in str(protocol.value)
    assert not logged.is_error
    assert "RESUSAGE bad key [redacted]" in str(usage.value) and key not in str(usage.value)
    assert key not in str(crash.value)
    assert base64.b64decode(blob.blob) == b"api_key=[redacted]"  # type: ignore[union-attr]
    logs = demo.logs()
    assert not direct.is_error
    assert "LOGEXC call failed" in logs and "RESCRASH [redacted]" in logs and "DIRECT [redacted]" in logs
    assert key not in logs


async def test_another_tenants_secret_is_not_reachable_and_is_not_named(demo: RunningServer) -> None:
    demo.cli("secret", "set", "--tenant", "globex", "globex_only_key", input="globex-canary-secret-value\n")
    async with mcp_client(demo.mcp_url, demo.token("acme")) as client:
        result = await client.call_tool("leak_secret", {})
    assert "globex-canary" not in texts(result)


# -- the same demo on PostgreSQL + S3 + Qdrant ----------------------------------------------------


@pytest.fixture(scope="module")
def scaled(
    postgres_available: None, s3_server: MotoServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RunningServer, TenantDatabase, str]]:
    root = tmp_path_factory.mktemp("scaled")
    data_dir = root / "data"
    with tenant_database(data_dir) as db:
        run_cli("db", "migrate", "--owner-url", db.owner_url, "--demo", "--tools-role", db.tools_role,
                data_dir=data_dir)  # fmt: skip
        bucket = s3_server.create_bucket()
        config = write_scaled_config(root / "tenantry.toml", db, bucket, s3_server.endpoint_url)
        server = start_server(data_dir, config=config)
        try:
            yield server, db, bucket
        finally:
            server.stop()


@pytest.mark.postgres
async def test_the_demo_runs_on_postgres_s3_and_qdrant_without_crossing_tenants(
    scaled: tuple[RunningServer, TenantDatabase, str], s3_server: MotoServer
) -> None:
    server, db, bucket = scaled
    async with mcp_client(server.mcp_url, server.token("acme")) as client:
        crm = texts(await client.call_tool("query_crm", {"filter": ""}))
        docs = texts(await client.call_tool("search_docs", {"query": "globex-canary pricing", "limit": 20}))
        files = texts(await client.call_tool("list_files", {}))
        readme = texts(await client.call_tool("read_file", {"path": "README.md"}))
        sent = await client.call_tool("send_email", {"to": "a@b.example", "subject": "s", "body": "b"})
        with pytest.raises(MCPError, match="not allowed"):
            await client.call_tool("read_file", {"path": "../globex/README.md"})
        missing = await client.call_tool("read_file", {"path": "globex-notes.txt"})
    assert "acme-canary" in crm and "acme-canary" in docs and "acme-canary" in readme
    assert "reports/q3.txt" in files
    for body in (crm, docs, files, readme, texts(sent)):
        assert "globex" not in body.lower()
    assert missing.is_error
    # Where the data actually went: PostgreSQL rows under RLS, S3 keys under the tenant's prefix.
    with psycopg.connect(db.admin_url) as conn:
        tenants = conn.execute("SELECT DISTINCT tenant_id FROM tenant_data.customers ORDER BY 1").fetchall()
        outbox = conn.execute("SELECT tenant_id, recipient FROM tenant_data.outbox").fetchall()
    assert tenants == [("acme",), ("globex",)]
    assert outbox == [("acme", "a@b.example")]
    keys = [o["Key"] for o in s3_server.client().list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert "tenants/acme/README.md" in keys and "tenants/globex/README.md" in keys
    assert not (server.data_dir / "tenants" / "acme" / "files").exists()
    async with mcp_client(server.mcp_url, server.token("globex")) as client:  # positive control
        assert "globex-canary" in texts(await client.call_tool("query_crm", {"filter": "canary"}))


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ('[sql]\nurl = "postgresql://nobody@127.0.0.1:5432/postgres"\n', "no SQL tenant key"),
        (
            '[files]\nbackend = "s3"\ns3_bucket = "b"\ns3_endpoint_url = "http://127.0.0.1:1"\n'
            's3_access_key_id = "x"\ns3_secret_access_key = "y"\n',
            "unreachable",
        ),
    ],
    ids=["sql-without-key", "s3-unreachable"],
)
def test_serve_refuses_to_start_on_a_misconfigured_data_store(tmp_path: Path, config: str, message: str) -> None:
    path = tmp_path / "tenantry.toml"
    path.write_text(config)
    result = run_cli("serve", "--config", str(path), "--port", "1", data_dir=tmp_path / "data", check=False)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
