"""Race deep writes and deletes on acme (file_count=20): afterwards the ledger must equal a
recount, and a write must not pass the quota. Also odd path spellings."""

import json
import random
from concurrent.futures import ThreadPoolExecutor

from common import DATA, Client, cli, token

root = DATA / "tenants" / "acme" / "files"
paths = [f"r/{a}/{b}/f{c}" for a in "xy" for b in "pq" for c in range(3)] + ["r/x/f", "r/f", "z/z/z/z/z/f"]


def actual() -> int:
    return sum(1 for p in root.rglob("*") if not p.name.startswith(".tenantry"))


def worker(seed: int) -> list[str]:
    rnd = random.Random(seed)
    c = Client(token())
    out = []
    for _ in range(40):
        p = rnd.choice(paths)
        ok, res = c.call("fwrite" if rnd.random() < 0.6 else "fdelete", {"path": p})
        if not ok and "quota" not in str(res):
            out.append(str(res)[:120])
    return out


for p in ["a/./b", "a//b", "/a", "a/../b", "./a", "a/", "a/b/", ".tenantry-x", "a\\b", "a/\x00b", " ", "a/ /b"]:
    print(repr(p), Client(token()).call("fwrite", {"path": p}))
with ThreadPoolExecutor(8) as pool:
    errors = [e for r in pool.map(worker, range(8)) for e in r]
print("unexpected errors:", errors[:5], len(errors))
ledger = json.loads((DATA / "tenants" / "acme" / "files-usage.json").read_text())
print("ledger:", ledger, "actual entries:", actual())
print("limits file_count=20; over quota?", actual() > 20)
print(cli("tenant", "show", "acme")[-400:])
