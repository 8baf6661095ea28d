"""`tenant move` both ways under load: does any call fail oddly, or any write get lost?

Four client threads of initech write files natively (write_file) and through its command
upstream (hs__write, in the upstream's working directory) while the tenant is moved
logical <-> dedicated 6 times. Afterwards every write that was acknowledged must be on disk.
"""

from __future__ import annotations

import collections
import threading
import time

from common import Lab, show


def main() -> None:
    with Lab() as lab:
        lab.cli("tenant", "grant", "initech", "write_file", "list_files", "read_file")
        time.sleep(1.5)
        stop = threading.Event()
        acked: list[tuple[str, str]] = []
        errors: collections.Counter[str] = collections.Counter()

        def load(k: int) -> None:
            c = lab.client("initech", f"w{k}")
            i = 0
            while not stop.is_set():
                i += 1
                name = f"t{k}-{i}.txt"
                tool, args = (("write_file", {"path": f"m/{name}", "content": name}) if i % 2 else
                              ("hs__write", {"name": name, "data": name}))
                try:
                    ok, res = c.call(tool, args, timeout=60)
                except Exception as exc:  # noqa: BLE001
                    ok, res = False, repr(exc)
                if ok:
                    acked.append((tool, name))
                else:
                    errors[f"{tool}: {str(res)[:100]}"] += 1

        threads = [threading.Thread(target=load, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        tiers = []
        for n in range(6):
            time.sleep(2.5)
            tier = "logical" if n % 2 == 0 else "dedicated"
            tiers.append(lab.cli("tenant", "move", "initech", "--tier", tier))
        time.sleep(2)
        stop.set()
        for t in threads:
            t.join()
        show("moves", tiers)
        tenant = lab.data / "tenants" / "initech"
        missing = [(tool, name) for tool, name in acked if not (
            (tenant / "files" / "m" / name).exists() if tool == "write_file" else
            (tenant / "upstreams" / "hs" / name).exists())]
        print(f"acknowledged writes: {len(acked)}; missing on disk: {len(missing)} {missing[:5]}")
        print(f"failed calls: {sum(errors.values())}")
        for e, n in errors.most_common():
            print(f"  {n} x {e}")
        audit = lab.cli("audit", "tail", "--tenant", "initech", "--limit", "2000")
        print("tenant_moved records:", audit.count("tenant_moved"), "worker_crashed:", audit.count("worker_crashed"))


if __name__ == "__main__":
    main()
