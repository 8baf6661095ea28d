"""Noisy neighbour through upstreams: acme (3 client threads, within its limits) calls upstream
tools that flood notifications or return ~4 MB; globex's native whoami latency meanwhile.

All the parsing of an upstream's answers happens on the server's one event loop, for every
tenant. Expected (docs/gateway.md): "a hung, crashed, flooding or huge upstream affects only its
own sessions". Figures vary with the host's load: compare the rows of one run.
"""

from __future__ import annotations

import threading
import time

from common import Lab


def main() -> None:
    with Lab() as lab:
        globex = lab.client("globex")

        def latency(n: int = 60) -> str:
            xs = []
            for _ in range(n):
                t = time.perf_counter()
                ok, _ = globex.call("whoami")
                assert ok
                xs.append((time.perf_counter() - t) * 1000)
            xs.sort()
            return f"p50 {xs[n // 2]:.0f} ms, p95 {xs[int(n * 0.95)]:.0f} ms, max {xs[-1]:.0f} ms"

        latency(10)
        print("globex whoami, acme idle:", latency())
        for tool, args in (("web__flood", {"n": 200_000}), ("hs__flood", {"n": 50_000}),
                           ("web__big", {"size": 4_000_000})):
            stop = threading.Event()

            def attack(tool: str = tool, args: dict[str, int] = args, stop: threading.Event = stop) -> None:
                c = lab.client("acme")
                while not stop.is_set():
                    c.call(tool, args, timeout=120)

            threads = [threading.Thread(target=attack) for _ in range(3)]
            for t in threads:
                t.start()
            time.sleep(1)
            print(f"globex whoami, acme looping {tool}{args}:", latency())
            stop.set()
            for t in threads:
                t.join()


if __name__ == "__main__":
    main()
