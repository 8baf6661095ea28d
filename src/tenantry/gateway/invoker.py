"""The invoker of upstream tools: the dispatcher's seam (see :mod:`tenantry.framework.invoker`).

Admission has already happened (grants, token, the upstream's own schema, limits) and the
outcome (size check, redaction of the tenant's secret values, audit, metrics) happens after,
exactly as for a native tool. A halt or a timeout cancels the awaiting task; the MCP client
session then sends ``notifications/cancelled`` for the request to the upstream.
"""

from __future__ import annotations

from typing import Any

from tenantry.framework.deadline import DeadlineExceeded, DeadlineWatch, Interrupted
from tenantry.framework.invoker import CallCancelled, Invocation, ToolTimedOut
from tenantry.gateway.errors import UpstreamUnavailable
from tenantry.gateway.gateway import Gateway

__all__ = ["UpstreamInvoker"]


class UpstreamInvoker:
    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway
        self._deadlines = DeadlineWatch()

    async def invoke(self, call: Invocation) -> Any:
        target = call.target
        if target.upstream is None:
            raise UpstreamUnavailable()
        spec, tool = self._gateway.route(target.name)
        timeout = min(call.timeout, spec.call_timeout)
        tenant_id = call.context.tenant_id
        try:
            return await self._deadlines.run(
                self._gateway.call_tool(spec, tenant_id, tool, call.arguments), timeout, tag=tenant_id
            )
        except DeadlineExceeded:
            raise ToolTimedOut(f"{target.name} did not finish within {timeout:g}s") from None
        except Interrupted:
            raise CallCancelled() from None

    def cancel_tenant(self, tenant_id: str) -> int:
        return self._deadlines.interrupt(tenant_id)
