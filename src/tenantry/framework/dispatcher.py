"""The enforcement path every tool call, resource read and prompt takes, whatever the transport.

For a ``tools/call``, in order: the tenant exists and is not halted; the tool is registered
for the tenant, granted to it and in the token (one error for every refusal, so nothing of
another tenant's catalogue can be probed); the arguments match the schema exactly;
arguments that name resources stay inside the tenant's partition and prefix; the start is
known to be writable (fail closed); the handler runs with scoped handles and a deadline;
the outcome is audited before the result is returned.
"""

from __future__ import annotations

import base64
import logging
import time
import traceback
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from mcp.shared.exceptions import MCPError
from mcp_types import (
    BlobResourceContents,
    CallToolResult,
    GetPromptResult,
    InputRequiredResult,
    Prompt,
    PromptArgument,
    PromptMessage,
    ReadResourceResult,
    Resource,
    ResourceTemplate,
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
from tenantry.core.errors import (
    AuditUnavailable,
    InvalidArguments,
    NotFound,
    ScopeViolation,
    SecretsUnavailable,
    TenantHalted,
    TenantryError,
    ToolFailed,
    ToolUnavailable,
)
from tenantry.core.load import InFlight
from tenantry.core.paths import within_prefix
from tenantry.framework.app import App, PromptDefinition, ResourceDefinition, ToolDefinition
from tenantry.framework.channel import ClientChannel, NoClientChannel
from tenantry.framework.context import ScopedHandles, ToolContext
from tenantry.framework.deadline import DeadlineExceeded, DeadlineWatch, Interrupted
from tenantry.framework.redaction import CALL_REDACTOR, RedactingChannel, SecretRedactor, TenantSecretValues
from tenantry.policy.acl import decide_tool_call, effective_tools
from tenantry.scoping.files.local import resolve_scoped_path
from tenantry.scoping.handles import DataScopes

__all__ = ["Dispatcher", "ToolTimedOut", "CallCancelled", "ResourceNotFound"]

logger = logging.getLogger(__name__)

_NO_CHANNEL = NoClientChannel()


class ToolTimedOut(TenantryError):
    code = "tool_timeout"
    http_status = 504
    jsonrpc_code = -32008
    default_message = "The tool did not finish in time"


class CallCancelled(TenantHalted):
    code = "call_cancelled"
    default_message = "The tenant was halted by an administrator while the call ran; the call was cancelled"


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
    def __init__(
        self,
        app: App,
        directory: TenantDirectory,
        scopes: DataScopes,
        audit: AuditSink,
        *,
        tool_timeout: float = 30.0,
        requests_in_flight: InFlight | None = None,
    ) -> None:
        self._app = app
        self._directory = directory
        self._scopes = scopes
        self._audit = audit
        self._tool_timeout = tool_timeout
        self._deadlines = DeadlineWatch()
        self._in_flight = 0
        self._requests = requests_in_flight
        self._registered: dict[str, frozenset[str]] = {}
        self._tool_models: dict[str, Tool] = {}
        self._secret_values = TenantSecretValues(scopes.secrets)

    @property
    def app(self) -> App:
        return self._app

    def cancel_tenant_calls(self, tenant_id: str) -> int:
        """Cancel the tenant's tool calls, resource reads and prompts in flight (its kill switch);
        each ends with ``call_cancelled`` in its result and its audit record. Returns how many."""
        return self._deadlines.interrupt(tenant_id)

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
        return [self._tool_model(tool) for name, tool in sorted(self._app.tools.items()) if name in visible]

    def tool_input_schema(self, caller: Caller, name: str) -> dict[str, Any] | None:
        """The schema of ``name`` if this caller may see it; ``None`` otherwise (reveals nothing)."""
        try:
            visible = self.visible(caller)
        except TenantryError:
            return None
        tool = self._app.tools.get(name)
        return tool.input_schema if tool is not None and name in visible else None

    def _tool_model(self, tool: ToolDefinition) -> Tool:
        model = self._tool_models.get(tool.name)
        if model is None:
            model = Tool(
                name=tool.name,
                title=tool.title,
                description=tool.description,
                input_schema=tool.input_schema,
                output_schema=tool.metadata.output_schema,
                annotations=tool.annotations,
            )
            self._tool_models[tool.name] = model
        return model

    # -- tools/call -------------------------------------------------------------------------

    async def call_tool(
        self,
        caller: Caller,
        name: str,
        arguments: Mapping[str, Any] | None,
        channel: ClientChannel | None = None,
    ) -> ToolOutcome:
        """Run one tool call through the full enforcement path.

        :raises ToolUnavailable: unknown or not granted (indistinguishable), handler not run.
        :raises TenantHalted: the tenant's kill switch is on.
        :raises InvalidArguments: arguments do not match the schema, handler not run.
        :raises ScopeViolation: a resource argument leaves the tenant's partition or prefix.
        :raises AuditUnavailable: the audit store cannot record (handler not run), or failed while
            the handler ran (the result is withheld; the record is written once the store is back).
        :raises MCPError: a protocol error the tool raised on purpose (e.g. a missing client capability).
        """
        started = time.perf_counter()
        hashed = args_hash(arguments)
        tenant = self._directory.get(caller.tenant_id)
        if tenant is None or tenant.halted:
            denial = "tenant_unknown" if tenant is None else "tenant_halted"
            await self._record(caller, "tool_denied", "denied", name, hashed, started, reason=denial)
            if tenant is None:
                raise ToolUnavailable(f"Tool not available: {bounded_text(name, NAME_LIMIT)}")
            raise TenantHalted()
        tool = self._app.tools.get(name)
        decision = decide_tool_call(name, caller.principal, tenant.grants, self._registered_for(tenant.id))
        if tool is None or not decision.allowed:
            await self._record(
                caller, "tool_denied", "denied", name, hashed, started, reason=decision.reason or "not_registered"
            )
            raise ToolUnavailable(f"Tool not available: {bounded_text(name, NAME_LIMIT)}")
        try:
            kwargs, names_other_tenant = self._validated_arguments(tool, arguments, caller)
        except TenantryError as exc:
            await self._record(caller, "tool_denied", "denied", name, hashed, started, reason=exc.code)
            raise
        detail = {"cross_tenant_reference": True} if names_other_tenant else None
        # The start is durable before the tool runs (fail closed: never run what the audit
        # cannot record); the outcome rides the next group commit.
        await self._start(caller, "tools/call", name, hashed, started, detail)
        status: ResultStatus = "ok"
        reason: str | None = None
        result: ToolOutcome
        context = self._context(caller, tenant, name, channel or _NO_CHANNEL)
        self._in_flight += 1
        try:
            result = await self._run(tool, kwargs, caller, context)
            if isinstance(result, InputRequiredResult):
                status = "input_required"
        except TenantryError as exc:
            status, reason = _failure_status(exc)
            result = _error_result(exc.message, exc.code)
        except MCPError as exc:
            self._outcome(caller, "tool_call", "error", name, hashed, started, reason=f"protocol_error {exc.code}")
            redactor = await self._secret_values.redactor(caller.tenant_id, context.secrets_read())
            raise redactor.error(exc) from None
        except Exception as exc:
            self._log_crash(exc, context)
            status, reason = "error", "tool_failed"
            result = _error_result(f"The tool failed (reference {caller.request_id})", "tool_failed")
        finally:
            self._in_flight -= 1
        try:
            result = await self._redacted(caller, result, context.secrets_read())
        except SecretsUnavailable as exc:
            status, reason = "error", exc.code
            result = _error_result(exc.message, exc.code)
        self._outcome(caller, "tool_call", status, name, hashed, started, reason=reason, detail=detail)
        return result

    def _validated_arguments(
        self, tool: ToolDefinition, arguments: Mapping[str, Any] | None, caller: Caller
    ) -> tuple[dict[str, Any], bool]:
        """The validated keyword arguments, and whether a resource argument names another
        tenant (allowed, since it stays inside the caller's partition, but worth an alert)."""
        raw = dict(arguments or {})
        unexpected = sorted(set(raw) - tool.argument_names)
        if unexpected:
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

    async def _redacted(self, caller: Caller, result: _Result, read_by_call: list[str]) -> _Result:
        """``result`` without any of the tenant's secret values (fail closed if they cannot be read)."""
        redactor = await self._secret_values.redactor(caller.tenant_id, read_by_call)
        return redactor.model(result)

    async def _run(
        self, tool: ToolDefinition, kwargs: dict[str, Any], caller: Caller, context: ToolContext
    ) -> ToolOutcome:
        direct = {tool.context_param: context} if tool.context_param else None
        token = CALL_REDACTOR.set(self._log_redactor(context))
        try:
            value = await self._deadlines.run(
                tool.metadata.call_fn(tool.fn, True, kwargs, direct), self._tool_timeout, tag=caller.tenant_id
            )
        except DeadlineExceeded:
            raise ToolTimedOut(f"The tool did not finish within {self._tool_timeout:g}s") from None
        except Interrupted:
            raise CallCancelled() from None
        finally:
            CALL_REDACTOR.reset(token)
        return tool.metadata.convert_result(value)

    def _log_redactor(self, context: ToolContext) -> Callable[[], SecretRedactor]:
        return lambda: self._secret_values.known_redactor(context.tenant_id, context.secrets_read())

    # -- resources --------------------------------------------------------------------------

    def _visible_resources(self, caller: Caller) -> list[ResourceDefinition]:
        visible = self.visible(caller)
        return [r for name, r in sorted(self._app.resources.items()) if name in visible]

    def list_resources(self, caller: Caller) -> list[Resource]:
        return [
            Resource(uri=r.uri, name=r.name, title=r.title, description=r.description, mime_type=r.mime_type)
            for r in self._visible_resources(caller)
            if r.template is None
        ]

    def list_resource_templates(self, caller: Caller) -> list[ResourceTemplate]:
        return [
            ResourceTemplate(
                uri_template=r.uri, name=r.name, title=r.title, description=r.description, mime_type=r.mime_type
            )
            for r in self._visible_resources(caller)
            if r.template is not None
        ]

    def resource_visible(self, caller: Caller, uri: str) -> bool:
        return any(r.match(uri) is not None for r in self._visible_resources(caller))

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
        if found is None:
            await self._record(caller, "access_denied", "denied", None, None, started, reason="resource_unavailable")
            raise ResourceNotFound(uri)
        resource, variables = found
        tenant = self._live_tenant(caller)
        hashed = args_hash({"uri": uri})
        await self._start(caller, "resources/read", resource.name, hashed, started, None)
        context = self._context(caller, tenant, resource.name, channel or _NO_CHANNEL)
        try:
            result = await self._read(resource, variables, context, caller, uri)
        except (TenantryError, MCPError) as exc:
            status, code = _failure_status(exc)
            self._outcome(caller, "resource_read", status, resource.name, hashed, started, reason=code)
            raise
        status = "input_required" if isinstance(result, InputRequiredResult) else "ok"
        self._outcome(caller, "resource_read", status, resource.name, hashed, started)
        return result

    async def _read(
        self,
        resource: ResourceDefinition,
        variables: dict[str, Any],
        context: ToolContext,
        caller: Caller,
        uri: str,
    ) -> ReadResourceResult | InputRequiredResult:
        content = await self._call_plain(resource, variables, context, tenant_id=caller.tenant_id)
        result: ReadResourceResult | InputRequiredResult
        if isinstance(content, InputRequiredResult | ReadResourceResult):
            result = content
        elif isinstance(content, bytes):
            redactor = await self._secret_values.redactor(caller.tenant_id, context.secrets_read())
            blob = base64.b64encode(redactor.data(content)).decode()
            result = ReadResourceResult(
                contents=[BlobResourceContents(uri=uri, mime_type=resource.mime_type, blob=blob)]
            )
        else:
            text = content if isinstance(content, str) else str(content)
            result = ReadResourceResult(
                contents=[TextResourceContents(uri=uri, mime_type=resource.mime_type, text=text)]
            )
        return await self._redacted(caller, result, context.secrets_read())

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
            for name, p in sorted(self._app.prompts.items())
            if name in visible
        ]

    def prompt_visible(self, caller: Caller, name: str) -> bool:
        return name in self._app.prompts and name in self.visible(caller)

    async def get_prompt(
        self,
        caller: Caller,
        name: str,
        arguments: Mapping[str, str] | None,
        channel: ClientChannel | None = None,
    ) -> GetPromptResult | InputRequiredResult:
        started = time.perf_counter()
        visible = self.visible(caller)
        prompt = self._app.prompts.get(name)
        if prompt is None or name not in visible:
            await self._record(caller, "access_denied", "denied", name, None, started, reason="prompt_unavailable")
            raise NotFound(f"Prompt not found: {bounded_text(name, NAME_LIMIT)}")
        try:
            kwargs = prompt.metadata.validate_arguments(dict(arguments or {}))
        except ValidationError as exc:
            raise _argument_error(exc) from None
        tenant = self._live_tenant(caller)
        hashed = args_hash(arguments)
        await self._start(caller, "prompts/get", name, hashed, started, None)
        context = self._context(caller, tenant, name, channel or _NO_CHANNEL)
        try:
            result = await self._render(prompt, kwargs, context, caller)
        except (TenantryError, MCPError) as exc:
            status, code = _failure_status(exc)
            self._outcome(caller, "prompt_get", status, name, hashed, started, reason=code)
            raise
        status = "input_required" if isinstance(result, InputRequiredResult) else "ok"
        self._outcome(caller, "prompt_get", status, name, hashed, started)
        return result

    async def _render(
        self, prompt: PromptDefinition, kwargs: dict[str, Any], context: ToolContext, caller: Caller
    ) -> GetPromptResult | InputRequiredResult:
        value = await self._call_plain(prompt, kwargs, context, tenant_id=caller.tenant_id)
        result: GetPromptResult | InputRequiredResult
        if isinstance(value, InputRequiredResult | GetPromptResult):
            result = value
        else:
            if isinstance(value, str):
                messages = [PromptMessage(role="user", content=TextContent(type="text", text=value))]
            else:
                messages = [m if isinstance(m, PromptMessage) else PromptMessage.model_validate(m) for m in value]
            result = GetPromptResult(description=prompt.description, messages=messages)
        return await self._redacted(caller, result, context.secrets_read())

    async def _call_plain(
        self,
        item: ResourceDefinition | PromptDefinition,
        kwargs: dict[str, Any],
        context: ToolContext,
        *,
        tenant_id: str,
    ) -> Any:
        if item.context_param:
            kwargs = {**kwargs, item.context_param: context}
        token = CALL_REDACTOR.set(self._log_redactor(context))
        try:
            return await self._deadlines.run(item.fn(**kwargs), self._tool_timeout, tag=tenant_id)
        except (TenantryError, MCPError) as exc:
            redactor = await self._secret_values.redactor(tenant_id, context.secrets_read())
            raise redactor.error(exc) from None
        except DeadlineExceeded:
            raise ToolTimedOut(f"{item.name} did not finish within {self._tool_timeout:g}s") from None
        except Interrupted:
            raise CallCancelled() from None
        except Exception as exc:
            self._log_crash(exc, context)
            raise ToolFailed(f"{item.name} failed (reference {context.request_id})") from None
        finally:
            CALL_REDACTOR.reset(token)

    # -- audit ------------------------------------------------------------------------------

    async def _start(
        self,
        caller: Caller,
        method: str,
        name: str,
        hashed: str | None,
        started: float,
        detail: dict[str, Any] | None,
    ) -> None:
        """Durably record that a call starts (before anything runs).

        :raises AuditUnavailable: nothing ran; the caller may safely retry.
        """
        alone = self._in_flight == 0 and (self._requests is None or self._requests.count <= 1)
        await self._audit.record(
            self._event(
                caller, "call_started", "started", name, hashed, started, None, {"method": method, **(detail or {})}
            ),
            alone=alone,
        )

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
    ) -> None:
        """Record a call's outcome with the next group commit (its start is already durable).

        :raises AuditUnavailable: the store became unavailable while the call ran: the outcome
            is kept (spill file) and written on recovery, but the result is withheld, and the
            error says the call ran.
        """
        available = self._audit.available
        self._audit.submit(self._event(caller, event_type, status, name, hashed, started, reason, detail))
        if not available:
            raise AuditUnavailable(
                "The call ran, but its result is withheld: the audit store became unavailable while it ran",
                data={"ran": True},
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
