"""A crashing command upstream's stderr lands in the server log unredacted (and without the
tenant's id): "upstream process ended; its last stderr lines follow ... credential was <secret>".

Expected (README, docs/gateway.md): secret values are redacted from everything the call returns
or logs. Both tiers: acme (logical, the server's gateway) and initech (dedicated, its worker's
gateway, whose log goes to the server's stderr).
"""

from __future__ import annotations

import json
import time

from common import SECRETS, Lab


def main() -> None:
    with Lab() as lab:
        for tenant in ("acme", "initech"):
            c = lab.client(tenant)
            print(tenant, "crash call ->", c.call("hs__crash", {"var": "CRM_TOKEN"}))
            print(tenant, "fail call  ->", c.call("hs__fail", {"var": "CRM_TOKEN"}))
        time.sleep(1)
        for line in lab.log().splitlines():
            if any(v in line for v in SECRETS.values()):
                record = json.loads(line)
                print("LOG:", {k: (v if k != "msg" else v[-120:]) for k, v in record.items()})
        for tenant, value in SECRETS.items():
            print(f"{tenant}'s secret in the server log: {value in lab.log()}")


if __name__ == "__main__":
    main()
