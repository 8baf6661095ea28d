"""Expired, forged, re-signed and tampered tokens derived from token A, in both eras."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import httpx2

from tenantry.probe.context import ProbeContext
from tenantry.probe.tokens import derived_tokens, split_jwt

__all__ = ["check_credentials", "fetch_jwks"]

_GROUPS = {
    "alg_none": "forged",
    "alg_none_upper": "forged",
    "random_key_same_kid": "forged",
    "random_key_own_kid": "forged",
    "embedded_jwk": "forged",
    "jku_header": "forged",
    "hs256_random_secret": "forged",
    "kid_swap": "re-signed",
    "hs256_public_key": "re-signed",
    "hs256_public_jwk": "re-signed",
    "tampered_tenant": "tampered",
    "tampered_tools": "tampered",
    "tampered_expiry": "tampered",
    "signature_stripped": "tampered",
}


async def fetch_jwks(http: httpx2.AsyncClient, url: str) -> dict[str, Any] | None:
    """The deployment's published keys: RFC 9728 metadata -> RFC 8414 metadata -> ``jwks_uri``,
    else ``/.well-known/jwks.json`` at the URL's origin. ``None`` when none is published."""
    parts = urlsplit(url)
    origin = f"{parts.scheme}://{parts.netloc}"
    candidates: list[str] = []
    try:
        resource = await http.get(f"{origin}/.well-known/oauth-protected-resource{parts.path}")
        servers = resource.json().get("authorization_servers", []) if resource.status_code == 200 else []
        for server in servers[:2]:
            meta = await http.get(f"{server.rstrip('/')}/.well-known/oauth-authorization-server")
            if meta.status_code == 200 and isinstance(meta.json().get("jwks_uri"), str):
                candidates.append(meta.json()["jwks_uri"])
    except (httpx2.HTTPError, ValueError, AttributeError):
        pass
    candidates.append(f"{origin}/.well-known/jwks.json")
    for candidate in candidates:
        try:
            reply = await http.get(candidate)
            document = reply.json() if reply.status_code == 200 else None
        except (httpx2.HTTPError, ValueError):
            continue
        if isinstance(document, dict) and isinstance(document.get("keys"), list):
            return document
    return None


async def _refused_everywhere(ctx: ProbeContext, token: str | None) -> list[str]:
    """Where ``token`` was served (empty when every era refused it)."""
    served: list[str] = []
    session = await ctx.wire.open_session(token)
    if session is not None:
        listing = await session.call("tools/list")
        served.append("handshake initialize" + (" and tools/list" if listing.ok else ""))
        await session.close()
    if ctx.sessionless:
        reply = await ctx.wire.sessionless("tools/list", {}, token=token)
        if reply.ok:
            served.append("sessionless tools/list")
    return served


def _control() -> str:
    return "token A itself is served"


async def check_credentials(ctx: ProbeContext) -> None:
    control_ok = ctx.a.listed
    control = _control() if control_ok else "token A itself is refused: no control"

    def record(id: str, title: str, served: list[str] | None, why: str = "") -> None:
        if served is None:
            ctx.record(id, "tokens", title, "not_checked", why)
        elif served:
            ctx.record(id, "tokens", title, "fail", "served: " + ", ".join(served), control)
        elif not control_ok:
            ctx.record(id, "tokens", title, "fail", "refused, but so is the genuine token", control)
        else:
            ctx.record(id, "tokens", title, "pass", "refused in every era", control)

    record("token_missing", "no credential is refused", await _refused_everywhere(ctx, None))
    record("token_garbage", "a garbage credential is refused", await _refused_everywhere(ctx, "probe.not.a-token"))
    if ctx.options.token_expired is None:
        record("token_expired", "an expired token is refused", None, "give --token-expired (e.g. issued with a 1s TTL)")
    else:
        record(
            "token_expired", "an expired token is refused", await _refused_everywhere(ctx, ctx.options.token_expired)
        )
    if split_jwt(ctx.options.token_a) is None:
        ctx.record("token_derived", "tokens", "tokens derived from A", "not_checked", "token A is not a JWT")
        return
    jwks = await fetch_jwks(ctx.wire.http, ctx.options.url)
    for variant, made in derived_tokens(ctx.options.token_a, other_tenant=ctx.other_tenant(ctx.a), jwks=jwks).items():
        title_group = _GROUPS[variant]
        if made is None:
            record(f"token_{variant}", f"{title_group}: {variant}", None, "the deployment publishes no JWKS")
            continue
        description, token = made
        record(f"token_{variant}", f"{title_group}: {description}", await _refused_everywhere(ctx, token))
