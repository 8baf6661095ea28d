"""The errors Tenantry raises on purpose.

Hierarchy::

    TenantryError                 root; code, http_status, jsonrpc_code, safe message
    +-- InvalidCredential         401: missing, malformed, expired, forged or revoked credential
    +-- OriginNotAllowed          403: browser Origin not on the allow-list
    +-- TenantHalted              403: the tenant's kill switch is on
    +-- InsufficientScope         403: a tool of the caller's own tenant its token does not cover (step-up)
    +-- SessionNotFound           404: unknown session, or a session owned by another principal
    +-- ToolUnavailable           same error for a tool that does not exist and one not granted
    +-- InvalidArguments          tool arguments do not match the tool's schema
    +-- ScopeViolation            a resource outside the tenant's partition or prefix
    +-- RequestRejected           malformed JSON-RPC, wrong content type, too deep, too large
    +-- RateLimited               429, with retry_after
    |   +-- ConcurrencyLimited    too many of the tenant's calls in flight
    |   +-- QuotaExceeded         the tenant's daily call quota is used up
    |   +-- SessionLimitReached   too many open sessions of the tenant
    +-- StorageQuotaExceeded      507: the tenant's file bytes or count quota is used up
    +-- ResultTooLarge            a result over the size limit
    +-- LimitsUnavailable         503: the rate-limit store (Redis) is down; fail closed
    +-- AuditUnavailable          503: the audit store cannot record; fail closed
    +-- StorageError              503: a data store failed (wraps driver errors)
    +-- SecretsUnavailable        503: the tenant's secrets cannot be decrypted (key shredded or wrong)
    +-- ToolFailed                the tool raised; the message is generic, the traceback is logged
    |   +-- QueryFailed           an invalid SQL statement in the tenant's own database
    +-- UsageError                a bad value given to the CLI or the API (not found, invalid id, ...)
    +-- NotFound, AlreadyExists   control-plane lookups
    +-- GrantRefused              a grant naming a tool no server serves, or one private to other tenants

Every message is safe to show to the caller who caused it: it never names another
tenant, another tenant's tool or any stored data. Codes are stable and never renamed.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "TenantryError",
    "InvalidCredential",
    "OriginNotAllowed",
    "TenantHalted",
    "InsufficientScope",
    "SessionNotFound",
    "ToolUnavailable",
    "InvalidArguments",
    "ScopeViolation",
    "RequestRejected",
    "PayloadTooLarge",
    "UnsupportedMediaType",
    "RequestTimeout",
    "RateLimited",
    "ConcurrencyLimited",
    "QuotaExceeded",
    "SessionLimitReached",
    "StorageQuotaExceeded",
    "ResultTooLarge",
    "LimitsUnavailable",
    "AuditUnavailable",
    "StorageError",
    "SecretsUnavailable",
    "ToolFailed",
    "QueryFailed",
    "UsageError",
    "NotFound",
    "AlreadyExists",
    "GrantRefused",
    "ALL_ERRORS",
    "driver_error_text",
]

# JSON-RPC 2.0 reserves -32768..-32000; -32099..-32000 is for implementation-defined server errors.
_INVALID_REQUEST = -32600
_INVALID_PARAMS = -32602
_INTERNAL_ERROR = -32603


class TenantryError(Exception):
    """Root of every error Tenantry raises on purpose.

    :param message: text safe to show to the caller; defaults to the class's message.
    :param data: extra, caller-safe structured detail for the JSON-RPC ``data`` member.
    """

    code: ClassVar[str] = "internal_error"
    http_status: ClassVar[int] = 500
    jsonrpc_code: ClassVar[int] = _INTERNAL_ERROR
    default_message: ClassVar[str] = "Internal error"

    def __init__(self, message: str | None = None, *, data: dict[str, Any] | None = None) -> None:
        self.message = message or self.default_message
        self.data = data or {}
        super().__init__(self.message)

    def to_dict(self) -> dict[str, Any]:
        """The body a client sees: stable code plus safe message."""
        return {"code": self.code, "message": self.message, **self.data}


class InvalidCredential(TenantryError):
    code = "invalid_credential"
    http_status = 401
    jsonrpc_code = -32001
    default_message = "A valid bearer credential is required"


class OriginNotAllowed(TenantryError):
    code = "origin_not_allowed"
    http_status = 403
    jsonrpc_code = -32002
    default_message = "Origin not allowed"


class TenantHalted(TenantryError):
    code = "tenant_halted"
    http_status = 403
    jsonrpc_code = -32004
    default_message = "The tenant is halted by an administrator"


class InsufficientScope(TenantryError):
    """A tool registered for and granted to the caller's tenant that the token does not cover.

    Only then: a tool that does not exist or is not granted to the tenant stays
    :class:`ToolUnavailable`, so the answer never tells another tenant's tools apart.
    """

    code = "insufficient_scope"
    http_status = 403
    jsonrpc_code = -32013
    default_message = "The token does not cover this tool; ask the authorization server for the scope named"


class SessionNotFound(TenantryError):
    code = "session_not_found"
    http_status = 404
    jsonrpc_code = _INVALID_REQUEST
    default_message = "Session not found"


class ToolUnavailable(TenantryError):
    code = "tool_unavailable"
    http_status = 404
    jsonrpc_code = _INVALID_PARAMS
    default_message = "Tool not available"


class InvalidArguments(TenantryError):
    code = "invalid_arguments"
    http_status = 400
    jsonrpc_code = _INVALID_PARAMS
    default_message = "Invalid tool arguments"


class ScopeViolation(TenantryError):
    code = "scope_violation"
    http_status = 403
    jsonrpc_code = -32003
    default_message = "Resource is outside this tenant's scope"


class RequestRejected(TenantryError):
    code = "invalid_request"
    http_status = 400
    jsonrpc_code = _INVALID_REQUEST
    default_message = "Invalid request"


class PayloadTooLarge(RequestRejected):
    code = "payload_too_large"
    http_status = 413
    default_message = "Request body too large"


class UnsupportedMediaType(RequestRejected):
    code = "unsupported_media_type"
    http_status = 415
    default_message = "Content-Type must be application/json"


class RequestTimeout(RequestRejected):
    code = "request_timeout"
    http_status = 408
    default_message = "The request body took too long to arrive"


class RateLimited(TenantryError):
    code = "rate_limited"
    http_status = 429
    jsonrpc_code = -32005
    default_message = "Rate limit exceeded"

    def __init__(self, message: str | None = None, *, retry_after: int | None = None) -> None:
        super().__init__(message, data=None if retry_after is None else {"retry_after": retry_after})
        self.retry_after = retry_after


class ConcurrencyLimited(RateLimited):
    code = "concurrency_limited"
    default_message = "Too many calls of this tenant are in flight; retry shortly"


class QuotaExceeded(RateLimited):
    code = "quota_exceeded"
    default_message = "The tenant's call quota for today is used up"


class SessionLimitReached(RateLimited):
    code = "session_limit"
    default_message = "The tenant has too many open sessions; close one or let it expire"


class StorageQuotaExceeded(TenantryError):
    code = "storage_quota_exceeded"
    http_status = 507
    jsonrpc_code = -32010
    default_message = "The tenant's storage quota is used up"


class ResultTooLarge(TenantryError):
    code = "result_too_large"
    http_status = 502
    jsonrpc_code = -32011
    default_message = "The result is larger than this deployment allows"


class LimitsUnavailable(TenantryError):
    code = "limits_unavailable"
    http_status = 503
    jsonrpc_code = -32012
    default_message = "The rate-limit store is unavailable; calls are refused until it is back"


class AuditUnavailable(TenantryError):
    code = "audit_unavailable"
    http_status = 503
    jsonrpc_code = -32006
    default_message = "The audit store is unavailable; the call was not run"


class StorageError(TenantryError):
    code = "storage_unavailable"
    http_status = 503
    jsonrpc_code = -32007
    default_message = "A data store is unavailable"


class SecretsUnavailable(TenantryError):
    code = "secrets_unavailable"
    http_status = 503
    jsonrpc_code = -32009
    default_message = "The tenant's secrets cannot be decrypted"


class ToolFailed(TenantryError):
    code = "tool_failed"
    http_status = 500
    jsonrpc_code = _INTERNAL_ERROR
    default_message = "The tool failed"


class QueryFailed(ToolFailed):
    code = "query_failed"
    default_message = "The query failed"


class UsageError(TenantryError):
    code = "usage_error"
    http_status = 400
    jsonrpc_code = _INVALID_PARAMS
    default_message = "Invalid value"


class NotFound(UsageError):
    code = "not_found"
    http_status = 404
    default_message = "Not found"


class AlreadyExists(UsageError):
    code = "already_exists"
    http_status = 409
    default_message = "Already exists"


class GrantRefused(UsageError):
    """Granting a name no published catalogue serves (without ``pending``), or one registered for
    other tenants only. Shown to an operator, who may know every tenant's tools."""

    code = "grant_refused"
    http_status = 422
    default_message = "Grant refused"


ALL_ERRORS: tuple[type[TenantryError], ...] = (
    TenantryError,
    InvalidCredential,
    OriginNotAllowed,
    TenantHalted,
    InsufficientScope,
    SessionNotFound,
    ToolUnavailable,
    InvalidArguments,
    ScopeViolation,
    RequestRejected,
    PayloadTooLarge,
    UnsupportedMediaType,
    RequestTimeout,
    RateLimited,
    ConcurrencyLimited,
    QuotaExceeded,
    SessionLimitReached,
    StorageQuotaExceeded,
    ResultTooLarge,
    LimitsUnavailable,
    AuditUnavailable,
    StorageError,
    SecretsUnavailable,
    ToolFailed,
    QueryFailed,
    UsageError,
    NotFound,
    AlreadyExists,
    GrantRefused,
)


def driver_error_text(exc: BaseException, limit: int = 200) -> str:
    """The first line of a database driver's error: enough to act on, without the connection
    string, query parameters or other detail the following lines may carry."""
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:limit]
