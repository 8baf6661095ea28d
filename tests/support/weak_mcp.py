"""Deliberately weakened MCP servers for proving that ``tenantry probe`` can fail.

Run as ``python -m tests.support.weak_mcp MODE PORT``:

- ``no-acl``: a plain MCP SDK ``MCPServer`` that trusts what the client says. It reads the
  tenant from the bearer token's payload *without verifying the signature* (and lets an
  ``X-Tenant-Id`` header or a ``tenant_id`` argument override it), lists tools, resources
  and prompts per tenant but never checks them on a call, keeps every tenant's files in one
  flat namespace, and does not bind sessions to their principal.
- ``refuse-all``: answers every request with 401, so every positive control must fail.

Imports nothing from ``tenantry``.
"""

from __future__ import annotations

import base64
import json
import logging
import posixpath
import sys
from typing import Any

import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.server import ServerRequestContext
from mcp_types import ListPromptsResult, ListResourcesResult, ListToolsResult, PaginatedRequestParams
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

FILES = {
    "acme/README.md": "acme-canary handbook",
    "acme/reports/q3.txt": "acme-canary q3",
    "globex/README.md": "globex-canary handbook",
}
PRIVATE_TOOLS = {"acme": {"acme_report"}, "globex": {"globex_forecast"}}
SHARED_TOOLS = {"whoami", "list_files", "read_file"}


def _claims(headers: Any) -> dict[str, Any]:
    authorization = (headers.get("authorization") if headers else "") or ""
    token = authorization.removeprefix("Bearer ").strip()
    try:
        payload = token.split(".")[1]
        return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return {}


def tenant_of(headers: Any) -> str:
    """Whatever the client claims: the header first, else the unverified token payload."""
    if headers and headers.get("x-tenant-id"):
        return str(headers["x-tenant-id"])
    return str(_claims(headers).get("tenant_id", "anonymous"))


def _headers(ctx: ServerRequestContext[Any]) -> Any:
    return getattr(ctx.request, "headers", None)


class TrustingServer(MCPServer):
    """Lists per tenant, never checks: the ACL check is disabled."""

    async def _handle_list_tools(
        self, ctx: ServerRequestContext[Any], params: PaginatedRequestParams | None
    ) -> ListToolsResult:
        tenant = tenant_of(_headers(ctx))
        visible = SHARED_TOOLS | PRIVATE_TOOLS.get(tenant, set())
        return ListToolsResult(tools=[t for t in await self.list_tools() if t.name in visible])

    async def _handle_list_resources(
        self, ctx: ServerRequestContext[Any], params: PaginatedRequestParams | None
    ) -> ListResourcesResult:
        tenant = tenant_of(_headers(ctx))
        return ListResourcesResult(resources=[r for r in await self.list_resources() if tenant in str(r.uri)])

    async def _handle_list_prompts(
        self, ctx: ServerRequestContext[Any], params: PaginatedRequestParams | None
    ) -> ListPromptsResult:
        tenant = tenant_of(_headers(ctx))
        return ListPromptsResult(prompts=[p for p in await self.list_prompts() if p.name.startswith(tenant)])


def build_trusting() -> Starlette:
    server = TrustingServer("weak")

    @server.tool()
    async def whoami(ctx: Context, tenant_id: str | None = None) -> dict[str, str]:
        return {"tenant_id": tenant_id or tenant_of(ctx.headers)}

    @server.tool()
    async def acme_report(ctx: Context) -> dict[str, str]:
        return {"report": "acme-canary numbers"}

    @server.tool()
    async def globex_forecast(ctx: Context, quarter: str) -> dict[str, Any]:
        return {"quarter": quarter, "revenue": 1_200_000, "note": "globex-canary"}

    @server.tool()
    async def list_files(ctx: Context, prefix: str = "") -> dict[str, list[str]]:
        root = tenant_of(ctx.headers) + "/"
        wanted = posixpath.normpath(root + prefix) if prefix else root
        return {"result": [p.removeprefix(root) for p in sorted(FILES) if p.startswith(wanted.rstrip("/"))]}

    @server.tool()
    async def read_file(ctx: Context, path: str) -> str:
        return FILES.get(posixpath.normpath(tenant_of(ctx.headers) + "/" + path), "")

    @server.resource("memo://acme/notes")
    async def acme_notes() -> str:
        return "acme-canary notes"

    @server.resource("memo://globex/notes")
    async def globex_notes() -> str:
        return "globex-canary notes"

    @server.prompt()
    async def acme_brief() -> str:
        return "acme-canary brief"

    @server.prompt()
    async def globex_brief() -> str:
        return "globex-canary brief"

    return server.streamable_http_app()


async def _refuse(request: Request) -> JSONResponse:
    return JSONResponse(
        {"jsonrpc": "2.0", "id": None, "error": {"code": -32001, "message": "unauthorized"}},
        status_code=401,
        headers={"WWW-Authenticate": "Bearer"},
    )


def build_refusing() -> Starlette:
    return Starlette(routes=[Route("/mcp", _refuse, methods=["GET", "POST", "DELETE"])])


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, force=True)
    for name in ("mcp", "uvicorn"):
        logging.getLogger(name).setLevel(logging.WARNING)
    mode, port = sys.argv[1], int(sys.argv[2])
    app = build_trusting() if mode == "no-acl" else build_refusing()
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
