"""``tenantry.ToolContext``: what a tool receives about its caller, and its scoped handles."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tenantry.framework.channel import ClientChannel
    from tenantry.scoping.files.base import FileHandle
    from tenantry.scoping.sql.base import SqlHandle

__all__ = ["ToolContext", "ScopedHandles"]


class ScopedHandles:
    """Factories for one call's handles, already bound to its tenant (and prefix)."""

    def __init__(self, sql: Callable[[], SqlHandle], files: Callable[[], FileHandle]) -> None:
        self.sql = sql
        self.files = files


class ToolContext:
    """The caller of one tool call, as established by Tenantry from the verified credential.

    Handles are created on first use and can only reach the calling tenant's data:
    ``sql`` (``fetch``/``fetchone``/``execute``/``executemany``, ``?`` placeholders) and
    ``files`` (``list``/``read_text``/``read_bytes``/``write_text``/``write_bytes``/``delete``).
    ``client`` talks back to the calling MCP client (progress, log notifications,
    elicitation, sampling, multi-round-trip answers); see
    :class:`~tenantry.framework.channel.ClientChannel`.
    """

    __slots__ = (
        "_files",
        "_handles",
        "_sql",
        "allowed_tools",
        "client",
        "log",
        "request_id",
        "resource_prefix",
        "session_id",
        "subject",
        "tenant_id",
        "tool_name",
    )

    def __init__(
        self,
        *,
        tenant_id: str,
        subject: str,
        session_id: str | None,
        request_id: str,
        tool_name: str,
        allowed_tools: frozenset[str],
        resource_prefix: str | None,
        handles: ScopedHandles,
        client: ClientChannel,
    ) -> None:
        self.tenant_id = tenant_id
        self.subject = subject
        self.session_id = session_id
        self.request_id = request_id
        self.tool_name = tool_name
        self.allowed_tools = allowed_tools
        """The capabilities this caller may use right now (token ∩ tenant grant ∩ registered)."""
        self.resource_prefix = resource_prefix
        self.client = client
        self.log = logging.LoggerAdapter(
            logging.getLogger("tenantry.tool"),
            {"tenant_id": tenant_id, "session_id": session_id, "request_id": request_id, "tool": tool_name},
        )
        self._handles = handles
        self._sql: SqlHandle | None = None
        self._files: FileHandle | None = None

    @property
    def sql(self) -> SqlHandle:
        if self._sql is None:
            self._sql = self._handles.sql()
        return self._sql

    @property
    def files(self) -> FileHandle:
        if self._files is None:
            self._files = self._handles.files()
        return self._files

    def __repr__(self) -> str:
        return f"ToolContext(tenant_id={self.tenant_id!r}, subject={self.subject!r}, tool={self.tool_name!r})"

    def describe(self) -> dict[str, Any]:
        return {
            "tenant_id": self.tenant_id,
            "subject": self.subject,
            "session_id": self.session_id,
            "allowed_tools": sorted(self.allowed_tools),
            "resource_prefix": self.resource_prefix,
        }
