"""An upstream's progress and log notifications are dropped where they arrive (stdio lines, the
direct HTTP path's events), before the SDK's parsing and dispatch: a flood of them costs the
shared event loop one parse each. So are stdio lines that are not JSON-RPC
(the SDK session would ignore them after its own handling of each). Everything else still gets
through."""

from __future__ import annotations

import json
import sys

import anyio
import mcp_types as types
import pytest

from tenantry.gateway.ignored_notifications import is_ignored
from tenantry.gateway.transports import StderrTail, stdio_streams
from tests.unit.test_gateway_http_calls import HOST, Request, direct_calls, result, sse_answer, text_of, upstream

PROGRESS = {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": 1, "progress": 0.5}}
LOG = {"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": "line"}}
CHANGED = {"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}
# A request (it has an id) named like a dropped notification must still be seen, and answered.
REQUEST_NAMED_LIKE_ONE = {"jsonrpc": "2.0", "id": 5, "method": "notifications/progress", "params": {}}
ANSWER_QUOTING_ONE = {"jsonrpc": "2.0", "id": 1, "result": {"text": "notifications/progress"}}


def line(message: dict[str, object]) -> bytes:
    return json.dumps(message).encode()


def test_only_progress_and_log_notifications_are_ignored() -> None:
    def validated(message: dict[str, object]) -> object:
        return types.jsonrpc_message_adapter.validate_json(line(message), by_name=False)

    assert is_ignored(PROGRESS) and is_ignored(LOG) and is_ignored(validated(PROGRESS)) and is_ignored(validated(LOG))
    for kept in (CHANGED, REQUEST_NAMED_LIKE_ONE, ANSWER_QUOTING_ONE):  # positive controls
        assert not is_ignored(kept) and not is_ignored(validated(kept))
    assert not is_ignored([PROGRESS])  # a batch is not a notification


pytestmark = pytest.mark.anyio


async def first_messages(command: list[str], count: int) -> list[types.JSONRPCMessage]:
    """The first ``count`` messages a stdio upstream running ``command`` sends."""
    received: list[types.JSONRPCMessage] = []
    with anyio.fail_after(20):
        async with stdio_streams(command, {}, cwd=None, max_message=1 << 20, stderr=StderrTail()) as (read, _):
            async for message in read:
                assert not isinstance(message, Exception)
                received.append(message.message)
                if len(received) == count:
                    break
    return received


async def test_a_stdio_upstreams_progress_log_and_junk_lines_never_reach_the_session() -> None:
    flood = [json.dumps(m) for m in [PROGRESS, LOG] * 500]
    junk = ["this is not json", '{"jsonrpc": "2.0", "neither": "request nor answer"}'] * 100  # stray prints
    kept = [json.dumps(m) for m in (CHANGED, REQUEST_NAMED_LIKE_ONE, ANSWER_QUOTING_ONE)]
    script = "import sys\nfor text in sys.argv[1:]:\n    print(text, flush=True)\n"
    command = [sys.executable, "-c", script, *flood, *junk, *kept]
    received = await first_messages(command, 3)
    kinds = [(type(m).__name__, getattr(m, "method", None)) for m in received]
    assert kinds == [
        ("JSONRPCNotification", "notifications/tools/list_changed"),
        ("JSONRPCRequest", "notifications/progress"),
        ("JSONRPCResponse", None),
    ]


async def test_the_direct_http_path_drops_progress_and_log_events_and_keeps_the_rest() -> None:
    def chunks(request: Request) -> list[bytes]:
        flood = b"".join(b"event: message\r\ndata: " + line(m) + b"\r\n\r\n" for m in [PROGRESS, LOG] * 50)
        changed = b"event: message\r\ndata: " + line(CHANGED) + b"\r\n\r\n"
        return [flood, changed, b"event: message\r\ndata: " + result(request, "after the flood") + b"\r\n\r\n"]

    async with upstream(sse_answer(chunks)) as up, direct_calls(f"http://{HOST}:{up.port}/mcp") as calls:
        assert text_of(await calls.call()) == "after the flood"
    assert [type(n) for n in calls.notifications] == [types.ToolListChangedNotification]


async def test_a_long_line_written_in_pieces_and_short_lines_after_it_arrive_whole() -> None:
    # The long line in many small writes, then two short lines in a single write.
    script = (
        "import json, sys, time\n"
        "text = json.dumps({'jsonrpc': '2.0', 'id': 1, 'result': {'text': 'x' * 300_000}})\n"
        "for i in range(0, len(text), 4096):\n"
        "    sys.stdout.write(text[i : i + 4096]); sys.stdout.flush()\n"
        "sys.stdout.write('\\n' + sys.argv[1] + '\\n' + sys.argv[2] + '\\n'); sys.stdout.flush()\n"
        "time.sleep(5)\n"
    )
    command = [sys.executable, "-c", script, json.dumps(CHANGED), json.dumps(ANSWER_QUOTING_ONE)]
    received = await first_messages(command, 3)
    assert [type(m).__name__ for m in received] == ["JSONRPCResponse", "JSONRPCNotification", "JSONRPCResponse"]
    first = received[0]
    assert isinstance(first, types.JSONRPCResponse) and first.result == {"text": "x" * 300_000}
