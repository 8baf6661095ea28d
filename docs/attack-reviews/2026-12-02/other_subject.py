"""Acting as another acme subject, or outside a token's resource prefix.

Run: TENANTRY_DATA_DIR=... .venv/bin/python attack/other_subject.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import httpx2

sys.path.insert(0, str(Path(__file__).parent))
from common import HANDSHAKE, MCP, Legacy, body, cli, modern, post, rpc, token  # noqa: E402

alice, bob = token("acme", "alice"), token("acme", "bob")
s = Legacy(alice)
print("bob on alice's session:", s.call("tools/list", tok=bob).status_code)
print("bob DELETE alice's session:",
      httpx2.delete(MCP, headers={"Authorization": f"Bearer {bob}", "Mcp-Session-Id": s.sid,
                                  "MCP-Protocol-Version": HANDSHAKE}).status_code,
      "-> alice still:", s.call("tools/list").status_code)
print("bob GET alice's stream:",
      httpx2.get(MCP, headers={"Authorization": f"Bearer {bob}", "Mcp-Session-Id": s.sid, "Accept": "text/event-stream",
                               "MCP-Protocol-Version": HANDSHAKE}, timeout=5).status_code)
globex = token("globex", "alice")
print("globex alice on acme alice's session:", s.call("tools/list", tok=globex).status_code)
key = cli("apikey", "create", "--tenant", "acme", "--name", "subj")
print("acme API key on alice's session:", s.call("tools/list", tok=key).status_code)
# a second initialize on an existing session (re-binding it?)
r = post(rpc("initialize", {"protocolVersion": HANDSHAKE, "capabilities": {}, "clientInfo": {"name": "x", "version": "0"}}),
         bob, s.headers())
print("bob re-initialize with alice's session id:", r.status_code, str(body(r))[:120])
# modern era: Mcp-Session-Id of alice with bob's token changes nothing
r = modern(bob, "tools/call", {"name": "whoami", "arguments": {}}, headers={"Mcp-Session-Id": s.sid})
print("modern bob + alice's session id ->", body(r)["result"]["structuredContent"]["subject"],
      body(r)["result"]["structuredContent"]["session_id"])

narrow = token("acme", "carol", "--prefix", "reports/", "--tools", "read_file,list_files,write_file,whoami")
n = Legacy(narrow)
for path in ["README.md", "reports/../README.md", "reports/./../README.md", "reports%2F..%2FREADME.md", "/README.md",
             "reports\\..\\README.md", "REPORTS/q3.txt", "reports/q3.txt", "./README.md", "reports//../README.md"]:
    r = n.tool("read_file", {"path": path})
    b = body(r)
    text = str(b.get("result", b.get("error")))
    print(f"prefix reports/ read {path!r:32s} -> {'LEAK ' if 'acme shared drive' in text else ''}{text[:110]}")
for prefix in ["", "reports", "reports/", "rep", "..", "reports/.."]:
    r = n.tool("list_files", {"prefix": prefix})
    print(f"prefix reports/ list {prefix!r:12s} -> {str(body(r).get('result', body(r).get('error')))[:140]}")
r = n.tool("write_file", {"path": "README.md", "content": "x"})
print("prefix reports/ write README.md ->", str(body(r))[:160])
