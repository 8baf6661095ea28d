"""Which of an upstream's tools, resources, resource templates and prompts become grantable, under
which names (and URIs), and which are reported instead.

Nothing is dropped silently: every item that is not exposed comes back as a :class:`Skipped`
with its kind and reason, which the server logs and publishes for ``tenantry upstream list``.
Tools, resources and prompts share one namespace of names (as native ones do), so the kinds are
mapped in that order and a later item whose name an earlier one took is a ``collision``.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Literal

from jsonschema import Draft202012Validator, SchemaError, validators
from mcp.shared.uri_template import InvalidUriTemplate, UriTemplate
from mcp_types import Prompt, Resource, ResourceTemplate, Tool

from tenantry.core.upstreams import MAX_EXPOSED_URI, exposed_name, exposed_uri

__all__ = ["Exposed", "ExposedItem", "Skipped", "SkipReason", "Kind", "map_tools", "map_items"]

SkipReason = Literal[
    "name_too_long",
    "invalid_name",
    "collision",
    "duplicate",
    "invalid_schema",
    "tool_limit",
    "uri_too_long",
    "invalid_uri",
    "uri_collision",
    "item_limit",
]
Kind = Literal["tool", "resource", "resource_template", "prompt"]

_NAME_CHARS = re.compile(r"[A-Za-z0-9_.-]+")
_REASONS: dict[SkipReason, str] = {
    "name_too_long": "the exposed name would be longer than 128 characters",
    "invalid_name": "the name has characters MCP tool names (and so grantable names) may not contain",
    "collision": "the exposed name is already taken by another tool, resource or prompt of this server",
    "duplicate": "the upstream listed this name twice",
    "invalid_schema": "the tool's inputSchema is not a valid JSON schema",
    "tool_limit": "the upstream lists more tools than its --max-tools limit",
    "uri_too_long": f"the exposed URI would be longer than {MAX_EXPOSED_URI} characters",
    "invalid_uri": "the resource's URI is empty or its template is not a valid RFC 6570 template",
    "uri_collision": "the exposed URI is already served by another resource of this server",
    "item_limit": "the upstream lists more items of this kind than its --max-tools limit",
}


@dataclass(frozen=True, slots=True)
class Exposed:
    name: str
    """The grantable name, ``<upstream>__<tool>``."""
    upstream_tool: str
    tool: Tool


@dataclass(frozen=True, slots=True)
class ExposedItem:
    """A resource, resource template or prompt of an upstream, as served."""

    kind: Kind
    name: str
    """The grantable name, ``<upstream>__<name>``."""
    upstream_name: str
    item: Resource | ResourceTemplate | Prompt
    uri: str | None = None
    """Resources and templates: the exposed URI (template), ``upstream://<upstream>/<its own>``."""
    template: UriTemplate | None = None


@dataclass(frozen=True, slots=True)
class Skipped:
    upstream_tool: str
    """The item's own name on the upstream (cut at 200 characters)."""
    reason: SkipReason
    kind: Kind = "tool"

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


def _item_uri(item: Resource | ResourceTemplate | Prompt) -> str | None:
    if isinstance(item, Resource):
        return item.uri
    if isinstance(item, ResourceTemplate):
        return item.uri_template
    return None


def map_items(
    upstream: str,
    kind: Kind,
    items: Sequence[Resource | ResourceTemplate | Prompt],
    taken: Collection[str],
    taken_uris: Collection[str],
    *,
    max_items: int,
) -> tuple[list[ExposedItem], list[Skipped]]:
    """Map an upstream's resources, templates or prompts (one ``kind``) to exposed items.

    :param taken: names registered by anything else (native capabilities, other upstreams, and
        this upstream's items of the kinds mapped before).
    :param taken_uris: resource URIs and templates registered by anything else.
    """
    exposed: list[ExposedItem] = []
    skipped: list[Skipped] = []
    seen: set[str] = set()
    seen_uris: set[str] = set()
    for index, item in enumerate(items):
        original = item.name[:200]
        if index >= max_items:
            skipped.append(Skipped(original, "item_limit", kind))
            continue
        if item.name in seen:
            skipped.append(Skipped(original, "duplicate", kind))
            continue
        seen.add(item.name)
        name = exposed_name(upstream, item.name)
        if name is None:
            too_long = _NAME_CHARS.fullmatch(item.name) is not None
            skipped.append(Skipped(original, "name_too_long" if too_long else "invalid_name", kind))
            continue
        if name in taken:
            skipped.append(Skipped(original, "collision", kind))
            continue
        own_uri = _item_uri(item)
        if own_uri is None:
            exposed.append(ExposedItem(kind, name, item.name, item))
            continue
        uri = exposed_uri(upstream, own_uri)
        template: UriTemplate | None = None
        reason: SkipReason | None = None
        if len(uri) > MAX_EXPOSED_URI:
            reason = "uri_too_long"
        elif not own_uri or any(c.isspace() for c in own_uri):
            reason = "invalid_uri"
        elif kind == "resource_template":
            try:
                template = UriTemplate.parse(uri)
            except InvalidUriTemplate:
                reason = "invalid_uri"
        if reason is None and (uri in taken_uris or uri in seen_uris):
            reason = "uri_collision"
        if reason is not None:
            skipped.append(Skipped(original, reason, kind))
            continue
        seen_uris.add(uri)
        exposed.append(ExposedItem(kind, name, item.name, item, uri, template))
    return exposed, skipped
