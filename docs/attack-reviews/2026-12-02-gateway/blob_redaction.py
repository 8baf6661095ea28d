"""Secret redaction decodes a resource read's base64 `blob`, but not the same blob inside a
tool result (an embedded resource) nor an image's `data`: the credential comes back.

Expected (docs/gateway.md "outcome"): the result is redacted of every secret value of the
calling tenant, "inside a resource's base64 blob contents too". Positive control: the same
credential returned as text is `[redacted]`.
"""

from __future__ import annotations

import base64

from common import SECRETS, Lab


def main() -> None:
    with Lab() as lab:
        acme = lab.client("acme")
        print("text control:", acme.call("web__cred")[1]["verbatim"])
        for tool, args in (("web__cred_blob", {}), ("hs__secret_blob", {"var": "CRM_TOKEN"})):
            ok, res = acme.call(tool, args)
            for item in res["result"]:
                data = item.get("data") or (item.get("resource") or {}).get("blob")
                if data:
                    decoded = base64.b64decode(data).decode()
                    print(f"{tool} {item['type']}: decodes to {decoded!r}; acme's secret in it: "
                          f"{SECRETS['acme'] in decoded}")


if __name__ == "__main__":
    main()
