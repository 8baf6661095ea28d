"""Shared helpers for the fair-share attack scripts (live server on 127.0.0.1:8791, nap tool granted)."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import time
from typing import Any

import httpx2

URL = os.environ.get("MCP_URL", "http://127.0.0.1:8791/mcp")
METRICS = URL.rsplit("/", 1)[0] + "/metrics"
DATA = os.environ.get("DATA_DIR", "/tmp/attack-fair-data")
CLI = os.path.join(os.path.dirname(__file__), "../../../.venv/bin/tenantry")
MODERN = "2026-07-28"


def token(tenant: str, sub: str = "x") -> str:
    out = subprocess.run([CLI, "token", "issue", "--tenant", tenant, "--sub", sub, "--data-dir", DATA],
                         capture_output=True, text=True, check=True).stdout
    return out.strip().split()[-1]


def metrics_token() -> str:
    with open(os.path.join(DATA, "keys", "metrics.token")) as f:
        return f.read().strip()


def fair_gauges() -> dict[str, str]:
    text = httpx2.get(METRICS, headers={"Authorization": f"Bearer {metrics_token()}"}).text
    return {m.group(1): m.group(2) for m in re.finditer(r"^(tenantry_fair_share\S*)\s+(\S+)$", text, re.M)}


def modern_body(name: str, arguments: dict[str, Any], rid: int | str = 1) -> dict[str, Any]:
    meta = {
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "attack", "version": "0"},
    }
    return {"jsonrpc": "2.0", "id": rid, "method": "tools/call",
            "params": {"name": name, "arguments": arguments, "_meta": meta}}


def modern_headers(tok: str, name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}", "Accept": "application/json, text/event-stream",
            "Content-Type": "application/json", "MCP-Protocol-Version": MODERN,
            "Mcp-Method": "tools/call", "Mcp-Name": name}


async def call(client: httpx2.AsyncClient, tok: str, name: str, arguments: dict[str, Any],
               rid: int | str = 1, timeout: float = 60) -> tuple[int, float, str]:
    t0 = time.monotonic()
    r = await client.post(URL, json=modern_body(name, arguments, rid), headers=modern_headers(tok, name), timeout=timeout)
    return r.status_code, time.monotonic() - t0, r.text


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))] if xs else float("nan")


def run(coro: Any) -> Any:
    return asyncio.run(coro)
