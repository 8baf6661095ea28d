"""Shared helpers for the outside-attack scripts: run against a live `tenantry serve --demo`.

Environment: TENANTRY_DATA_DIR (the server's data dir, for the CLI), ATTACK_URL (default
http://127.0.0.1:$(cat /tmp/atk/port)/mcp).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx2

ROOT = Path(__file__).resolve().parent.parent
CLI = str(ROOT / ".venv" / "bin" / "tenantry")
HANDSHAKE = "2025-11-25"
MODERN = "2026-07-28"
ACCEPT = "application/json, text/event-stream"


def base() -> str:
    url = os.environ.get("ATTACK_URL")
    if url:
        return url.rsplit("/mcp", 1)[0]
    return f"http://127.0.0.1:{Path('/tmp/atk/port').read_text().strip()}"


MCP = base() + "/mcp"


def cli(*args: str, stdin: str | None = None) -> str:
    out = subprocess.run([CLI, *args], capture_output=True, text=True, input=stdin, check=False)
    if out.returncode != 0:
        print("CLI failed:", args, out.stdout, out.stderr, file=sys.stderr)
        raise SystemExit(1)
    return out.stdout.strip()


def token(tenant: str = "acme", sub: str = "alice", *extra: str) -> str:
    return cli("token", "issue", "--tenant", tenant, "--sub", sub, *extra)


def post(body: Any, tok: str | None, headers: dict[str, str] | None = None, timeout: float = 30) -> httpx2.Response:
    h = {"Accept": ACCEPT, "Content-Type": "application/json", **(headers or {})}
    if tok is not None:
        h["Authorization"] = f"Bearer {tok}"
    return httpx2.post(MCP, content=json.dumps(body).encode(), headers=h, timeout=timeout)


def rpc(method: str, params: dict[str, Any] | None = None, id: int | str = 1) -> dict[str, Any]:
    m: dict[str, Any] = {"jsonrpc": "2.0", "id": id, "method": method}
    if params is not None:
        m["params"] = params
    return m


def modern(tok: str | None, method: str, params: dict[str, Any] | None = None, headers: dict[str, str] | None = None,
           id: int | str = 1) -> httpx2.Response:
    p = dict(params or {})
    p["_meta"] = {
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "attack", "version": "0"},
        **p.get("_meta", {}),
    }
    h = {"MCP-Protocol-Version": MODERN, "Mcp-Method": method}
    name = p.get("name") or p.get("uri")
    if method in ("tools/call", "prompts/get", "resources/read") and isinstance(name, str):
        h["Mcp-Name"] = name
    return post(rpc(method, p, id), tok, {**h, **(headers or {})})


class Legacy:
    def __init__(self, tok: str) -> None:
        self.tok = tok
        r = post(rpc("initialize", {"protocolVersion": HANDSHAKE, "capabilities": {},
                                    "clientInfo": {"name": "attack", "version": "0"}}), tok)
        assert r.status_code == 200, (r.status_code, r.text)
        self.sid = r.headers["mcp-session-id"]
        n = post({"jsonrpc": "2.0", "method": "notifications/initialized"}, tok, self.headers())
        assert n.status_code == 202, n.text

    def headers(self) -> dict[str, str]:
        return {"Mcp-Session-Id": self.sid, "MCP-Protocol-Version": HANDSHAKE}

    def call(self, method: str, params: dict[str, Any] | None = None, tok: str | None = None, id: int = 2,
             headers: dict[str, str] | None = None) -> httpx2.Response:
        return post(rpc(method, params, id), tok or self.tok, {**self.headers(), **(headers or {})})

    def tool(self, name: str, args: dict[str, Any] | None = None, tok: str | None = None) -> httpx2.Response:
        return self.call("tools/call", {"name": name, "arguments": args or {}}, tok)


def body(r: httpx2.Response) -> Any:
    text = r.text
    if r.headers.get("content-type", "").startswith("text/event-stream"):
        for line in text.splitlines():
            if line.startswith("data:"):
                return json.loads(line[5:])
    try:
        return json.loads(text)
    except ValueError:
        return text
