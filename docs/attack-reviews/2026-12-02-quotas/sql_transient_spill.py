"""Transient temp files a single statement spills (sorter, DISTINCT): outside sql_bytes, freed
at the statement's end, bounded only by sql_statement_timeout. Samples the server's temp files."""

import os
import threading
import time
from pathlib import Path

from common import Client, token

PID = os.environ["ATTACK_SERVER_PID"]
peak = 0
done = False


def sample() -> None:
    global peak
    while not done:
        total = 0
        for fd in Path(f"/proc/{PID}/fd").iterdir():
            try:
                if "etilqs" in os.readlink(fd):
                    total += os.stat(fd).st_size
            except OSError:
                pass
        peak = max(peak, total)
        time.sleep(0.05)


c = Client(token())
t = threading.Thread(target=sample)
t.start()
start = time.monotonic()
res = c.q("SELECT count(*) AS n FROM (WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n+1 FROM r LIMIT 1000)"
          " SELECT n, zeroblob(1000000) AS b FROM r ORDER BY n DESC)")
elapsed = time.monotonic() - start
done = True
t.join()
print(res, f"{elapsed:.1f}s", "peak server temp bytes:", peak)
