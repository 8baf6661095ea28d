"""A third-party MCP server over streamable HTTP for gateway tests: ``python -m tests.support.upstream_server PORT``.

It reports what it receives (headers, arguments, cancellations), so tests can prove what a
gateway does and does not pass on. Besides tools it serves resources, resource templates and a
prompt (some of which quote their own credential, as a careless server might). Imports nothing
from ``tenantry``.
"""

from __future__ import annotations

import base64
import sys
from typing import Annotated, Any, ClassVar

import anyio
import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.resources import FunctionResource
from mcp.server.streamable_http import EventCallback, EventMessage, EventStore
from mcp_types import (
    BlobResourceContents,
    CallToolResult,
    CompleteRequestParams,
    CompleteResult,
    Completion,
    EmbeddedResource,
    EmptyResult,
    ImageContent,
    JSONRPCMessage,
    PromptReference,
    ResourceLink,
    SubscribeRequestParams,
    TextResourceContents,
    UnsubscribeRequestParams,
)
from mcp_types import Resource as MCPResource
from mcp_types import Tool as MCPTool
from pydantic import BaseModel, Field


class ListingServer(MCPServer):
    """Can list many extra tools and resources (generated, never called) without registering each."""

    extra: ClassVar[list[MCPTool]] = []
    extra_resources: ClassVar[list[MCPResource]] = []

    async def list_tools(self) -> list[MCPTool]:
        return [*await super().list_tools(), *self.extra]

    async def list_resources(self) -> list[MCPResource]:
        return [*await super().list_resources(), *self.extra_resources]


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


def _authorization(ctx: Context) -> str:
    return {k.lower(): v for k, v in (ctx.headers or {}).items()}.get("authorization", "nothing")


@server.resource("notes://readme", name="readme", mime_type="text/markdown", description="A fixed note.")
async def readme() -> str:
    return "# the upstream's readme"


@server.resource("notes://by-topic/{topic}", name="topic_notes", mime_type="text/plain")
async def topic_notes(topic: str, ctx: Context) -> str:
    """Notes on a topic; careless: quotes its own credential."""
    return f"notes on {topic}; I was called with {_authorization(ctx)}"


@server.resource("notes://raw/{topic}", name="raw_notes", mime_type="application/octet-stream")
async def raw_notes(topic: str, ctx: Context) -> bytes:
    """The same, as bytes (a blob)."""
    return f"raw {topic}; I was called with {_authorization(ctx)}".encode()


@server.resource("naps://{label}", name="slow_notes")
async def slow_notes(label: str) -> str:
    """A resource that takes 30 s to read; if cancelled, remembers the label (see ``cancellations``)."""
    try:
        await anyio.sleep(30)
    except anyio.get_cancelled_exc_class():
        cancelled.append(label)
        raise
    return "read at last"


@server.resource("big://{size}", name="big_notes")
async def big_notes(size: str) -> str:
    """A resource of ``size`` characters."""
    return "x" * int(size)


@server.prompt()
async def summarise(topic: str, ctx: Context, style: str = "short") -> str:
    """Ask for a summary; careless: quotes its own credential."""
    return f"Summarise {topic} ({style}) for the holder of {_authorization(ctx)}"


@server.tool()
async def add_note(ctx: Context, name: str) -> str:
    """Adds a resource named ``name`` and tells the client its resource list changed."""

    async def note() -> str:
        return f"note {name}"

    server.add_resource(FunctionResource(uri=f"notes://added/{name}", name=name, fn=note))
    await ctx.session.send_resource_list_changed()
    return "noted"


subscription_log: list[list[str]] = []


@server.resource("notes://live", name="live_notes", mime_type="text/plain", description="Changes when touched.")
async def live_notes() -> str:
    return f"touched {len([e for e in subscription_log if e[0] == 'touched'])} times"


async def _subscribe(ctx: Any, params: SubscribeRequestParams) -> EmptyResult:
    subscription_log.append(["subscribe", str(params.uri), _authorization_of(ctx)])
    return EmptyResult()


async def _unsubscribe(ctx: Any, params: UnsubscribeRequestParams) -> EmptyResult:
    subscription_log.append(["unsubscribe", str(params.uri), _authorization_of(ctx)])
    return EmptyResult()


def _authorization_of(ctx: Any) -> str:
    headers = getattr(ctx.request, "headers", None) or {}
    return {k.lower(): v for k, v in headers.items()}.get("authorization", "nothing")


TOPICS = ["interviews", "inventory", "invoices", "payroll"]
completion_log: list[dict[str, Any]] = []


async def _complete(ctx: Any, params: CompleteRequestParams) -> CompleteResult:
    """Topics for the ``summarise`` prompt and the ``by-topic`` template: ``leak`` answers with the
    caller's credential (careless), ``many`` with 500 values."""
    ref = params.ref
    own = ref.name if isinstance(ref, PromptReference) else ref.uri
    context = params.context.arguments if params.context is not None else None
    completion_log.append({"ref": own, "argument": params.argument.name, "context": context})
    value = params.argument.value
    if value == "leak":
        return CompleteResult(completion=Completion(values=[f"topic of {_authorization_of(ctx)}"]))
    if value == "many":
        return CompleteResult(completion=Completion(values=[f"t{i}" for i in range(500)], total=500))
    return CompleteResult(completion=Completion(values=[t for t in TOPICS if t.startswith(value)]))


# The upstream advertises ``resources.subscribe`` and ``completions`` once it serves the methods.
server._lowlevel_server.add_request_handler("resources/subscribe", SubscribeRequestParams, _subscribe)
server._lowlevel_server.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams, _unsubscribe)
server._lowlevel_server.add_request_handler("completion/complete", CompleteRequestParams, _complete)


@server.tool()
async def shaped(code: Annotated[str, Field(pattern=r"^(a|a)*$", max_length=200)]) -> str:
    """Takes a code its schema describes with a careless pattern (catastrophic backtracking)."""
    return f"shaped {code}"


@server.tool()
async def pictured(ctx: Context) -> CallToolResult:
    """Its credential inside base64 (an image, and an embedded blob), and a plain image beside them."""
    hidden = base64.b64encode(f"token={_authorization(ctx)}".encode()).decode()
    return CallToolResult(
        content=[
            ImageContent(type="image", data=hidden, mime_type="image/png"),
            EmbeddedResource(type="resource", resource=BlobResourceContents(uri="notes://secret.bin", blob=hidden)),
            ImageContent(type="image", data=base64.b64encode(b"plain pixels").decode(), mime_type="image/png"),
        ]
    )


@server.tool()
async def attached(ctx: Context) -> list[Any]:
    """The same, returned as a list of content blocks (they land in its structured content too)."""
    hidden = base64.b64encode(f"token={_authorization(ctx)}".encode()).decode()
    return [
        EmbeddedResource(type="resource", resource=BlobResourceContents(uri="notes://secret.bin", blob=hidden)),
        ImageContent(type="image", data=hidden, mime_type="image/png"),
    ]


@server.tool()
async def linked() -> CallToolResult:
    """A link to its readme and the readme embedded, by the upstream's own URIs."""
    return CallToolResult(
        content=[
            ResourceLink(type="resource_link", uri="notes://readme", name="readme"),
            EmbeddedResource(type="resource", resource=TextResourceContents(uri="notes://readme", text="# Notes")),
        ]
    )


@server.tool()
async def completions() -> list[dict[str, Any]]:
    """Every completion request this server received (its own item, the argument, the context)."""
    return completion_log


@server.tool()
async def touch(ctx: Context, uri: str, times: int = 1) -> str:
    """Tells the calling session (only) that resource ``uri`` changed, ``times`` times."""
    for _ in range(times):
        subscription_log.append(["touched", uri, _authorization(ctx)])
        await ctx.session.send_resource_updated(uri)
    return "touched"


@server.tool()
async def subscriptions() -> list[list[str]]:
    """Every subscribe and unsubscribe this server received (method, URI, the caller's credential)."""
    return [e for e in subscription_log if e[0] != "touched"]


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
        ListingServer.extra_resources = [MCPResource(uri=f"gen://r/{i}", name=f"r{i:05d}") for i in range(many)]
        ListingServer.extra_resources.append(MCPResource(uri="gen://spaced", name="Has Space"))
        ListingServer.extra_resources.append(MCPResource(uri="gen://" + "y" * 2100, name="long_uri"))
    app = server.streamable_http_app(
        host="127.0.0.1",
        json_response=json_response,
        event_store=MemoryEventStore() if resumable else None,
        retry_interval=100 if resumable else None,
    )
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
