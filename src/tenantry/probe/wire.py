"""JSON-RPC over MCP streamable HTTP, byte for byte, in both protocol eras.

The probe speaks the wire protocol itself (rather than through an SDK session) because its
checks must send what a well-behaved client never would: another principal's session id,
a forged token, a ``tenant_id`` in ``_meta``. Replies are read whether the server answers
with ``application/json`` or with one ``text/event-stream`` event.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum
from typing import Any

import anyio
import httpx2

__all__ = [
    "Reply",
    "Wire",
    "parse_body",
    "sessionless_params",
    "HandshakeSession",
    "HANDSHAKE_VERSION",
    "SESSIONLESS_VERSION",
    "CLIENT_INFO",
]

HANDSHAKE_VERSION = "2025-11-25"
SESSIONLESS_VERSION = "2026-07-28"
CLIENT_INFO = {"name": "tenantry-probe", "version": "1"}


class _Own(Enum):
    TOKEN = "own"  # noqa: S105 - a marker, not a secret


OWN_TOKEN = _Own.TOKEN
"""The session's own credential (the default of :meth:`HandshakeSession.call`)."""
_ACCEPT = "application/json, text/event-stream"
_RATE_LIMIT_RETRIES = 5
_MAX_RETRY_WAIT = 2.0


@dataclass(frozen=True)
class Reply:
    """One HTTP exchange: its status, headers and the JSON-RPC message in the body (if any)."""

    status: int
    headers: dict[str, str]
    message: dict[str, Any] | None
    text: str

    @property
    def result(self) -> dict[str, Any] | None:
        value = (self.message or {}).get("result")
        return value if isinstance(value, dict) else None

    @property
    def error(self) -> dict[str, Any] | None:
        value = (self.message or {}).get("error")
        return value if isinstance(value, dict) else None

    @property
    def ok(self) -> bool:
        """Served: HTTP 2xx with a JSON-RPC result that is not a tool error (``isError``)."""
        result = self.result
        return 200 <= self.status < 300 and result is not None and result.get("isError") is not True

    @property
    def refused(self) -> bool:
        return not self.ok

    def fingerprint(self, *names: str) -> tuple[Any, ...]:
        """What a refusal looks like, with ``names`` blanked: two refusals with the same
        fingerprint cannot be told apart by the caller."""
        error = self.error or {}
        data = error.get("data")
        code = data.get("code") if isinstance(data, dict) else None
        text = str(error.get("message", "")) if error else _result_text(self.result)
        for name in names:
            text = text.replace(name, "<name>")
        return (self.status, error.get("code"), code, text)

    def summary(self) -> str:
        """A short account of the reply for a report row (never the token, never a body dump)."""
        if self.ok:
            return f"HTTP {self.status}, served"
        error = self.error
        if error is not None:
            data = error.get("data")
            code = f" {data['code']}" if isinstance(data, dict) and "code" in data else ""
            return f"HTTP {self.status}, JSON-RPC error {error.get('code')}{code}"
        if self.result is not None:
            return f"HTTP {self.status}, tool error"
        return f"HTTP {self.status}"


def _result_text(result: dict[str, Any] | None) -> str:
    if not result:
        return ""
    parts = [c.get("text", "") for c in result.get("content", []) if isinstance(c, dict)]
    return " ".join(str(p) for p in parts)


def parse_body(content_type: str, text: str) -> dict[str, Any] | None:
    if "text/event-stream" in content_type:
        for block in text.split("\n\n"):
            data = "\n".join(line[5:].lstrip() for line in block.splitlines() if line.startswith("data:"))
            if not data:
                continue
            try:
                message = json.loads(data)
            except ValueError:
                continue
            if isinstance(message, dict) and ("result" in message or "error" in message):
                return message
        return None
    try:
        message = json.loads(text)
    except ValueError:
        return None
    return message if isinstance(message, dict) else None


def sessionless_params(params: dict[str, Any] | None) -> dict[str, Any]:
    """``params`` with the 2026-07-28 per-request envelope merged into ``_meta``."""
    envelope = {
        "io.modelcontextprotocol/protocolVersion": SESSIONLESS_VERSION,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": CLIENT_INFO,
    }
    merged = dict(params or {})
    merged["_meta"] = {**envelope, **merged.get("_meta", {})}
    return merged


@dataclass
class Wire:
    """Posts JSON-RPC messages to one MCP endpoint."""

    url: str
    http: httpx2.AsyncClient
    exchanges: int = 0
    _next_id: int = 0

    async def post(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        token: str | None,
        headers: dict[str, str] | None = None,
        notification: bool = False,
    ) -> Reply:
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        if not notification:
            self._next_id += 1
            message["id"] = self._next_id
        all_headers = {"Accept": _ACCEPT, "Content-Type": "application/json", **(headers or {})}
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        return await self._send("POST", json.dumps(message).encode(), all_headers)

    async def delete(self, *, token: str | None, headers: dict[str, str]) -> Reply:
        all_headers = dict(headers)
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        return await self._send("DELETE", None, all_headers)

    async def _send(self, verb: str, body: bytes | None, headers: dict[str, str]) -> Reply:
        for attempt in range(_RATE_LIMIT_RETRIES + 1):
            self.exchanges += 1
            response = await self.http.request(verb, self.url, content=body, headers=headers)
            if response.status_code != 429 or attempt == _RATE_LIMIT_RETRIES:
                break
            # The deployment's own rate limit is not what is being probed: wait and retry.
            await anyio.sleep(_retry_after(response.headers.get("retry-after")))
        text = response.text
        content_type = response.headers.get("content-type", "")
        return Reply(
            status=response.status_code,
            headers={k.lower(): v for k, v in response.headers.items()},
            message=parse_body(content_type, text),
            text=text,
        )

    async def sessionless(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        token: str | None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        """One self-contained 2026-07-28 request (no session, envelope in ``_meta``)."""
        routing = {"MCP-Protocol-Version": SESSIONLESS_VERSION, "Mcp-Method": method}
        name = (params or {}).get("name") or (params or {}).get("uri")
        if method in ("tools/call", "prompts/get", "resources/read") and isinstance(name, str):
            routing["Mcp-Name"] = name
        return await self.post(method, sessionless_params(params), token=token, headers={**routing, **(headers or {})})

    async def open_session(self, token: str | None, headers: dict[str, str] | None = None) -> HandshakeSession | None:
        """The handshake era: ``initialize`` then ``notifications/initialized``; ``None`` if refused."""
        reply = await self.post(
            "initialize",
            {"protocolVersion": HANDSHAKE_VERSION, "capabilities": {}, "clientInfo": CLIENT_INFO},
            token=token,
            headers=headers,
        )
        if not reply.ok:
            return None
        version = str(reply.result.get("protocolVersion", HANDSHAKE_VERSION)) if reply.result else HANDSHAKE_VERSION
        session = HandshakeSession(self, token, reply.headers.get("mcp-session-id"), version, dict(headers or {}))
        await self.post("notifications/initialized", token=token, headers=session.headers(), notification=True)
        return session


@dataclass
class HandshakeSession:
    """A session opened with ``initialize``; ``session_id`` is ``None`` on a stateless server."""

    wire: Wire
    token: str | None
    session_id: str | None
    protocol_version: str
    extra_headers: dict[str, str]

    def headers(self, session_id: str | None = None) -> dict[str, str]:
        headers = {"MCP-Protocol-Version": self.protocol_version, **self.extra_headers}
        sid = session_id or self.session_id
        if sid is not None:
            headers["Mcp-Session-Id"] = sid
        return headers

    async def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        token: str | _Own | None = OWN_TOKEN,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        """``method`` in this session; ``token`` replaces the session's own (``None``: no credential)."""
        credential = self.token if token is OWN_TOKEN else token
        assert not isinstance(credential, _Own)
        return await self.wire.post(method, params, token=credential, headers={**self.headers(), **(headers or {})})

    async def close(self) -> None:
        if self.session_id is not None:
            await self.wire.delete(token=self.token, headers=self.headers())


def _retry_after(value: str | None) -> float:
    try:
        return min(max(float(value or 1), 0.05), _MAX_RETRY_WAIT)
    except ValueError:
        return 1.0
