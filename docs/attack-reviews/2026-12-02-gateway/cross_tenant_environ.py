"""acme's command upstream reads globex's and the dedicated initech's credentials from
/proc/<pid>/environ of their processes (same OS user), and other tenants' files and the keys.

Every tenant's upstream credential (`--env 'CRM_TOKEN={secret:crm_token}'`) lives in the
environment of a process of the server's user, and so does a dedicated worker's every secret
(TENANTRY_SECRET_*). Any command upstream that can read a file for its caller (a code runner,
a shell tool, a file server rooted more widely than {tenant_dir}, or a path bug) hands them to
the calling tenant. Redaction only knows the caller's own values, so the others come back
verbatim. Expected by the docs: "a tenant's credential is used for that tenant's calls and
nobody else's"; the dedicated worker's "Environment" holds no other tenant's secrets - true,
but another tenant can read it.
"""

from __future__ import annotations

from common import SECRETS, Lab


def main() -> None:
    with Lab() as lab:
        acme, globex, initech = lab.client("acme"), lab.client("globex"), lab.client("initech")
        globex.call("hs__where")   # globex's upstream process is now running (logical tier)
        initech.call("hs__where")  # initech's worker and its upstream process (dedicated tier)
        ok, res = acme.call("hs__proc_environ", {"needle": "-CRM-tok-"})
        procs = res["result"] if isinstance(res, dict) else res
        procs = [p for p in procs if p["cwd"].startswith(str(lab.tmp))]  # this lab's processes only
        for p in procs:
            if p["hits"]:
                print(f"pid {p['pid']} cwd={p['cwd'].replace(str(lab.tmp), '<lab>')}: {p['hits']}")
        text = str(procs)
        for tenant, value in SECRETS.items():
            print(f"{tenant}'s crm_token seen by acme: {value in text}")
        # The same process reads other tenants' data and the server's keys outright.
        g_files = lab.data / "tenants" / "globex" / "files"
        ok, listing = acme.call("hs__ls", {"path": str(g_files)})
        print("acme lists globex's files:", ok, str(listing)[:200])
        ok, keys = acme.call("hs__ls", {"path": str(lab.data / "keys")})
        print("acme lists the server's keys/:", ok, str(keys)[:300])


if __name__ == "__main__":
    main()
