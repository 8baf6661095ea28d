"""Q2/Q3: a burst of 200 concurrent calls from acme while globex is active: how many wait, how many
are refused 429 (64 waiting per tenant at most), does the waiting gauge return to 0; then the same
burst with clients that disconnect mid-wait (short client timeout)."""

from __future__ import annotations

import asyncio
import json

import httpx2
from common import METRICS, call, fair_gauges, metrics_token, run, token

N = 200


async def burst(tok: str, timeout: float | None) -> dict[str, int]:
    out: dict[str, int] = {}
    peak = 0.0
    async with httpx2.AsyncClient(limits=httpx2.Limits(max_connections=N), timeout=timeout or 60) as c:
        async def one(i: int) -> None:
            try:
                s, _, text = await call(c, tok, "nap", {"seconds": 0.2}, i, timeout or 60)
                key = str(s)
                if s == 429:
                    key += ":" + json.loads(text).get("error", {}).get("message", "")[:60]
            except httpx2.TimeoutException:
                key = "client-gave-up"
            except httpx2.TransportError as exc:
                key = "conn-" + type(exc).__name__
            out[key] = out.get(key, 0) + 1

        async def watch() -> None:
            nonlocal peak
            async with httpx2.AsyncClient() as m:
                for _ in range(30):
                    r = await m.get(METRICS, headers={"Authorization": f"Bearer {metrics_token()}"})
                    for line in r.text.splitlines():
                        if line.startswith("tenantry_fair_share_waiting "):
                            peak = max(peak, float(line.split()[1]))
                    await asyncio.sleep(0.02)

        await asyncio.gather(watch(), *(one(i) for i in range(N)))
    out["peak_waiting_gauge"] = int(peak)
    return out


async def main() -> None:
    acme, globex = token("acme", "burst"), token("globex", "quiet")
    async with httpx2.AsyncClient() as c:
        await call(c, globex, "whoami", {}, 1)  # globex active in the last second
    print("burst:", await burst(acme, None))
    await asyncio.sleep(0.5)
    print("after burst:", fair_gauges())
    async with httpx2.AsyncClient() as c:
        await call(c, globex, "whoami", {}, 2)
    print("burst, clients give up after 0.05 s:", await burst(acme, 0.05))
    await asyncio.sleep(1.0)
    print("after disconnect burst:", fair_gauges())


run(main())
