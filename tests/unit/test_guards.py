from __future__ import annotations

import json

import anyio
import pytest
from starlette.types import Message, Receive

from tenantry.core.errors import RequestTimeout
from tenantry.server.guards import json_depth_exceeds, read_checked_body
from tenantry.server.headers import RequestHeaders


def nested(depth: int) -> bytes:
    return ("[" * depth + "]" * depth).encode()


def test_depth_limit_counts_real_nesting() -> None:
    assert not json_depth_exceeds(nested(64), 64)
    assert json_depth_exceeds(nested(65), 64)
    assert json_depth_exceeds(('{"a":' * 100 + "1" + "}" * 100).encode(), 64)


def test_brackets_inside_strings_do_not_count() -> None:
    body = json.dumps({"text": "[" * 500 + '\\"' + "{" * 500}).encode()
    assert not json_depth_exceeds(body, 8)


def test_many_siblings_are_not_depth() -> None:
    assert not json_depth_exceeds(json.dumps([[1]] * 1000).encode(), 4)


def _trickle(chunks: list[bytes], pause: float) -> Receive:
    remaining = list(chunks)

    async def receive() -> Message:
        await anyio.sleep(pause)
        chunk = remaining.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(remaining)}

    return receive


_HEADERS = RequestHeaders([(b"content-type", b"application/json")])
_MESSAGE = b'{"jsonrpc": "2.0", "id": 1, "method": "ping"}'


@pytest.mark.anyio
async def test_a_body_trickled_past_the_deadline_is_refused_with_408() -> None:
    receive = _trickle([_MESSAGE[i : i + 4] for i in range(0, len(_MESSAGE), 4)], pause=0.05)
    with pytest.raises(RequestTimeout) as refused:
        await read_checked_body(receive, _HEADERS, max_bytes=1024, max_depth=8, within=0.2)
    assert refused.value.http_status == 408 and refused.value.code == "request_timeout"


@pytest.mark.anyio
async def test_a_body_in_time_is_read_whole() -> None:
    receive = _trickle([_MESSAGE[:10], _MESSAGE[10:]], pause=0.01)
    assert await read_checked_body(receive, _HEADERS, max_bytes=1024, max_depth=8, within=5) == _MESSAGE
