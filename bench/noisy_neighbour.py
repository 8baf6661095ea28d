"""Noisy neighbour: does tenant B's flood reach tenant A?

One demo server (``tenantry serve --demo``), default per-tenant limits. Tenant A (``globex``)
calls a tool at a steady, modest rate from one session and records every latency; tenant B
(``acme``) floods the same server from 16 sessions in a closed loop. Rounds alternate A
alone (quiet) and A with B's flood; the figure is A's p99 under the flood over A's quiet p99
(target: at most 1.5), with the number of A's calls refused (target: 0) and of B's calls
refused by its limits (B must be refused once over them).

    .venv/bin/python bench/noisy_neighbour.py [--tool whoami|search_docs] [--seconds 5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx2

REPO = Path(__file__).resolve().parent.parent
TENANTRY = str(Path(sys.executable).parent / "tenantry")
ACCEPT = "application/json, text/event-stream"
MODERN = "2026-07-28"
META = {
    "io.modelcontextprotocol/protocolVersion": MODERN,
    "io.modelcontextprotocol/clientCapabilities": {},
    "io.modelcontextprotocol/clientInfo": {"name": "bench", "version": "0"},
}
ARGUMENTS = {"whoami": {}, "search_docs": {"query": "quarterly plan", "limit": 3}, "query_crm": {"filter": "a"}}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cli(env: dict[str, str], *args: str) -> str:
    return subprocess.run([TENANTRY, *args], env=env, check=True, capture_output=True, text=True).stdout.strip()


async def call(client: httpx2.AsyncClient, url: str, token: str, tool: str) -> tuple[float, str | None]:
    headers = {
        "Accept": ACCEPT,
        "Content-Type": "application/json",
        "Authorization": f"Bearer {token}",
        "MCP-Protocol-Version": MODERN,
        "Mcp-Method": "tools/call",
        "Mcp-Name": tool,
    }
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": tool, "arguments": ARGUMENTS[tool], "_meta": META},
    }
    started = time.perf_counter()
    response = await client.post(url, headers=headers, json=body)
    elapsed = time.perf_counter() - started
    data = response.json()
    if "error" in data:
        return elapsed, str(data["error"].get("data", {}).get("code"))
    if data.get("result", {}).get("isError"):
        return elapsed, "tool_error"
    return elapsed, None


async def steady(url: str, token: str, tool: str, seconds: float, rate: float) -> tuple[list[float], int]:
    latencies: list[float] = []
    refused = 0
    async with httpx2.AsyncClient(timeout=30) as client:
        stop = time.perf_counter() + seconds
        next_at = time.perf_counter()
        while time.perf_counter() < stop:
            elapsed, error = await call(client, url, token, tool)
            latencies.append(elapsed)
            refused += error is not None
            next_at += 1 / rate
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
    return latencies, refused


async def flood(url: str, token: str, tool: str, seconds: float, sessions: int) -> tuple[int, int]:
    done = refused = 0
    limits = httpx2.Limits(max_connections=sessions, max_keepalive_connections=sessions)
    async with httpx2.AsyncClient(timeout=30, limits=limits) as client:
        stop = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal done, refused
            while time.perf_counter() < stop:
                _, error = await call(client, url, token, tool)
                done += 1
                refused += error is not None

        await asyncio.gather(*(worker() for _ in range(sessions)))
    return done, refused


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


async def noisy_round(url: str, quiet: str, loud: str, tool: str, seconds: float, rate: float) -> tuple:
    # B floods from a process of its own: A and B are different clients, and in one event loop
    # A's latencies would include waiting behind B's response handling in the client itself.
    flooder = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--flood",
        url,
        loud,
        tool,
        str(seconds),
        stdout=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.PIPE,
    )
    assert flooder.stdout is not None and flooder.stdin is not None
    # B's interpreter starts and imports before the round (client-side CPU on the shared host,
    # not B's load on the server); its flood begins as A's measurement does.
    await flooder.stdout.readline()
    flooder.stdin.write(b"go\n")
    await flooder.stdin.drain()
    a = await steady(url, quiet, tool, seconds, rate)
    out, _ = await flooder.communicate()
    done, refused = json.loads(out)
    return a, (done, refused)


def main() -> None:
    if len(sys.argv) == 6 and sys.argv[1] == "--flood":  # B's flood, started by noisy_round
        url, token, tool, seconds = sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5])
        print("ready", flush=True)
        sys.stdin.readline()
        print(json.dumps(asyncio.run(flood(url, token, tool, seconds, 16))))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tool", choices=sorted(ARGUMENTS), default="whoami")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=float, default=20.0, help="tenant A's calls per second")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tenantry-noisy-") as tmp:
        env = {**os.environ, "TENANTRY_DATA_DIR": str(Path(tmp) / "data")}
        port = free_port()
        log = (Path(tmp) / "server.log").open("wb")
        server = subprocess.Popen(
            [TENANTRY, "serve", "--demo", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx2.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                        break
                except httpx2.TransportError:
                    pass
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("server did not start")
                time.sleep(0.2)
            url = f"http://127.0.0.1:{port}/mcp"
            tool = args.tool
            if tool not in ("whoami", "query_crm"):
                cli(env, "tenant", "grant", "globex", tool)
                time.sleep(1)
            # Tokens after the grant: a token's tools are the tenant's grants when it is issued.
            quiet = cli(env, "token", "issue", "--tenant", "globex", "--sub", "quiet", "--ttl", "60m")
            loud = cli(env, "token", "issue", "--tenant", "acme", "--sub", "loud", "--ttl", "60m")
            asyncio.run(steady(url, quiet, tool, 1.0, args.rate))  # warm-up
            quiet_p99: list[float] = []
            noisy_p99: list[float] = []
            quiet_p50: list[float] = []
            noisy_p50: list[float] = []
            a_refused = b_refused = b_done = 0
            for _ in range(args.rounds):
                latencies, refused = asyncio.run(steady(url, quiet, tool, args.seconds, args.rate))
                quiet_p99.append(p99(latencies))
                quiet_p50.append(statistics.median(latencies))
                a_refused += refused
                time.sleep(1.5)  # B's windows empty before the next round
                (latencies, refused), (done, loud_refused) = asyncio.run(
                    noisy_round(url, quiet, loud, tool, args.seconds, args.rate)
                )
                noisy_p99.append(p99(latencies))
                noisy_p50.append(statistics.median(latencies))
                a_refused += refused
                b_done += done
                b_refused += loud_refused
                time.sleep(1.5)
            ratios = [n / q for q, n in zip(quiet_p99, noisy_p99, strict=True)]
            print(f"tool {tool}; tenant A at {args.rate:g} calls/s, tenant B flooding with 16 sessions")
            print(f"A p99 quiet (ms):  {', '.join(f'{v * 1000:.1f}' for v in quiet_p99)}")
            print(f"A p99 noisy (ms):  {', '.join(f'{v * 1000:.1f}' for v in noisy_p99)}")
            p50s = f"{statistics.median(quiet_p50) * 1000:.1f} / {statistics.median(noisy_p50) * 1000:.1f}"
            print(f"A p50 quiet / noisy (ms): {p50s}")
            spread = f"rounds {min(ratios):.2f}-{max(ratios):.2f}"
            print(f"A p99 noisy / quiet: median {statistics.median(ratios):.2f} ({spread})")
            print(f"A refused: {a_refused}; B calls {b_done}, B refused by its limits: {b_refused}")
        finally:
            server.terminate()
            server.wait(timeout=15)


if __name__ == "__main__":
    main()
