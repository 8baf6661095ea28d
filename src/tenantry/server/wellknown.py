"""Discovery and health endpoints: RFC 9728, RFC 8414, JWKS, liveness and readiness."""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tenantry.auth.keys import KeyRing
from tenantry.auth.scopes import ScopeMap
from tenantry.controlplane.directory import TenantDirectory
from tenantry.core.errors import TenantryError
from tenantry.runtime import Endpoints
from tenantry.server.oauth import JWT_BEARER_GRANT

ID_JAG_PROFILE = "urn:ietf:params:oauth:grant-profile:id-jag"

__all__ = ["discovery_routes", "health_routes"]

_CACHE_SHORT = {"Cache-Control": "public, max-age=60"}


def discovery_routes(
    endpoints: Endpoints,
    keys: KeyRing,
    *,
    signing_alg: str,
    jwt_bearer: bool = False,
    scopes: ScopeMap | None = None,
    registered: Callable[[], Collection[str]] = frozenset,
) -> list[Route]:
    """RFC 9728 metadata naming every authorization server whose tokens this resource accepts
    (the configured identity providers first, then the built-in issuer), RFC 8414 metadata of
    the built-in issuer, and its JWKS."""
    scope_map = scopes or ScopeMap(endpoints.issuer, ())

    async def protected_resource(_: Request) -> Response:
        body: dict[str, Any] = {
            "resource": endpoints.resource,
            "authorization_servers": scope_map.authorization_servers,
            "bearer_methods_supported": ["header"],
            "resource_signing_alg_values_supported": [signing_alg],
            "resource_name": "Tenantry MCP server",
            "jwks_uri": endpoints.jwks_uri,
        }
        supported = scope_map.supported(registered())
        if supported:
            body["scopes_supported"] = supported
        return JSONResponse(body, headers=_CACHE_SHORT)

    async def authorization_server(_: Request) -> Response:
        return JSONResponse(
            {
                "issuer": endpoints.issuer,
                "jwks_uri": endpoints.jwks_uri,
                "token_endpoint": endpoints.token_endpoint,
                "response_types_supported": [],
                "grant_types_supported": ["client_credentials", *([JWT_BEARER_GRANT] if jwt_bearer else [])],
                **({"authorization_grant_profiles_supported": [ID_JAG_PROFILE]} if jwt_bearer else {}),
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
                "token_endpoint_auth_signing_alg_values_supported": [signing_alg],
            },
            headers=_CACHE_SHORT,
        )

    async def jwks(_: Request) -> Response:
        try:
            body = keys.jwks()
        except TenantryError as exc:
            return JSONResponse({"error": exc.code, "error_description": exc.message}, status_code=503)
        return JSONResponse(body, headers=_CACHE_SHORT)

    return [
        Route("/.well-known/oauth-protected-resource", protected_resource, methods=["GET"]),
        Route("/.well-known/oauth-protected-resource/mcp", protected_resource, methods=["GET"]),
        Route("/.well-known/oauth-authorization-server", authorization_server, methods=["GET"]),
        Route("/.well-known/jwks.json", jwks, methods=["GET"]),
    ]


def health_routes(
    directory: TenantDirectory, keys: KeyRing, ready_checks: Callable[[], dict[str, bool]]
) -> list[Route]:
    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok"}, headers={"Cache-Control": "no-store"})

    async def readyz(_: Request) -> Response:
        checks = {"tenant_store": directory.healthy, **ready_checks()}
        try:
            keys.current()
            checks["signing_keys"] = True
        except TenantryError:
            checks["signing_keys"] = False
        ready = all(checks.values())
        return JSONResponse(
            {"status": "ready" if ready else "not_ready", "checks": checks},
            status_code=200 if ready else 503,
            headers={"Cache-Control": "no-store"},
        )

    return [Route("/healthz", healthz, methods=["GET"]), Route("/readyz", readyz, methods=["GET"])]
