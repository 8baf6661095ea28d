"""The enforcement pipeline every tool call, resource read and prompt takes, whatever the transport.

Three stages, the same for tools, resources and prompts:

1. **Admission** (cheap, before any expensive work): the tenant exists and is not halted;
   the call fits the tenant's limits (rate with burst, daily quota, calls in flight); the
   name is registered for the tenant, granted to it and in the token (one error for every
   refusal, so nothing of another tenant's catalogue can be probed); the arguments match the
   schema exactly; arguments that name resources stay inside the tenant's partition and
   prefix. Every refusal is audited (refusals of a flood within a budget, then summarised).
2. **Invocation**: the call's start is made durable (fail closed: nothing runs that the
   audit cannot record), then an :class:`~tenantry.framework.invoker.Invoker` runs it with
   scoped handles and the tenant's timeout.
3. **Outcome**: the result is size-checked and redacted of the tenant's secret values, and
   its real outcome is audited with the next group commit.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import inspect
import logging
import time
import traceback
from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeVar

from mcp.shared.exceptions import MCPError
from mcp_types import (
    AudioContent,
    BlobResourceContents,
    CallToolResult,
    CompleteResult,
    Completion,
    EmbeddedResource,
    GetPromptResult,
    ImageContent,
    InputRequiredResult,
    Prompt,
    PromptArgument,
    PromptMessage,
    PromptReference,
    ReadResourceResult,
    Resource,
    ResourceTemplate,
    ResourceTemplateReference,
    TextContent,
    TextResourceContents,
    Tool,
)
from pydantic import BaseModel, ValidationError

from tenantry.audit.events import AuditEvent, EventType, ResultStatus, args_hash
from tenantry.audit.sink import AuditSink
from tenantry.controlplane.base import Tenant
from tenantry.controlplane.directory import ControlSnapshot, TenantDirectory
from tenantry.core.bounded import NAME_LIMIT, bounded_text
from tenantry.core.calls import Caller
from tenantry.core.effects import CALL_START, RESPONSE_WAITS, DurableStart
from tenantry.core.errors import (
    AuditUnavailable,
    InvalidArguments,
    NotFound,
    RateLimited,
    ResultTooLarge,
    ScopeViolation,
    SecretsUnavailable,
    TenantHalted,
    TenantryError,
    ToolFailed,
    ToolUnavailable,
)
from tenantry.core.limits import TenantLimits
from tenantry.core.paths import within_prefix
from tenantry.framework.app import App, PromptDefinition, ResourceDefinition, ToolDefinition
from tenantry.framework.channel import ClientChannel, NoClientChannel
from tenantry.framework.context import ScopedHandles, ToolContext
from tenantry.framework.invoker import CallCancelled, Completer, InProcessInvoker, Invocation, Invoker, ToolTimedOut
from tenantry.framework.redaction import RedactingChannel, SecretRedactor, TenantSecretValues
from tenantry.framework.views import TenantViews
from tenantry.framework.worker import WorkerUnavailable
from tenantry.policy.acl import decide_tool_call, effective_tools
from tenantry.ratelimit.pacing import RefusalPacer
from tenantry.ratelimit.record_budget import RecordBudget
from tenantry.ratelimit.tenant_limits import Slot, TenantLimiter
from tenantry.scoping.files.local import resolve_scoped_path
from tenantry.scoping.handles import DataScopes

__all__ = ["Dispatcher", "ToolTimedOut", "CallCancelled", "ResourceNotFound"]

logger = logging.getLogger(__name__)

_NO_CHANNEL = NoClientChannel()


_LARGE_ARGUMENTS = 16 * 1024
"""Request bodies above this many bytes have their arguments validated and hashed off the event
loop, in the tenant's own thread capacity."""
_DEFAULT_MAX_RESULT = 4 * 1024 * 1024


class ResourceNotFound(NotFound):
    """Unknown and not-visible resources are indistinguishable; ``data.uri`` echoes the request (SEP-2164)."""

    def __init__(self, uri: str) -> None:
        super().__init__("Resource not found", data={"uri": uri})


def _argument_error(exc: ValidationError) -> InvalidArguments:
    problems = []
    for error in exc.errors(include_input=False, include_url=False)[:5]:
        where = ".".join(str(part) for part in error["loc"]) or "arguments"
        problems.append(f"{where}: {error['msg']}")
    return InvalidArguments("invalid arguments: " + "; ".join(problems))


ToolOutcome = CallToolResult | InputRequiredResult
_Result = TypeVar("_Result", bound=BaseModel)


class Dispatcher:
    """:param tool_timeout: overrides every tenant's ``tool_timeout`` limit (tests).
    :param limiter: admission by per-tenant rate, quota and concurrency; ``None`` admits everything.
    :param invoker: where admitted calls run (default: in this process).
    :param upstream_invoker: where calls of upstream tools run (gateway mode).
    :param completer: who completes the arguments of upstream prompts and templates (gateway mode).
    :param dedicated: where dedicated-tier tenants' calls run (their own worker processes); without
        one, their calls are refused with ``worker_unavailable`` rather than run here.
    :param max_result_bytes: the largest result (as JSON) a call may return.
    :param views: lists each tenant's own view of per-tenant upstreams (gateway mode) before
        :meth:`prepare` lets one of its requests through.
    """

    def __init__(
        self,
        app: App,
        directory: TenantDirectory,
        scopes: DataScopes,
        audit: AuditSink,
        *,
        tool_timeout: float | None = None,
        limiter: TenantLimiter | None = None,
        invoker: Invoker | None = None,
        upstream_invoker: Invoker | None = None,
        completer: Completer | None = None,
        dedicated: Invoker | None = None,
        max_result_bytes: int = _DEFAULT_MAX_RESULT,
        refusal_budget: RecordBudget | None = None,
        refusal_pacer: RefusalPacer | None = None,
        start_before: Literal["effects", "tool"] = "effects",
        views: TenantViews | None = None,
    ) -> None:
        self._app = app
        self._views = views
        self._directory = directory
        self._scopes = scopes
        self._audit = audit
        self._tool_timeout = tool_timeout
        self._invoker: Invoker = invoker or InProcessInvoker()
        self._upstream_invoker = upstream_invoker
        self._completer = completer
        self._dedicated = dedicated
        self._limiter = limiter
        self._max_result = max_result_bytes
        self._refusals = refusal_budget or RecordBudget(per_source="60/minute", overall="6000/minute")
        self._pacer = refusal_pacer
        self._start_before = start_before
        self._registered: dict[str, frozenset[str]] = {}
        self._tool_models: dict[tuple[str, frozenset[str] | None], Tool] = {}
        """By name and the tenants it is registered for: an upstream's per-tenant view of one name
        differs from tenant to tenant, and one tenant's must never be served to another."""
        self._secret_values = TenantSecretValues(scopes.secrets)

    @property
    def app(self) -> App:
        return self._app

    def cancel_tenant_calls(self, tenant_id: str) -> int:
        """Cancel the tenant's tool calls, resource reads and prompts in flight (its kill switch);
        each ends with ``call_cancelled`` in its result and its audit record. Returns how many."""
        cancelled = self._invoker.cancel_tenant(tenant_id)
        if self._upstream_invoker is not None:
            cancelled += self._upstream_invoker.cancel_tenant(tenant_id)
        if self._dedicated is not None:
            cancelled += self._dedicated.cancel_tenant(tenant_id)
        return cancelled

    def _invoker_for(self, call: Invocation) -> Invoker:
        """Where one admitted call runs, chosen per call (a call in flight finishes where it started
        when its tenant moves): the tenant's own worker process (dedicated tier; for an upstream
        tool, only a command upstream's, which the worker runs as its child), its upstream MCP
        server through the gateway (gateway mode), else this process."""
        upstream = call.target.upstream
        if upstream is not None:
            if self._dedicated is not None and self._runs_in_worker(call.context.tenant_id, upstream):
                return self._dedicated
            if self._upstream_invoker is not None:
                return self._upstream_invoker
        tenant = self._directory.get(call.context.tenant_id)
        if tenant is not None and tenant.tier == "dedicated":
            if self._dedicated is None:
                raise WorkerUnavailable("this server runs no dedicated workers")
            return self._dedicated
        return self._invoker

    def runs_in_worker(self, tenant_id: str, upstream: str) -> bool:
        """Whether the tenant's calls of ``upstream`` run in its dedicated worker, not this process."""
        return self._runs_in_worker(tenant_id, upstream)

    def _runs_in_worker(self, tenant_id: str, upstream: str) -> bool:
        tenant = self._directory.get(tenant_id)
        if tenant is None or tenant.tier != "dedicated":
            return False
        spec = self._directory.snapshot.upstreams.get(upstream)
        return spec is not None and spec.transport == "stdio"

    def _standing(self, tenant_id: str) -> bool:
        tenant = self._directory.get(tenant_id)
        return tenant is not None and not tenant.halted

    async def _invoke(self, call: Invocation, start: DurableStart | None = None) -> Any:
        """Run an admitted call where it belongs.

        A halt can land after admission, while the call's start is being made durable; its
        cancellation only reaches calls already registered with an invoker. So the tenant's
        standing is read again here, and nothing awaits between this check and the invoker's
        registration of the call: a halt either finds the call registered or this check finds
        the halt (the directory changes before its listeners run).

        ``start`` (``[audit] start_before = "effects"``): the call's start, still being made
        durable. A Python coroutine here runs meanwhile, and its first effect through Tenantry
        waits for it (:func:`~tenantry.core.effects.before_effect`); anything else (an upstream,
        a worker, synchronous code, whose first step may be an effect) waits before it starts.
        Either way no result leaves before the start is durable, and if it cannot be recorded
        the call fails with ``audit_unavailable`` whatever the tool did.
        """
        invoker = self._invoker_for(call)
        if start is not None and not (invoker is self._invoker and _coroutine(call.target)):
            await start
        if not self._standing(call.context.tenant_id):
            raise CallCancelled()
        if start is None:
            return await invoker.invoke(call)
        token = CALL_START.set(start)
        try:
            try:
                value = await invoker.invoke(call)
            except Exception:
                await start  # a start that was not recorded wins over the tool's own error
                raise
            waits = RESPONSE_WAITS.get()
            if waits is not None and len(waits) < _MAX_RESPONSE_WAITS:
                waits.append(start)  # the response writer waits, just before it sends
            else:
                await start
            return value
        finally:
            CALL_START.reset(token)

    def catalogue_changed(self, tenants: frozenset[str] | None = None) -> None:
        """Forget what was derived from the app's registrations (tools that appeared or went): of
        ``tenants`` only (their own views changed), or of everyone (``None``)."""
        if tenants is None:
            self._registered.clear()
            self._tool_models.clear()
            return
        for tenant_id in tenants:
            self._registered.pop(tenant_id, None)
        for key in [k for k in self._tool_models if k[1] is not None and not k[1].isdisjoint(tenants)]:
            del self._tool_models[key]

    async def on_control_change(self, before: ControlSnapshot, after: ControlSnapshot) -> None:
        """A :data:`~tenantry.controlplane.directory.ChangeListener`: a newly halted tenant's
        calls in flight are cancelled."""
        for tenant in after.tenants.values():
            was = before.tenants.get(tenant.id)
            if tenant.halted and (was is None or not was.halted):
                cancelled = self.cancel_tenant_calls(tenant.id)
                logger.warning(
                    "tenant halted; its calls in flight were cancelled",
                    extra={"tenant_id": tenant.id, "cancelled": cancelled},
                )

    # -- visibility -------------------------------------------------------------------------

    def needs_prepare(self, caller: Caller) -> bool:
        """Whether :meth:`prepare` has work to do before this caller's request is served."""
        if self._views is None:
            return False
        tenant = self._directory.get(caller.tenant_id)
        return tenant is not None and not tenant.halted and not self._views.views_current(tenant)

    async def prepare(self, caller: Caller) -> None:
        """Make the caller's tenant's own catalogue current (its views of per-tenant upstreams,
        listed through its own sessions). A halted or unknown tenant lists nothing."""
        tenant = self._directory.get(caller.tenant_id)
        if self._views is not None and tenant is not None and not tenant.halted:
            await self._views.load_views(tenant)

    def _registered_for(self, tenant_id: str) -> frozenset[str]:
        names = self._registered.get(tenant_id)
        if names is None:
            names = self._app.registered_for(tenant_id)
            if len(self._registered) > 100_000:
                self._registered.clear()
            self._registered[tenant_id] = names
        return names

    def _live_tenant(self, caller: Caller) -> Tenant:
        tenant = self._directory.get(caller.tenant_id)
        if tenant is None:
            raise ToolUnavailable("Tool not available")
        if tenant.halted:
            raise TenantHalted()
        return tenant

    def visible(self, caller: Caller) -> frozenset[str]:
        """Capability names this caller may use now."""
        tenant = self._live_tenant(caller)
        return effective_tools(caller.principal, tenant.grants, self._registered_for(tenant.id))

    def list_tools(self, caller: Caller) -> list[Tool]:
        visible = self.visible(caller)
        tools = self._app.tools_for(caller.tenant_id)
        return [self._tool_model(tool) for name, tool in sorted(tools.items()) if name in visible]

    def tool_input_schema(self, caller: Caller, name: str) -> dict[str, Any] | None:
        """The schema of ``name`` if this caller may see it; ``None`` otherwise (reveals nothing)."""
        try:
            visible = self.visible(caller)
        except TenantryError:
            return None
        tool = self._app.tools_for(caller.tenant_id).get(name)
        return tool.input_schema if tool is not None and name in visible else None

    def _tool_model(self, tool: ToolDefinition) -> Tool:
        key = (tool.name, tool.tenants)
        model = self._tool_models.get(key)
        if model is None:
            model = Tool(
                name=tool.name,
                title=tool.title,
                description=tool.description,
                input_schema=tool.input_schema,
                output_schema=tool.metadata.output_schema,
                annotations=tool.annotations,
            )
            self._tool_models[key] = model
        return model

    def needs_step_up(self, caller: Caller, name: str) -> bool:
        """Whether ``name`` is registered for and granted to the caller's own tenant, and only its
        token leaves it out: the one refusal that may say "ask for more scope". A tool that does
        not exist, or exists only for other tenants, or is not granted, answers ``False`` alike."""
        tenant = self._directory.get(caller.tenant_id)
        if tenant is None or tenant.halted or name not in self._app.tools_for(tenant.id):
            return False
        decision = decide_tool_call(name, caller.principal, tenant.grants, self._registered_for(tenant.id))
        return decision.reason == "not_in_token"

    async def record_step_up(self, caller: Caller, name: str, arguments: Any) -> None:
        """Audit a call refused with a step-up challenge (handler not run)."""
        started = time.perf_counter()
        hashed = await self._hash(caller, arguments)
        await self._record(
            caller, "tool_denied", "denied", name, hashed, started, reason="not_in_token", detail={"step_up": True}
        )

    # -- tools/call -------------------------------------------------------------------------

    async def call_tool(
        self,
        caller: Caller,
        name: str,
        arguments: Mapping[str, Any] | None,
        channel: ClientChannel | None = None,
    ) -> ToolOutcome:
        """Run one tool call through the pipeline.

        :raises ToolUnavailable: unknown or not granted (indistinguishable), handler not run.
        :raises TenantHalted: the tenant's kill switch is on.
        :raises RateLimited: over one of the tenant's limits (``retry_after`` in the data).
        :raises InvalidArguments: arguments do not match the schema, handler not run.
        :raises ScopeViolation: a resource argument leaves the tenant's partition or prefix.
        :raises AuditUnavailable: the audit store cannot record (handler not run), or failed while
            the handler ran (the result is withheld; ``data.ran`` says so).
        :raises MCPError: a protocol error the tool raised on purpose (e.g. a missing client capability).
        """
        started = time.perf_counter()
        # -- admission
        tenant = await self._admit_tenant(caller, "tool_denied", name, arguments, started)
        limits = self._directory.limits(tenant.id)
        slot = await self._admit_limits(caller, limits, "tool_denied", name, arguments, started)
        try:
            tool = self._app.tools_for(tenant.id).get(name)
            decision = decide_tool_call(name, caller.principal, tenant.grants, self._registered_for(tenant.id))
            if tool is None or not decision.allowed:
                hashed = await self._hash(caller, arguments)
                await self._record(
                    caller, "tool_denied", "denied", name, hashed, started, reason=decision.reason or "not_registered"
                )
                raise ToolUnavailable(f"Tool not available: {bounded_text(name, NAME_LIMIT)}")
            try:
                # Validating a 1 MiB of floats takes ~0.5 s; an upstream's patterns up to their budget.
                if caller.body_bytes > _LARGE_ARGUMENTS or tool.validate_off_loop:
                    kwargs, names_other_tenant = await self._scopes.bulkheads.run(
                        lambda: self._validated_arguments(tool, arguments, caller), tenant_id=caller.tenant_id
                    )
                else:
                    kwargs, names_other_tenant = self._validated_arguments(tool, arguments, caller)
            except TenantryError as exc:
                hashed = await self._hash(caller, arguments)
                await self._record(caller, "tool_denied", "denied", name, hashed, started, reason=exc.code)
                raise
            hashed = await self._hash(caller, arguments)
            detail = _call_detail(tool, names_other_tenant)
            # -- invocation: the start is durable before the tool runs
            start = await self._start(caller, "tools/call", name, hashed, started, detail)
            context = self._context(caller, tenant, name, channel or _NO_CHANNEL)
            status: ResultStatus = "ok"
            reason: str | None = None
            result: ToolOutcome
            try:
                invocation = self._invocation(tool, kwargs, context, limits)
                value = await self._invoke(invocation, start)
                result = tool.metadata.convert_result(value)
                if isinstance(result, InputRequiredResult):
                    status = "input_required"
            except TenantryError as exc:
                if start is not None and start.failed:
                    raise  # its start was never recorded: no result and no outcome, as if not run
                status, reason = _failure_status(exc)
                result = _error_result(exc.message, exc.code)
            except MCPError as exc:
                reason = f"protocol_error {exc.code}"
                self._outcome(caller, "tool_call", "error", name, hashed, started, reason=reason, start=start)
                redactor = await self._secret_values.redactor(caller.tenant_id, context.secrets_read())
                raise redactor.error(exc) from None
            except asyncio.CancelledError:
                self._cancelled(caller, "tool_call", name, hashed, started, detail, start)
                raise
            except Exception as exc:
                self._log_crash(exc, context)
                status, reason = "error", "tool_failed"
                result = _error_result(f"The tool failed (reference {caller.request_id})", "tool_failed")
        finally:
            slot.release()
        # -- outcome
        try:
            result = await self._redacted(caller.tenant_id, result, context.secrets_read())
        except (SecretsUnavailable, ResultTooLarge) as exc:
            status, reason = "error", exc.code
            result = _error_result(exc.message, exc.code)
        self._outcome(caller, "tool_call", status, name, hashed, started, reason=reason, detail=detail, start=start)
        return result

    # -- admission --------------------------------------------------------------------------

    async def _admit_tenant(
        self, caller: Caller, denial: EventType, name: str | None, arguments: Any, started: float
    ) -> Tenant:
        tenant = self._directory.get(caller.tenant_id)
        if tenant is None or tenant.halted:
            reason = "tenant_unknown" if tenant is None else "tenant_halted"
            await self._record(
                caller, denial, "denied", name, await self._hash(caller, arguments), started, reason=reason
            )
            if tenant is None:
                raise ToolUnavailable("Not available")
            raise TenantHalted()
        return tenant

    async def _admit_limits(
        self, caller: Caller, limits: TenantLimits, denial: EventType, name: str | None, arguments: Any, started: float
    ) -> Slot:
        if self._limiter is None:
            return Slot(caller.tenant_id, None)
        try:
            return await self._limiter.admit(caller.tenant_id, limits)
        except TenantryError as exc:
            # A flood of refusals must not become a flood of durable records: the first ones of
            # each principal are recorded one by one, the rest counted and summarised.
            if self._refusals.admit(caller.tenant_id, f"{caller.principal.subject}"):
                hashed = await self._hash(caller, arguments)
                await self._record(caller, denial, "denied", name, hashed, started, reason=exc.code)
            if self._pacer is not None and isinstance(exc, RateLimited):
                await self._pacer.pace(caller.tenant_id, exc.retry_after)
            raise

    async def _hash(self, caller: Caller, arguments: Any) -> str:
        """``args_hash`` of the request's arguments; large ones off the event loop."""
        if caller.body_bytes > _LARGE_ARGUMENTS:
            return await self._scopes.bulkheads.run(lambda: args_hash(arguments), tenant_id=caller.tenant_id)
        return args_hash(arguments)

    async def record_suppressed(self) -> None:
        """One summary record per tenant for the limit refusals not recorded one by one."""
        for tenant_id, counts in self._refusals.take_suppressed().items():
            total = sum(counts.values())
            try:
                await self._audit.record(
                    AuditEvent(
                        event_type="tool_denied",
                        tenant_id=tenant_id,
                        result_status="denied",
                        reason=f"{total} further calls refused by the tenant's limits, not recorded one by one",
                        detail={"suppressed": total, "by_subject": dict(sorted(counts.items())[:20])},
                    )
                )
            except TenantryError:
                logger.warning("could not audit suppressed refusals", extra={"tenant_id": tenant_id})

    def _invocation(
        self,
        target: ToolDefinition | ResourceDefinition | PromptDefinition,
        arguments: dict[str, Any],
        context: ToolContext,
        limits: TenantLimits,
    ) -> Invocation:
        timeout = self._tool_timeout if self._tool_timeout is not None else limits.tool_timeout
        tenant_id = context.tenant_id
        return Invocation(
            target, arguments, context, timeout, self._log_redactor(context), lambda: self._standing(tenant_id)
        )

    def _validated_arguments(
        self, tool: ToolDefinition, arguments: Mapping[str, Any] | None, caller: Caller
    ) -> tuple[dict[str, Any], bool]:
        """The validated keyword arguments, and whether a resource argument names another
        tenant (allowed, since it stays inside the caller's partition, but worth an alert)."""
        raw = dict(arguments or {})
        unexpected = sorted(set(raw) - tool.argument_names)
        if unexpected and tool.upstream is None:  # an upstream's schema says what it accepts
            raise InvalidArguments(f"unexpected argument(s): {', '.join(repr(u) for u in unexpected[:5])}")
        try:
            kwargs = tool.metadata.validate_arguments(raw)
        except ValidationError as exc:
            raise _argument_error(exc) from None
        prefix = caller.principal.resource_prefix
        names_other_tenant = False
        for param, marker in tool.resource_arguments.items():
            value = kwargs.get(param)
            if not isinstance(value, str):
                continue
            if marker.kind == "prefix":
                parts = resolve_scoped_path(value, None)
                if prefix and not (within_prefix(parts, prefix) or tuple(prefix.split("/"))[: len(parts)] == parts):
                    raise ScopeViolation("path is outside the prefix this credential may access")
            else:
                parts = resolve_scoped_path(value, prefix)
            directory = self._directory
            names_other_tenant = names_other_tenant or any(
                part != caller.tenant_id and directory.get(part) is not None for part in parts
            )
        return kwargs, names_other_tenant

    def _handles(self, caller: Caller) -> ScopedHandles:
        tenant_id, prefix = caller.tenant_id, caller.principal.resource_prefix
        return ScopedHandles(
            sql=lambda: self._scopes.sql.for_tenant(tenant_id),
            files=lambda: self._scopes.files.for_tenant(tenant_id, prefix=prefix),
            vectors=lambda: self._scopes.vectors.for_tenant(tenant_id),
            secrets=lambda: self._scopes.secrets.for_tenant(tenant_id),
        )

    def _context(self, caller: Caller, tenant: Tenant, name: str, channel: ClientChannel) -> ToolContext:
        context = ToolContext(
            tenant_id=caller.tenant_id,
            subject=caller.principal.subject,
            session_id=caller.session_id,
            request_id=caller.request_id,
            tool_name=name,
            allowed_tools=effective_tools(caller.principal, tenant.grants, self._registered_for(tenant.id)),
            resource_prefix=caller.principal.resource_prefix,
            handles=self._handles(caller),
            client=channel,
        )
        # What the tool sends the client mid-call (notifications, elicitation, sampling) is redacted
        # too; its log lines are, through CALL_REDACTOR, while it runs.
        context.client = RedactingChannel(
            channel, lambda: self._secret_values.redactor(caller.tenant_id, context.secrets_read())
        )
        return context

    def _log_crash(self, exc: BaseException, context: ToolContext) -> None:
        # The traceback may quote a secret the code read (``f"bad key {key}"``): redact it.
        trace = "".join(traceback.format_exception(exc))
        logger.error(
            "tool raised\n%s",
            self._secret_values.known_redactor(context.tenant_id, context.secrets_read()).text(trace),
            extra={"tenant_id": context.tenant_id, "tool": context.tool_name, "request_id": context.request_id},
        )

    async def _redacted(self, tenant_id: str, result: _Result, read_by_call: list[str]) -> _Result:
        """``result`` without any of the tenant's secret values (fail closed if they cannot be read).

        :raises ResultTooLarge: the result is larger than the deployment allows.
        """
        redactor = await self._secret_values.redactor(tenant_id, read_by_call)
        if redactor:
            result = _redacted_binaries(result, redactor)
        encoded = result.model_dump_json(by_alias=True, exclude_unset=True)
        if len(encoded) > self._max_result:
            raise ResultTooLarge(f"the result is larger than the {self._max_result} byte limit")
        return redactor.model(result, encoded)

    def _log_redactor(self, context: ToolContext) -> Callable[[], SecretRedactor]:
        return lambda: self._secret_values.known_redactor(context.tenant_id, context.secrets_read())

    # -- resources --------------------------------------------------------------------------

    def _visible_resources(self, caller: Caller) -> list[ResourceDefinition]:
        visible = self.visible(caller)
        return [r for name, r in sorted(self._app.resources_for(caller.tenant_id).items()) if name in visible]

    def list_resources(self, caller: Caller) -> list[Resource]:
        return [
            Resource(uri=r.uri, name=r.name, title=r.title, description=r.description, mime_type=r.mime_type or None)
            for r in self._visible_resources(caller)
            if r.template is None
        ]

    def list_resource_templates(self, caller: Caller) -> list[ResourceTemplate]:
        return [
            ResourceTemplate(
                uri_template=r.uri,
                name=r.name,
                title=r.title,
                description=r.description,
                mime_type=r.mime_type or None,
            )
            for r in self._visible_resources(caller)
            if r.template is not None
        ]

    def resource_visible(self, caller: Caller, uri: str) -> bool:
        return self.visible_resource(caller, uri) is not None

    def visible_resource(self, caller: Caller, uri: str) -> ResourceDefinition | None:
        """The resource (or template) serving ``uri`` that ``caller`` can see, if any."""
        return next((r for r in self._visible_resources(caller) if r.match(uri) is not None), None)

    async def read_resource(
        self, caller: Caller, uri: str, channel: ClientChannel | None = None
    ) -> ReadResourceResult | InputRequiredResult:
        started = time.perf_counter()
        found: tuple[ResourceDefinition, dict[str, Any]] | None = None
        for resource in self._visible_resources(caller):
            variables = resource.match(uri)
            if variables is not None:
                found = (resource, variables)
                break
        # Admission before anything is recorded, as for tools/call: a read of a URI that exists
        # nowhere costs a durable record, so it must be counted against the tenant's limits (and
        # its refusals against the record budget) like any other read.
        name = found[0].name if found is not None else None
        tenant = await self._admit_tenant(caller, "access_denied", name, {"uri": uri}, started)
        limits = self._directory.limits(tenant.id)
        slot = await self._admit_limits(caller, limits, "access_denied", name, {"uri": uri}, started)
        try:
            if found is None:
                await self._record(
                    caller, "access_denied", "denied", None, None, started, reason="resource_unavailable"
                )
                raise ResourceNotFound(uri)
            resource, variables = found
            hashed = args_hash({"uri": uri})
            detail = _upstream_detail(resource, "upstream_resource")
            start = await self._start(caller, "resources/read", resource.name, hashed, started, detail)
            context = self._context(caller, tenant, resource.name, channel or _NO_CHANNEL)
            try:
                result = await self._read(resource, variables, context, caller, uri, limits, start)
            except (TenantryError, MCPError) as exc:
                if start is not None:
                    # A failure after the read returned (a result too large) must not be answered,
                    # nor its outcome recorded, before the start is durable; if it cannot be
                    # recorded, the read had no effect and is refused as not run.
                    await start
                failed, code = _failure_status(exc)
                self._outcome(
                    caller, "resource_read", failed, resource.name, hashed, started, reason=code, detail=detail
                )
                raise
            except asyncio.CancelledError:
                self._cancelled(caller, "resource_read", resource.name, hashed, started, detail, start)
                raise
        finally:
            slot.release()
        status: ResultStatus = "input_required" if isinstance(result, InputRequiredResult) else "ok"
        self._outcome(caller, "resource_read", status, resource.name, hashed, started, detail=detail, start=start)
        return result

    async def _read(
        self,
        resource: ResourceDefinition,
        variables: dict[str, Any],
        context: ToolContext,
        caller: Caller,
        uri: str,
        limits: TenantLimits,
        start: DurableStart | None,
    ) -> ReadResourceResult | InputRequiredResult:
        # An upstream resource is read by its URI (the upstream's own is derived from it); a native
        # one's function takes the template's variables.
        arguments = {"uri": uri} if resource.upstream is not None else variables
        content = await self._call_plain(self._invocation(resource, arguments, context, limits), start)
        result: ReadResourceResult | InputRequiredResult
        if isinstance(content, ReadResourceResult | InputRequiredResult):
            result = content
        elif isinstance(content, bytes):
            blob = base64.b64encode(content).decode()  # redacted with the rest, below
            result = ReadResourceResult(
                contents=[BlobResourceContents(uri=uri, mime_type=resource.mime_type, blob=blob)]
            )
        else:
            text = content if isinstance(content, str) else str(content)
            result = ReadResourceResult(
                contents=[TextResourceContents(uri=uri, mime_type=resource.mime_type, text=text)]
            )
        return await self._redacted(caller.tenant_id, result, context.secrets_read())

    # -- prompts ----------------------------------------------------------------------------

    def list_prompts(self, caller: Caller) -> list[Prompt]:
        visible = self.visible(caller)
        return [
            Prompt(
                name=p.name,
                title=p.title,
                description=p.description,
                arguments=[PromptArgument(name=a, required=req, description=d) for a, req, d in p.arguments],
            )
            for name, p in sorted(self._app.prompts_for(caller.tenant_id).items())
            if name in visible
        ]

    def prompt_visible(self, caller: Caller, name: str) -> bool:
        return name in self._app.prompts_for(caller.tenant_id) and name in self.visible(caller)

    async def get_prompt(
        self,
        caller: Caller,
        name: str,
        arguments: Mapping[str, str] | None,
        channel: ClientChannel | None = None,
    ) -> GetPromptResult | InputRequiredResult:
        started = time.perf_counter()
        visible = self.visible(caller)
        prompt = self._app.prompts_for(caller.tenant_id).get(name)
        # Admission before anything is recorded (see read_resource).
        tenant = await self._admit_tenant(caller, "access_denied", name, arguments, started)
        limits = self._directory.limits(tenant.id)
        slot = await self._admit_limits(caller, limits, "access_denied", name, arguments, started)
        try:
            if prompt is None or name not in visible:
                await self._record(caller, "access_denied", "denied", name, None, started, reason="prompt_unavailable")
                raise NotFound(f"Prompt not found: {bounded_text(name, NAME_LIMIT)}")
            try:
                kwargs = prompt.metadata.validate_arguments(dict(arguments or {}))
            except ValidationError as exc:
                raise _argument_error(exc) from None
            hashed = args_hash(arguments)
            detail = _upstream_detail(prompt, "upstream_prompt")
            start = await self._start(caller, "prompts/get", name, hashed, started, detail)
            context = self._context(caller, tenant, name, channel or _NO_CHANNEL)
            try:
                result = await self._render(prompt, kwargs, context, limits, start)
            except (TenantryError, MCPError) as exc:
                if start is not None:
                    await start  # as for a resource: neither answer nor outcome before the start
                failed, code = _failure_status(exc)
                self._outcome(caller, "prompt_get", failed, name, hashed, started, reason=code, detail=detail)
                raise
            except asyncio.CancelledError:
                self._cancelled(caller, "prompt_get", name, hashed, started, detail, start)
                raise
        finally:
            slot.release()
        status: ResultStatus = "input_required" if isinstance(result, InputRequiredResult) else "ok"
        self._outcome(caller, "prompt_get", status, name, hashed, started, detail=detail, start=start)
        return result

    # -- completions ------------------------------------------------------------------------

    async def complete(
        self,
        caller: Caller,
        ref: PromptReference | ResourceTemplateReference,
        argument: tuple[str, str],
        context_arguments: Mapping[str, str] | None,
    ) -> CompleteResult:
        """Values for ``argument`` (its name, the partial value) of a prompt or resource template the
        caller can see, asked of the upstream serving it; admitted like a call (standing, limits).
        Anything else (a native item, which has no completion source, one unknown or not visible,
        an argument it does not declare, an upstream run in the tenant's worker) gets the same
        empty answer, so completion cannot probe for names. The answer is bounded and redacted.

        :raises InvalidArguments: the partial value is longer than completion allows.
        """
        started = time.perf_counter()
        name, value = argument
        if len(value) > _MAX_COMPLETION_INPUT:
            raise InvalidArguments(f"the value to complete is longer than {_MAX_COMPLETION_INPUT} characters")
        tenant = await self._admit_tenant(caller, "access_denied", None, None, started)
        limits = self._directory.limits(tenant.id)
        slot = await self._admit_limits(caller, limits, "access_denied", None, None, started)
        try:
            target, declared = self._completable(caller, ref)
            if (
                target is None
                or target.upstream is None
                or self._completer is None
                or name not in declared
                or self._runs_in_worker(caller.tenant_id, target.upstream)
            ):
                return CompleteResult(completion=Completion(values=[]))
            chosen = {k: v for k, v in (context_arguments or {}).items() if k in declared and k != name}
            timeout = self._tool_timeout if self._tool_timeout is not None else limits.tool_timeout
            answer = await self._completer.complete(target, caller.tenant_id, argument, chosen, timeout)
        finally:
            slot.release()
        found = answer.completion
        bounded = Completion(
            values=[v[:_MAX_COMPLETION_VALUE] for v in found.values[:_MAX_COMPLETIONS]],
            total=found.total,
            has_more=found.has_more or len(found.values) > _MAX_COMPLETIONS or None,
        )
        return await self._redacted(caller.tenant_id, CompleteResult(completion=bounded), [])

    def _completable(
        self, caller: Caller, ref: PromptReference | ResourceTemplateReference
    ) -> tuple[ResourceDefinition | PromptDefinition | None, frozenset[str]]:
        """The visible prompt or template ``ref`` names, and the arguments it declares."""
        if isinstance(ref, PromptReference):
            prompt = self._app.prompts_for(caller.tenant_id).get(ref.name)
            if prompt is None or ref.name not in self.visible(caller):
                return None, frozenset()
            return prompt, frozenset(a for a, _, _ in prompt.arguments)
        template = next(
            (r for r in self._visible_resources(caller) if r.template is not None and r.uri == ref.uri), None
        )
        if template is None or template.template is None:
            return None, frozenset()
        return template, frozenset(template.template.variable_names)

    async def _render(
        self,
        prompt: PromptDefinition,
        kwargs: dict[str, Any],
        context: ToolContext,
        limits: TenantLimits,
        start: DurableStart | None,
    ) -> GetPromptResult | InputRequiredResult:
        value = await self._call_plain(self._invocation(prompt, kwargs, context, limits), start)
        result: GetPromptResult | InputRequiredResult
        if isinstance(value, InputRequiredResult | GetPromptResult):
            result = value
        else:
            if isinstance(value, str):
                messages = [PromptMessage(role="user", content=TextContent(type="text", text=value))]
            else:
                try:
                    messages = [m if isinstance(m, PromptMessage) else PromptMessage.model_validate(m) for m in value]
                except (ValidationError, TypeError) as exc:
                    # A bug in the prompt, not a crash of the server: the call ends with an outcome.
                    self._log_crash(exc, context)
                    raise ToolFailed(
                        f"{prompt.name} returned something that is not prompt messages (reference {context.request_id})"
                    ) from None
            result = GetPromptResult(description=prompt.description, messages=messages)
        return await self._redacted(context.tenant_id, result, context.secrets_read())

    async def _call_plain(self, call: Invocation, start: DurableStart | None) -> Any:
        """A resource or prompt through the invoker; every failure becomes a :class:`TenantryError`
        or MCP protocol error with the tenant's secrets redacted."""
        context = call.context
        try:
            return await self._invoke(call, start)
        except (TenantryError, MCPError) as exc:
            redactor = await self._secret_values.redactor(context.tenant_id, context.secrets_read())
            raise redactor.error(exc) from None
        except Exception as exc:
            self._log_crash(exc, context)
            raise ToolFailed(f"{call.target.name} failed (reference {context.request_id})") from None

    # -- audit ------------------------------------------------------------------------------

    async def _start(
        self,
        caller: Caller,
        method: str,
        name: str,
        hashed: str | None,
        started: float,
        detail: dict[str, Any] | None,
    ) -> DurableStart | None:
        """Record that a call starts: durable before anything runs (``start_before = "tool"``),
        or returned still being flushed, for :meth:`_invoke` to overlap (``"effects"``).

        :raises AuditUnavailable: nothing ran; the caller may safely retry.
        """
        event = self._event(
            caller, "call_started", "started", name, hashed, started, None, {"method": method, **(detail or {})}
        )
        if self._start_before == "tool":
            await self._audit.record(event)
            return None
        return DurableStart(self._audit.begin(event))

    def _outcome(
        self,
        caller: Caller,
        event_type: EventType,
        status: ResultStatus,
        name: str | None,
        hashed: str | None,
        started: float,
        *,
        reason: str | None = None,
        detail: dict[str, Any] | None = None,
        start: DurableStart | None = None,
    ) -> None:
        """Record a call's outcome with the next group commit (its start is already durable, or
        ``start`` is still being flushed: then the outcome follows it, and is never recorded
        for a start that was not).

        :raises AuditUnavailable: the store became unavailable while the call ran: the outcome
            is kept (spill file) and written on recovery, but the result is withheld, and the
            error says the call ran.
        """
        available = self._audit.available
        event = self._event(caller, event_type, status, name, hashed, started, reason, detail)
        if start is not None and not start.recorded:
            start.when_recorded(lambda: self._audit.submit(event))
        else:
            self._audit.submit(event)
        if not available:
            raise AuditUnavailable(
                "The call ran, but its result is withheld: the audit store became unavailable while it ran",
                data={"ran": True},
            )

    def _cancelled(
        self,
        caller: Caller,
        event_type: EventType,
        name: str | None,
        hashed: str | None,
        started: float,
        detail: dict[str, Any] | None,
        start: DurableStart | None,
    ) -> None:
        """The request was cancelled while its call ran (the client's ``notifications/cancelled``,
        its session ended, the server stopping): the call ends now, and so does its record, rather
        than stay open until this process stops and then pass for a crash (``interrupted``)."""
        with contextlib.suppress(AuditUnavailable):  # kept in the spill file all the same
            self._outcome(
                caller,
                event_type,
                "cancelled",
                name,
                hashed,
                started,
                reason="request_cancelled",
                detail=detail,
                start=start,
            )

    async def _record(
        self,
        caller: Caller,
        event_type: EventType,
        status: ResultStatus,
        name: str | None,
        hashed: str | None,
        started: float,
        *,
        reason: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        await self._audit.record(self._event(caller, event_type, status, name, hashed, started, reason, detail))

    @staticmethod
    def _event(
        caller: Caller,
        event_type: EventType,
        status: ResultStatus,
        name: str | None,
        hashed: str | None,
        started: float,
        reason: str | None,
        detail: dict[str, Any] | None,
    ) -> AuditEvent:
        return AuditEvent(
            event_type=event_type,
            tenant_id=caller.tenant_id,
            result_status=status,
            session_id=caller.audit_session,
            subject=caller.principal.subject,
            tool_name=name,
            args_hash=hashed,
            latency_ms=round((time.perf_counter() - started) * 1000, 3),
            ip_address=caller.client_address,
            request_id=caller.request_id,
            reason=reason,
            detail=detail or {},
            principal=caller.principal,
        )


_MAX_RESPONSE_WAITS = 16
_MAX_COMPLETIONS = 100
"""Values in one completion answer at most (the MCP specification's own bound)."""
_MAX_COMPLETION_VALUE = 1000
_MAX_COMPLETION_INPUT = 4096
"""Starts one response may wait for (a request makes one call; more is a bug, not a budget)."""


def _coroutine(target: ToolDefinition | ResourceDefinition | PromptDefinition) -> bool:
    """Whether the target is a Python coroutine function (it runs on the loop, its effects go
    through Tenantry's handles)."""
    return target.upstream is None and inspect.iscoroutinefunction(target.fn)


def _call_detail(tool: ToolDefinition, names_other_tenant: bool) -> dict[str, Any] | None:
    detail: dict[str, Any] = {"cross_tenant_reference": True} if names_other_tenant else {}
    if tool.upstream is not None:
        detail["upstream"] = tool.upstream
        detail["upstream_tool"] = tool.upstream_name
    return detail or None


def _upstream_detail(target: ResourceDefinition | PromptDefinition, key: str) -> dict[str, Any] | None:
    # The upstream's own name, never the requested URI: that is an argument (hashed, not stored).
    if target.upstream is None:
        return None
    return {"upstream": target.upstream, key: target.upstream_name}


def _redacted_binaries(result: _Result, redactor: SecretRedactor) -> _Result:
    """``result`` with the tenant's secret values replaced inside its base64 contents too (blobs,
    images, audio, in resources, tool results and prompt messages): the text of the result is
    redacted with the rest of it, but base64 would hide a secret from that."""
    if isinstance(result, ReadResourceResult):
        if not any(isinstance(c, BlobResourceContents) for c in result.contents):
            return result
        return result.model_copy(update={"contents": [_redacted_contents(c, redactor) for c in result.contents]})
    if isinstance(result, CallToolResult):
        update: dict[str, Any] = {}
        if any(isinstance(c, _BINARY_BLOCKS) for c in result.content):
            update["content"] = [_redacted_block(c, redactor) for c in result.content]
        if result.structured_content is not None:
            # A tool returning content blocks as values has them in its structured content too.
            structured = _redacted_base64_fields(result.structured_content, redactor)
            if structured is not result.structured_content:
                update["structured_content"] = structured
        return result.model_copy(update=update) if update else result
    if isinstance(result, GetPromptResult):
        if not any(isinstance(m.content, _BINARY_BLOCKS) for m in result.messages):
            return result
        messages = [m.model_copy(update={"content": _redacted_block(m.content, redactor)}) for m in result.messages]
        return result.model_copy(update={"messages": messages})
    return result


_BINARY_BLOCKS = (ImageContent, AudioContent, EmbeddedResource)


def _redacted_block(block: Any, redactor: SecretRedactor) -> Any:
    if isinstance(block, ImageContent | AudioContent):
        return block.model_copy(update={"data": _redacted_base64(block.data, redactor)})
    if isinstance(block, EmbeddedResource):
        return block.model_copy(update={"resource": _redacted_contents(block.resource, redactor)})
    return block


def _redacted_contents(
    contents: TextResourceContents | BlobResourceContents, redactor: SecretRedactor
) -> TextResourceContents | BlobResourceContents:
    if isinstance(contents, BlobResourceContents):
        return contents.model_copy(update={"blob": _redacted_base64(contents.blob, redactor)})
    return contents


_BASE64_FIELDS = frozenset({"data", "blob"})


def _redacted_base64_fields(value: Any, redactor: SecretRedactor) -> Any:
    """``value`` (JSON) with the base64 strings of content-block fields (``data``, ``blob``)
    redacted inside; the same object when nothing changed. A field that is not valid base64 is
    left alone (it is text, redacted with the rest)."""
    if isinstance(value, dict):
        out: dict[str, Any] | None = None  # copied only once something changes
        for key, item in value.items():
            if key in _BASE64_FIELDS and isinstance(item, str):
                try:
                    new = _redacted_base64(item, redactor)
                except ToolFailed:
                    continue
                if new == item:
                    continue
            elif isinstance(item, dict | list):
                new = _redacted_base64_fields(item, redactor)
                if new is item:
                    continue
            else:
                continue
            if out is None:
                out = dict(value)
            out[key] = new
        return value if out is None else out
    if isinstance(value, list):
        items = [_redacted_base64_fields(item, redactor) if isinstance(item, dict | list) else item for item in value]
        return items if any(new is not old for new, old in zip(items, value, strict=True)) else value
    return value


def _redacted_base64(encoded: str, redactor: SecretRedactor) -> str:
    try:
        data = base64.b64decode(encoded, validate=True)
    except ValueError:
        raise ToolFailed("the answer's binary content is not valid base64") from None
    return base64.b64encode(redactor.data(data)).decode()


def _failure_status(exc: TenantryError | MCPError) -> tuple[ResultStatus, str]:
    if isinstance(exc, TenantryError):
        if isinstance(exc, ToolTimedOut):
            return "timeout", exc.code
        if isinstance(exc, CallCancelled):
            return "cancelled", exc.code
        return ("denied" if isinstance(exc, ScopeViolation) else "error"), exc.code
    return "error", f"protocol_error {exc.code}"


def _error_result(message: str, code: str) -> CallToolResult:
    # The stable code rides in _meta: structuredContent must match the tool's output schema.
    return CallToolResult(
        content=[TextContent(type="text", text=message)],
        is_error=True,
        _meta={"io.tenantry/error": {"code": code}},
    )
