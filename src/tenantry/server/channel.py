"""The MCP SDK's request context, seen by a tool as a :class:`ClientChannel`."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.shared.exceptions import NoBackChannelError

from tenantry.core.errors import UsageError

__all__ = ["McpClientChannel"]

logger = logging.getLogger(__name__)

_NO_BACK_CHANNEL = "this connection cannot carry requests to the client; return an InputRequiredResult instead"

_LEVELS: frozenset[str] = frozenset({"debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"})


class McpClientChannel:
    """Talks back to the client on the request's own stream (never the standalone one)."""

    def __init__(self, ctx: ServerRequestContext[Any, Any], params: types.InputResponseRequestParams | None) -> None:
        self._ctx = ctx
        self._params = params

    @property
    def capabilities(self) -> types.ClientCapabilities | None:
        return self._ctx.session.client_capabilities

    @property
    def input_responses(self) -> Mapping[str, Any] | None:
        return None if self._params is None else self._params.input_responses

    @property
    def request_state(self) -> str | None:
        return None if self._params is None else self._params.request_state

    async def report_progress(self, progress: float, total: float | None = None, message: str | None = None) -> None:
        await self._ctx.session.report_progress(progress, total, message)

    async def log(self, level: str, data: Any) -> None:
        if level not in _LEVELS:
            raise UsageError(f"log level must be one of {', '.join(sorted(_LEVELS))}")
        await self._ctx.session.send_log_message(level, data, related_request_id=self._ctx.request_id)  # type: ignore[arg-type]

    async def elicit(self, message: str, schema: dict[str, Any]) -> types.ElicitResult:
        try:
            return await self._ctx.session.elicit_form(
                message,
                schema,
                related_request_id=self._ctx.request_id,
            )
        except NoBackChannelError:
            raise UsageError(_NO_BACK_CHANNEL) from None

    async def sample(self, messages: list[types.SamplingMessage], *, max_tokens: int) -> types.CreateMessageResult:
        try:
            return await self._ctx.session.create_message(
                messages, max_tokens=max_tokens, related_request_id=self._ctx.request_id
            )
        except NoBackChannelError:
            raise UsageError(_NO_BACK_CHANNEL) from None

    async def list_roots(self) -> types.ListRootsResult:
        try:
            return await self._ctx.session.list_roots()
        except NoBackChannelError:
            raise UsageError(_NO_BACK_CHANNEL) from None
