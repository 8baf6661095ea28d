"""Error codes are a public contract: pin every one.

Every :class:`~tenantry.core.errors.TenantryError` subclass anywhere in the package is found
(all modules imported, ``__subclasses__`` walked), so a new error class fails these tests until
its ``code``, ``http_status`` and ``jsonrpc_code`` are pinned here.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

import tenantry
from tenantry.core import errors

EXPECTED = {
    "TenantryError": ("internal_error", 500, -32603),
    "InvalidCredential": ("invalid_credential", 401, -32001),
    "OriginNotAllowed": ("origin_not_allowed", 403, -32002),
    "TenantHalted": ("tenant_halted", 403, -32004),
    "InsufficientScope": ("insufficient_scope", 403, -32013),
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
    # Defined next to the code that raises them.
    "MisdirectedRequest": ("misdirected_request", 421, -32600),
    "MethodNotAllowed": ("method_not_allowed", 405, -32600),
    "NotAcceptable": ("not_acceptable", 406, -32600),
    "InvalidParams": ("invalid_params", 400, -32602),
    "ParseError": ("parse_error", 400, -32700),
    "ToolTimedOut": ("tool_timeout", 504, -32008),
    "CallCancelled": ("call_cancelled", 403, -32004),
    "WorkerCrashed": ("worker_crashed", 503, -32017),
    "WorkerUnavailable": ("worker_unavailable", 503, -32018),
    "ResourceNotFound": ("not_found", 404, -32602),  # NotFound's code: unknown and invisible look alike
    "UpstreamUnavailable": ("upstream_unavailable", 503, -32015),
    "UpstreamError": ("upstream_error", 502, -32016),
}


def all_error_classes() -> list[type[errors.TenantryError]]:
    """Every TenantryError subclass the package defines, after importing all of its modules."""
    for module in pkgutil.walk_packages(tenantry.__path__, "tenantry."):
        importlib.import_module(module.name)
    found: list[type[errors.TenantryError]] = []
    pending = [errors.TenantryError]
    while pending:
        cls = pending.pop()
        if cls.__module__.startswith("tenantry.") and cls not in found:
            found.append(cls)
        pending.extend(cls.__subclasses__())
    return sorted(found, key=lambda c: c.__name__)


ALL_CLASSES = all_error_classes()


def test_every_error_class_in_the_package_is_pinned() -> None:
    names = [cls.__name__ for cls in ALL_CLASSES]
    assert len(names) == len(set(names)), "two error classes share a name: the table cannot tell them apart"
    assert set(names) == set(EXPECTED)


def test_the_core_table_lists_every_core_error() -> None:
    core = {cls for cls in ALL_CLASSES if cls.__module__ == "tenantry.core.errors"}
    assert core == set(errors.ALL_ERRORS)


def test_discovery_finds_errors_outside_core() -> None:
    """Positive control: the walk reaches classes that live next to the code raising them."""
    modules = {cls.__name__: cls.__module__ for cls in ALL_CLASSES}
    assert modules["ToolTimedOut"] == "tenantry.framework.invoker"
    assert modules["NotAcceptable"] == "tenantry.server.guards"


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
def test_error_code_status_and_jsonrpc_code_are_stable(cls: type[errors.TenantryError]) -> None:
    assert (cls.code, cls.http_status, cls.jsonrpc_code) == EXPECTED[cls.__name__]


def test_codes_are_unique() -> None:
    """A class that sets its own code takes a new one; only a subclass that keeps its parent's shares it."""
    own = [cls.code for cls in ALL_CLASSES if "code" in vars(cls)]
    assert len(own) == len(set(own))


# JSON-RPC codes several errors share on purpose: a client reacts to them the same way.
SHARED_JSONRPC_CODES = {
    -32004: {"tenant_halted", "call_cancelled"},  # the kill switch, before or during the call
    -32005: {"rate_limited", "concurrency_limited", "quota_exceeded", "session_limit"},  # retry after retry_after
}


def test_server_range_jsonrpc_codes_tell_errors_apart() -> None:
    """Two errors defined on separate branches once took the same code: a client could not tell
    a crashed worker from an unreachable upstream or a missing scope."""
    owners: dict[int, set[str]] = {}
    for cls in ALL_CLASSES:
        if -32099 <= cls.jsonrpc_code <= -32000:
            owners.setdefault(cls.jsonrpc_code, set()).add(cls.code)
    shared = {code: names for code, names in owners.items() if len(names) > 1}
    assert shared == SHARED_JSONRPC_CODES


def test_jsonrpc_codes_are_standard_or_in_the_server_range() -> None:
    standard = {-32700, -32600, -32601, -32602, -32603}
    for cls in ALL_CLASSES:
        assert cls.jsonrpc_code in standard or -32099 <= cls.jsonrpc_code <= -32000, cls.__name__


# The OAuth token endpoint's errors are RFC 6749 codes (sections 4.1.2.1 and 5.2), pinned with their statuses.
OAUTH_ERRORS = {
    ("invalid_request", 400),
    ("invalid_request", 413),
    ("invalid_request", 429),
    ("invalid_client", 401),
    ("unsupported_grant_type", 400),
    ("access_denied", 403),
    ("invalid_scope", 400),
    ("invalid_grant", 400),  # a refused identity assertion (jwt-bearer grant)
    ("temporarily_unavailable", None),  # the status of the store error it wraps
    ("temporarily_unavailable", 503),  # the assertion ledger cannot tell whether it was used
}
RFC6749_CODES = {
    "invalid_request",
    "invalid_client",
    "invalid_grant",
    "unauthorized_client",
    "unsupported_grant_type",
    "invalid_scope",
    "access_denied",
    "unsupported_response_type",
    "server_error",
    "temporarily_unavailable",
}


def oauth_errors_raised() -> set[tuple[str, int | None]]:
    source = Path(tenantry.__file__).parent / "server" / "oauth.py"
    raised: set[tuple[str, int | None]] = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "OAuthError":
            code = node.args[0]
            assert isinstance(code, ast.Constant) and isinstance(code.value, str), ast.unparse(node)
            given = (
                node.args[2]
                if len(node.args) > 2
                else next((keyword.value for keyword in node.keywords if keyword.arg == "status"), None)
            )
            status: int | None = 400 if given is None else (given.value if isinstance(given, ast.Constant) else None)
            raised.add((code.value, status))
    return raised


def test_every_oauth_error_code_is_pinned_and_registered() -> None:
    raised = oauth_errors_raised()
    assert raised == OAUTH_ERRORS
    assert {code for code, _ in raised} <= RFC6749_CODES


def test_oauth_errors_are_frozen_data_whose_code_is_an_rfc_literal() -> None:
    import dataclasses
    import typing

    from tenantry.server.oauth import OAuthError, OAuthErrorCode

    assert set(typing.get_args(OAuthErrorCode)) <= RFC6749_CODES
    error = OAuthError("invalid_grant", "the assertion expired")
    with pytest.raises(dataclasses.FrozenInstanceError):
        error.error = "access_denied"  # type: ignore[misc]


def test_to_dict_carries_code_and_safe_message() -> None:
    error = errors.ScopeViolation("path is outside the prefix")
    assert error.to_dict() == {"code": "scope_violation", "message": "path is outside the prefix"}
