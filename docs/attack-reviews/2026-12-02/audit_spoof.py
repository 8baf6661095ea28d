"""Audit spoofing: client-chosen headers and _meta fields that might end up in acme's audit
records as facts (address, session id, subject, request id, tenant).

Run: TENANTRY_DATA_DIR=... .venv/bin/python attack/audit_spoof.py   (prints acme's last records)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import Legacy, body, cli, modern, token  # noqa: E402

SPOOF = {
    "X-Forwarded-For": "6.6.6.6",
    "X-Real-IP": "6.6.6.7",
    "Forwarded": "for=6.6.6.8",
    "X-Request-Id": "spoofed-request-id",
    "X-Client-IP": "6.6.6.9",
    "True-Client-IP": "6.6.6.10",
    "Mcp-Session-Id": "spoofed-session-id",
}
META = {
    "io.tenantry/request_id": "spoofed-meta-rid",
    "io.tenantry/session_id": "spoofed-meta-sid",
    "io.tenantry/subject": "mallory",
    "tenant_id": "globex",
    "subject": "mallory",
    "session_id": "spoofed-meta-sid",
    "request_id": "spoofed-meta-rid",
    "ip_address": "6.6.6.11",
    "progressToken": "spoof-progress\n{\"event_type\":\"fake\"}",
}
tok = token("acme", "alice")
r = modern(tok, "tools/call", {"name": "whoami", "arguments": {}, "_meta": META}, headers=SPOOF, id="rid\u2028\n{x}")
print("modern:", r.status_code, r.headers.get("x-request-id"), body(r).get("result", {}).get("structuredContent"))
s = Legacy(tok)
spoof = {k: v for k, v in SPOOF.items() if k != "Mcp-Session-Id"}
r = s.call("tools/call", {"name": "whoami", "arguments": {"tenant_id": "globex"}, "_meta": META}, headers=spoof)
print("legacy:", r.status_code, str(body(r))[:300])
r = s.call("tools/call", {"name": "nope\u202e\u0000", "arguments": {}}, headers=spoof)
print("legacy unknown tool:", r.status_code, str(body(r))[:300])
out = cli("audit", "tail", "--tenant", "acme", "-n", "8", "--json") if False else cli("audit", "tail", "--tenant", "acme")
hits = [line for line in out.splitlines() if "6.6.6" in line or "spoof" in line or "mallory" in line or "globex" in line]
print("acme audit lines mentioning a spoofed value:", len(hits))
for line in hits[:10]:
    print("  ", line[:400])
print("last records:")
for line in out.splitlines()[-6:]:
    print("  ", line[:400])
