"""The facts about one inbound request that every layer below the transport needs."""

from __future__ import annotations

from dataclasses import dataclass

from tenantry.core.identity import Principal

__all__ = ["Caller"]


@dataclass(slots=True)
class Caller:
    """A verified principal plus where and how its request arrived.

    Built on every request, so a plain (not frozen) dataclass; nothing mutates it.
    """

    principal: Principal
    request_id: str
    session_id: str | None = None
    """The MCP session (handshake era); ``None`` for sessionless requests and stdio."""
    client_address: str | None = None
    body_bytes: int = 0
    """Size of the request body that carried the call (large arguments are hashed off the loop)."""

    @property
    def audit_session(self) -> str:
        """Session id for audit records: the MCP session, else the token's ``jti`` (sessionless era)."""
        return self.session_id if self.session_id is not None else f"jti:{self.principal.token_id}"

    @property
    def tenant_id(self) -> str:
        return self.principal.tenant_id
