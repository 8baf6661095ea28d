"""`tenant halt` with two upstream calls in flight on one session: sometimes one of them never
gets an answer (the HTTP request stays open, past the upstream's 20 s timeout and the tenant's
tool_timeout, until the client gives up).

Each trial: one session of TENANT calls hs__hang (command upstream) and web__hang (HTTP
upstream) at once, the tenant is halted 2 s later, then resumed. Expected: both answered
call_cancelled within a few seconds (docs/gateway.md, kill switch). Usage:
halt_lost_answer.py [TRIALS=6] [--same-id]; tenants acme (logical) and initech (dedicated) alternate.

Cause (fixed): this script's client sent every request with id 2, and two requests in flight with
one id on one session made the SDK hand the first answer to the second request and drop the
other. Each request now has its own id; ``--same-id`` sends both with id 2 as before, and the
server refuses the second at once (-32600, "already in flight") and cancels the first.
"""

from __future__ import annotations

import sys
import threading
import time

from common import Lab


def main() -> None:
    args = [a for a in sys.argv[1:] if a != "--same-id"]
    same_id = "--same-id" in sys.argv[1:]
    trials = int(args[0]) if args else 6
    lost = unexpected = 0
    with Lab() as lab:
        for n in range(trials):
            tenant = ("acme", "initech")[n % 2]
            idle = [lab.client(tenant, f"idle{n}-{k}") for k in range(3)]  # other sessions of the tenant
            c = lab.client(tenant, f"trial{n}")
            res: dict[str, object] = {}

            def run(name: str, args: dict[str, object], c: object = c, res: dict[str, object] = res) -> None:
                t0 = time.time()
                try:
                    answer: object = c.call(name, args, timeout=45,  # type: ignore[attr-defined]
                                            request_id=2 if same_id else None)
                except Exception as exc:  # noqa: BLE001
                    answer = f"NO ANSWER ({type(exc).__name__})"
                text = str(answer)
                label = ("call_cancelled" if "halted by an administrator" in text
                         else "refused: id already in flight" if "already in flight" in text else text[:70])
                res[name] = (label, round(time.time() - t0, 1))

            ths = [threading.Thread(target=run, args=("hs__hang", {"label": f"t{n}"})),
                   threading.Thread(target=run, args=("web__hang", {"seconds": 40}))]
            for th in ths:
                th.start()
            time.sleep(2)
            lab.cli("tenant", "halt", tenant, "--reason", f"trial {n}")
            for th in ths:
                th.join()
            lab.cli("tenant", "resume", tenant)
            del idle
            bad = [k for k, v in res.items() if "NO ANSWER" in str(v)]
            lost += bool(bad)
            expected = {"call_cancelled", "refused: id already in flight"} if same_id else {"call_cancelled"}
            unexpected += any(label not in expected for label, _ in res.values())  # type: ignore[misc]
            print(f"trial {n} {tenant}: {res}")
            if bad:
                audit = lab.cli("audit", "tail", "--tenant", tenant, "--limit", "12")
                print("  audit:", *[line[:110] for line in audit.splitlines() if f"trial{n}" in line or "halt" in line],
                      sep="\n    ")
            time.sleep(1.5)
        print(f"trials with a call left unanswered: {lost} of {trials}")
        print(f"trials with an answer other than call_cancelled{' or the duplicate-id refusal' if same_id else ''}:"
              f" {unexpected} of {trials}")
        halted = [line for line in lab.log().splitlines() if "halted" in line or "Traceback" in line or "error" in line]
        print("server log lines about it:", *[line[:300] for line in halted[-6:]], sep="\n  ")


if __name__ == "__main__":
    main()
