"""Tool-call throughput: Tenantry's full enforcement path vs the bare MCP SDK, same tool, same run.

(a) the bare SDK (``bench/bare_server.py``, MCPServer, no auth), (b) Tenantry
(``tenantry serve --app bench.trivial_app:app``: bearer JWT verified on every request,
session binding, body guard, ACL, schema validation, a durable hash-chained audit record
committed before the result returns) and (c) the same Tenantry server with its audit sink
discarding (``bench/tenantry_audit_off.py``; bench-only, no setting does this) serve the
same ``echo`` tool over streamable HTTP on 127.0.0.1, JSON responses. Each configuration
opens N handshake-era sessions and calls the tool in a closed loop from N concurrent
workers. Rounds alternate a, b, c, a, b, c so machine noise hits every side; the ratios
b/a and b/c of calls per second are what count, never an absolute time.

Both protocol eras: ``handshake`` (``initialize``, then calls with ``Mcp-Session-Id``) and
``sessionless`` (2026-07-28: every request carries its own envelope, as ``mcp.Client`` sends).

    .venv/bin/python bench/throughput.py [--seconds 3] [--rounds 5] [--concurrency 1 16] [--era handshake sessionless]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx2

REPO = Path(__file__).resolve().parent.parent
TENANTRY = str(Path(sys.executable).parent / "tenantry")
ACCEPT = "application/json, text/event-stream"


LIFTED_LIMITS = (
    "calls_per_second=1000000",
    "burst=1000000",
    "concurrent_calls=1024",
    "requests_per_second=10000000",
)
"""``tenant limits`` assignments that put the bench tenant's limits well above any load: the
benchmarks measure the enforcement path, not the default limits."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited: {process.returncode}")
        try:
            httpx2.get(url, timeout=1)
            return
        except httpx2.TransportError:
            time.sleep(0.1)
    raise SystemExit(f"server at {url} not ready")


@dataclass
class Target:
    name: str
    mcp_url: str
    token: str | None
    process: subprocess.Popen[bytes]


@dataclass
class Result:
    calls: int
    seconds: float
    latencies: list[float] = field(default_factory=list)
    server_cpu: float = 0.0
    """Seconds of CPU the server process used during the run (Linux /proc)."""

    @property
    def rate(self) -> float:
        return self.calls / self.seconds

    @property
    def cpu_per_call_us(self) -> float:
        return self.server_cpu / self.calls * 1e6

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * p))] * 1000


def process_cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measured(target: Target, concurrency: int, seconds: float, era: str, tool: str = "echo") -> Result:
    before = process_cpu_seconds(target.process.pid)
    result = asyncio.run(load(target, concurrency, seconds, era, tool))
    result.server_cpu = process_cpu_seconds(target.process.pid) - before
    return result


def start_bare(workdir: Path) -> Target:
    port = free_port()
    log = (workdir / "bare.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, str(REPO / "bench" / "bare_server.py"), "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=REPO,
    )
    wait_ready(f"http://127.0.0.1:{port}/mcp", process)
    return Target("bare SDK", f"http://127.0.0.1:{port}/mcp", None, process)


def serve_trivial_app(data: Path, log_path: Path) -> tuple[dict[str, str], int, subprocess.Popen[bytes]]:
    """``tenantry serve`` of ``bench.trivial_app:app`` on a free port, once it is ready: its
    environment (for CLI calls on the same data dir), port and process."""
    env = {**os.environ, "TENANTRY_DATA_DIR": str(data)}
    port = free_port()
    process = subprocess.Popen(
        [TENANTRY, "serve", "--port", str(port), "--app", "bench.trivial_app:app"],
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
        cwd=REPO,
        env=env,
    )
    wait_ready(f"http://127.0.0.1:{port}/healthz", process)
    return env, port, process


def start_tenantry(workdir: Path) -> Target:
    data = workdir / "data"
    env, port, process = serve_trivial_app(data, workdir / "tenantry.log")
    # After the first start: the server made the store and published its tools.
    subprocess.run([TENANTRY, "tenant", "create", "bench", "--tools", "echo"], env=env, check=True, capture_output=True)
    # The benchmark measures the enforcement path, not the default limits: lift them well above the load.
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
    time.sleep(2.0)  # the server's next control-plane poll sees the tenant (slow on a loaded machine)
    token = subprocess.run(
        [TENANTRY, "token", "issue", "--tenant", "bench", "--sub", "bench", "--ttl", "60m"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return Target("Tenantry", f"http://127.0.0.1:{port}/mcp", token, process)


MODERN = "2026-07-28"
MODERN_META = {
    "io.modelcontextprotocol/protocolVersion": MODERN,
    "io.modelcontextprotocol/clientCapabilities": {},
    "io.modelcontextprotocol/clientInfo": {"name": "bench", "version": "0"},
}


async def open_session(client: httpx2.AsyncClient, target: Target, era: str, tool: str = "echo") -> dict[str, str]:
    headers = {"Accept": ACCEPT, "Content-Type": "application/json"}
    if target.token:
        headers["Authorization"] = f"Bearer {target.token}"
    if era == "sessionless":
        return {**headers, "MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/call", "Mcp-Name": tool}
    init = await client.post(
        target.mcp_url,
        headers=headers,
        json={
            "jsonrpc": "2.0",
            "id": 0,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "bench", "version": "0"},
            },
        },
    )
    init.raise_for_status()
    headers["Mcp-Session-Id"] = init.headers["mcp-session-id"]
    headers["MCP-Protocol-Version"] = "2025-11-25"
    note = await client.post(
        target.mcp_url, headers=headers, json={"jsonrpc": "2.0", "method": "notifications/initialized"}
    )
    note.raise_for_status()
    return headers


async def load(target: Target, concurrency: int, seconds: float, era: str = "handshake", tool: str = "echo") -> Result:
    limits = httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    arguments: dict[str, object] = {"name": tool, "arguments": {"text": "hello"}}
    if era == "sessionless":
        arguments["_meta"] = MODERN_META
    async with httpx2.AsyncClient(limits=limits, timeout=30) as client:
        sessions = [await open_session(client, target, era, tool) for _ in range(concurrency)]
        latencies: list[float] = []
        stop_at = time.perf_counter() + seconds

        async def worker(headers: dict[str, str]) -> None:
            request_id = 1
            while time.perf_counter() < stop_at:
                body = {
                    "jsonrpc": "2.0",
                    "id": request_id,
                    "method": "tools/call",
                    "params": arguments,
                }
                started = time.perf_counter()
                response = await client.post(target.mcp_url, headers=headers, json=body)
                latencies.append(time.perf_counter() - started)
                if response.status_code != 200 or b'"isError":true' in response.content:
                    raise SystemExit(f"{target.name}: call failed: {response.status_code} {response.text[:200]}")
                request_id += 1

        began = time.perf_counter()
        await asyncio.gather(*(worker(h) for h in sessions))
        elapsed = time.perf_counter() - began
        for headers in sessions:
            if "Mcp-Session-Id" in headers:
                await client.delete(target.mcp_url, headers=headers)
    return Result(len(latencies), elapsed, latencies)


def start_audit_off(workdir: Path) -> Target:
    """Tenantry with the audit sink discarding (bench-only; no setting can do this)."""
    data = workdir / "data"  # shares the tenant and keys with start_tenantry's data dir
    port = free_port()
    # Its own public URL (token issuer and audience); the store's recorded one is the other server's.
    env = {**os.environ, "TENANTRY_DATA_DIR": str(data), "TENANTRY_PUBLIC_URL": f"http://127.0.0.1:{port}"}
    log = (workdir / "audit-off.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, str(REPO / "bench" / "tenantry_audit_off.py"), "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=REPO,
        env=env,
    )
    wait_ready(f"http://127.0.0.1:{port}/healthz", process)
    token = subprocess.run(
        [TENANTRY, "token", "issue", "--tenant", "bench", "--sub", "bench", "--ttl", "60m"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return Target("audit off", f"http://127.0.0.1:{port}/mcp", token, process)


def report(
    name_a: str, name_b: str, runs: dict[str, list[Result]], merged: dict[str, Result], concurrency: int
) -> None:
    per_round = [b.rate / a.rate for a, b in zip(runs[name_a], runs[name_b], strict=True)]
    ratio = merged[name_b].rate / merged[name_a].rate
    spread = f"rounds {min(per_round):.2f}-{max(per_round):.2f}, median {statistics.median(per_round):.3f}"
    cpu = merged[name_a].cpu_per_call_us / merged[name_b].cpu_per_call_us
    print(f"{concurrency:>8} {name_b} / {name_a}: calls/s {ratio:.3f} ({spread}); CPU per call {cpu:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--era", nargs="+", choices=["handshake", "sessionless"], default=["handshake", "sessionless"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tenantry-bench-") as tmp:
        workdir = Path(tmp)
        targets = [start_bare(workdir), start_tenantry(workdir)]
        targets.append(start_audit_off(workdir))
        try:
            print(f"{'sessions':>8} {'server':<10} {'calls/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'server CPU/call':>16}")
            for era, concurrency in ((e, c) for e in args.era for c in args.concurrency):
                print(f"-- {era} era")
                for target in targets:
                    asyncio.run(load(target, concurrency, 1.0, era))  # warm-up
                runs: dict[str, list[Result]] = {t.name: [] for t in targets}
                for _ in range(args.rounds):
                    for target in targets:
                        runs[target.name].append(measured(target, concurrency, args.seconds, era))
                merged = {}
                for name, results in runs.items():
                    merged[name] = Result(
                        sum(r.calls for r in results),
                        sum(r.seconds for r in results),
                        [x for r in results for x in r.latencies],
                        sum(r.server_cpu for r in results),
                    )
                    m = merged[name]
                    p50, p99 = m.percentile(0.50), m.percentile(0.99)
                    cpu = f"{m.cpu_per_call_us:.0f} us"
                    print(f"{concurrency:>8} {name:<10} {m.rate:>9.0f} {p50:>8.2f} {p99:>8.2f} {cpu:>16}")
                report("bare SDK", "Tenantry", runs, merged, concurrency)
                report("audit off", "Tenantry", runs, merged, concurrency)
        finally:
            for target in targets:
                target.process.terminate()
                target.process.wait(timeout=10)


if __name__ == "__main__":
    main()
