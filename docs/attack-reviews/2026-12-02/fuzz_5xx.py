"""Malformed requests in both eras: anything answered 5xx, or whose body carries exception text
(Traceback, a Python exception class name, a file path), is printed. The server log is checked
separately (grep ERROR / Traceback in its output).

Run: TENANTRY_DATA_DIR=... .venv/bin/python attack/fuzz_5xx.py
"""

from __future__ import annotations

import json
import re
import socket
import sys
from pathlib import Path
from typing import Any

import httpx2

sys.path.insert(0, str(Path(__file__).parent))
from common import HANDSHAKE, MCP, MODERN, Legacy, base, post, rpc, token  # noqa: E402

SUSPECT = re.compile(r"Traceback|File \"/|Exception|object has no attribute|NoneType|KeyError|TypeError|"
                     r"ValueError|AttributeError|sqlite|psycopg|\.py\b|Internal Server Error", re.I)
findings: list[str] = []


def check(label: str, status: int, text: str) -> None:
    if status >= 500 or SUSPECT.search(text or ""):
        findings.append(f"{label}: {status} {text[:300]!r}")


tok = token()
s = Legacy(tok)
meta = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "x", "version": "0"}}

weird_params: list[Any] = [None, [], "x", 1, True, {"name": None}, {"name": 1}, {"name": ["whoami"]},
                           {"name": "whoami", "arguments": []}, {"name": "whoami", "arguments": "x"},
                           {"name": "whoami", "arguments": None}, {"name": "read_file", "arguments": {"path": None}},
                           {"name": "read_file", "arguments": {"path": ["a"]}},
                           {"name": "read_file", "arguments": {"path": "../../globex/files/README.md"}},
                           {"name": "read_file", "arguments": {"path": "\x00"}},
                           {"name": "read_file", "arguments": {"path": "a" * 5000}},
                           {"name": "read_file", "arguments": {"path": "README.md/"}},
                           {"name": "read_file", "arguments": {"path": "reports"}},
                           {"name": "read_file", "arguments": {"path": "\udc80"}},
                           {"name": "list_files", "arguments": {"prefix": "README.md"}},
                           {"name": "list_files", "arguments": {"prefix": "/" * 3000}},
                           {"name": "write_file", "arguments": {"path": "reports", "content": "x"}},
                           {"name": "write_file", "arguments": {"path": "README.md/x", "content": "x"}},
                           {"name": "write_file", "arguments": {"path": "x", "content": "\udc80"}},
                           {"name": "query_crm", "arguments": {"filter": "%' OR 1=1 --", "limit": 100}},
                           {"name": "query_crm", "arguments": {"filter": "\x00", "limit": 10**30}},
                           {"name": "query_crm", "arguments": {"limit": 1.5}},
                           {"name": "query_crm", "arguments": {"limit": float("inf")} if False else {"limit": 1e308}},
                           {"name": "search_docs", "arguments": {"query": "\udc80"}},
                           {"name": "search_docs", "arguments": {"query": "x", "limit": -1}},
                           {"name": "send_email", "arguments": {"to": "a@b", "subject": "s", "body": "\x00" * 100}},
                           {"name": "whoami", "arguments": {}, "_meta": None},
                           {"name": "whoami", "arguments": {}, "_meta": []},
                           {"name": "whoami", "arguments": {}, "_meta": {"progressToken": {"a": 1}}},
                           {"name": "whoami", "arguments": {}, "task": {"ttl": -1}},
                           {"uri": None}, {"uri": "file:///etc/passwd"}, {"uri": "upstream://x/../../"},
                           {"cursor": None}, {"cursor": "!!!"}, {"cursor": "a" * 10000}, {"level": "nope"},
                           {"ref": {"type": "ref/prompt", "name": "x"}, "argument": {"name": "a", "value": "b"}}]
methods = ["tools/call", "tools/list", "resources/read", "resources/list", "resources/templates/list",
           "resources/subscribe", "resources/unsubscribe", "prompts/get", "prompts/list", "completion/complete",
           "logging/setLevel", "ping", "server/discover", "tasks/get", "tasks/list", "tasks/cancel", "tasks/result",
           "initialize", "nope", "", "notifications/initialized", "notifications/cancelled", "rpc.discover"]

for method in methods:
    for i, params in enumerate(weird_params):
        for era in ("legacy", "modern"):
            if era == "legacy":
                msg = rpc(method, params, 7)
                r = s.call(method, params, id=7) if isinstance(params, dict) or params is None else post(msg, tok, s.headers())
            else:
                p = dict(params) if isinstance(params, dict) else params
                if isinstance(p, dict):
                    p["_meta"] = {**meta, **(p.get("_meta") or {})} if isinstance(p.get("_meta", {}), dict) else p["_meta"]
                hdr = {"MCP-Protocol-Version": MODERN, "Mcp-Method": method}
                if isinstance(p, dict) and isinstance(p.get("name"), str):
                    hdr["Mcp-Name"] = p["name"]
                try:
                    r = post(rpc(method, p, 7), tok, hdr)
                except (UnicodeEncodeError, ValueError) as exc:
                    continue
            check(f"{era} {method} #{i}", r.status_code, r.text)

# envelope-level oddities
raw_bodies = [b"", b"{", b"[]", b"[{}]", b"null", b"1", b'"x"', b'{"jsonrpc":"2.0"}', b'{"jsonrpc":"1.0","id":1,"method":"ping"}',
              b'{"jsonrpc":"2.0","id":{},"method":"ping"}', b'{"jsonrpc":"2.0","id":[1],"method":"ping"}',
              b'{"jsonrpc":"2.0","id":1e999,"method":"ping"}', b'{"jsonrpc":"2.0","id":1,"method":1}',
              b'{"jsonrpc":"2.0","id":1,"result":{}}', b'{"jsonrpc":"2.0","id":1,"error":{"code":1,"message":"x"}}',
              b'{"jsonrpc":"2.0","id":1,"method":"ping","params":' + b"[" * 5000 + b"]" * 5000 + b"}",
              b'\xff\xfe', "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\",\"x\":\"\ud800\"}".encode("utf-8", "surrogatepass"),
              b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":{}}}}',
              b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":[],"io.modelcontextprotocol/clientInfo":1}}}',
              b'[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"ping"}]']
header_sets = [
    {}, {"Content-Type": "text/plain"}, {"Content-Type": "application/json; charset=latin-1"},
    {"Accept": "text/html"}, {"Accept": ""}, {"MCP-Protocol-Version": "garbage"}, {"MCP-Protocol-Version": MODERN},
    {"MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/call", "Mcp-Name": "x"},
    {"Mcp-Session-Id": "x" * 5000}, {"Mcp-Session-Id": s.sid, "MCP-Protocol-Version": MODERN},
    {"Mcp-Session-Id": s.sid, "MCP-Protocol-Version": HANDSHAKE},
    {"Content-Encoding": "gzip"}, {"Transfer-Encoding": "chunked"},
]
for hi, hs in enumerate(header_sets):
    for bi, raw in enumerate(raw_bodies):
        h = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json",
             "Authorization": f"Bearer {tok}", **hs}
        if "Transfer-Encoding" in h:
            del h["Transfer-Encoding"]
        try:
            r = httpx2.post(MCP, content=raw, headers=h, timeout=30)
        except httpx2.HTTPError as exc:
            findings.append(f"raw h{hi} b{bi}: transport {exc!r}")
            continue
        check(f"raw h{hi} b{bi}", r.status_code, r.text)

# other HTTP methods and paths
for method in ["GET", "DELETE", "PUT", "PATCH", "OPTIONS", "HEAD", "TRACE"]:
    for hs in ({}, {"Mcp-Session-Id": s.sid}, {"Mcp-Session-Id": s.sid, "Accept": "application/json"},
               {"MCP-Protocol-Version": MODERN}):
        try:
            r = httpx2.request(method, MCP, headers={"Authorization": f"Bearer {tok}", **hs}, timeout=3)
        except httpx2.ReadTimeout:
            continue  # an open event stream (GET with a session): expected
        check(f"{method} {hs}", r.status_code, r.text)
for path in ["/oauth/token", "/oauth/authorize", "/oauth/register", "/.well-known/oauth-protected-resource/mcp",
             "/.well-known/openid-configuration", "/metrics", "/healthz", "/mcp/", "/MCP", "//mcp", "/mcp?x=1",
             "/%2e%2e/", "/.well-known/jwks.json?kid=x"]:
    for method in ["GET", "POST"]:
        r = httpx2.request(method, base() + path, headers={"Authorization": f"Bearer {tok}"}, timeout=10)
        check(f"{method} {path}", r.status_code, r.text)
oauth_forms = [b"grant_type=client_credentials", b"grant_type=client_credentials&client_id=%ff&client_secret=%ff",
               b"grant_type=client_credentials&client_id=a&client_id=b&client_secret=x", b"%%%", b"\xff" * 10,
               b"grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=a.b.c&client_id=x&client_secret=tnty_acme_0000000000000000_x",
               b"grant_type=client_credentials&client_secret=tnty_acme_zz_" + b"a" * 43]
for form in oauth_forms:
    for auth in (None, "Basic %%%", "Basic " + "YTpi", "Basic " + "/w==", "Bearer x"):
        h = {"Content-Type": "application/x-www-form-urlencoded"}
        if auth:
            h["Authorization"] = auth
        r = httpx2.post(base() + "/oauth/token", content=form, headers=h, timeout=10)
        check(f"oauth {form[:40]!r} {auth}", r.status_code, r.text)

print(f"{len(findings)} suspicious answers")
for f in findings[:60]:
    print(" ", f)
