"""Every logical-tier tenant's command-upstream process gets the same HOME (the server user's),
so whatever a third-party server keeps in ~ (token caches, config, downloaded state) is shared
across tenants.

Many MCP servers keep per-user state under HOME (OAuth token caches such as mcp-remote's
~/.mcp-auth, ~/.config/<app>, ~/.cache). Run one process per tenant, as the gateway does, and
tenant B's process finds tenant A's cache. The simulation: acme's upstream process "caches its
token" at ~/.cache/hostile-mcp/token; globex's process reads it. Expected (docs/gateway.md):
each tenant's session is built from its own values only, its credential used for its calls and
nobody else's (the dedicated tier gives each worker its own HOME; the logical tier does not).
"""

from __future__ import annotations

from common import Lab


def main() -> None:
    with Lab() as lab:
        acme, globex, initech = lab.client("acme"), lab.client("globex"), lab.client("initech")
        for name, c in (("acme", acme), ("globex", globex), ("initech", initech)):
            print(f"{name}'s upstream HOME:", c.call("hs__env")[1]["HOME"].replace(str(lab.tmp), "<lab>"))
        home = acme.call("hs__env")[1]["HOME"]
        cache = f"{home}/.cache-hostile-mcp-token"
        print("acme's process caches its token:", acme.call("hs__write", {"name": cache, "data": "acme-oauth-refresh-token"}))
        print("globex's process reads the cache:", globex.call("hs__read", {"path": cache}))


if __name__ == "__main__":
    main()
