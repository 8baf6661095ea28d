"""A stdio MCP server that misbehaves on request, written against the wire (no SDK, which would
guard its own stdout): ``python tests/support/misbehaving_upstream.py``. Imports nothing from ``tenantry``."""

from __future__ import annotations

import json
import os
import sys

SCHEMA = {"type": "object", "properties": {"megabytes": {"type": "integer"}, "count": {"type": "integer"}}}
TOOLS = ["fine", "flood_stderr", "huge_line", "junk_lines", "crash"]


def send(message: dict[str, object]) -> None:
    os.write(1, json.dumps(message).encode() + b"\n")


def text(request_id: object, value: str) -> None:
    send({"jsonrpc": "2.0", "id": request_id, "result": {"content": [{"type": "text", "text": value}]}})


def call(request_id: object, name: str, arguments: dict[str, int]) -> None:
    if name == "fine":
        text(request_id, f"fine from pid {os.getpid()}")
    elif name == "flood_stderr":
        chunk = b"noise " * 10_000 + b"\n"
        for _ in range(arguments.get("megabytes", 1) * 1024 * 1024 // len(chunk)):
            os.write(2, chunk)
        text(request_id, "flooded stderr")
    elif name == "huge_line":
        os.write(1, b"x" * (arguments.get("megabytes", 10) * 1024 * 1024))
        text(request_id, "unreachable")
    elif name == "junk_lines":
        os.write(1, b"this is not json\n" * arguments.get("count", 1000))
        text(request_id, "after the junk")
    elif name == "crash":
        os._exit(3)


def main() -> None:
    for line in sys.stdin:
        message = json.loads(line)
        method, request_id = message.get("method"), message.get("id")
        if request_id is None:
            continue
        if method == "initialize":
            result = {
                "protocolVersion": message["params"]["protocolVersion"],
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "misbehaving", "version": "0"},
            }
            send({"jsonrpc": "2.0", "id": request_id, "result": result})
        elif method == "tools/list":
            tools = [{"name": n, "inputSchema": SCHEMA} for n in TOOLS]
            send({"jsonrpc": "2.0", "id": request_id, "result": {"tools": tools}})
        elif method == "tools/call":
            call(request_id, message["params"]["name"], message["params"].get("arguments") or {})
        else:
            send({"jsonrpc": "2.0", "id": request_id, "result": {}})


if __name__ == "__main__":
    main()
