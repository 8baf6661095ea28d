"""Timing side channel: is calling globex's own tool (globex_forecast) measurably different, for
acme, from calling a name nobody has? Alternating calls, sessionless, medians compared.

Run: TENANTRY_DATA_DIR=... .venv/bin/python attack/tool_name_timing.py
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import httpx2

sys.path.insert(0, str(Path(__file__).parent))
from common import MCP, token  # noqa: E402
from noisy_neighbour import call_body  # noqa: E402

tok = token()
names = {"globex_forecast": [], "zzglobex_forecas": [], "query_crm_x": []}
with httpx2.Client(timeout=10) as client:
    for round_ in range(150):
        order = list(names.items())
        order = order[round_ % 3:] + order[: round_ % 3]  # no name always first after the pause
        for name, samples in order:
            content, hdr = call_body(name, {"quarter": "Q1"})
            t = time.perf_counter()
            r = client.post(MCP, content=content, headers={**hdr, "Authorization": f"Bearer {tok}"})
            samples.append((time.perf_counter() - t) * 1000)
            assert r.status_code in (400, 200), r.text
            if r.status_code == 200:  # rate limited
                time.sleep(1)
        time.sleep(0.025)
bodies = set()
for name in names:
    content, hdr = call_body(name, {"quarter": "Q1"})
    r = httpx2.post(MCP, content=content, headers={**hdr, "Authorization": f"Bearer {tok}"})
    bodies.add((r.status_code, r.text.replace(name, "NAME"), tuple(sorted(k for k in r.headers if k != "date"))))
for name, samples in names.items():
    s = sorted(samples)
    print(f"{name:18s} median={statistics.median(s):.3f}ms p10={s[len(s) // 10]:.3f} p90={s[len(s) * 9 // 10]:.3f}")
print("distinct answers (name masked):", len(bodies))
