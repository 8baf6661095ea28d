"""One probe run: discover what each token sees, then every check, each beside its control."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import urlsplit

import httpx2

from tenantry.probe.access import check_cross_tenant, check_paths
from tenantry.probe.audit import check_audit
from tenantry.probe.context import ProbeContext, ProbeOptions
from tenantry.probe.credentials import check_credentials
from tenantry.probe.discovery import View, discover
from tenantry.probe.identity import check_hijack, check_overrides
from tenantry.probe.results import ProbeRun, Status
from tenantry.probe.tokens import split_jwt
from tenantry.probe.wire import Wire

__all__ = ["run_probe"]

_NEED_SESSIONS = ("cross-tenant", "scope", "tenant override", "sessions", "audit")


def _claimed_tenant(token: str) -> str | None:
    parts = split_jwt(token)
    if parts is None:
        return None
    claims = parts[1]
    value = next((claims[k] for k in ("tenant_id", "tid", "org_id", "tenant") if isinstance(claims.get(k), str)), None)
    return value


def _discovery_row(ctx: ProbeContext, view: View, letter: str) -> None:
    title = f"token {letter} is served (initialize, tools/list)"
    if view.session is None or not view.listed:
        ctx.record(f"discover_{letter.lower()}", "discovery", title, "fail", "refused: every control below fails")
        return
    detail = (
        f"{len(view.tools)} tools, {len(view.resources)} resources, {len(view.prompts)} prompts; "
        f"tenant {view.tenant or 'not reported'}; identity tool {view.whoami or 'none'}"
    )
    ctx.record(f"discover_{letter.lower()}", "discovery", title, "pass" if view.tools else "fail", detail)


def _tenants_row(ctx: ProbeContext) -> None:
    a, b = ctx.a, ctx.b
    title = "the two tokens are two tenants"
    if a.identity is not None and b.identity is not None:
        if a.identity == b.identity:
            ctx.record("tenants_distinct", "discovery", title, "fail", f"{a.whoami} reports one tenant for both")
        else:
            ctx.record("tenants_distinct", "discovery", title, "pass", f"{a.whoami}: {a.tenant} and {b.tenant}")
    elif a.tenant and b.tenant and a.listed and b.listed:
        status: Status = "pass" if a.tenant != b.tenant else "fail"
        ctx.record("tenants_distinct", "discovery", title, status, f"token claims: {a.tenant} and {b.tenant}")
    else:
        why = "the server does not serve both tokens" if not (a.listed and b.listed) else "no tenant is named"
        ctx.record("tenants_distinct", "discovery", title, "not_checked", why)


async def run_probe(options: ProbeOptions) -> ProbeRun:
    """Probe the deployment at ``options.url`` with two tenants' tokens.

    :raises ValueError: the URL is not http(s).
    """
    if urlsplit(options.url).scheme not in ("http", "https") or not urlsplit(options.url).netloc:
        raise ValueError(f"not an http(s) URL: {options.url!r}")
    run = ProbeRun(url=options.url)
    async with httpx2.AsyncClient(timeout=options.timeout, follow_redirects=False) as http:
        wire = Wire(options.url, http)
        a = await discover(wire, options.token_a, _claimed_tenant(options.token_a))
        b = await discover(wire, options.token_b, _claimed_tenant(options.token_b))
        ctx = ProbeContext(options=options, wire=wire, a=a, b=b, run=run)
        run.tenants = {"a": a.tenant, "b": b.tenant}
        _discovery_row(ctx, a, "A")
        _discovery_row(ctx, b, "B")
        _tenants_row(ctx)
        sessionless = await wire.sessionless("tools/list", {}, token=options.token_a)
        ctx.sessionless = sessionless.ok
        ctx.record(
            "era_sessionless",
            "discovery",
            "sessionless 2026-07-28 era",
            "pass" if sessionless.ok else "not_checked",
            "served: its checks run too" if sessionless.ok else f"not served ({sessionless.summary()})",
        )
        served = a.session is not None and b.session is not None
        if served:
            await check_cross_tenant(ctx)
            await check_paths(ctx)
            await check_overrides(ctx)
            await check_hijack(ctx)
        await check_credentials(ctx)
        if served:
            await check_audit(ctx)
        else:
            refused = " and ".join(letter for letter, v in (("A", a), ("B", b)) if v.session is None)
            for group in _NEED_SESSIONS:
                why = f"cannot be checked: token {refused} is refused, so no refusal has a positive control"
                ctx.record(f"{group}_unchecked", group, f"{group} checks", "fail", why)
        for view in (a, b):
            if view.session is not None:
                await view.session.close()
        run.exchanges = wire.exchanges
    run.finished = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return run
