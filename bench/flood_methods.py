"""Flood by method: does a flood of requests the call limits do not count reach another tenant?

Reproduction of the outside attack review's availability findings. Against a running server
(``tenantry serve --demo``), tenant B floods from many connections in a closed loop with one
kind of request while tenant A calls ``whoami`` at a steady pace; A's p50 and p99 are printed
next to a quiet round. Kinds: ``list`` (``tools/list``), ``call`` (``whoami``), ``garbage``
(a garbage bearer token), ``forged`` (B's token with a broken signature), ``resource``
(``resources/read`` of a URI that exists nowhere), ``prompt`` (an unknown prompt).

    A=$(tenantry token issue --tenant globex --sub a) B=$(tenantry token issue --tenant acme --sub b) \\
        .venv/bin/python bench/flood_methods.py http://127.0.0.1:8750/mcp quiet list garbage quiet

Before the fixes, ``list``, ``garbage``, ``resource`` and ``prompt`` floods ran unlimited
(~1,500 requests/s from 48 connections on a 2-core machine) and raised A's p50 about sevenfold
and its p99 about tenfold; the ``resource`` and ``prompt`` floods also wrote one durable audit
record per request. Absolute times depend on the machine; compare rounds of one run.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any

import httpx2

VERSION = "2026-07-28"
ACCEPT = "application/json, text/event-stream"
KINDS: dict[str, tuple[str, dict[str, Any]]] = {
    "list": ("tools/list", {}),
    "call": ("tools/call", {"name": "whoami", "arguments": {}}),
    "garbage": ("tools/list", {}),
    "forged": ("tools/list", {}),
    "resource": ("resources/read", {"uri": "nowhere://x"}),
    "prompt": ("prompts/get", {"name": "no_such_prompt"}),
}


def message(method: str, params: dict[str, Any]) -> dict[str, Any]:
    meta = {
        "io.modelcontextprotocol/protocolVersion": VERSION,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "flood", "version": "0"},
    }
    return {"jsonrpc": "2.0", "id": 1, "method": method, "params": {**params, "_meta": meta}}


def headers(token: str, method: str, params: dict[str, Any]) -> dict[str, str]:
    routed = {"MCP-Protocol-Version": VERSION, "Mcp-Method": method}
    name = params.get("name") or params.get("uri")
    if method in ("tools/call", "prompts/get", "resources/read") and isinstance(name, str):
        routed["Mcp-Name"] = name
    return {"Accept": ACCEPT, "Content-Type": "application/json", "Authorization": f"Bearer {token}", **routed}


async def victim(url: str, token: str, client: httpx2.AsyncClient, calls: int) -> list[float]:
    params = {"name": "whoami", "arguments": {}}
    latencies = []
    for _ in range(calls):
        started = time.perf_counter()
        body, sent = message("tools/call", params), headers(token, "tools/call", params)
        answer = await client.post(url, json=body, headers=sent)
        latencies.append(time.perf_counter() - started)
        assert answer.status_code == 200 and "result" in answer.json(), answer.text
        await asyncio.sleep(0.02)
    return latencies


async def round_of(url: str, kind: str, a: str, b: str, connections: int) -> str:
    statuses: dict[int, int] = {}
    stop = asyncio.Event()
    token = {"garbage": "garbage", "forged": b[:-4] + "AAAA"}.get(kind, b)

    async def flood(client: httpx2.AsyncClient) -> None:
        method, params = KINDS[kind]
        while not stop.is_set():
            answer = await client.post(url, json=message(method, params), headers=headers(token, method, params))
            statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1

    limits = httpx2.Limits(max_connections=connections)
    async with httpx2.AsyncClient(timeout=60) as quiet, httpx2.AsyncClient(timeout=60, limits=limits) as loud:
        floods = [] if kind == "quiet" else [asyncio.create_task(flood(loud)) for _ in range(connections)]
        if floods:
            await asyncio.sleep(1.0)
        began = time.perf_counter()
        latencies = sorted(await victim(url, a, quiet, 150))
        elapsed = time.perf_counter() - began
        stop.set()
        await asyncio.gather(*floods)
    p50, p99 = latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.99)]
    flooded = sum(statuses.values())
    return (
        f"{kind:9} A p50 {p50 * 1000:6.1f} ms  p99 {p99 * 1000:6.1f} ms   "
        f"B {flooded / elapsed:7.0f} requests/s {dict(sorted(statuses.items()))}"
    )


def main() -> None:
    if len(sys.argv) < 3 or any(kind not in (*KINDS, "quiet") for kind in sys.argv[2:]):
        sys.exit(f"usage: A=... B=... {sys.argv[0]} URL (quiet|{'|'.join(KINDS)})...")
    url, a, b = sys.argv[1], os.environ["A"], os.environ["B"]
    for kind in sys.argv[2:]:
        print(asyncio.run(round_of(url, kind, a, b, connections=48)))


if __name__ == "__main__":
    main()
