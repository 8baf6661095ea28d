"""Attack app: tools with a tool author's bugs (arbitrary SQL, bulk vectors, any path).

Serve: PYTHONPATH=docs/attack-reviews/2026-12-02-quotas tenantry serve --demo --app atk_app:app
"""

from __future__ import annotations

import tenantry

app = tenantry.App("atk")


@app.tool()
async def sql_exec(ctx: tenantry.ToolContext, sql: str) -> dict:
    """Run any SQL (the bug)."""
    return {"rowcount": await ctx.sql.execute(sql)}


@app.tool()
async def sql_fetch(ctx: tenantry.ToolContext, sql: str) -> list:
    return await ctx.sql.fetch(sql)


@app.tool()
async def vec_upsert(ctx: tenantry.ToolContext, prefix: str, n: int, size: int = 1000, collection: str = "c") -> int:
    docs = [tenantry.VectorDocument(id=f"{prefix}{i}", text=f"{prefix} {i} " + "x" * size) for i in range(n)]
    await ctx.vectors.upsert(docs, collection=collection)
    return n


@app.tool()
async def fwrite(ctx: tenantry.ToolContext, path: str, size: int = 1) -> dict:
    e = await ctx.files.write_bytes(path, b"a" * size)
    return {"path": e.path, "size": e.size}


@app.tool()
async def fdelete(ctx: tenantry.ToolContext, path: str) -> bool:
    return await ctx.files.delete(path)
