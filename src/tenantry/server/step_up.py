"""The MCP authorization spec's step-up answer for a ``tools/call`` the token does not cover.

A client whose token lacks the scope for a tool gets HTTP ``403`` with
``WWW-Authenticate: Bearer error="insufficient_scope", scope="...", resource_metadata="..."``
and can ask its authorization server for that scope, instead of a silent refusal.

The no-oracle rule (SPEC §3) decides *when*: only for a tool that is registered for and
granted to the caller's own tenant, where the token alone leaves it out, and only where the
token's issuer has a scope that grants it. A tool that does not exist, one registered for
other tenants only, and one the tenant is not granted all keep the one ``tool_unavailable``
answer, so a step-up never tells another tenant's tool apart from a name that means nothing;
what it reveals (the tenant has this tool) the caller's tenant already knows.
"""

from __future__ import annotations

from typing import Any

from mcp.shared.inbound import decode_header_value

from tenantry.auth.scopes import ScopeMap
from tenantry.core.calls import Caller
from tenantry.core.errors import InsufficientScope
from tenantry.framework.dispatcher import Dispatcher
from tenantry.server.headers import RequestHeaders

__all__ = ["StepUp"]


class StepUp:
    def __init__(self, dispatcher: Dispatcher, scopes: ScopeMap) -> None:
        self._dispatcher = dispatcher
        self._scopes = scopes

    async def refusal(
        self, caller: Caller, message: dict[str, Any], headers: RequestHeaders
    ) -> InsufficientScope | None:
        """The step-up refusal for this message (audited), or ``None`` to let it through.

        Routing headers that disagree with the body are left to the SDK, which refuses them.
        """
        if message.get("method") != "tools/call" or headers.get("mcp-method") not in (None, "tools/call"):
            return None
        params = message.get("params")
        if not isinstance(params, dict):
            return None
        name = params.get("name")
        routed = decode_header_value(headers.get("mcp-name"))
        if routed is not None and routed != name:
            return None
        principal = caller.principal
        if not isinstance(name, str) or name in principal.allowed_tools or principal.credential_kind != "jwt":
            return None
        scopes = self._scopes.scopes_for_tool(principal.issuer, name)
        if not scopes or not self._dispatcher.needs_step_up(caller, name):
            return None
        await self._dispatcher.record_step_up(caller, name, params.get("arguments"))
        return InsufficientScope(data={"scope": " ".join(scopes)})
