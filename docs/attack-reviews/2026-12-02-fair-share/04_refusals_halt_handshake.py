"""Q1/Q3 in the handshake era: while acme floods and globex is active, acme's sessions send bad JSON,
duplicate request ids (refused after the turn was taken), notifications, and opens more sessions;
then acme is halted mid-flood and resumed. Checks: globex's latency, answers, and that the waiting
gauge returns to 0 (a leaked turn would also show as acme being held back afterwards when alone)."""

from __future__ import annotations

import asyncio
import subprocess
import time
from typing import Any

import httpx2
from common import CLI, DATA, URL, call, fair_gauges, pct, run, token

HS = "2025-11-25"


def hdr(tok: str, sid: str | None = None) -> dict[str, str]:
    h = {"Authorization": f"Bearer {tok}", "Accept": "application/json, text/event-stream",
         "Content-Type": "application/json", "MCP-Protocol-Version": HS}
    if sid:
        h["Mcp-Session-Id"] = sid
    return h


async def open_session(c: httpx2.AsyncClient, tok: str) -> str:
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": HS, "capabilities": {}, "clientInfo": {"name": "a", "version": "0"}}}
    r = await c.post(URL, json=init, headers=hdr(tok))
    sid = r.headers["mcp-session-id"]
    await c.post(URL, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=hdr(tok, sid))
    return sid


async def hs_call(c: httpx2.AsyncClient, tok: str, sid: str, rid: Any, seconds: float) -> int:
    body = {"jsonrpc": "2.0", "id": rid, "method": "tools/call",
            "params": {"name": "nap", "arguments": {"seconds": seconds}}}
    try:
        return (await c.post(URL, json=body, headers=hdr(tok, sid), timeout=30)).status_code
    except httpx2.TransportError as exc:
        return -len(type(exc).__name__)


async def main() -> None:
    acme, globex = token("acme", "hs"), token("globex", "hs")
    statuses: dict[str, list[int]] = {}
    async with httpx2.AsyncClient(limits=httpx2.Limits(max_connections=60), timeout=30) as c:
        sids = [await open_session(c, acme) for _ in range(4)]
        gsid = await open_session(c, globex)

        async def flood(tag: str, n: int) -> None:
            res = await asyncio.gather(*(hs_call(c, acme, sids[i % 4], f"{tag}{i}", 0.06) for i in range(n)))
            statuses.setdefault(tag, []).extend(res)

        async def hostile() -> None:
            for i in range(20):
                bad = await c.post(URL, content=b"{not json", headers=hdr(acme, sids[0]))
                statuses.setdefault("bad-json", []).append(bad.status_code)
                first = asyncio.create_task(hs_call(c, acme, sids[1], "dup", 0.3))
                await asyncio.sleep(0.05)
                statuses.setdefault("duplicate", []).append(await hs_call(c, acme, sids[1], "dup", 0))
                await first
                note = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": "x"}}
                statuses.setdefault("notification", []).append(
                    (await c.post(URL, json=note, headers=hdr(acme, sids[2]))).status_code)

        async def victim() -> list[float]:
            lat = []
            for i in range(30):
                t0 = time.monotonic()
                assert await hs_call(c, globex, gsid, f"g{i}", 0) == 200
                lat.append(time.monotonic() - t0)
                await asyncio.sleep(0.03)
            return lat

        lat, *_ = await asyncio.gather(victim(), flood("a", 120), hostile())
        print("globex p50/p95 ms under acme's flood:", round(pct(lat, 0.5) * 1000, 1), round(pct(lat, 0.95) * 1000, 1))
        for k, v in statuses.items():
            print(f"  acme {k}: {sorted(set(v))} x{len(v)}")
        print("after flood:", fair_gauges())

        async def halt_later() -> None:
            await asyncio.sleep(0.3)
            subprocess.run([CLI, "tenant", "halt", "acme", "--reason", "attack review", "--data-dir", DATA], capture_output=True, check=True)

        await asyncio.gather(flood("h", 200), halt_later())
        hs = statuses["h"]
        print("flood across halt:", {s: hs.count(s) for s in sorted(set(hs))})
        await asyncio.sleep(1.5)
        print("after halt:", fair_gauges())
        subprocess.run([CLI, "tenant", "resume", "acme", "--data-dir", DATA], capture_output=True, check=True)
        await asyncio.sleep(1.5)
    # After all this, acme alone: nothing waits (a leaked turn or a stale 'active' would show here).
    w0 = float(fair_gauges()["tenantry_fair_share_waited"])
    async with httpx2.AsyncClient(limits=httpx2.Limits(max_connections=16)) as c:
        res = await asyncio.gather(*(call(c, acme, "nap", {"seconds": 0.1}, i) for i in range(16)))
    w1 = float(fair_gauges()["tenantry_fair_share_waited"])
    print("acme alone afterwards: statuses", sorted({s for s, _, _ in res}), "waited +", w1 - w0,
          "max s", round(max(t for _, t, _ in res), 3))


run(main())
