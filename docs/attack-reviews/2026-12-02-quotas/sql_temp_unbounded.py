"""The temp schema: a 400 MB temp table (outside the tenant's dir and sql_bytes) that lives as
long as the server's connection. Before the fix it is created (measured in /var/tmp via the
server's open file descriptors); after, refused."""

import os
import sys
from pathlib import Path

from common import Client, du, token

PID = os.environ["ATTACK_SERVER_PID"]


def server_temp_bytes() -> int:
    total = 0
    for fd in Path(f"/proc/{PID}/fd").iterdir():
        try:
            if "etilqs" in os.readlink(fd):
                total += os.stat(fd).st_size
        except OSError:
            pass
    return total


c = Client(token(sys.argv[1] if len(sys.argv) > 1 else "acme"))
for sql in [
    "CREATE TEMP TABLE tt AS WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n+1 FROM r LIMIT 200)"
    " SELECT zeroblob(1000000) AS b FROM r",
    "CREATE TABLE temp.tt AS WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n+1 FROM r LIMIT 200)"
    " SELECT zeroblob(1000000) AS b FROM r",
    "INSERT INTO temp.tt SELECT b FROM temp.tt",
    "CREATE TEMP VIEW v AS SELECT 1",
    "CREATE TEMP TRIGGER tr AFTER INSERT ON outbox BEGIN SELECT 1; END",
]:
    print(sql[:60], "->", c.sql(sql))
    print("   server temp files:", server_temp_bytes(), "bytes; tenant data.sqlite3*:",
          sum(v for k, v in du().items() if k.startswith("data.sqlite3")))
print("drop:", c.sql("DROP TABLE IF EXISTS temp.tt"))
