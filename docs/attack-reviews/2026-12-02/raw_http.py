"""Malformed HTTP over raw sockets: odd header bytes, duplicate/conflicting framing, slow bodies.
Prints each case's status line (and any 5xx / exception text).

Run: TENANTRY_DATA_DIR=... .venv/bin/python attack/raw_http.py
"""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import base, token  # noqa: E402

host, port = base().removeprefix("http://").split(":")
tok = token().encode()
BODY = b'{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{},"io.modelcontextprotocol/clientInfo":{"name":"x","version":"0"}}}}'
STD = (b"Host: 127.0.0.1:" + port.encode() + b"\r\nAccept: application/json, text/event-stream\r\n"
       b"Content-Type: application/json\r\nMCP-Protocol-Version: 2026-07-28\r\nMcp-Method: tools/list\r\n")


def send(label: str, raw: bytes, wait: float = 5) -> None:
    s = socket.create_connection((host, int(port)), timeout=wait)
    try:
        s.sendall(raw)
        data = b""
        while True:
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                break
            except ConnectionResetError:
                data += b"<reset>"
                break
            if not chunk:
                break
            data += chunk
            if b"\r\n\r\n" in data and len(data) > 2000:
                break
    finally:
        s.close()
    first = data.split(b"\r\n", 1)[0]
    flag = " <-- SUSPECT" if (first[9:10] == b"5" or b"Traceback" in data or b"Error" in data and b"jsonrpc" not in data) else ""
    print(f"{label:45s} {first!r} len={len(data)}{flag}")
    if flag:
        print("   ", data[:500])


def req(headers: bytes, body: bytes = BODY, method: bytes = b"POST", path: bytes = b"/mcp") -> bytes:
    return method + b" " + path + b" HTTP/1.1\r\n" + headers + b"\r\n" + body


auth = b"Authorization: Bearer " + tok + b"\r\n"
cl = b"Content-Length: " + str(len(BODY)).encode() + b"\r\n"
send("control", req(STD + auth + cl))
send("auth latin-1 byte", req(STD + b"Authorization: Bearer \xff" + tok + b"\r\n" + cl))
send("auth utf-8 in token", req(STD + b"Authorization: Bearer " + tok + "é".encode() + b"\r\n" + cl))
send("two Authorization", req(STD + auth + auth + cl))
send("bearer lowercase tab", req(STD + b"Authorization: bearer\t" + tok + b"\r\n" + cl))
send("header 0xff in Mcp-Session-Id", req(STD + auth + cl + b"Mcp-Session-Id: \xff\xfe\r\n"))
send("protocol version latin-1", req(STD.replace(b"2026-07-28\r\nMcp", b"2026-07-28\xff\r\nMcp") + auth + cl))
send("Mcp-Method 0xff", req(STD.replace(b"Mcp-Method: tools/list", b"Mcp-Method: \xff") + auth + cl))
send("CL and TE", req(STD + auth + cl + b"Transfer-Encoding: chunked\r\n"))
send("two CL", req(STD + auth + cl + b"Content-Length: 5\r\n"))
send("chunked body", req(STD + auth + b"Transfer-Encoding: chunked\r\n",
                         hex(len(BODY))[2:].encode() + b"\r\n" + BODY + b"\r\n0\r\n\r\n"))
send("chunked bad size", req(STD + auth + b"Transfer-Encoding: chunked\r\n", b"zz\r\n" + BODY + b"\r\n0\r\n\r\n"))
send("CL larger than body (held)", req(STD + auth + b"Content-Length: 100000\r\n"), wait=40)
send("huge CL", req(STD + auth + b"Content-Length: 99999999999999999999\r\n"))
send("negative CL", req(STD + auth + b"Content-Length: -1\r\n"))
send("16KB header", req(STD + auth + cl + b"X-Big: " + b"a" * 16000 + b"\r\n"))
send("200KB header", req(STD + auth + cl + b"X-Big: " + b"a" * 200000 + b"\r\n"))
send("500 headers", req(STD + auth + cl + b"".join(b"X-%d: a\r\n" % i for i in range(500))))
send("HTTP/1.0", req(STD + auth + cl).replace(b"HTTP/1.1", b"HTTP/1.0", 1))
send("absolute URI", req(STD + auth + cl, path=b"http://evil.example/mcp"))
send("path with NUL", req(STD + auth + cl, path=b"/mcp%00"))
send("bad Host", req(STD.replace(b"Host: 127.0.0.1", b"Host: evil.example") + auth + cl))
send("no Host", req(STD.split(b"\r\n", 1)[1] + auth + cl))
send("Origin evil", req(STD + auth + cl + b"Origin: http://evil.example\r\n"))
send("Origin null", req(STD + auth + cl + b"Origin: null\r\n"))
send("pipelined two", req(STD + auth + cl) + req(STD + auth + cl))
send("gzip body", req(STD + auth + b"Content-Encoding: gzip\r\n" + cl))
send("expect 100", req(STD + auth + cl + b"Expect: 100-continue\r\n"))
send("GET modern", req(STD + auth, body=b"", method=b"GET"))
send("GET upgrade websocket", req(STD + auth + b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: x\r\nSec-WebSocket-Version: 13\r\n", body=b"", method=b"GET"))
send("h2c upgrade", req(STD + auth + cl + b"Upgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n"))
send("PRI * h2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
send("garbage", b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + b"\x00" * 100)
