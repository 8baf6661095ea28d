"""Helpers for the quota attack scripts. Env: TENANTRY_DATA_DIR, ATTACK_PORT."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import httpx2

ROOT = Path(__file__).resolve().parents[3]
CLI = str(ROOT / ".venv" / "bin" / "tenantry")
DATA = Path(os.environ["TENANTRY_DATA_DIR"])
MCP = f"http://127.0.0.1:{os.environ['ATTACK_PORT']}/mcp"
H = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json",
     "MCP-Protocol-Version": "2025-11-25"}


def cli(*args: str) -> str:
    return subprocess.run([CLI, *args], capture_output=True, text=True, check=True).stdout.strip()


def token(tenant: str = "acme", *extra: str) -> str:
    return cli("token", "issue", "--tenant", tenant, "--sub", "x", *extra)


class Client:
    def __init__(self, tok: str) -> None:
        self.h = {**H, "Authorization": f"Bearer {tok}"}
        r = httpx2.post(MCP, headers=self.h, json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "a", "version": "0"}}})
        assert r.status_code == 200, r.text
        self.h["Mcp-Session-Id"] = r.headers["mcp-session-id"]
        httpx2.post(MCP, headers=self.h, json={"jsonrpc": "2.0", "method": "notifications/initialized"})

    def raw(self, name: str, args: dict[str, Any], timeout: float = 120) -> httpx2.Response:
        return httpx2.post(MCP, headers=self.h, timeout=timeout, json={
            "jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": name, "arguments": args}})

    def call(self, name: str, args: dict[str, Any], timeout: float = 120) -> tuple[bool, Any]:
        r = self.raw(name, args, timeout)
        if r.status_code != 200:
            return False, f"HTTP {r.status_code}: {r.text[:500]}"
        text = r.text
        if r.headers.get("content-type", "").startswith("text/event-stream"):
            text = next(line[5:] for line in text.splitlines() if line.startswith("data:"))
        msg = json.loads(text)
        if "error" in msg:
            return False, msg["error"]
        res = msg["result"]
        content = res.get("structuredContent", res["content"][0].get("text") if res.get("content") else None)
        return not res.get("isError", False), content

    def sql(self, sql: str) -> tuple[bool, Any]:
        return self.call("sql_exec", {"sql": sql})

    def q(self, sql: str) -> tuple[bool, Any]:
        return self.call("sql_fetch", {"sql": sql})


def du(tenant: str = "acme") -> dict[str, int]:
    d = DATA / "tenants" / tenant
    return {str(p.relative_to(d)): p.stat().st_size for p in sorted(d.rglob("*")) if p.is_file()}
