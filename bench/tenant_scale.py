"""Throughput at 10 and at 10,000 tenants: nothing on the call path may grow with the tenant count.

Two Tenantry servers serve ``bench.trivial_app:app`` with the same full enforcement path;
one store holds 10 tenants, the other 10,000 (created with ``tenantry tenant import``, whose
time is reported too). The load generator calls ``echo`` as one tenant in a closed loop;
rounds alternate the two servers. The figure is calls/s at 10,000 over calls/s at 10.

    .venv/bin/python bench/tenant_scale.py [--seconds 3] [--rounds 3] [--concurrency 1 16] [--era sessionless]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from throughput import LIFTED_LIMITS, TENANTRY, Target, load, serve_trivial_app


def start(workdir: Path, tenants: int) -> tuple[Target, float]:
    data = workdir / f"data-{tenants}"
    env, port, process = serve_trivial_app(data, workdir / f"tenantry-{tenants}.log")
    specs = workdir / f"tenants-{tenants}.jsonl"
    with specs.open("w") as out:
        for n in range(tenants):
            out.write(json.dumps({"id": "bench" if n == 0 else f"t{n:05d}", "tools": ["echo"]}) + "\n")
    began = time.perf_counter()
    subprocess.run([TENANTRY, "tenant", "import", str(specs)], env=env, check=True, capture_output=True)
    imported = time.perf_counter() - began
    subprocess.run(
        [
            TENANTRY,
            "tenant",
            "limits",
            "bench",
            *LIFTED_LIMITS,
        ],
        env=env,
        check=True,
        capture_output=True,
    )
    time.sleep(2.0)  # the server's next control-plane poll
    token = subprocess.run(
        [TENANTRY, "token", "issue", "--tenant", "bench", "--sub", "bench", "--ttl", "60m"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return Target(f"{tenants} tenants", f"http://127.0.0.1:{port}/mcp", token, process), imported


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--era", choices=["handshake", "sessionless"], default="sessionless")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tenantry-scale-") as tmp:
        workdir = Path(tmp)
        small, _ = start(workdir, 10)
        large, imported = start(workdir, 10_000)
        print(f"tenant import of 10,000 tenants: {imported:.1f} s")
        try:
            for concurrency in args.concurrency:
                for target in (small, large):
                    asyncio.run(load(target, concurrency, 1.0, args.era))
                ratios = []
                for _ in range(args.rounds):
                    a = asyncio.run(load(small, concurrency, args.seconds, args.era))
                    b = asyncio.run(load(large, concurrency, args.seconds, args.era))
                    ratios.append(b.rate / a.rate)
                print(
                    f"{concurrency:>3} sessions ({args.era}): calls/s at 10,000 / at 10 tenants:"
                    f" median {statistics.median(ratios):.3f} (rounds {min(ratios):.2f}-{max(ratios):.2f})"
                )
        finally:
            for target in (small, large):
                target.process.terminate()
                target.process.wait(timeout=10)


if __name__ == "__main__":
    main()
