"""What a tool may ask of the MCP client that called it (progress, logs, elicitation, sampling).

The transport provides the implementation; a tool sees only this Protocol through
``ctx.client``. Everything goes back to the caller's own connection, never anyone else's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from mcp_types import (
    ClientCapabilities,
    CreateMessageResult,
    ElicitResult,
    ListRootsResult,
    SamplingMessage,
)

from tenantry.core.errors import UsageError

__all__ = ["ClientChannel", "NoClientChannel"]


class ClientChannel(Protocol):
    """The calling client, for the duration of one request.

    ``elicit``, ``sample`` and ``list_roots`` send a request to the client and need a
    back-channel (handshake era with streaming responses); on the sessionless
    2026-07-28 era a tool returns an ``InputRequiredResult`` instead and reads the
    answers from ``input_responses`` on the retried call.

    :raises UsageError: when the connection cannot carry what was asked.
    """

    @property
    def capabilities(self) -> ClientCapabilities | None: ...

    @property
    def input_responses(self) -> Mapping[str, Any] | None: ...

    @property
    def request_state(self) -> str | None: ...

    async def report_progress(
        self, progress: float, total: float | None = None, message: str | None = None
    ) -> None: ...

    async def log(self, level: str, data: Any) -> None: ...

    async def elicit(self, message: str, schema: dict[str, Any]) -> ElicitResult: ...

    async def sample(self, messages: list[SamplingMessage], *, max_tokens: int) -> CreateMessageResult: ...

    async def list_roots(self) -> ListRootsResult: ...


class NoClientChannel:
    """The channel of a call with no client to talk back to (tests, internal calls)."""

    capabilities: ClientCapabilities | None = None
    input_responses: Mapping[str, Any] | None = None
    request_state: str | None = None

    async def report_progress(self, progress: float, total: float | None = None, message: str | None = None) -> None:
        return None

    async def log(self, level: str, data: Any) -> None:
        return None

    async def elicit(self, message: str, schema: dict[str, Any]) -> ElicitResult:
        raise UsageError("this call has no client channel to ask the user")

    async def sample(self, messages: list[SamplingMessage], *, max_tokens: int) -> CreateMessageResult:
        raise UsageError("this call has no client channel to sample from")

    async def list_roots(self) -> ListRootsResult:
        raise UsageError("this call has no client channel to list roots")
