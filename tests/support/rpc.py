"""Raw JSON-RPC over HTTP, for tests that must control every byte and header."""

from __future__ import annotations

import itertools
from typing import Any

import httpx2

from tests.support import web

ACCEPT = "application/json, text/event-stream"
HANDSHAKE_VERSION = "2025-11-25"
MODERN_VERSION = "2026-07-28"


def post(
    url: str,
    body: Any,
    *,
    token: str | None = None,
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
    content_type: str = "application/json",
) -> httpx2.Response:
    all_headers = {"Accept": ACCEPT, "Content-Type": content_type, **(headers or {})}
    if token is not None:
        all_headers["Authorization"] = f"Bearer {token}"
    if raw is None:
        return web.post(url, json=body, headers=all_headers, timeout=30)
    return web.post(url, content=raw, headers=all_headers, timeout=30)


def request(method: str, params: dict[str, Any] | None = None, id: int | str = 1) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": id, "method": method}
    if params is not None:
        message["params"] = params
    return message


class LegacySession:
    """A handshake-era session opened with raw HTTP: initialize, then requests with Mcp-Session-Id."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.token = token
        self._ids = itertools.count(2)  # a request id in flight on a session must not be reused
        response = post(
            url,
            request(
                "initialize",
                {
                    "protocolVersion": HANDSHAKE_VERSION,
                    "capabilities": {},
                    "clientInfo": {"name": "tenantry-tests", "version": "0"},
                },
            ),
            token=token,
        )
        assert response.status_code == 200, response.text
        self.session_id = response.headers["mcp-session-id"]
        note = post(url, {"jsonrpc": "2.0", "method": "notifications/initialized"}, token=token, headers=self.headers())
        assert note.status_code == 202, note.text

    def headers(self) -> dict[str, str]:
        return {"Mcp-Session-Id": self.session_id, "MCP-Protocol-Version": HANDSHAKE_VERSION}

    def call(
        self, method: str, params: dict[str, Any] | None = None, *, token: str | None = None, id: int | None = None
    ) -> httpx2.Response:
        """One request; its own id unless ``id`` is given."""
        request_id = next(self._ids) if id is None else id
        return post(self.url, request(method, params, request_id), token=token or self.token, headers=self.headers())


def modern_params(params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Params for a sessionless 2026-07-28 request (the per-request envelope in ``_meta``)."""
    meta = {
        "io.modelcontextprotocol/protocolVersion": MODERN_VERSION,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "tenantry-tests", "version": "0"},
    }
    merged = dict(params or {})
    merged["_meta"] = {**meta, **merged.get("_meta", {})}
    return merged


def modern_headers(method: str, params: dict[str, Any] | None = None) -> dict[str, str]:
    """The routing headers a 2026-07-28 request carries (``Mcp-Method``, and ``Mcp-Name`` for calls)."""
    headers = {"MCP-Protocol-Version": MODERN_VERSION, "Mcp-Method": method}
    name = (params or {}).get("name") or (params or {}).get("uri")
    if method in ("tools/call", "prompts/get", "resources/read") and isinstance(name, str):
        headers["Mcp-Name"] = name
    return headers


def modern_call(
    url: str,
    token: str | None,
    method: str,
    params: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> httpx2.Response:
    return post(
        url,
        request(method, modern_params(params)),
        token=token,
        headers={**modern_headers(method, params), **(headers or {})},
    )
