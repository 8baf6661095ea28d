"""Validation of the identifiers that cross trust boundaries: tenant ids, subjects, tool names."""

from __future__ import annotations

import re

from tenantry.core.errors import UsageError

__all__ = [
    "TENANT_ID_PATTERN",
    "TOOL_NAME_PATTERN",
    "validate_tenant_id",
    "validate_tool_name",
    "validate_subject",
    "is_valid_tenant_id",
    "is_valid_tool_name",
    "is_valid_subject",
]

# DNS-label shaped: safe as a directory name, a PostgreSQL identifier suffix and an S3 prefix.
TENANT_ID_PATTERN = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
# MCP tool names (SEP-986): 1-128 of ASCII letters, digits, '_', '-', '.'.
TOOL_NAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,128}")
_SUBJECT_MAX = 256


def is_valid_tenant_id(value: object) -> bool:
    return isinstance(value, str) and TENANT_ID_PATTERN.fullmatch(value) is not None


def is_valid_tool_name(value: object) -> bool:
    return isinstance(value, str) and TOOL_NAME_PATTERN.fullmatch(value) is not None


def validate_tenant_id(value: str) -> str:
    """Return ``value`` if it is a valid tenant id.

    :raises UsageError: when it is not (lowercase letters, digits and inner hyphens, at most 63).
    """
    if not is_valid_tenant_id(value):
        raise UsageError("tenant id must be 1-63 lowercase letters, digits or inner hyphens (like a DNS label)")
    return value


def validate_tool_name(value: str) -> str:
    """Return ``value`` if it is a valid MCP tool name.

    :raises UsageError: when it is not.
    """
    if not is_valid_tool_name(value):
        raise UsageError("tool name must be 1-128 ASCII letters, digits, '_', '-' or '.'")
    return value


def is_valid_subject(value: str) -> bool:
    return bool(value) and len(value) <= _SUBJECT_MAX and value.isprintable()


def validate_subject(value: str) -> str:
    """Return ``value`` if it is a usable subject (non-empty, printable, at most 256 chars).

    :raises UsageError: when it is not.
    """
    if not is_valid_subject(value):
        raise UsageError(f"subject must be 1-{_SUBJECT_MAX} printable characters")
    return value
