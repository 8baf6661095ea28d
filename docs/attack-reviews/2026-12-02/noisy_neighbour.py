"""Noisy neighbour: acme, within its own limits, runs one kind of call flat out (16 connections,
~10 s each) while globex calls whoami once every 20 ms; globex's latency is compared with a quiet
baseline. Kinds: search_docs (2,000-character queries: embedding), send_email (20,000 multibyte
characters: an 80 KB row each), query_crm (LIKE patterns), list_files and write_file.

Run: TENANTRY_DATA_DIR=... .venv/bin/python attack/noisy_neighbour.py [kind ...]
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx2

sys.path.insert(0, str(Path(__file__).parent))
from common import MCP, MODERN, token  # noqa: E402

META = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "load", "version": "0"}}


def call_body(name: str, args: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": name, "arguments": args, "_meta": META}}
    return json.dumps(body).encode(), {"Content-Type": "application/json", "Accept": "application/json, text/event-stream", "MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/call", "Mcp-Name": name}


KINDS: dict[str, tuple[str, dict[str, Any]]] = {
    "search_docs": ("search_docs", {"query": "quarterly revenue forecast " * 74, "limit": 20}),
    "send_email": ("send_email", {"to": "x@example.com", "subject": "s", "body": "€" * 20000}),
    "query_crm": ("query_crm", {"filter": "%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%_%z", "limit": 100}),
    "list_files": ("list_files", {"prefix": ""}),
    "write_file": ("write_file", {"path": "load/big.txt", "content": "a" * 3_000_000}),
    "unknown_tool": ("globex_forecast", {"quarter": "Q1"}),
}


async def probe(client: httpx2.AsyncClient, tok: str, seconds: float) -> list[float]:
    content, hdr = call_body("whoami", {})
    lat: list[float] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t = time.perf_counter()
        r = await client.post(MCP, content=content, headers={**hdr, "Authorization": f"Bearer {tok}"})
        lat.append((time.perf_counter() - t) * 1000)
        assert r.status_code == 200, r.text
        await asyncio.sleep(0.02)
    return lat


async def flood(client: httpx2.AsyncClient, tok: str, kind: str, seconds: float, counts: dict[int, int]) -> None:
    name, args = KINDS[kind]
    content, hdr = call_body(name, args)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        r = await client.post(MCP, content=content, headers={**hdr, "Authorization": f"Bearer {tok}"})
        counts[r.status_code] = counts.get(r.status_code, 0) + 1
        if r.status_code == 429:
            await asyncio.sleep(float(r.headers.get("retry-after", "0.1")))


def summary(lat: list[float]) -> str:
    lat = sorted(lat)
    return f"n={len(lat)} p50={statistics.median(lat):.1f}ms p95={lat[int(len(lat) * 0.95)]:.1f}ms max={lat[-1]:.1f}ms"


async def main(kinds: list[str]) -> None:
    acme, globex = token("acme", "alice"), token("globex", "bob")
    limits = httpx2.Limits(max_connections=64)
    async with httpx2.AsyncClient(timeout=60, limits=limits) as client:
        print("baseline globex whoami:", summary(await probe(client, globex, 5)))
        for kind in kinds:
            counts: dict[int, int] = {}
            t0 = time.monotonic()
            loaders = [asyncio.create_task(flood(client, acme, kind, 10, counts)) for _ in range(16)]
            await asyncio.sleep(1)
            lat = await probe(client, globex, 8)
            await asyncio.gather(*loaders)
            print(f"under acme {kind:12s}: {summary(lat)}  acme answers={counts} in {time.monotonic() - t0:.0f}s")
            await asyncio.sleep(3)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:] or list(KINDS)))
