"""The one place Tenantry errors become HTTP responses and JSON-RPC errors.

Expected errors reach the caller with their safe message and stable ``code``; anything
else becomes a generic internal error carrying only a reference, and its traceback goes
to the log.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from mcp.shared.exceptions import MCPError
from starlette.responses import Response

from tenantry.core.errors import InsufficientScope, InvalidCredential, RateLimited, TenantryError

__all__ = ["error_body", "error_response", "to_mcp_error", "unexpected_to_mcp_error"]

logger = logging.getLogger(__name__)


def error_body(error: TenantryError, request_id: Any = None) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "error": {"code": error.jsonrpc_code, "message": error.message, "data": error.to_dict()},
    }


def error_response(
    error: TenantryError,
    *,
    resource_metadata_url: str | None = None,
    request_id: Any = None,
    headers: dict[str, str] | None = None,
    scope: str | None = None,
) -> Response:
    """An HTTP response for ``error``: its status, a JSON-RPC error body, and the RFC 6750 /
    RFC 9728 ``WWW-Authenticate`` challenge for a 401 (with ``scope`` when given) and for the
    MCP authorization spec's step-up answer (403 ``insufficient_scope``, the scope it needs)."""
    extra = dict(headers or {})
    challenge: str | None = None
    if isinstance(error, InvalidCredential):
        description = error.message.replace('"', "'")
        challenge = f'Bearer error="invalid_token", error_description="{description}"'
        if scope:
            challenge += f', scope="{scope}"'
    elif isinstance(error, InsufficientScope):
        challenge = f'Bearer error="insufficient_scope", scope="{error.data.get("scope", "")}"'
    if challenge is not None:
        if resource_metadata_url:
            challenge += f', resource_metadata="{resource_metadata_url}"'
        extra["WWW-Authenticate"] = challenge
    if isinstance(error, RateLimited) and error.retry_after is not None:
        extra["Retry-After"] = str(error.retry_after)
    extra.setdefault("Cache-Control", "no-store")
    return Response(
        json.dumps(error_body(error, request_id), separators=(",", ":")),
        status_code=error.http_status,
        media_type="application/json",
        headers=extra,
    )


def to_mcp_error(error: TenantryError) -> MCPError:
    return MCPError(code=error.jsonrpc_code, message=error.message, data=error.to_dict())


def unexpected_to_mcp_error(exc: BaseException, *, request_id: str, context: dict[str, Any]) -> MCPError:
    logger.error("unexpected error while handling a request", exc_info=exc, extra={**context, "request_id": request_id})
    return MCPError(
        code=-32603,
        message=f"Internal error (reference {request_id})",
        data={"code": "internal_error", "reference": request_id},
    )
