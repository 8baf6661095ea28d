"""``tenantry.ToolContext``: what a tool receives about its caller, and its scoped handles."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tenantry.framework.redaction import RedactingLogFilter

if TYPE_CHECKING:
    from tenantry.framework.channel import ClientChannel
    from tenantry.scoping.files.base import FileHandle
    from tenantry.scoping.secrets.base import SecretHandle
    from tenantry.scoping.sql.base import SqlHandle
    from tenantry.scoping.vectors.base import VectorHandle

__all__ = ["ToolContext", "ScopedHandles", "CallSecrets"]


class ScopedHandles:
    """Factories for one call's handles, already bound to its tenant (and prefix)."""

    def __init__(
        self,
        sql: Callable[[], SqlHandle],
        files: Callable[[], FileHandle],
        vectors: Callable[[], VectorHandle],
        secrets: Callable[[], SecretHandle],
    ) -> None:
        self.sql = sql
        self.files = files
        self.vectors = vectors
        self.secrets = secrets


class CallSecrets:
    """``ctx.secrets``: the tenant's secrets, remembering which values this call has read so
    the server can keep them out of the result and the tool's own log lines."""

    __slots__ = ("_handle", "read")

    def __init__(self, handle: SecretHandle) -> None:
        self._handle = handle
        self.read: list[str] = []

    def __repr__(self) -> str:
        return "CallSecrets(<values>)"

    async def get(self, name: str) -> str:
        """The secret's value. Pass it to the service it authenticates to; never return or log it.

        :raises NotFound: no secret of that name. :raises SecretsUnavailable: it cannot be decrypted.
        """
        value = await self._handle.get(name)
        self.read.append(value)
        return value

    async def names(self) -> list[str]:
        return await self._handle.names()


# ctx.log records are redacted whatever handlers the host configured (the server also puts the
# same filter on its handler, for every other logger a call uses).
_TOOL_LOGGER = logging.getLogger("tenantry.tool")
_TOOL_LOGGER.addFilter(RedactingLogFilter())


class ToolContext:
    """The caller of one tool call, as established by Tenantry from the verified credential.

    Handles are created on first use and can only reach the calling tenant's data:
    ``sql`` (``fetch``/``fetchone``/``execute``/``executemany``, ``?`` placeholders),
    ``files`` (``list``/``read_text``/``read_bytes``/``write_text``/``write_bytes``/``delete``),
    ``vectors`` (``upsert``/``search``/``delete``/``count``) and ``secrets`` (``get``/``names``;
    values never belong in a result or a log line, and are redacted from both if they get there).
    ``client`` talks back to the calling MCP client (progress, log notifications,
    elicitation, sampling, multi-round-trip answers); see
    :class:`~tenantry.framework.channel.ClientChannel`.
    """

    __slots__ = (
        "_files",
        "_handles",
        "_secrets",
        "_sql",
        "_vectors",
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
        self._handles = handles
        self._sql: SqlHandle | None = None
        self._files: FileHandle | None = None
        self._vectors: VectorHandle | None = None
        self._secrets: CallSecrets | None = None
        self.log = logging.LoggerAdapter(
            _TOOL_LOGGER,
            {"tenant_id": tenant_id, "session_id": session_id, "request_id": request_id, "tool": tool_name},
        )

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

    @property
    def vectors(self) -> VectorHandle:
        if self._vectors is None:
            self._vectors = self._handles.vectors()
        return self._vectors

    @property
    def secrets(self) -> CallSecrets:
        if self._secrets is None:
            self._secrets = CallSecrets(self._handles.secrets())
        return self._secrets

    def secrets_read(self) -> list[str]:
        """The secret values this call has read (for redaction; never for display)."""
        return [] if self._secrets is None else self._secrets.read

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
