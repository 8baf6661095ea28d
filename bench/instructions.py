"""Server CPU per tool call, counted in instructions: Tenantry vs the bare MCP SDK.

Wall-clock throughput on a shared machine moves by ±10% between runs. Instruction counts do
not: each server runs under ``valgrind --tool=callgrind`` while an external client (not
traced) makes a fixed number of ``echo`` calls over one handshake-era session; running
twice with different call counts and subtracting removes start-up and shutdown, leaving
instructions per call. The ratios bare / Tenantry and audit-off / Tenantry are the
deterministic counterparts of the throughput ratios in ``throughput.py`` (kernel time, such
as the audit's fsync, is not counted). Needs valgrind; takes several minutes.

    .venv/bin/python bench/instructions.py [--calls 100 400]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.throughput import LIFTED_LIMITS, REPO, TENANTRY, Target, free_port, open_session


def _total_instructions(callgrind_out: Path) -> int:
    for line in callgrind_out.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise SystemExit(f"no totals in {callgrind_out}")


def run_once(kind: str, calls: int) -> int:
    workdir = Path(tempfile.mkdtemp(prefix=f"tenantry-instr-{kind}-"))
    env = {**os.environ, "TENANTRY_DATA_DIR": str(workdir / "data")}
    port = free_port()
    out = workdir / "callgrind.out"
    valgrind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
    if kind == "bare":
        command = [*valgrind, sys.executable, str(REPO / "bench" / "bare_server.py"), "--port", str(port)]
    else:
        (workdir / "data").mkdir(mode=0o700)
        (workdir / "data" / "control.sqlite3").touch(mode=0o600)  # an empty store, made as serve would
        for command in (
            ["tenant", "create", "bench", "--tools", "echo", "--pending"],
            [
                "tenant",
                "limits",
                "bench",
                *LIFTED_LIMITS,
            ],
        ):
            subprocess.run([TENANTRY, *command], env=env, check=True, capture_output=True)
        if kind == "audit-off":
            command = [*valgrind, sys.executable, str(REPO / "bench" / "tenantry_audit_off.py"), "--port", str(port)]
        else:
            command = [*valgrind, TENANTRY, "serve", "--port", str(port), "--app", "bench.trivial_app:app"]
    with (workdir / "server.log").open("wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    deadline = time.monotonic() + 900
    while True:
        try:
            httpx2.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
            break
        except httpx2.TransportError:
            if time.monotonic() > deadline or process.poll() is not None:
                raise SystemExit(f"{kind} server did not start (see {workdir / 'server.log'})") from None
            time.sleep(1)
    token = None
    if kind != "bare":
        token = subprocess.run(
            [TENANTRY, "token", "issue", "--tenant", "bench", "--sub", "b", "--ttl", "60m"],
            env={**env, "TENANTRY_PUBLIC_URL": f"http://127.0.0.1:{port}"},
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    target = Target(kind, f"http://127.0.0.1:{port}/mcp", token, process)

    async def drive() -> None:
        async with httpx2.AsyncClient(timeout=300) as client:
            headers = await open_session(client, target, "handshake")
            for request_id in range(1, calls + 1):
                body = {
                    "jsonrpc": "2.0",
                    "id": request_id,
                    "method": "tools/call",
                    "params": {"name": "echo", "arguments": {"text": "hello"}},
                }
                response = await client.post(target.mcp_url, headers=headers, json=body)
                if response.status_code != 200:
                    raise SystemExit(f"{kind}: call failed: {response.text[:200]}")

    try:
        asyncio.run(drive())
    except BaseException:
        process.kill()  # a failed run leaves no server under valgrind behind
        process.wait()
        raise
    process.send_signal(signal.SIGINT)
    process.wait(timeout=600)
    total = _total_instructions(out)
    shutil.rmtree(workdir, ignore_errors=True)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, nargs=2, default=[100, 400])
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is required (Debian package valgrind)")
    low, high = args.calls
    kinds = ("bare", "tenantry", "audit-off")
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = {kind: [pool.submit(run_once, kind, n) for n in (low, high)] for kind in kinds}
        per_call = {kind: (futures[1].result() - futures[0].result()) / (high - low) for kind, futures in runs.items()}
    for kind, value in per_call.items():
        print(f"{kind:<9} {value / 1e6:.3f} M instructions per call")
    print(f"ratio bare / Tenantry (server CPU per call): {per_call['bare'] / per_call['tenantry']:.3f}")
    print(f"ratio audit off / Tenantry (what durable audit costs): {per_call['audit-off'] / per_call['tenantry']:.3f}")


if __name__ == "__main__":
    main()
