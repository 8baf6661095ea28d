"""The bundle of scoped-handle factories one deployment hands to its tools."""

from __future__ import annotations

from dataclasses import dataclass

from tenantry.scoping.files.base import FileScopes
from tenantry.scoping.sql.base import SqlScopes

__all__ = ["DataScopes"]


@dataclass(frozen=True)
class DataScopes:
    """Every factory hands out handles bound to one tenant; there is no unscoped handle."""

    sql: SqlScopes
    files: FileScopes
