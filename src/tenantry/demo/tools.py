"""The demo tools (names fixed by the specification so docs and tests can rely on them)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import Field

from tenantry.demo.catalogue import ACME_GRANTS, GLOBEX_GRANTS, GLOBEX_TOOLS, SHARED_TOOLS
from tenantry.framework.app import App
from tenantry.framework.context import ToolContext
from tenantry.framework.markers import ResourcePath, ResourcePrefix

__all__ = ["demo_app", "SHARED_TOOLS", "GLOBEX_TOOLS", "ACME_GRANTS", "GLOBEX_GRANTS"]

demo_app = App("tenantry-demo")


@demo_app.tool()
async def whoami(ctx: ToolContext) -> dict[str, Any]:
    """Who Tenantry says you are: tenant, subject, session and the tools you may use."""
    return {
        "tenant_id": ctx.tenant_id,
        "subject": ctx.subject,
        "session_id": ctx.session_id,
        "effective_tools": sorted(ctx.allowed_tools),
        "resource_prefix": ctx.resource_prefix,
    }


@demo_app.tool()
async def query_crm(
    ctx: ToolContext,
    filter: str = "",
    limit: Annotated[int, Field(ge=1, le=100)] = 20,
) -> list[dict[str, Any]]:
    """Customers of your organisation whose name contains `filter`."""
    return await ctx.sql.fetch(
        "SELECT name, email FROM customers WHERE name LIKE ? ORDER BY name LIMIT ?", f"%{filter}%", limit
    )


@demo_app.tool()
async def search_docs(
    ctx: ToolContext,
    query: Annotated[str, Field(min_length=1, max_length=2000)],
    limit: Annotated[int, Field(ge=1, le=20)] = 5,
) -> list[dict[str, Any]]:
    """Your organisation's documents closest in meaning to `query`, best first."""
    matches = await ctx.vectors.search(query, limit=limit, collection="docs")
    return [{"id": m.id, "score": round(m.score, 4), "title": m.metadata.get("title"), "text": m.text} for m in matches]


@demo_app.tool()
async def send_email(
    ctx: ToolContext,
    to: Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+$", max_length=254)],
    subject: Annotated[str, Field(max_length=200)],
    body: Annotated[str, Field(max_length=20_000)],
) -> dict[str, Any]:
    """Queue an email from your organisation (authenticated with its mail API key; the key is never shown)."""
    api_key = await ctx.secrets.get("mail_api_key")
    # The demo's "mail provider" is the tenant's outbox table; a real tool would send `api_key`
    # in an Authorization header here and never put it in its result.
    queued_at = datetime.now(UTC).isoformat(timespec="seconds")
    await ctx.sql.execute(
        "INSERT INTO outbox (recipient, subject, body, queued_at) VALUES (?, ?, ?, ?)", to, subject, body, queued_at
    )
    del api_key
    return {"status": "queued", "to": to, "subject": subject, "queued_at": queued_at}


@demo_app.tool()
async def list_files(ctx: ToolContext, prefix: ResourcePrefix = "") -> list[dict[str, Any]]:
    """Files in your organisation's storage under `prefix`."""
    return [{"path": f.path, "size": f.size} for f in await ctx.files.list(prefix)]


@demo_app.tool()
async def read_file(ctx: ToolContext, path: ResourcePath) -> str:
    """The text of one file in your organisation's storage."""
    return await ctx.files.read_text(path)


@demo_app.tool()
async def write_file(ctx: ToolContext, path: ResourcePath, content: str) -> dict[str, Any]:
    """Write a text file in your organisation's storage."""
    entry = await ctx.files.write_text(path, content)
    return {"path": entry.path, "size": entry.size}


@demo_app.tool(tenants=["globex"])
async def globex_forecast(ctx: ToolContext, quarter: Annotated[str, Field(pattern=r"^Q[1-4]$")]) -> dict[str, Any]:
    """Globex's revenue forecast for a quarter (Q1-Q4)."""
    row = await ctx.sql.fetchone("SELECT quarter, revenue, note FROM forecasts WHERE quarter = ?", quarter)
    return row or {"quarter": quarter, "revenue": None, "note": "no forecast"}
