"""One call's `BEGIN` outlives the call: every later ctx.sql call of the tenant (any tool, any
subject) joins the uncommitted transaction; other processes do not see its rows and cannot write,
and executemany fails. Run against a server from before the fix."""

import sqlite3

from common import DATA, Client, token

c = Client(token())
print("BEGIN:", c.sql("BEGIN"))
bob = Client(token("acme"))  # another session of acme
print("send_email (demo tool, writes outbox):",
      bob.call("send_email", {"to": "a@example.com", "subject": "open-tx", "body": "lost?"}))
print("in the server's connection:", c.q("SELECT count(*) AS n FROM outbox WHERE subject = 'open-tx'"))
other = sqlite3.connect(DATA / "tenants" / "acme" / "data.sqlite3", timeout=1)
print("another process sees:", other.execute("SELECT count(*) FROM outbox WHERE subject = 'open-tx'").fetchone())
try:
    other.execute("INSERT INTO outbox (recipient, subject, body) VALUES ('x', 'y', 'z')")
    other.commit()
    print("another process wrote")
except sqlite3.Error as exc:
    print("another process cannot write:", exc)
print("COMMIT to clean up:", c.sql("COMMIT"))
