"""Q1/Q5: a neighbour sending ~2 trivial requests a second caps a tenant whose calls wait on I/O
(nap 0.04 s, an upstream or a slow statement) at about capacity/quantum starts a second, while
the event loop is idle. Alone, the same tenant is never held back."""

from __future__ import annotations

import asyncio
import time

import httpx2
from common import call, fair_gauges, run, token

N, CONC, NAP = 240, 32, 0.04


async def flood(tok: str) -> tuple[float, list[int]]:
    sem = asyncio.Semaphore(CONC)
    statuses: list[int] = []
    async with httpx2.AsyncClient(limits=httpx2.Limits(max_connections=CONC)) as c:
        async def one(i: int) -> None:
            async with sem:
                s, _, _ = await call(c, tok, "nap", {"seconds": NAP}, i)
                statuses.append(s)
        t0 = time.monotonic()
        await asyncio.gather(*(one(i) for i in range(N)))
        return time.monotonic() - t0, statuses


async def trickle(tok: str, stop: asyncio.Event) -> int:
    n = 0
    async with httpx2.AsyncClient() as c:
        while not stop.is_set():
            await call(c, tok, "whoami", {}, n)
            n += 1
            await asyncio.sleep(0.5)
    return n


async def main() -> None:
    acme, globex = token("acme", "flood"), token("globex", "quiet")
    await asyncio.sleep(1.5)
    w0 = float(fair_gauges()["tenantry_fair_share_waited"])
    alone, st = await flood(acme)
    w1 = float(fair_gauges()["tenantry_fair_share_waited"])
    print(f"acme alone:            {N / alone:7.1f} calls/s  statuses={sorted(set(st))} waited+={w1 - w0:.0f}")
    stop = asyncio.Event()
    t = asyncio.create_task(trickle(globex, stop))
    await asyncio.sleep(0.2)
    shared, st = await flood(acme)
    stop.set()
    n = await t
    w2 = float(fair_gauges()["tenantry_fair_share_waited"])
    print(f"acme + globex trickle: {N / shared:7.1f} calls/s  statuses={sorted(set(st))} waited+={w2 - w1:.0f}"
          f"  (globex sent {n} requests)")


run(main())
