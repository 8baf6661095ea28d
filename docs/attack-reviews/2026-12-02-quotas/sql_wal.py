"""At the sql_bytes quota, rewrite every row again and again: the -wal file keeps frames that the
page limit does not count (up to the 1000-page autocheckpoint, and one transaction's worth above that)."""

from common import Client, du, token

c = Client(token())
c.sql("CREATE TABLE IF NOT EXISTS w(id INTEGER PRIMARY KEY, b BLOB)")
while c.sql("INSERT INTO w(b) VALUES (randomblob(30000))")[0]:
    pass
for i in range(8):
    ok, res = c.sql("UPDATE w SET b = randomblob(30000)")
    s = du()
    print(i, ok, str(res)[:60], "db", s.get("data.sqlite3"), "wal", s.get("data.sqlite3-wal"),
          "total", sum(v for k, v in s.items() if k.startswith("data.sqlite3")))
