"""Noisy neighbour through upstreams: acme (3 client processes, within its limits) calls upstream
tools that flood notifications or return ~4 MB; globex's native whoami latency meanwhile.

Expected (docs/gateway.md): "a hung, crashed, flooding or huge upstream affects only its own
sessions". The attackers run in processes of their own and globex keeps one connection, so that
the figures are the server's, not the measuring client's (the first version of this script ran
the attackers as threads beside the measurement, whose 4 MB parses then held the measuring
client's GIL). Figures vary with the host's load: compare the rows of one run.

    python upstream_flood_latency.py              # the whole run
    python upstream_flood_latency.py --attack URL TOKEN TOOL ARGS_JSON   # one attacker (used by the run)
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

from common import PY, Client, Lab

ATTACKS = (
    ("web__flood", {"n": 200_000}),
    ("hs__flood", {"n": 50_000}),
    ("web__big", {"size": 4_000_000}),
    ("hs__big", {"size": 4_000_000}),
)


def attack(url: str, token: str, tool: str, args: dict[str, int]) -> None:
    client = Client(url, token)
    while True:
        client.call(tool, args, timeout=120)


def latency(client: Client, n: int = 200) -> str:
    xs = []
    for _ in range(n):
        began = time.perf_counter()
        ok, _ = client.call("whoami")
        assert ok
        xs.append((time.perf_counter() - began) * 1000)
        time.sleep(0.01)
    xs.sort()
    return f"p50 {xs[n // 2]:.1f} ms, p95 {xs[int(n * 0.95)]:.1f} ms, max {xs[-1]:.1f} ms"


def main() -> None:
    with Lab() as lab:
        globex = lab.client("globex")
        latency(globex, 20)
        print("globex whoami, acme idle:", latency(globex), flush=True)
        for tool, args in ATTACKS:
            token = lab.cli("token", "issue", "--tenant", "acme", "--sub", "flooder")
            argv = [PY, __file__, "--attack", lab.mcp, token, tool, json.dumps(args)]
            attackers = [subprocess.Popen(argv, stderr=subprocess.DEVNULL) for _ in range(3)]
            try:
                time.sleep(2)
                print(f"globex whoami, acme looping {tool}{args}:", latency(globex), flush=True)
            finally:
                for process in attackers:
                    process.kill()
                    process.wait()
            time.sleep(1)
        print("globex whoami, acme idle again:", latency(globex), flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--attack"]:
        attack(sys.argv[2], sys.argv[3], sys.argv[4], json.loads(sys.argv[5]))
    else:
        main()
