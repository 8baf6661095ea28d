"""The line protocol between a server and its audit writer process (pure functions, no I/O).

Server -> writer, one JSON array per line: ``[token, wait, fields]`` (``wait`` 1 when the sender
waits for the event to be durable; ``fields`` the event without its in-process ``principal``).
Writer -> server, one JSON object per line: ``{"ok": [tokens], "failed": [tokens]}`` once
events are durable (or are not: refused, or kept in the spill file), or ``{"available": bool}``
when the store starts or stops taking records. Compact JSON never holds a raw newline, so a
line is always one message.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import pydantic_core

from tenantry.audit.events import AuditEvent

__all__ = ["MAX_LINE", "STORE_URL_VARIABLE", "encode_event", "decode_event", "encode_reply", "decode_reply"]

STORE_URL_VARIABLE = "TENANTRY_AUDIT_WRITER_STORE"
"""The audit store's URL is handed to the writer in its environment, never on its command line."""

MAX_LINE = 1 << 20
"""An event is bounded long before this (see :class:`AuditEvent`); a longer line is a bug."""

_FIELDS = tuple(f.name for f in fields(AuditEvent) if f.name != "principal")


def encode_event(token: int, wait: bool, event: AuditEvent) -> bytes:
    values = {name: getattr(event, name) for name in _FIELDS}
    return pydantic_core.to_json([token, 1 if wait else 0, values]) + b"\n"


def decode_event(line: bytes) -> tuple[int, bool, AuditEvent]:
    """:raises ValueError: the line is not an event of this protocol."""
    try:
        token, wait, values = pydantic_core.from_json(line)
        event = AuditEvent(**{name: values[name] for name in _FIELDS if name in values})
    except (TypeError, KeyError) as exc:
        raise ValueError(f"not an audit event line: {exc}") from None
    if not isinstance(token, int) or wait not in (0, 1):
        raise ValueError("not an audit event line")
    return token, bool(wait), event


def encode_reply(reply: dict[str, Any]) -> bytes:
    return pydantic_core.to_json(reply) + b"\n"


def decode_reply(line: bytes) -> dict[str, Any]:
    """:raises ValueError: the line is not a reply of this protocol."""
    reply = pydantic_core.from_json(line)
    if not isinstance(reply, dict):
        raise ValueError("not an audit writer reply")
    return reply
