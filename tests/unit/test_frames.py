"""The server-worker frame protocol: bounded frames, values and errors that survive the trip."""

from __future__ import annotations

import asyncio
import struct

import pytest
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult, TextContent

from tenantry.core.errors import QueryFailed, ScopeViolation, TenantryError, ToolFailed
from tenantry.framework.frames import (
    FrameTooLarge,
    decode_error,
    decode_value,
    encode_error,
    encode_frame,
    encode_value,
    read_frame,
)
from tenantry.framework.invoker import ToolTimedOut
from tenantry.framework.worker import WorkerCrashed

pytestmark = pytest.mark.anyio


def _reader(data: bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return reader


async def test_a_frame_round_trips() -> None:
    reader = _reader(encode_frame({"t": "call", "id": 1}, 1024) + encode_frame({"t": "halt"}, 1024))
    assert await read_frame(reader, 1024) == {"t": "call", "id": 1}
    assert await read_frame(reader, 1024) == {"t": "halt"}
    assert await read_frame(reader, 1024) is None  # a clean end of stream


async def test_an_oversized_frame_is_refused_from_its_header() -> None:
    with pytest.raises(FrameTooLarge):
        await read_frame(_reader(struct.pack(">I", 1025)), 1024)  # no body follows: it is never awaited
    with pytest.raises(FrameTooLarge):
        encode_frame({"text": "x" * 2000}, 1024)
    assert await read_frame(_reader(encode_frame({"text": "x" * 1000}, 1024)), 1024)  # positive control


async def test_a_truncated_frame_or_a_non_object_is_a_protocol_error() -> None:
    with pytest.raises(asyncio.IncompleteReadError):
        await read_frame(_reader(encode_frame({"t": "call"}, 1024)[:-2]), 1024)
    with pytest.raises(ValueError, match="JSON object"):
        await read_frame(_reader(struct.pack(">I", 2) + b"[]"), 1024)


@pytest.mark.parametrize(
    "value",
    ["text", b"\x00\xffbytes", ["a", b"b"], {"k": [1, 2.5, None]}, 7],
    ids=["str", "bytes", "list", "json", "int"],
)
def test_values_survive_the_trip(value: object) -> None:
    assert decode_value(encode_value(value)) == (list(value) if isinstance(value, list) else value)


def test_a_tool_result_model_survives_the_trip() -> None:
    result = CallToolResult(content=[TextContent(type="text", text="hi")], structured_content={"result": 1})
    assert decode_value(encode_value(result)) == result


@pytest.mark.parametrize(
    "error", [ScopeViolation("outside"), QueryFailed("bad sql"), ToolTimedOut("slow"), WorkerCrashed()]
)
def test_tenantry_errors_come_back_as_the_same_class_and_message(error: TenantryError) -> None:
    back = decode_error(encode_error(error), crash_message="crash")
    assert type(back) is type(error) and isinstance(back, TenantryError)
    assert (back.code, back.message) == (error.code, error.message)


def test_a_protocol_error_comes_back_as_one() -> None:
    back = decode_error(encode_error(MCPError(-32042, "needs elicitation", {"x": 1})), crash_message="crash")
    assert isinstance(back, MCPError) and (back.code, back.message, back.data) == (
        -32042,
        "needs elicitation",
        {"x": 1},
    )


def test_a_crash_carries_no_detail_across() -> None:
    encoded = encode_error(RuntimeError("secret detail in the message"))
    assert encoded == {"kind": "crash"}
    back = decode_error(encoded, crash_message="The tool failed (reference r1)")
    assert isinstance(back, ToolFailed) and back.message == "The tool failed (reference r1)"
    unknown = decode_error({"kind": "tenantry", "code": "no_such_code", "message": "m"}, crash_message="crash")
    assert isinstance(unknown, ToolFailed) and unknown.message == "m"
