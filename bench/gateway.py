"""Gateway overhead: a trivial upstream tool called through Tenantry vs called directly, same run.

The upstream is the bare MCP SDK server of ``bench/bare_server.py`` (``echo``, JSON responses).
(a) **direct**: clients call it with no auth at all; (b) **gateway**: ``tenantry serve`` with the
upstream added (``tenantry upstream add up --url ... --allow-private``), clients call ``up__echo``
with a bearer JWT, and Tenantry runs its whole enforcement path (token, session binding, ACL,
schema validation against the upstream's schema, limits, a durable audit record before the
result returns, redaction) and the upstream hop over its pooled per-tenant session; (c) **native**:
the same server's own ``echo`` (``bench/trivial_app.py``), which separates the cost of Tenantry's
enforcement (c - a) from the cost of the upstream hop (b - c). Handshake
era, N sessions calling in a closed loop from N workers. Rounds alternate a, b so noise hits both;
the ratios of one run are what count: calls/s b/a and p50 b - a. ``cpu us/call`` is the CPU
one call cost the process serving it (the upstream's for (a), Tenantry's, its audit writer
thread included, for the others): less swayed by the host's scheduling than wall time.

    .venv/bin/python bench/gateway.py [--seconds 3] [--rounds 3] [--concurrency 1 16] [--baseline-src DIR]

``--baseline-src DIR`` adds (d) **baseline**: a second gateway running the ``src`` tree in DIR
(e.g. ``git archive <commit> src | tar -x -C /tmp/base`` then ``--baseline-src /tmp/base/src``),
alternated with the others, so a change to the gateway is measured against its parent in one run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from throughput import LIFTED_LIMITS, TENANTRY, Result, Target, load, measured, serve_trivial_app, start_bare


def start_gateway(workdir: Path, upstream: Target) -> Target:
    data = workdir / "data"
    env, port, process = serve_trivial_app(data, workdir / "gateway.log")

    def cli(*args: str) -> str:
        return subprocess.run([TENANTRY, *args], env=env, check=True, capture_output=True, text=True).stdout.strip()

    cli("tenant", "create", "bench")
    cli("upstream", "add", "up", "--url", upstream.mcp_url, "--allow-private")
    cli("tenant", "grant", "bench", "up__echo", "echo")
    cli(
        "tenant",
        "limits",
        "bench",
        *LIFTED_LIMITS,
    )
    time.sleep(2.0)  # the server's next control-plane poll sees the tenant and the upstream
    token = cli("token", "issue", "--tenant", "bench", "--sub", "bench", "--ttl", "60m")
    return Target("gateway", f"http://127.0.0.1:{port}/mcp", token, process)


TOOL = {"direct": "echo", "native": "echo", "gateway": "up__echo", "baseline": "up__echo"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--baseline-src", type=Path, help="a src tree to run as a second, baseline gateway")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tenantry-bench-gateway-") as tmp:
        workdir = Path(tmp)
        upstream = start_bare(workdir)
        direct = Target("direct", upstream.mcp_url, None, upstream.process)
        gateway = start_gateway(workdir, upstream)
        native = Target("native", gateway.mcp_url, gateway.token, gateway.process)
        targets = [direct, native, gateway]
        if args.baseline_src is not None:
            (workdir / "baseline").mkdir()
            saved = os.environ.get("PYTHONPATH")
            os.environ["PYTHONPATH"] = str(args.baseline_src.resolve())  # only for the baseline's processes
            try:
                base = start_gateway(workdir / "baseline", upstream)
            finally:
                os.environ.pop("PYTHONPATH")
                if saved is not None:
                    os.environ["PYTHONPATH"] = saved
            targets.append(Target("baseline", base.mcp_url, base.token, base.process))
        try:
            print(f"{'sessions':>8} {'path':<8} {'calls/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'cpu us/call':>12}")
            for concurrency in args.concurrency:
                for target in targets:
                    asyncio.run(load(target, concurrency, 1.0, "handshake", TOOL[target.name]))  # warm-up
                runs: dict[str, list[Result]] = {t.name: [] for t in targets}
                for _ in range(args.rounds):
                    for target in targets:
                        runs[target.name].append(
                            measured(target, concurrency, args.seconds, "handshake", TOOL[target.name])
                        )
                merged = {
                    name: Result(
                        sum(r.calls for r in rs),
                        sum(r.seconds for r in rs),
                        [x for r in rs for x in r.latencies],
                        sum(r.server_cpu for r in rs),
                    )
                    for name, rs in runs.items()
                }
                for name, m in merged.items():
                    p50, p99 = m.percentile(0.5), m.percentile(0.99)
                    cpu = m.cpu_per_call_us
                    print(f"{concurrency:>8} {name:<8} {m.rate:>9.0f} {p50:>8.2f} {p99:>8.2f} {cpu:>12.0f}")
                a, n, b = merged["direct"], merged["native"], merged["gateway"]
                print(
                    f"{concurrency:>8} gateway / direct: calls/s {b.rate / a.rate:.3f} (target >= 0.8);"
                    f" p50 overhead {b.percentile(0.5) - a.percentile(0.5):.2f} ms (target <= 1)"
                )
                print(
                    f"{concurrency:>8} gateway / native tool on the same server: calls/s {b.rate / n.rate:.3f};"
                    f" p50 of the upstream hop {b.percentile(0.5) - n.percentile(0.5):.2f} ms"
                )
                if "baseline" in merged:
                    z = merged["baseline"]
                    print(
                        f"{concurrency:>8} gateway / baseline: calls/s {b.rate / z.rate:.3f} (baseline / direct"
                        f" {z.rate / a.rate:.3f}); p50 {b.percentile(0.5) - z.percentile(0.5):+.2f} ms;"
                        f" server CPU per call {b.cpu_per_call_us / z.cpu_per_call_us:.3f}"
                    )
        finally:
            for process in {id(t.process): t.process for t in targets}.values():
                process.terminate()
                process.wait(timeout=10)


if __name__ == "__main__":
    main()
