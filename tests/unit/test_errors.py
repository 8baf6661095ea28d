"""Error codes are a public contract: pin every one."""

from __future__ import annotations

import pytest

from tenantry.core import errors

EXPECTED = {
    "TenantryError": ("internal_error", 500, -32603),
    "InvalidCredential": ("invalid_credential", 401, -32001),
    "OriginNotAllowed": ("origin_not_allowed", 403, -32002),
    "TenantHalted": ("tenant_halted", 403, -32004),
    "SessionNotFound": ("session_not_found", 404, -32600),
    "ToolUnavailable": ("tool_unavailable", 404, -32602),
    "InvalidArguments": ("invalid_arguments", 400, -32602),
    "ScopeViolation": ("scope_violation", 403, -32003),
    "RequestRejected": ("invalid_request", 400, -32600),
    "PayloadTooLarge": ("payload_too_large", 413, -32600),
    "UnsupportedMediaType": ("unsupported_media_type", 415, -32600),
    "RequestTimeout": ("request_timeout", 408, -32600),
    "RateLimited": ("rate_limited", 429, -32005),
    "ConcurrencyLimited": ("concurrency_limited", 429, -32005),
    "QuotaExceeded": ("quota_exceeded", 429, -32005),
    "SessionLimitReached": ("session_limit", 429, -32005),
    "StorageQuotaExceeded": ("storage_quota_exceeded", 507, -32010),
    "ResultTooLarge": ("result_too_large", 502, -32011),
    "LimitsUnavailable": ("limits_unavailable", 503, -32012),
    "AuditUnavailable": ("audit_unavailable", 503, -32006),
    "StorageError": ("storage_unavailable", 503, -32007),
    "ToolFailed": ("tool_failed", 500, -32603),
    "QueryFailed": ("query_failed", 500, -32603),
    "SecretsUnavailable": ("secrets_unavailable", 503, -32009),
    "UsageError": ("usage_error", 400, -32602),
    "NotFound": ("not_found", 404, -32602),
    "AlreadyExists": ("already_exists", 409, -32602),
    "GrantRefused": ("grant_refused", 422, -32602),
}


def test_every_error_class_is_pinned() -> None:
    assert {cls.__name__ for cls in errors.ALL_ERRORS} == set(EXPECTED)


@pytest.mark.parametrize("cls", errors.ALL_ERRORS, ids=lambda c: c.__name__)
def test_error_code_status_and_jsonrpc_code_are_stable(cls: type[errors.TenantryError]) -> None:
    assert (cls.code, cls.http_status, cls.jsonrpc_code) == EXPECTED[cls.__name__]


def test_codes_are_unique() -> None:
    codes = [cls.code for cls in errors.ALL_ERRORS]
    assert len(codes) == len(set(codes))


def test_to_dict_carries_code_and_safe_message() -> None:
    error = errors.ScopeViolation("path is outside the prefix")
    assert error.to_dict() == {"code": "scope_violation", "message": "path is outside the prefix"}
