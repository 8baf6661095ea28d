"""Sessionless era: is `subscriptions/listen` (a POST whose answer is a long-lived event stream)
served, and if so does it outlive its credential? (Only GET streams are watched by
credential_lifetime.py.) Opens a listen stream with a 1-minute token, revokes it, waits.

Run: TENANTRY_DATA_DIR=... .venv/bin/python attack/modern_listen.py
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import httpx2

sys.path.insert(0, str(Path(__file__).parent))
from common import MCP, MODERN, cli  # noqa: E402

issued = json.loads(cli("token", "issue", "--tenant", "acme", "--sub", "alice", "--json"))
tok, jti = issued["token"], issued["jti"]
meta = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "x", "version": "0"}}
body = {"jsonrpc": "2.0", "id": 1, "method": "subscriptions/listen",
        "params": {"_meta": meta, "notifications": {"toolsListChanged": True, "resourcesListChanged": True}}}
events: list[tuple[float, str]] = []
state: dict[str, object] = {}


def listen() -> None:
    h = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json",
         "Authorization": f"Bearer {tok}", "MCP-Protocol-Version": MODERN, "Mcp-Method": "subscriptions/listen"}
    try:
        with httpx2.stream("POST", MCP, content=json.dumps(body), headers=h, timeout=httpx2.Timeout(5, read=60)) as r:
            state["status"] = r.status_code
            state["ctype"] = r.headers.get("content-type")
            for line in r.iter_lines():
                events.append((time.time(), line[:200]))
    except Exception as exc:  # noqa: BLE001
        events.append((time.time(), f"error {exc!r}"))
    state["ended"] = time.time()


t = threading.Thread(target=listen, daemon=True)
t.start()
time.sleep(2)
print("listen:", state, events[:5])
if "ended" not in state:
    at = time.time()
    cli("token", "revoke", "--jti", jti)
    t.join(6)
    print("after revoke: ended", f"{state['ended'] - at:+.1f}s" if "ended" in state else "NO (still open)", events[-3:])
