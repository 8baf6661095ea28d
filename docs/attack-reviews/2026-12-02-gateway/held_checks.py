"""What held, in one run: token passthrough, server-to-client requests, JSON-RPC error
redaction, per-tenant listings, a dripping upstream's timeout, halt of in-flight upstream calls
(both tiers), kill -9 of a dedicated worker mid-call, and the worker's upstream's file
descriptors and limits."""

from __future__ import annotations

import os
import signal
import threading
import time

from common import HERE, PY, SECRETS, Lab, free_port, show


def main() -> None:
    with Lab() as lab:
        acme, globex, initech = lab.client("acme"), lab.client("globex"), lab.client("initech")
        sneaky = {"X-Forwarded-For": "1.2.3.4", "Cookie": "c=1", "traceparent":
                  "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "X-Api-Key": "client-key"}
        ok, h = acme.call("web__headers", headers=sneaky)
        show("1. headers the upstream got (client sent its token, a cookie, XFF, traceparent)", h)
        print("   client token reached upstream:", acme.tok in str(h))
        show("2. sampling/roots from upstream", acme.call("web__sample")[1])
        show("3. JSON-RPC error quoting the credential", acme.call("hs__rpc_error", {"var": "CRM_TOKEN"}))
        show("   encodings (documented limit: only verbatim values)", acme.call("web__cred")[1])

        def names(c: object) -> list[str]:
            msg, _ = c.rpc("tools/list", {})  # type: ignore[attr-defined]
            return [t["name"] for t in msg["result"]["tools"] if "own_" in t["name"]]

        lab.cli("tenant", "grant", "globex", "hs__own_acme")
        lab.cli("tenant", "grant", "globex", "hs__own_globex", "--pending")
        time.sleep(1.5)
        globex = lab.client("globex")  # a session's grants are those at its start (see REPORT)
        show("4. globex's view of hs (acme's listing made the report)", names(globex))
        show("   globex calls hs__own_acme", globex.call("hs__own_acme"))
        show("   globex calls hs__own_nobody", globex.call("hs__own_nobody"))

        drip = free_port()
        lab.spawn(PY, str(HERE / "drip_upstream.py"), str(drip), log="drip.log")
        time.sleep(1)
        lab.cli("upstream", "add", "drip", "--url", f"http://127.0.0.1:{drip}/mcp", "--allow-private", "--timeout", "4s")
        lab.cli("tenant", "grant", "acme", "drip__drip")
        time.sleep(1.5)
        acme = lab.client("acme")
        t = time.time()
        answer = acme.call("drip__drip", timeout=60)
        show(f"5. dripping upstream (timeout 4s), {time.time() - t:.1f}s", answer)

        for tenant in ("acme", "initech"):
            c = lab.client(tenant)
            res: dict[str, object] = {}

            def run(name: str, args: dict[str, object], c: object = c, res: dict[str, object] = res) -> None:
                t0 = time.time()
                res[name] = (c.call(name, args, timeout=60), round(time.time() - t0, 1))  # type: ignore[attr-defined]

            ths = [threading.Thread(target=run, args=("hs__hang", {"label": "halt"})),
                   threading.Thread(target=run, args=("web__hang", {"seconds": 50}))]
            for th in ths:
                th.start()
            time.sleep(2)
            lab.cli("tenant", "halt", tenant, "--reason", "test")
            for th in ths:
                th.join()
            lab.cli("tenant", "resume", tenant)
            cancelled = lab.data / "tenants" / tenant / "upstreams" / "hs" / "cancelled.txt"
            show(f"6. halt of {tenant} with 2 upstream calls in flight", res)
            print("   upstream saw notifications/cancelled:", cancelled.exists())

        time.sleep(1.5)
        initech = lab.client("initech")
        ok, w = initech.call("hs__where")
        show("7. initech's upstream (in its worker): fds, limits", {k: w[k] for k in ("fds", "limits", "cwd")})
        res2: dict[str, object] = {}
        th = threading.Thread(target=lambda: res2.update(r=initech.call("hs__hang", {"label": "k9"}, timeout=60)))
        th.start()
        time.sleep(1.5)
        os.kill(w["ppid"], signal.SIGKILL)
        th.join()
        show("8. in-flight call when the worker is killed -9", res2)
        t = time.time()
        answer = initech.call("hs__whoami_tenant")
        show(f"   next call ({time.time() - t:.1f}s)", answer)
        audit = lab.cli("audit", "tail", "--tenant", "initech", "--limit", "20")
        print("   audit:", [line.split("  ")[2:4] for line in audit.splitlines() if "worker_crashed" in line])
        print("   any secret in the server log:", [t for t, v in SECRETS.items() if v in lab.log()])


if __name__ == "__main__":
    main()
