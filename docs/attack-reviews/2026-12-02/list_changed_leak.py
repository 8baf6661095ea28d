"""Does anything globex's operator does (grant, ungrant, limits, halt, API key, secret, token revoke)
push a notification onto acme's open event stream? Each change to globex is made while acme's
stream is open, and acme's notifications within 2 s are printed (a control change to acme last).

Run: TENANTRY_DATA_DIR=... .venv/bin/python attack/list_changed_leak.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import Legacy, cli, token  # noqa: E402
from stream_lifetime import Stream  # noqa: E402

tok = token("acme", "alice")
s = Legacy(tok)
st = Stream(s.sid, tok)
st.opened.wait(5)
for m in ("tools/list", "resources/list", "prompts/list", "resources/templates/list"):
    s.call(m)  # notifications go to sessions that have listed
time.sleep(1)
changes = [
    ("globex ungrant query_crm", ("tenant", "ungrant", "globex", "query_crm")),
    ("globex grant query_crm", ("tenant", "grant", "globex", "query_crm")),
    ("globex limits", ("tenant", "limits", "globex", "burst=99")),
    ("globex limits clear", ("tenant", "limits", "globex", "--clear", "burst")),
    ("globex halt", ("tenant", "halt", "globex", "--reason", "x")),
    ("globex resume", ("tenant", "resume", "globex")),
    ("globex apikey create", ("apikey", "create", "--tenant", "globex", "--name", "leak")),
    ("globex token revoke", ("token", "revoke", "--tenant", "globex", "--sub", "bob")),
    ("globex tenant create", ("tenant", "create", f"leak{int(time.time()) % 100000}")),
    ("control: acme ungrant send_email", ("tenant", "ungrant", "acme", "send_email")),
    ("control: acme grant send_email", ("tenant", "grant", "acme", "send_email")),
]
for label, args in changes:
    before = len(st.events)
    cli(*args)
    time.sleep(2)
    print(f"{label:35s} -> acme got {[m for _, m in st.events[before:]]}")
print("stream status", st.status, "ended", None if st.ended is None else f"{st.ended - time.time():.0f}s ago", st.events[-3:])
