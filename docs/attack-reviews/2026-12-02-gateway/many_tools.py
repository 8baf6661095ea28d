"""An upstream listing 10,000 tools (and one listing 300 tools of 10 KB descriptions and 3 KB
schemas each): what is exposed, how long listing takes, the server's memory, and whether
another tenant's tools/list slows down."""

from __future__ import annotations

import time

from common import Lab


def rss(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) // 1024
    return 0


def main() -> None:
    for http_args in (("10000", "0", "100"), ("300", "3", "10000")):
        with Lab(http_args=http_args) as lab:
            report = lab.cli("upstream", "list", "--json")
            print(f"upstream with {http_args[0]} extra tools: report {len(report) // 1024} KiB,",
                  "tool_limit skipped:", report.count("tool_limit"))
            base = rss(lab.server.pid)
            for tenant in ("acme", "globex", "initech"):
                c = lab.client(tenant)
                t = time.perf_counter()
                msg, _ = c.rpc("tools/list", {})
                print(f"  {tenant} tools/list: {len(msg['result']['tools'])} tools, "
                      f"{(time.perf_counter() - t) * 1000:.0f} ms")
            print(f"  server RSS: {base} MiB after add, {rss(lab.server.pid)} MiB after 3 tenants' views")


if __name__ == "__main__":
    main()
