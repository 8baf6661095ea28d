"""The invocation stage of the enforcement pipeline: where an admitted call actually runs.

The dispatcher reads as three stages (see :mod:`tenantry.framework.dispatcher`): admission
decides, an :class:`Invoker` runs, the outcome is redacted, audited and returned. Invokers
share one small contract, so the place a call runs can change without the checks around it
changing: in this process (:class:`InProcessInvoker`), and later an upstream MCP server
(gateway mode) or a dedicated worker process (premium tier).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from mcp_types import CompleteResult

from tenantry.core.errors import TenantryError
from tenantry.framework.app import PromptDefinition, ResourceDefinition, ToolDefinition
from tenantry.framework.context import ToolContext
from tenantry.framework.deadline import DeadlineExceeded, DeadlineWatch, Interrupted
from tenantry.framework.redaction import CALL_REDACTOR, SecretRedactor

__all__ = ["Invocation", "Invoker", "InProcessInvoker", "ToolTimedOut", "CallCancelled"]


class ToolTimedOut(TenantryError):
    code = "tool_timeout"
    http_status = 504
    jsonrpc_code = -32008
    default_message = "The tool did not finish in time"


class CallCancelled(TenantryError):
    code = "call_cancelled"
    http_status = 403
    jsonrpc_code = -32004
    default_message = "The tenant was halted by an administrator while the call ran; the call was cancelled"


@dataclass(slots=True)
class Invocation:
    """One admitted call: what runs, with which (validated) arguments, in which context, how long."""

    target: ToolDefinition | ResourceDefinition | PromptDefinition
    arguments: dict[str, Any]
    context: ToolContext
    timeout: float
    log_redactor: Callable[[], SecretRedactor]
    """Redacts the tenant's secret values from every log record made while the call runs."""
    standing: Callable[[], bool] = lambda: True
    """Whether the tenant may still run calls (not halted since admission). An invoker that awaits
    before it registers the call for :meth:`Invoker.cancel_tenant` (a worker starting) asks again
    after that await, so a halt in between is not missed."""


class Invoker(Protocol):
    """Runs admitted calls.

    ``invoke`` returns what the target returned (a tool's value is converted to an MCP result
    by the caller); it raises :class:`ToolTimedOut` when the call ran past ``timeout``,
    :class:`CallCancelled` when :meth:`cancel_tenant` cancelled it, any
    :class:`~tenantry.core.errors.TenantryError` or MCP protocol error the target raised on
    purpose, and whatever else the target raised (the caller treats that as a crash).
    """

    async def invoke(self, call: Invocation) -> Any: ...

    def cancel_tenant(self, tenant_id: str) -> int:
        """Cancel every call of ``tenant_id`` in flight (its kill switch); returns how many."""
        ...


class Completer(Protocol):
    """Asks whoever serves an item (an upstream, in gateway mode) for completions of one of its
    arguments: ``argument`` is its name and the partial value, ``context_arguments`` the values of
    the item's other arguments already chosen; it takes ``within`` seconds at most. Raises as :meth:`Invoker.invoke`."""

    async def complete(
        self,
        target: ResourceDefinition | PromptDefinition,
        tenant_id: str,
        argument: tuple[str, str],
        context_arguments: dict[str, str],
        within: float,
    ) -> CompleteResult: ...


class InProcessInvoker:
    """Runs the target's Python function in this process, under a cheap shared deadline sweep."""

    def __init__(self) -> None:
        self._deadlines = DeadlineWatch()

    async def invoke(self, call: Invocation) -> Any:
        target = call.target
        tenant_id = call.context.tenant_id
        token = CALL_REDACTOR.set(call.log_redactor)
        try:
            if isinstance(target, ToolDefinition):
                direct = {target.context_param: call.context} if target.context_param else None
                work = target.metadata.call_fn(target.fn, True, call.arguments, direct)
            else:
                kwargs = (
                    {**call.arguments, target.context_param: call.context} if target.context_param else call.arguments
                )
                work = target.fn(**kwargs)
            return await self._deadlines.run(work, call.timeout, tag=tenant_id)
        except DeadlineExceeded:
            raise ToolTimedOut(f"{target.name} did not finish within {call.timeout:g}s") from None
        except Interrupted:
            raise CallCancelled() from None
        finally:
            CALL_REDACTOR.reset(token)

    def cancel_tenant(self, tenant_id: str) -> int:
        return self._deadlines.interrupt(tenant_id)
