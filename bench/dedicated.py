"""The dedicated tier's cost: the same native tool for a logical and a dedicated tenant, same server, same run.

One ``tenantry serve --app bench.trivial_app:app`` serves the ``echo`` tool to two tenants:
``bench`` (logical tier: the tool runs in the server's process) and ``bench-dedicated``
(dedicated tier: the server admits and audits the call, then sends it over a socket pair to
the tenant's own worker process, which runs it and answers). Rounds alternate logical,
dedicated, so machine noise hits both; the ratio of calls per second, the p50 latency
difference and the CPU per call (server, and server + worker) are what count.

    .venv/bin/python bench/dedicated.py [--seconds 3] [--rounds 4] [--concurrency 1 16] [--era sessionless]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import tempfile
import time
from pathlib import Path

from throughput import LIFTED_LIMITS, TENANTRY, Result, Target, load, process_cpu_seconds, start_tenantry

DEDICATED = "bench-dedicated"


def worker_pids(server_pid: int) -> list[int]:
    """The server's dedicated worker processes (its children running ``tenantry.cli.worker``)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat[1]) == server_pid and b"tenantry.cli.worker" in command:
            found.append(int(entry.name))
    return found


def add_dedicated_tenant(workdir: Path, logical: Target) -> Target:
    env = {**os.environ, "TENANTRY_DATA_DIR": str(workdir / "data")}

    def cli(*args: str) -> str:
        return subprocess.run([TENANTRY, *args], env=env, check=True, capture_output=True, text=True).stdout.strip()

    cli("tenant", "create", DEDICATED, "--tools", "echo", "--tier", "dedicated")
    cli(
        "tenant",
        "limits",
        DEDICATED,
        *LIFTED_LIMITS,
    )
    time.sleep(2.0)  # the server's next control-plane poll
    token = cli("token", "issue", "--tenant", DEDICATED, "--sub", "bench", "--ttl", "60m")
    return Target("dedicated", logical.mcp_url, token, logical.process)


def measured(target: Target, concurrency: int, seconds: float, era: str) -> tuple[Result, float]:
    """The run, and the CPU seconds of server and workers together."""
    pids = [target.process.pid, *worker_pids(target.process.pid)]
    before = {pid: process_cpu_seconds(pid) for pid in pids}
    result = asyncio.run(load(target, concurrency, seconds, era))
    after = {pid: process_cpu_seconds(pid) for pid in pids}
    result.server_cpu = after[target.process.pid] - before[target.process.pid]
    return result, sum(after[pid] - before[pid] for pid in pids)


def merged(results: list[tuple[Result, float]]) -> tuple[Result, float]:
    runs = [r for r, _ in results]
    total = Result(
        sum(r.calls for r in runs),
        sum(r.seconds for r in runs),
        [x for r in runs for x in r.latencies],
        sum(r.server_cpu for r in runs),
    )
    return total, sum(cpu for _, cpu in results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--era", choices=["handshake", "sessionless"], default="sessionless")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tenantry-bench-") as tmp:
        workdir = Path(tmp)
        logical = start_tenantry(workdir)
        logical.name = "logical"
        try:
            dedicated = add_dedicated_tenant(workdir, logical)
            print(f"{'sessions':>8} {'tier':<10} {'calls/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'CPU/call':>10}")
            for concurrency in args.concurrency:
                for target in (logical, dedicated):
                    asyncio.run(load(target, concurrency, 1.0, args.era))  # warm-up (starts the worker)
                runs: dict[str, list[tuple[Result, float]]] = {"logical": [], "dedicated": []}
                for _ in range(args.rounds):
                    for target in (logical, dedicated):
                        runs[target.name].append(measured(target, concurrency, args.seconds, args.era))
                totals = {name: merged(results) for name, results in runs.items()}
                for name, (m, cpu) in totals.items():
                    per_call = f"{cpu / m.calls * 1e6:.0f} us"
                    print(
                        f"{concurrency:>8} {name:<10} {m.rate:>9.0f} {m.percentile(0.5):>8.2f}"
                        f" {m.percentile(0.99):>8.2f} {per_call:>10}"
                    )
                (a, cpu_a), (b, cpu_b) = totals["logical"], totals["dedicated"]
                per_round = [d.rate / g.rate for (g, _), (d, _) in zip(runs["logical"], runs["dedicated"], strict=True)]
                print(
                    f"{concurrency:>8} dedicated / logical: calls/s {b.rate / a.rate:.3f}"
                    f" (rounds {min(per_round):.2f}-{max(per_round):.2f});"
                    f" p50 +{b.percentile(0.5) - a.percentile(0.5):.2f} ms;"
                    f" CPU per call (server + worker) {cpu_b / b.calls / (cpu_a / a.calls):.2f}x"
                )
        finally:
            logical.process.terminate()
            logical.process.wait(timeout=15)


if __name__ == "__main__":
    main()
