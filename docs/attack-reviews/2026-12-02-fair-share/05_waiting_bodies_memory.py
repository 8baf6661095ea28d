"""Q2: bodies held by waiting requests. acme keeps 60 requests of ~1 MiB each in flight from one
address (the per-address connection cap is 64) for 6 s, with and without globex trickling one
request every 0.3 s. Samples the server's RSS (pid from /tmp/attack-fair-server.pid) and the
waiting gauge."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx2
from common import METRICS, URL, metrics_token, modern_body, modern_headers, run, token

CONC, SECONDS, PAD = 60, 6.0, 1_000_000
PID = Path("/tmp/attack-fair-server.pid").read_text().strip()


def rss_mib() -> float:
    for line in Path(f"/proc/{PID}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def round_(acme: str, globex: str | None) -> None:
    body = modern_body("nap", {"seconds": 0})
    body["params"]["_meta"]["pad"] = "x" * PAD
    raw = json.dumps(body).encode()
    stop = time.monotonic() + SECONDS
    done = {"200": 0, "other": 0}
    peak_rss, peak_wait = 0.0, 0.0
    async with httpx2.AsyncClient(limits=httpx2.Limits(max_connections=CONC), timeout=30) as c:
        async def worker() -> None:
            while time.monotonic() < stop:
                try:
                    r = await c.post(URL, content=raw, headers=modern_headers(acme, "nap"))
                    done["200" if r.status_code == 200 else "other"] += 1
                except httpx2.TransportError:
                    done["other"] += 1

        async def trickle() -> None:
            while globex and time.monotonic() < stop:
                await c.post(URL, json=modern_body("whoami", {}), headers=modern_headers(globex, "whoami"))
                await asyncio.sleep(0.3)

        async def sample() -> None:
            nonlocal peak_rss, peak_wait
            async with httpx2.AsyncClient() as m:
                while time.monotonic() < stop:
                    text = (await m.get(METRICS, headers={"Authorization": f"Bearer {metrics_token()}"})).text
                    for line in text.splitlines():
                        if line.startswith("tenantry_fair_share_waiting "):
                            peak_wait = max(peak_wait, float(line.split()[1]))
                    peak_rss = max(peak_rss, rss_mib())
                    await asyncio.sleep(0.1)

        base = rss_mib()
        await asyncio.gather(sample(), trickle(), *(worker() for _ in range(CONC)))
    label = "with globex trickle" if globex else "acme alone        "
    print(f"{label}: answered {done}, peak waiting {peak_wait:.0f}, RSS {base:.0f} -> peak {peak_rss:.0f} MiB")


async def main() -> None:
    acme, globex = token("acme", "mem"), token("globex", "mem")
    await asyncio.sleep(1.2)
    await round_(acme, None)
    await asyncio.sleep(1.2)
    await round_(acme, globex)


run(main())
