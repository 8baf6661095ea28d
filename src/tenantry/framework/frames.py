"""The framed protocol between the server and a dedicated worker process.

A frame is a 4-byte big-endian length, then that many bytes of one UTF-8 JSON object. Both
ends refuse a frame over the agreed maximum before reading its body, so neither side can make
the other buffer without bound. Values that JSON cannot carry (tool results, errors) are
encoded by :func:`encode_value` / :func:`decode_value` and :func:`encode_error` /
:func:`decode_error`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import struct
from typing import Any

from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult, ErrorData, GetPromptResult, InputRequiredResult, PromptMessage, ReadResourceResult
from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from tenantry.core.errors import ALL_ERRORS, TenantryError, ToolFailed

__all__ = [
    "FrameTooLarge",
    "read_frame",
    "encode_frame",
    "encode_value",
    "decode_value",
    "encode_error",
    "decode_error",
]

_HEADER = struct.Struct(">I")
_MODELS: dict[str, type[BaseModel]] = {
    model.__name__: model
    for model in (CallToolResult, InputRequiredResult, ReadResourceResult, GetPromptResult, PromptMessage)
}


class FrameTooLarge(Exception):
    """A frame over the agreed maximum (the connection cannot be trusted past it)."""


def encode_frame(message: dict[str, Any], max_bytes: int) -> bytes:
    """:raises FrameTooLarge: the encoded message is larger than ``max_bytes``."""
    body = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()
    if len(body) > max_bytes:
        raise FrameTooLarge(f"a {len(body)} byte message is over the {max_bytes} byte frame limit")
    return _HEADER.pack(len(body)) + body


async def read_frame(reader: asyncio.StreamReader, max_bytes: int) -> dict[str, Any] | None:
    """The next message, or ``None`` at a clean end of stream.

    :raises FrameTooLarge: the announced length is over ``max_bytes`` (nothing more is read).
    :raises asyncio.IncompleteReadError: the stream ended inside a frame.
    :raises ValueError: the body is not a JSON object.
    """
    try:
        header = await reader.readexactly(_HEADER.size)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise
    (length,) = _HEADER.unpack(header)
    if length > max_bytes:
        raise FrameTooLarge(f"a {length} byte frame is over the {max_bytes} byte limit")
    message = json.loads(await reader.readexactly(length))
    if not isinstance(message, dict):
        raise ValueError("a frame must hold a JSON object")
    return message


def encode_value(value: Any) -> dict[str, Any]:
    """A tool's, resource's or prompt's return value as JSON (see :func:`decode_value`)."""
    if isinstance(value, BaseModel) and type(value).__name__ in _MODELS:
        return {"model": type(value).__name__, "data": value.model_dump(mode="json", by_alias=True, exclude_unset=True)}
    if isinstance(value, bytes):
        return {"bytes": base64.b64encode(value).decode()}
    if isinstance(value, str):
        return {"text": value}
    if isinstance(value, list | tuple):
        return {"list": [encode_value(item) for item in value]}
    return {"json": to_jsonable_python(value, by_alias=True, fallback=str)}


def decode_value(encoded: dict[str, Any]) -> Any:
    """:raises ValueError: not something :func:`encode_value` makes."""
    if "model" in encoded:
        model = _MODELS.get(encoded["model"])
        if model is None:
            raise ValueError("unknown result model")
        return model.model_validate(encoded["data"])
    if "bytes" in encoded:
        return base64.b64decode(encoded["bytes"])
    if "text" in encoded:
        return str(encoded["text"])
    if "list" in encoded:
        return [decode_value(item) for item in encoded["list"]]
    if "json" in encoded:
        return encoded["json"]
    raise ValueError("unknown value encoding")


def encode_error(exc: BaseException) -> dict[str, Any]:
    """What the other side needs to raise the same error: a :class:`TenantryError` by code, an
    MCP protocol error as itself, anything else as a crash (its detail stays in this process)."""
    if isinstance(exc, TenantryError):
        return {"kind": "tenantry", "code": exc.code, "message": exc.message, "data": exc.data}
    if isinstance(exc, MCPError):
        return {"kind": "mcp", "error": exc.error.model_dump(mode="json", exclude_none=True)}
    return {"kind": "crash"}


def _error_classes() -> dict[str, type[TenantryError]]:
    found: dict[str, type[TenantryError]] = {}
    pending: list[type[TenantryError]] = list(ALL_ERRORS)
    while pending:
        cls = pending.pop()
        found.setdefault(cls.code, cls)
        pending.extend(cls.__subclasses__())
    return found


def decode_error(encoded: dict[str, Any], *, crash_message: str) -> Exception:
    """The exception :func:`encode_error` described; ``crash_message`` for a crash (or anything
    unrecognised), as a :class:`ToolFailed`."""
    kind = encoded.get("kind")
    if kind == "tenantry":
        cls = _error_classes().get(str(encoded.get("code")), ToolFailed)
        error = cls.__new__(cls)  # subclasses may take other arguments; the message is the contract
        data = encoded.get("data")
        TenantryError.__init__(error, str(encoded.get("message") or ""), data=data if isinstance(data, dict) else None)
        return error
    if kind == "mcp":
        try:
            return MCPError.from_error_data(ErrorData.model_validate(encoded.get("error")))
        except ValueError:
            pass
    return ToolFailed(crash_message)
