"""MCP SDK clients with a bearer token, for both protocol eras."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Literal

from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.support import web

Era = Literal["legacy", "auto"]
ERAS: tuple[Era, ...] = ("legacy", "auto")


@asynccontextmanager
async def mcp_client(
    url: str, token: str, mode: Era = "auto", headers: dict[str, str] | None = None
) -> AsyncIterator[Client]:
    """``legacy`` runs the initialize handshake (Mcp-Session-Id); ``auto`` negotiates the 2026-07-28 era."""
    all_headers = {"Authorization": f"Bearer {token}", **(headers or {})}
    async with (
        web.AsyncClient(headers=all_headers, timeout=30) as http,
        Client(streamable_http_client(url, http_client=http), mode=mode, cache=None) as client,
    ):
        yield client
