"""Nothing but the token sets the tenant: overrides in arguments, ``_meta``, params and
headers; and a session belongs to the principal that opened it, in both eras."""

from __future__ import annotations

from tenantry.probe.context import ProbeContext
from tenantry.probe.discovery import View, identity_of
from tenantry.probe.results import Status
from tenantry.probe.wire import Reply

__all__ = ["check_overrides", "check_hijack", "SPOOF_HEADERS"]

SPOOF_HEADERS = ("X-Tenant-Id", "Tenant-Id", "X-Tenant", "X-Org-Id", "X-Organization", "X-Forwarded-User")


def _keys(tenant: str) -> dict[str, str]:
    return {"tenant_id": tenant, "tenantId": tenant, "tenant": tenant, "org_id": tenant}


def _tools_listed(reply: Reply) -> frozenset[str] | None:
    if not reply.ok or reply.result is None:
        return None
    return frozenset(str(t.get("name")) for t in reply.result.get("tools", []) if isinstance(t, dict))


async def _attempts(ctx: ProbeContext, whoami: str, foreign: str) -> dict[str, tuple[str, Reply]]:
    """Each way of naming another tenant in a request, with the whoami-like tool's answer."""
    a = ctx.a
    headers = {name: foreign for name in SPOOF_HEADERS}
    attempts = {
        "override_arguments": ("tenant_id in tool arguments", await ctx.call_tool(a, whoami, _keys(foreign))),
        "override_meta": (
            "tenant_id in _meta",
            await a.call("tools/call", {"name": whoami, "arguments": {}, "_meta": _keys(foreign)}),
        ),
        "override_params": (
            "tenant_id beside the params",
            await a.call("tools/call", {"name": whoami, "arguments": {}, **_keys(foreign)}),
        ),
        "override_headers": (
            "X-Tenant-Id and similar headers",
            await ctx.call_tool(a, whoami, {}, headers=headers),
        ),
    }
    spoofed_session = await ctx.wire.open_session(a.token, headers)
    if spoofed_session is not None:
        reply = await spoofed_session.call("tools/call", {"name": whoami, "arguments": {}})
        attempts["override_session_headers"] = ("tenant headers on initialize", reply)
        await spoofed_session.close()
    if ctx.sessionless:
        params = {"name": whoami, "arguments": {}, "_meta": _keys(foreign)}
        reply = await ctx.wire.sessionless("tools/call", params, token=a.token, headers=headers)
        attempts["override_sessionless"] = ("tenant_id in _meta and headers, sessionless", reply)
    return attempts


async def check_overrides(ctx: ProbeContext) -> None:
    a, b = ctx.a, ctx.b
    foreign = ctx.other_tenant(a)
    if a.whoami is not None and a.identity is not None and b.identity is not None and a.identity != b.identity:
        control = f"{a.whoami} tells the tenants apart (A: {a.identity[:40]}, B: {b.identity[:40]})"
        for check_id, (what, reply) in (await _attempts(ctx, a.whoami, foreign)).items():
            got = identity_of(reply)
            status: Status
            if reply.refused:
                status, detail = "pass", f"refused ({reply.summary()})"
            elif got == a.identity:
                status, detail = "pass", "still reported as A's tenant"
            else:
                status, detail = "fail", f"reported as {got!r} instead of A's tenant"
            ctx.record(check_id, "tenant override", f"{what} does not change the tenant", status, detail, control)
        return
    await _override_by_tools(ctx, foreign)


async def _override_by_tools(ctx: ProbeContext, foreign: str) -> None:
    """Without a whoami-like tool that tells the tenants apart: what A is offered must not change."""
    a, b = ctx.a, ctx.b
    title = "tenant overrides do not change A's tools"
    same_identity = a.whoami is not None and a.identity is not None and a.identity == b.identity
    if frozenset(a.tools) == frozenset(b.tools):
        if same_identity:
            why = "the whoami-like tool reports the same tenant for A and B"
        else:
            why = "no whoami-like tool tells the tenants apart and both tokens see the same tools"
        ctx.record("override", "tenant override", title, "fail" if same_identity else "not_checked", why)
        return
    headers = {name: foreign for name in SPOOF_HEADERS}
    listing = await a.call("tools/list", {"_meta": _keys(foreign), **_keys(foreign)}, headers=headers)
    seen_tools = _tools_listed(listing)
    status: Status = "pass" if seen_tools is None or seen_tools == frozenset(a.tools) else "fail"
    detail = (
        "A's tool list is unchanged by tenant_id in params, _meta and headers"
        if status == "pass"
        else "A's tool list changed when another tenant was named in the request"
    )
    ctx.record("override_tools_list", "tenant override", title, status, detail, "A and B are offered different tools")


async def check_hijack(ctx: ProbeContext) -> None:
    """Session ownership; the attempts that may close a session (DELETE) come last."""
    a = ctx.a
    if a.session is None or ctx.b.session is None:
        ctx.record("hijack", "sessions", "sessions are bound to their principal", "not_checked", "no session opened")
        return
    if a.session.session_id is not None:
        method, params = _identity_call(a)
        alone = await a.session.call(method, params, token=None)
        control = await a.session.call(method, params)
        status: Status = "pass" if alone.refused and control.ok else "fail"
        detail = f"refused ({alone.summary()})" if alone.refused else "served without a credential"
        if not control.ok:
            detail += "; control failed: A cannot use its own session"
        ctx.record(
            "hijack_session_id_alone",
            "sessions",
            "a session id without a credential is refused",
            status,
            detail,
            "A's session with A's token is served",
        )
    await _sessionless_hijack(ctx)
    for owner, thief, letter, other in ((ctx.a, ctx.b, "A", "B"), (ctx.b, ctx.a, "B", "A")):
        await _handshake_hijack(ctx, owner, thief, letter, other)


def _identity_call(view: View) -> tuple[str, dict[str, object]]:
    return ("tools/call", {"name": view.whoami, "arguments": {}}) if view.whoami else ("tools/list", {})


async def _handshake_hijack(ctx: ProbeContext, owner: View, thief: View, letter: str, other: str) -> None:
    check_id = f"hijack_{other.lower()}_uses_{letter.lower()}"
    title = f"{other}'s token with {letter}'s session id is refused"
    if owner.session is None or owner.session.session_id is None:
        ctx.record(check_id, "sessions", title, "not_checked", "the server issues no Mcp-Session-Id (stateless)")
        return
    method, params = _identity_call(owner)
    hijack = await owner.session.call(method, params, token=thief.token)
    closing = await ctx.wire.delete(token=thief.token, headers=owner.session.headers())
    control = await owner.session.call(method, params)
    problems = []
    if hijack.ok:
        problems.append(f"served ({hijack.summary()})")
    if 200 <= closing.status < 300:
        problems.append(f"{other} closed {letter}'s session (DELETE {closing.status})")
    if not control.ok:
        problems.append(f"control failed: {letter} can no longer use its own session ({control.summary()})")
    ctx.conclude(
        check_id,
        "sessions",
        title,
        problems,
        f"refused ({hijack.summary()}); DELETE refused ({closing.status})",
        f"{letter} keeps using its session",
    )


async def _sessionless_hijack(ctx: ProbeContext) -> None:
    title = "sessionless era: a token with the other tenant's session id never acts as that tenant"
    if not ctx.sessionless:
        ctx.record("hijack_sessionless", "sessions", title, "not_checked", "the server does not serve 2026-07-28")
        return
    if any(v.session is None or v.session.session_id is None for v in (ctx.a, ctx.b)):
        ctx.record("hijack_sessionless", "sessions", title, "not_checked", "no session id to replay")
        return
    problems: list[str] = []
    seen: list[str] = []
    for owner, thief, letter, other in ((ctx.a, ctx.b, "A", "B"), (ctx.b, ctx.a, "B", "A")):
        assert owner.session is not None and owner.session.session_id is not None
        method, params = _identity_call(thief)
        replay = {"Mcp-Session-Id": owner.session.session_id}
        hijack = await ctx.wire.sessionless(method, params, token=thief.token, headers=replay)
        anonymous = await ctx.wire.sessionless(method, params, token=None, headers=replay)
        control = await ctx.wire.sessionless(method, params, token=thief.token)
        got = identity_of(hijack)
        if hijack.ok and thief.whoami and got is not None and got != thief.identity and got == owner.identity:
            problems.append(f"{other} was served as {letter}'s tenant")
        if hijack.ok and not thief.whoami and _tools_listed(hijack) == frozenset(owner.tools) != frozenset(thief.tools):
            problems.append(f"{other} was offered {letter}'s tools")
        if anonymous.ok:
            problems.append(f"served with {letter}'s session id and no credential")
        if not control.ok:
            problems.append(f"control failed: {other}'s own sessionless request is refused ({control.summary()})")
        seen.append(f"{other} stays {other} ({hijack.summary()})")
    ctx.conclude(
        "hijack_sessionless",
        "sessions",
        title,
        problems,
        "; ".join(seen) + "; without a credential: refused",
        "each token's own sessionless request is served",
    )
