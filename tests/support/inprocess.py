"""A whole Tenantry HTTP app in this process, driven through httpx's ASGI transport.

For tests that must look inside the server (memory, internal state) while talking to it over
its real HTTP surface. The demo tenants are seeded; :meth:`InProcessServer.token` issues a
built-in JWT.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tenantry.cli.serve import load_app
from tenantry.core.settings import load_settings
from tenantry.demo.seed import seed_demo
from tenantry.runtime import Runtime
from tenantry.server.app import HttpApp, create_http_app

ACCEPT = "application/json, text/event-stream"
HANDSHAKE_VERSION = "2025-11-25"


@dataclass
class InProcessServer:
    runtime: Runtime
    http: HttpApp
    client: httpx.AsyncClient

    def token(self, tenant: str, subject: str = "agent", tools: Iterable[str] = ("whoami",)) -> str:
        return self.runtime.token_issuer().issue(tenant_id=tenant, subject=subject, allowed_tools=tools).token

    async def open_session(self, token: str) -> dict[str, str]:
        """Initialize a handshake-era session; returns the headers that use it."""
        headers = {"Authorization": f"Bearer {token}", "Accept": ACCEPT, "Content-Type": "application/json"}
        opened = await self.client.post(
            "/mcp",
            headers=headers,
            json={
                "jsonrpc": "2.0",
                "id": 1,
                "method": "initialize",
                "params": {
                    "protocolVersion": HANDSHAKE_VERSION,
                    "capabilities": {},
                    "clientInfo": {"name": "t", "version": "0"},
                },
            },
        )
        assert opened.status_code == 200, opened.text
        session = {
            **headers,
            "Mcp-Session-Id": opened.headers["mcp-session-id"],
            "MCP-Protocol-Version": HANDSHAKE_VERSION,
        }
        note = await self.client.post(
            "/mcp", headers=session, json={"jsonrpc": "2.0", "method": "notifications/initialized"}
        )
        assert note.status_code == 202, note.text
        return session


@contextlib.asynccontextmanager
async def inprocess_server(data_dir: Path, **settings: Any) -> AsyncIterator[InProcessServer]:
    runtime = Runtime(load_settings(data_dir=data_dir, **settings), serving=True, create=True)
    try:
        served = load_app(None, demo=True)
        runtime.prepare_keys()
        await runtime.check_data_plane()
        await seed_demo(runtime.store, runtime.scopes, runtime.secrets)
        http = create_http_app(runtime, served)
        starlette = http.asgi.app
        async with starlette.router.lifespan_context(starlette):
            transport = httpx.ASGITransport(app=http.asgi, client=("127.0.0.1", 40000))
            base = f"http://127.0.0.1:{runtime.settings.server.port}"
            async with httpx.AsyncClient(transport=transport, base_url=base, timeout=30) as client:
                yield InProcessServer(runtime, http, client)
    finally:
        runtime.close()
