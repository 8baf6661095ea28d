"""Which of an upstream's tools become grantable, under which names, and which are reported instead.

Nothing is dropped silently: every tool that is not exposed comes back as a :class:`Skipped`
with its reason, which the server logs and publishes for ``tenantry upstream list``.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Literal

from jsonschema import Draft202012Validator, SchemaError, validators
from mcp_types import Tool

from tenantry.core.upstreams import exposed_name

__all__ = ["Exposed", "Skipped", "SkipReason", "map_tools"]

SkipReason = Literal["name_too_long", "invalid_name", "collision", "duplicate", "invalid_schema", "tool_limit"]

_NAME_CHARS = re.compile(r"[A-Za-z0-9_.-]+")
_REASONS: dict[SkipReason, str] = {
    "name_too_long": "the exposed name would be longer than 128 characters",
    "invalid_name": "the tool's name has characters MCP tool names may not contain",
    "collision": "the exposed name is already taken by another tool of this server",
    "duplicate": "the upstream listed this tool name twice",
    "invalid_schema": "the tool's inputSchema is not a valid JSON schema",
    "tool_limit": "the upstream lists more tools than its --max-tools limit",
}


@dataclass(frozen=True, slots=True)
class Exposed:
    name: str
    """The grantable name, ``<upstream>__<tool>``."""
    upstream_tool: str
    tool: Tool


@dataclass(frozen=True, slots=True)
class Skipped:
    upstream_tool: str
    reason: SkipReason

    @property
    def explanation(self) -> str:
        return _REASONS[self.reason]


def _schema_ok(schema: object) -> bool:
    if not isinstance(schema, dict):
        return False
    try:
        validators.validator_for(schema, default=Draft202012Validator).check_schema(schema)
    except SchemaError:
        return False
    return True


def map_tools(
    upstream: str, tools: Sequence[Tool], taken: Collection[str], *, max_tools: int
) -> tuple[list[Exposed], list[Skipped]]:
    """Map an upstream's listing to exposed tools. ``taken``: names registered by anything else."""
    exposed: list[Exposed] = []
    skipped: list[Skipped] = []
    seen: set[str] = set()
    for index, tool in enumerate(tools):
        original = tool.name[:200]
        if index >= max_tools:
            skipped.append(Skipped(original, "tool_limit"))
            continue
        if tool.name in seen:
            skipped.append(Skipped(original, "duplicate"))
            continue
        seen.add(tool.name)
        name = exposed_name(upstream, tool.name)
        if name is None:
            too_long = _NAME_CHARS.fullmatch(tool.name) is not None
            skipped.append(Skipped(original, "name_too_long" if too_long else "invalid_name"))
        elif name in taken:
            skipped.append(Skipped(original, "collision"))
        elif not _schema_ok(tool.input_schema):
            skipped.append(Skipped(original, "invalid_schema"))
        else:
            exposed.append(Exposed(name, tool.name, tool))
    return exposed, skipped
