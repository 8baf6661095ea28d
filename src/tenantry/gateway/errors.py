"""Errors of gateway mode (pinned in the error table test with every other code)."""

from __future__ import annotations

from tenantry.core.errors import TenantryError

__all__ = ["UpstreamUnavailable", "UpstreamError"]


class UpstreamUnavailable(TenantryError):
    """The upstream could not be reached, crashed, or is backing off after failures."""

    code = "upstream_unavailable"
    http_status = 503
    jsonrpc_code = -32015
    default_message = "The upstream MCP server is unavailable; try again later"


class UpstreamError(TenantryError):
    """The upstream answered the call with a protocol error (its message, redacted, is shown)."""

    code = "upstream_error"
    http_status = 502
    jsonrpc_code = -32016
    default_message = "The upstream MCP server returned an error"
