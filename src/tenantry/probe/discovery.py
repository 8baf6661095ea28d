"""What each token can see: its tools, resources and prompts, and who the server says it is."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from tenantry.probe.wire import HandshakeSession, Reply, Wire

__all__ = ["View", "discover", "identity_of", "sample_arguments", "looks_mutating", "WHOAMI_NAMES", "TENANT_KEYS"]

WHOAMI_NAMES = ("whoami", "who_am_i", "get_identity", "identity", "me")
TENANT_KEYS = ("tenant_id", "tenantId", "tenant", "org_id", "orgId", "organization")
_MAX_PAGES = 20
_MUTATING_VERBS = (
    "write",
    "send",
    "delete",
    "remove",
    "create",
    "update",
    "set",
    "drop",
    "put",
    "post",
    "upload",
    "move",
    "rename",
    "purge",
    "reset",
    "pay",
    "transfer",
    "insert",
    "modify",
    "append",
    "execute",
    "run",
)


def looks_mutating(tool: dict[str, Any]) -> bool:
    """Whether calling ``tool`` may change something: its annotations say so, or (without
    annotations) its name starts with a verb that writes. The probe calls such tools as
    little as it can."""
    annotations = tool.get("annotations") or {}
    if annotations.get("readOnlyHint") is True:
        return False
    if annotations.get("destructiveHint") is True:
        return True
    name = str(tool.get("name", "")).lower()
    return name.split("_")[0] in _MUTATING_VERBS


@dataclass
class View:
    """One token's view of the deployment, through a handshake-era session."""

    token: str
    session: HandshakeSession | None
    initialize: Reply | None = None
    tools: dict[str, dict[str, Any]] = field(default_factory=dict)
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)
    prompts: dict[str, dict[str, Any]] = field(default_factory=dict)
    listed: bool = False
    """``tools/list`` was served (the positive control of every refusal this token gets)."""
    whoami: str | None = None
    identity: str | None = None
    """The tenant the whoami-like tool reported (or its whole answer, when it names none)."""
    tenant: str | None = None
    """The tenant as reported by the server, else the token's unverified ``tenant_id`` claim."""

    async def call(self, method: str, params: dict[str, Any] | None = None, **kwargs: Any) -> Reply:
        assert self.session is not None
        return await self.session.call(method, params, **kwargs)


async def _list(session: HandshakeSession, method: str, key: str, ident: str) -> tuple[bool, dict[str, dict[str, Any]]]:
    found: dict[str, dict[str, Any]] = {}
    cursor: str | None = None
    for _ in range(_MAX_PAGES):
        reply = await session.call(method, {"cursor": cursor} if cursor else {})
        if not reply.ok:
            return False, found
        assert reply.result is not None
        for item in reply.result.get(key, []):
            if isinstance(item, dict) and isinstance(item.get(ident), str):
                found[item[ident]] = item
        cursor = reply.result.get("nextCursor")
        if not cursor:
            break
    return True, found


def _structured(reply: Reply) -> Any:
    result = reply.result or {}
    if "structuredContent" in result:
        return result["structuredContent"]
    texts = [c.get("text") for c in result.get("content", []) if isinstance(c, dict) and c.get("type") == "text"]
    joined = "".join(t for t in texts if isinstance(t, str))
    try:
        return json.loads(joined)
    except ValueError:
        return joined


def identity_of(reply: Reply) -> str | None:
    """The tenant a whoami-like answer names; failing that, its whole answer without the
    fields that differ between calls of one principal (session, request, time)."""
    if not reply.ok:
        return None
    value = _structured(reply)
    if isinstance(value, dict):
        for key in TENANT_KEYS:
            if isinstance(value.get(key), str):
                return str(value[key])
        stable = {
            k: v for k, v in value.items() if not any(word in k.lower() for word in ("session", "request", "time"))
        }
        return json.dumps(stable, sort_keys=True)
    return json.dumps(value, sort_keys=True)


def sample_arguments(schema: dict[str, Any] | None) -> dict[str, Any]:
    """Values for a tool's required arguments, by JSON-schema type (enough to get past validation)."""
    schema = schema or {}
    properties = schema.get("properties", {})
    arguments: dict[str, Any] = {}
    for name in schema.get("required", []):
        spec = properties.get(name, {}) if isinstance(properties, dict) else {}
        if isinstance(spec.get("enum"), list) and spec["enum"]:
            arguments[name] = spec["enum"][0]
            continue
        kind = spec.get("type", "string")
        kind = kind[0] if isinstance(kind, list) and kind else kind
        arguments[name] = {"integer": 1, "number": 1, "boolean": False, "array": [], "object": {}}.get(
            str(kind), "probe"
        )
    return arguments


def _whoami_tool(tools: dict[str, dict[str, Any]]) -> str | None:
    for name in WHOAMI_NAMES:
        if name in tools and not tools[name].get("inputSchema", {}).get("required"):
            return name
    return next((n for n, t in tools.items() if "whoami" in n and not t.get("inputSchema", {}).get("required")), None)


async def discover(wire: Wire, token: str, claimed_tenant: str | None) -> View:
    """Open a session for ``token`` and list everything it may see."""
    session = await wire.open_session(token)
    view = View(token=token, session=session, tenant=claimed_tenant)
    if session is None:
        return view
    view.listed, view.tools = await _list(session, "tools/list", "tools", "name")
    # A server without resources or prompts answers "method not found": an empty view.
    _, view.resources = await _list(session, "resources/list", "resources", "uri")
    _, view.prompts = await _list(session, "prompts/list", "prompts", "name")
    view.whoami = _whoami_tool(view.tools)
    if view.whoami is not None:
        reply = await session.call("tools/call", {"name": view.whoami, "arguments": {}})
        view.identity = identity_of(reply)
        if view.identity is not None and not view.identity.startswith(("{", "[", '"')):
            view.tenant = view.identity
    return view
