"""A third-party MCP server over streamable HTTP for gateway tests: ``python -m tests.support.upstream_server PORT``.

It reports what it receives (headers, arguments, cancellations), so tests can prove what a
gateway does and does not pass on. Imports nothing from ``tenantry``.
"""

from __future__ import annotations

import sys
from typing import Any, ClassVar

import anyio
import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.streamable_http import EventCallback, EventMessage, EventStore
from mcp_types import JSONRPCMessage
from mcp_types import Tool as MCPTool
from pydantic import BaseModel


class ListingServer(MCPServer):
    """Can list many extra tools (generated, never called) without registering each."""

    extra: ClassVar[list[MCPTool]] = []

    async def list_tools(self) -> list[MCPTool]:
        return [*await super().list_tools(), *self.extra]


class MemoryEventStore(EventStore):
    """Keeps every event, so a client can resume a stream the server closed (``--resumable``)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, JSONRPCMessage | None]] = []

    async def store_event(self, stream_id: str, message: JSONRPCMessage | None) -> str:
        event_id = str(len(self.events) + 1)
        self.events.append((event_id, stream_id, message))
        return event_id

    async def replay_events_after(self, last_event_id: str, send_callback: EventCallback) -> str | None:
        stream = next((s for e, s, _ in self.events if e == last_event_id), None)
        if stream is None:
            return None
        for event_id, stream_id, message in self.events[int(last_event_id) :]:
            if stream_id == stream and message is not None:
                await send_callback(EventMessage(message, event_id))
        return stream


server = ListingServer("upstream-under-test")
cancelled: list[str] = []


class Answer(BaseModel):
    ok: bool


@server.tool()
async def echo(text: str) -> str:
    """Say it back."""
    return text


@server.tool()
async def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
async def seen_headers(ctx: Context) -> dict[str, Any]:
    """Every HTTP header of the request that carried this call."""
    return {k.lower(): v for k, v in (ctx.headers or {}).items()}


@server.tool()
async def credential(ctx: Context) -> str:
    """Echoes its own credential back (a careless server): the gateway must redact it."""
    headers = {k.lower(): v for k, v in (ctx.headers or {}).items()}
    return f"I was called with {headers.get('authorization', 'nothing')}"


@server.tool()
async def nap(seconds: float, label: str = "") -> str:
    """Sleep; if cancelled, remember the label."""
    try:
        await anyio.sleep(seconds)
    except anyio.get_cancelled_exc_class():
        cancelled.append(label)
        raise
    return "rested"


@server.tool()
async def request_id(ctx: Context) -> str:
    """The JSON-RPC id of the request that carried this call."""
    return repr(ctx.request_id)


@server.tool()
async def interrupted(ctx: Context) -> str:
    """Closes its own event stream before answering (the client must resume it to get the answer)."""
    await ctx.close_sse_stream()
    await anyio.sleep(0.5)
    return "answered after the stream was resumed"


@server.tool()
async def cancellations() -> list[str]:
    """The labels of the naps that were cancelled."""
    return list(cancelled)


@server.tool()
async def big(size: int) -> str:
    """A result of ``size`` characters."""
    return "x" * size


@server.tool()
async def ask_client(ctx: Context) -> str:
    """Tries to make the client sample an LLM (a server->client request)."""
    try:
        await ctx.elicit("may I?", schema=Answer)
    except Exception as exc:
        return f"refused: {exc}"
    return "the client answered"


@server.tool()
async def grow(ctx: Context, name: str) -> str:
    """Adds a tool named ``name`` and tells the client its tool list changed."""

    async def grown() -> str:
        return f"{name} is here"

    server.add_tool(grown, name=name, description="added at run time")
    await ctx.session.send_tool_list_changed()
    return "grown"


def main() -> None:
    """``PORT [MANY_EXTRA_TOOLS] [--json] [--resumable]`` (``--json``: JSON responses instead of
    SSE streams; ``--resumable``: its streams can be resumed, with a retry hint of 100 ms)."""
    json_response = "--json" in sys.argv
    resumable = "--resumable" in sys.argv
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    port = int(args[0])
    many = int(args[1]) if len(args) > 1 else 0
    schema = {"type": "object", "properties": {}}
    ListingServer.extra = [MCPTool(name=f"t{i:05d}", description="generated", input_schema=schema) for i in range(many)]
    if many:
        ListingServer.extra.append(MCPTool(name="x" * 127, description="too long once prefixed", input_schema=schema))
        ListingServer.extra.append(MCPTool(name="has space", description="not an MCP tool name", input_schema=schema))
    app = server.streamable_http_app(
        host="127.0.0.1",
        json_response=json_response,
        event_store=MemoryEventStore() if resumable else None,
        retry_interval=100 if resumable else None,
    )
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
