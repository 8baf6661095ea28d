"""At sql_bytes (set to 20 MB here by the caller), one statement rewriting every row: the -wal file
holds a second copy of the database, outside the page limit, and keeps its size afterwards."""

from common import Client, cli, du, token

cli("tenant", "limits", "globex", "sql_bytes=20000000")
import time; time.sleep(1.5)
c = Client(token("globex"))
c.sql("CREATE TABLE IF NOT EXISTS w(id INTEGER PRIMARY KEY, b BLOB)")
while c.sql("INSERT INTO w(b) SELECT randomblob(30000) FROM (SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3)")[0]:
    pass


def sizes() -> str:
    s = du("globex")
    return f"db={s.get('data.sqlite3')} wal={s.get('data.sqlite3-wal')} total={sum(v for k, v in s.items() if k.startswith('data.sqlite3'))}"


print("filled to quota:", sizes())
for i in range(3):
    print("rewrite all rows in one statement:", c.sql("UPDATE w SET b = randomblob(30000)")[0], sizes())
print("a one-row write afterwards:", c.sql("UPDATE w SET b = randomblob(30000) WHERE id = 1")[0], sizes())
