"""A raw HTTP 'MCP upstream' that answers the handshake and the listing, then answers every
tools/call with an SSE stream that drips a comment every 0.2 s and never sends the result.
``python drip_upstream.py PORT``"""

from __future__ import annotations

import asyncio
import json
import sys


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            body = json.loads(await reader.readexactly(length)) if length else {}
            method = body.get("method")
            if method == "initialize":
                result = {"protocolVersion": body["params"]["protocolVersion"], "capabilities": {"tools": {}},
                          "serverInfo": {"name": "drip", "version": "0"}}
            elif method == "tools/list":
                result = {"tools": [{"name": "drip", "inputSchema": {"type": "object"}}]}
            elif method == "tools/call":
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                             b"mcp-session-id: s1\r\ntransfer-encoding: chunked\r\n\r\n")
                while True:
                    chunk = b": drip\n\n"
                    writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    await writer.drain()
                    await asyncio.sleep(0.2)
            elif "id" in body:
                result = {}
            else:
                writer.write(b"HTTP/1.1 202 Accepted\r\nmcp-session-id: s1\r\ncontent-length: 0\r\n\r\n")
                await writer.drain()
                continue
            data = json.dumps({"jsonrpc": "2.0", "id": body["id"], "result": result}).encode()
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nmcp-session-id: s1\r\n"
                         b"content-length: %d\r\n\r\n%s" % (len(data), data))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main() -> None:
    server = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[1]))
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
