"""Q4: acme learns whether any other tenant made a request in the last second: 8 concurrent
0.3 s naps; alone all start at once, with another tenant active the 5th..8th wait ~one quantum."""

from __future__ import annotations

import asyncio

import httpx2
from common import call, run, token


async def probe(tok: str) -> list[float]:
    async with httpx2.AsyncClient(limits=httpx2.Limits(max_connections=8)) as c:
        res = await asyncio.gather(*(call(c, tok, "nap", {"seconds": 0.3}, i) for i in range(8)))
    return sorted(round(t, 3) for _, t, _ in res)


async def main() -> None:
    acme, globex = token("acme", "spy"), token("globex", "victim")
    for trial in range(3):
        await asyncio.sleep(1.3)
        quiet = await probe(acme)
        await asyncio.sleep(1.3)
        async with httpx2.AsyncClient() as c:
            await call(c, globex, "whoami", {}, 1)  # the victim does one thing
        busy = await probe(acme)
        print(f"trial {trial}: globex idle  -> max {quiet[-1]:.3f}s  {quiet}")
        print(f"trial {trial}: globex 1 req -> max {busy[-1]:.3f}s  {busy}")


run(main())
