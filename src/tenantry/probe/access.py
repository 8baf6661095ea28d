"""Cross-tenant tools, resources and prompts; foreign prefixes and traversal in path arguments."""

from __future__ import annotations

import json
from typing import Any

from tenantry.probe.context import ProbeContext
from tenantry.probe.discovery import View, looks_mutating, sample_arguments
from tenantry.probe.results import Status
from tenantry.probe.wire import Reply

__all__ = ["check_cross_tenant", "check_paths", "PATH_ARGUMENTS"]

_MAX_NAMES = 5
PATH_ARGUMENTS = ("path", "file", "filename", "file_path", "filepath", "key", "prefix", "dir", "directory", "folder")


def _pair(ctx: ProbeContext, owner: View) -> tuple[View, str]:
    caller = ctx.b if owner is ctx.a else ctx.a
    return caller, ("B" if owner is ctx.b else "A")


async def _tool_direction(ctx: ProbeContext, owner: View) -> None:
    caller, letter = _pair(ctx, owner)
    other = "A" if letter == "B" else "B"
    check_id, title = f"cross_tools_{other.lower()}", f"{other} cannot call {letter}'s tools"
    foreign = sorted(set(owner.tools) - set(caller.tools))
    if not foreign:
        ctx.record(check_id, "cross-tenant", title, "not_checked", f"{letter} lists no tool that {other} does not")
        return
    # The owner's control really runs the tool: read-only ones first, at most one that writes.
    reading = [n for n in foreign if not looks_mutating(owner.tools[n])]
    foreign = (reading or foreign[:1])[:_MAX_NAMES]
    unknown = ctx.unknown_name()
    baseline = await ctx.call_tool(caller, unknown, {})
    problems: list[str] = []
    controls: list[str] = []
    for name in foreign:
        arguments = sample_arguments(owner.tools[name].get("inputSchema"))
        attempt = await ctx.call_tool(caller, name, arguments)
        if attempt.ok:
            problems.append(f"{name}: served to {other} ({attempt.summary()})")
        elif attempt.fingerprint(name) != baseline.fingerprint(unknown):
            problems.append(f"{name}: refused unlike an unknown tool (reveals that it exists)")
        control = await ctx.call_tool(owner, name, arguments)
        if control.fingerprint(name) == baseline.fingerprint(unknown):
            problems.append(f"{name}: control failed, {letter} (its owner) is refused it as if it did not exist")
        else:
            controls.append(name)
    ctx.conclude(
        check_id,
        "cross-tenant",
        title,
        problems,
        f"{len(foreign)} tool(s) refused exactly like an unknown tool: {', '.join(foreign)}",
        f"{letter} reaches its own tool(s): {', '.join(controls) or 'none'}",
    )


async def _named_direction(ctx: ProbeContext, owner: View, kind: str) -> None:
    caller, letter = _pair(ctx, owner)
    other = "A" if letter == "B" else "B"
    items = owner.resources if kind == "resources" else owner.prompts
    theirs = caller.resources if kind == "resources" else caller.prompts
    check_id, title = f"cross_{kind}_{other.lower()}", f"{other} cannot read {letter}'s {kind}"
    foreign = sorted(set(items) - set(theirs))[:_MAX_NAMES]
    if not foreign:
        ctx.record(
            check_id, "cross-tenant", title, "not_checked", f"{letter} lists no {kind[:-1]} that {other} does not"
        )
        return
    problems: list[str] = []
    for name in foreign:
        params: dict[str, Any]
        if kind == "resources":
            method, params = "resources/read", {"uri": name}
        else:
            arguments = {a["name"]: "probe" for a in items[name].get("arguments") or [] if a.get("required")}
            method, params = "prompts/get", {"name": name, "arguments": arguments}
        attempt = await caller.call(method, params)
        if attempt.ok:
            problems.append(f"{name}: served to {other}")
        control = await owner.call(method, params)
        if not control.ok:
            problems.append(f"{name}: control failed, {letter} (its owner) is refused ({control.summary()})")
    ctx.conclude(
        check_id,
        "cross-tenant",
        title,
        problems,
        f"{len(foreign)} {kind} refused: {', '.join(foreign)}",
        f"{letter} reads the same {kind}",
    )


async def check_cross_tenant(ctx: ProbeContext) -> None:
    for owner in (ctx.b, ctx.a):
        await _tool_direction(ctx, owner)
    for kind in ("resources", "prompts"):
        for owner in (ctx.b, ctx.a):
            await _named_direction(ctx, owner, kind)


# -- paths ----------------------------------------------------------------------------------


def _traversals(other: str) -> list[str]:
    return [
        f"../{other}/README.md",
        f"../../{other}/files/README.md",
        f"docs/../../{other}/README.md",
        "/etc/passwd",
        f"%2e%2e/{other}/README.md",
        f"..%2f{other}%2fREADME.md",
        f"..\\{other}\\README.md",
        "README.md\u0000.txt",
        f"\uff0e\uff0e/{other}/README.md",
        f"C:/{other}/README.md",
    ]


def _foreign_prefixes(other: str, own: str) -> list[str]:
    return [other, f"{other}/", f"tenants/{other}", f"{own}-evil", f"{other}-canary"]


def _path_argument(tool: dict[str, Any]) -> str | None:
    properties = (tool.get("inputSchema") or {}).get("properties") or {}
    for name in PATH_ARGUMENTS:
        spec = properties.get(name)
        if isinstance(spec, dict) and spec.get("type", "string") == "string":
            return name
    return None


def _strings(value: Any, keys: tuple[str, ...] = ("path", "name", "key", "file")) -> list[str]:
    found: list[str] = []
    if isinstance(value, dict):
        for k, v in value.items():
            if k in keys and isinstance(v, str):
                found.append(v)
            else:
                found.extend(_strings(v, keys))
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, str) and item and " " not in item and ("." in item or "/" in item):
                found.append(item)  # a listing of bare paths
            else:
                found.extend(_strings(item, keys))
    return found


def _leaks(reply: Reply, payload: str, other: str) -> bool:
    """A foreign-prefix answer that names the other tenant (beyond echoing the argument)."""
    text = json.dumps(reply.result or {}).replace(json.dumps(payload)[1:-1], "")
    return other in text


async def _own_paths(ctx: ProbeContext, tools: dict[str, str]) -> list[str]:
    """Relative paths A's own listings name (for the positive control of a path tool)."""
    paths: list[str] = []
    for name, argument in tools.items():
        if argument not in ("prefix", "dir", "directory", "folder"):
            continue
        reply = await ctx.call_tool(ctx.a, name, {})
        if reply.ok and reply.result is not None:
            paths += [p for p in _strings(reply.result.get("structuredContent", reply.result)) if ".." not in p]
    return [p for p in paths if not p.startswith("/")]


async def check_paths(ctx: ProbeContext) -> None:
    tools = {
        n: arg
        for n, t in sorted(ctx.a.tools.items())
        if (arg := _path_argument(t)) is not None and not looks_mutating(t)
    }
    if not tools:
        why = "A has no read-only tool with a path-like argument"
        ctx.record("paths", "scope", "path arguments stay in A's partition", "not_checked", why)
        return
    other, own = ctx.other_tenant(ctx.a), ctx.a.tenant or "a"
    known = await _own_paths(ctx, tools)
    for name, argument in list(tools.items())[:3]:
        schema = ctx.a.tools[name].get("inputSchema")
        base = sample_arguments(schema)
        problems: list[str] = []
        for payload in _traversals(other):
            reply = await ctx.call_tool(ctx.a, name, {**base, argument: payload})
            if reply.ok and (other in json.dumps(reply.result) or "root:" in json.dumps(reply.result)):
                problems.append(f"{payload!r} served data outside the partition")
            elif reply.ok and argument not in ("prefix", "dir", "directory", "folder"):
                problems.append(f"{payload!r} was not refused")
        for payload in _foreign_prefixes(other, own):
            reply = await ctx.call_tool(ctx.a, name, {**base, argument: payload})
            if reply.ok and _leaks(reply, payload, other):
                problems.append(f"{payload!r} listed the other tenant's data")
        required = argument in ((schema or {}).get("required") or [])
        control_args = {**base, argument: known[0]} if required and known else ({} if not required else None)
        control = None if control_args is None else await ctx.call_tool(ctx.a, name, control_args)
        title = f"{name}({argument}=...) stays in A's partition"
        if control is None or not control.ok:
            why = "no own path to try" if control is None else f"refused ({control.summary()})"
            status: Status = "fail" if problems or control is not None else "not_checked"
            detail = "; ".join(problems) or "every variant refused, but no positive control could be made"
            ctx.record(f"paths_{name}", "scope", title, status, detail, f"A's legitimate call: {why}")
            continue
        ctx.conclude(
            f"paths_{name}",
            "scope",
            title,
            problems,
            "10 traversal and 5 foreign-prefix variants refused or empty",
            "A's legitimate call served",
        )
