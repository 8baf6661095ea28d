"""Tenantry: a multi-tenant MCP server and gateway that keeps tenants strictly apart.

The public API is loaded lazily so that admin commands start fast (the MCP SDK is heavy).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "App",
    "ToolContext",
    "ResourcePath",
    "ResourcePrefix",
    "FileEntry",
    "VectorDocument",
    "VectorMatch",
    "TenantryError",
    "InvalidArguments",
    "NotFound",
    "ScopeViolation",
    "UsageError",
]

_EXPORTS = {
    "App": "tenantry.framework.app",
    "ToolContext": "tenantry.framework.context",
    "ResourcePath": "tenantry.framework.markers",
    "ResourcePrefix": "tenantry.framework.markers",
    "FileEntry": "tenantry.scoping.files.base",
    "VectorDocument": "tenantry.scoping.vectors.base",
    "VectorMatch": "tenantry.scoping.vectors.base",
    "TenantryError": "tenantry.core.errors",
    "InvalidArguments": "tenantry.core.errors",
    "NotFound": "tenantry.core.errors",
    "ScopeViolation": "tenantry.core.errors",
    "UsageError": "tenantry.core.errors",
}

if TYPE_CHECKING:
    from tenantry.core.errors import InvalidArguments, NotFound, ScopeViolation, TenantryError, UsageError
    from tenantry.framework.app import App
    from tenantry.framework.context import ToolContext
    from tenantry.framework.markers import ResourcePath, ResourcePrefix
    from tenantry.scoping.files.base import FileEntry
    from tenantry.scoping.vectors.base import VectorDocument, VectorMatch


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tenantry' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
