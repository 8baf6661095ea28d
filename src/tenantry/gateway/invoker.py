"""The invoker of upstream tools, resources and prompts: the dispatcher's seam (see
:mod:`tenantry.framework.invoker`).

Admission has already happened (grants, token, the upstream's own schema, limits) and the
outcome (size check, redaction of the tenant's secret values, audit, metrics) happens after,
exactly as for a native tool. A halt or a timeout cancels the awaiting task; the MCP client
session then sends ``notifications/cancelled`` for the request to the upstream.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

import mcp_types as types

from tenantry.core.upstreams import original_uri
from tenantry.framework.app import PromptDefinition, ResourceDefinition
from tenantry.framework.deadline import DeadlineExceeded, DeadlineWatch, Interrupted
from tenantry.framework.invoker import CallCancelled, Invocation, ToolTimedOut
from tenantry.gateway.errors import UpstreamUnavailable
from tenantry.gateway.gateway import Gateway
from tenantry.gateway.items import served_prompt_result, served_read_result

__all__ = ["UpstreamInvoker"]


class UpstreamInvoker:
    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway
        self._deadlines = DeadlineWatch()

    async def invoke(self, call: Invocation) -> Any:
        target = call.target
        if target.upstream is None:
            raise UpstreamUnavailable()
        spec = self._gateway.route(target.upstream)
        own_name = target.upstream_name or ""
        timeout = min(call.timeout, spec.call_timeout)
        tenant_id = call.context.tenant_id
        work: Coroutine[Any, Any, Any]
        if isinstance(target, ResourceDefinition):
            # The dispatcher matched the requested URI against this resource's exposed URI (or
            # template), which starts with this upstream's prefix: the rest is the upstream's own.
            uri = original_uri(spec.name, str(call.arguments.get("uri", "")))
            if uri is None:
                raise UpstreamUnavailable("the upstream serving this resource was removed")
            work = self._read(spec.name, self._gateway.read_resource(spec, tenant_id, uri))
        elif isinstance(target, PromptDefinition):
            work = self._prompt(spec.name, self._gateway.get_prompt(spec, tenant_id, own_name, call.arguments))
        else:
            work = self._gateway.call_tool(spec, tenant_id, own_name, call.arguments)
        return await self._bounded(work, timeout, tenant_id, target.name)

    async def complete(
        self,
        target: ResourceDefinition | PromptDefinition,
        tenant_id: str,
        argument: tuple[str, str],
        context_arguments: dict[str, str],
        within: float,
    ) -> types.CompleteResult:
        """Completions for one argument of an upstream's prompt or resource template, from the
        upstream, by the item's own name or URI template; bounded like a call (``within`` seconds at
        most, and the kill switch)."""
        if target.upstream is None:
            raise UpstreamUnavailable()
        spec = self._gateway.route(target.upstream)
        ref: types.PromptReference | types.ResourceTemplateReference
        if isinstance(target, PromptDefinition):
            ref = types.PromptReference(type="ref/prompt", name=target.upstream_name or "")
        else:
            own = original_uri(spec.name, target.uri)
            if own is None:
                raise UpstreamUnavailable("the upstream serving this resource was removed")
            ref = types.ResourceTemplateReference(type="ref/resource", uri=own)
        name, value = argument
        work = self._gateway.complete(spec, tenant_id, ref, {"name": name, "value": value}, context_arguments or None)
        result: types.CompleteResult = await self._bounded(
            work, min(within, spec.call_timeout), tenant_id, f"completing {target.name}"
        )
        return result

    async def _bounded(self, work: Coroutine[Any, Any, Any], seconds: float, tenant_id: str, what: str) -> Any:
        """``work`` within ``seconds``, cancelled by the tenant's kill switch."""
        try:
            return await self._deadlines.run(work, seconds, tag=tenant_id)
        except DeadlineExceeded:
            raise ToolTimedOut(f"{what} did not finish within {seconds:g}s") from None
        except Interrupted:
            raise CallCancelled() from None

    @staticmethod
    async def _read(upstream: str, read: Coroutine[Any, Any, Any]) -> Any:
        return served_read_result(upstream, await read)

    @staticmethod
    async def _prompt(upstream: str, get: Coroutine[Any, Any, Any]) -> Any:
        return served_prompt_result(upstream, await get)

    def cancel_tenant(self, tenant_id: str) -> int:
        return self._deadlines.interrupt(tenant_id)
