"""Fill acme's database to sql_bytes, then try to grow its on-disk storage anyway.

Prints the tenant dir's file sizes and the server's open temp files after each probe.
Env: ATTACK_SERVER_PID (to read the server's open temp files).
"""

import os
import sys
from pathlib import Path

from common import Client, du, token

PID = os.environ["ATTACK_SERVER_PID"]
c = Client(token(sys.argv[1] if len(sys.argv) > 1 else "acme"))


def temp_files() -> int:
    total = 0
    for fd in Path(f"/proc/{PID}/fd").iterdir():
        try:
            target = os.readlink(fd)
            if "(deleted)" in target or "etilqs" in target:
                total += os.stat(fd).st_size
        except OSError:
            pass
    return total


def show(label: str, res: object) -> None:
    sizes = du()
    print(f"{label[:90]:90} -> {str(res)[:160]}")
    print(f"    db={sizes.get('data.sqlite3')} wal={sizes.get('data.sqlite3-wal')} server-temp-bytes={temp_files()}")


show("create", c.sql("CREATE TABLE IF NOT EXISTS big(id INTEGER PRIMARY KEY, b BLOB)"))
for _ in range(40):
    ok, res = c.sql("INSERT INTO big(b) SELECT zeroblob(50000) FROM (SELECT 1)")
    if not ok:
        break
show("fill with zeroblob(50000) rows", res)
show("fill 1-byte rows", c.sql("INSERT INTO big(b) WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n+1 FROM r LIMIT 100000) SELECT x'00' FROM r"))
show("INSERT SELECT doubling", c.sql("INSERT INTO big(b) SELECT b FROM big"))
show("CREATE INDEX", c.sql("CREATE INDEX big_b ON big(b)"))
show("CREATE VIEW", c.sql("CREATE VIEW v AS SELECT * FROM big"))
show("REINDEX", c.sql("REINDEX"))
show("ANALYZE", c.sql("ANALYZE"))
show("VACUUM", c.sql("VACUUM"))
show("VACUUM INTO", c.sql("VACUUM INTO '/tmp/atkq-vacuum.db'"))
show("FTS5", c.sql("CREATE VIRTUAL TABLE f USING fts5(x)"))
show("trigger that writes", c.sql("CREATE TRIGGER t AFTER DELETE ON big BEGIN INSERT INTO big(b) VALUES (zeroblob(100000)); END"))
show("temp table of 200 MB", c.sql(
    "CREATE TEMP TABLE tt AS WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n+1 FROM r LIMIT 200) "
    "SELECT zeroblob(1000000) AS b FROM r"))
show("temp table rows", c.q("SELECT count(*) AS n, sum(length(b)) AS bytes FROM temp.tt"))
show("temp table grows", c.sql("INSERT INTO temp.tt SELECT b FROM temp.tt"))
show("temp table rows", c.q("SELECT count(*) AS n, sum(length(b)) AS bytes FROM temp.tt"))
show("temp index", c.sql("CREATE INDEX temp.tti ON tt(b)"))
show("temp trigger on main table", c.sql(
    "CREATE TEMP TRIGGER tt2 AFTER INSERT ON main.big BEGIN INSERT INTO tt SELECT b FROM tt; END"))
show("BEGIN left open", c.sql("BEGIN"))
show("after BEGIN: insert", c.sql("INSERT INTO tt SELECT zeroblob(1000000)"))
show("drop temp", c.sql("DROP TABLE temp.tt"))
