"""The MCP protocol surface: a low-level ``mcp`` Server whose handlers delegate to the dispatcher.

The permission checks live in the dispatcher's call path, not in SDK middleware (whose API
is provisional): every handler first resolves the :class:`Caller` the transport
established, and nothing in the request body, ``_meta`` or arguments can change it.
"""

from __future__ import annotations

import contextvars
import uuid
import warnings
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import mcp_types as types
from mcp.server._otel import OpenTelemetryMiddleware
from mcp.server.caching import CacheHint
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import NotificationOptions, Server
from mcp.server.models import InitializationOptions
from mcp.server.request_state import RequestStateBoundary, RequestStateSecurity
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError
from opentelemetry import trace

from tenantry.core.calls import Caller
from tenantry.core.errors import InvalidCredential, TenantryError
from tenantry.framework.dispatcher import Dispatcher, ResourceNotFound
from tenantry.server.channel import McpClientChannel
from tenantry.server.errors import to_mcp_error, unexpected_to_mcp_error
from tenantry.server.list_changed import ListChangedNotifier
from tenantry.server.subscriptions import Subscriptions

__all__ = ["build_mcp_server", "CallerResolver", "CURRENT_CALLER", "http_caller", "CALLER_SCOPE_KEY"]

_T = TypeVar("_T")

CallerResolver = Callable[[ServerRequestContext[Any, Any]], Caller]

CALLER_SCOPE_KEY = "tenantry.caller"

CURRENT_CALLER: contextvars.ContextVar[Caller | None] = contextvars.ContextVar("tenantry_caller", default=None)
"""Set by the HTTP authentication middleware for the duration of one HTTP request.

Only used by the SDK's ``get_tool_input_schema`` hook, which runs before handlers and has
no request context of its own."""

_PRIVATE = CacheHint(ttl_ms=0, scope="private")
_CACHEABLE = ("tools/list", "resources/list", "resources/templates/list", "resources/read", "prompts/list")


def http_caller(ctx: ServerRequestContext[Any, Any]) -> Caller:
    """The caller the authentication middleware attached to this message's HTTP request."""
    request = ctx.request
    scope = getattr(request, "scope", None)
    caller = scope.get(CALLER_SCOPE_KEY) if isinstance(scope, dict) else None
    if not isinstance(caller, Caller):
        raise InvalidCredential()
    return caller


def build_mcp_server(
    dispatcher: Dispatcher,
    caller_for: CallerResolver,
    *,
    name: str = "tenantry",
    version: str = "",
    instructions: str | None = None,
    request_state_security: RequestStateSecurity | None = None,
    audience: str | None = None,
    notifier: ListChangedNotifier | None = None,
    subscriptions: Subscriptions | None = None,
    serve_resources: bool = False,
    serve_prompts: bool = False,
) -> Server[Any]:
    """A low-level MCP server serving ``dispatcher``'s app to whoever ``caller_for`` names.

    :param serve_resources: answer the resource methods even while the app has no resource yet
        (gateway mode: upstreams' resources appear while the server runs); ``serve_prompts`` alike.

    :param subscriptions: where handshake-era sessions' subscriptions to upstream resources are
        kept and relayed (without it, ``resources/subscribe`` is accepted and nothing is relayed).

    :param request_state_security: seals the 2026-07-28 multi-round-trip ``requestState``
        (bound to the caller's principal); an ephemeral key when omitted.
    """

    async def guarded(ctx: ServerRequestContext[Any, Any], work: Callable[[Caller], Awaitable[_T]]) -> _T:
        caller: Caller | None = None
        try:
            caller = caller_for(ctx)
            if notifier is not None and caller.session_id is not None:
                # The connection-scoped object (private to the pinned SDK) writes to the session's
                # standalone stream; ``ctx.session`` is scoped to this one request.
                connection = getattr(ctx.session, "_connection", None)
                if connection is not None:
                    notifier.remember(caller.session_id, caller.tenant_id, connection)
            if dispatcher.needs_prepare(caller):
                await dispatcher.prepare(caller)
            return await work(caller)
        except TenantryError as exc:
            raise to_mcp_error(exc) from None
        except MCPError:
            raise
        except Exception as exc:
            reference = caller.request_id if caller is not None else uuid.uuid4().hex[:16]
            tenant = caller.tenant_id if caller is not None else None
            raise unexpected_to_mcp_error(
                exc, request_id=reference, context={"tenant_id": tenant, "method": ctx.method}
            ) from None

    async def list_tools(
        ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        async def work(caller: Caller) -> types.ListToolsResult:
            return types.ListToolsResult(tools=dispatcher.list_tools(caller), ttl_ms=0, cache_scope="private")

        return await guarded(ctx, work)

    async def call_tool(
        ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult | types.InputRequiredResult:
        channel = McpClientChannel(ctx, params)
        return await guarded(ctx, lambda caller: dispatcher.call_tool(caller, params.name, params.arguments, channel))

    async def list_resources(
        ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourcesResult:
        async def work(caller: Caller) -> types.ListResourcesResult:
            return types.ListResourcesResult(
                resources=dispatcher.list_resources(caller), ttl_ms=0, cache_scope="private"
            )

        return await guarded(ctx, work)

    async def list_resource_templates(
        ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourceTemplatesResult:
        async def work(caller: Caller) -> types.ListResourceTemplatesResult:
            return types.ListResourceTemplatesResult(
                resource_templates=dispatcher.list_resource_templates(caller), ttl_ms=0, cache_scope="private"
            )

        return await guarded(ctx, work)

    async def read_resource(
        ctx: ServerRequestContext[Any, Any], params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult | types.InputRequiredResult:
        channel = McpClientChannel(ctx, params)
        return await guarded(ctx, lambda caller: dispatcher.read_resource(caller, str(params.uri), channel))

    async def subscribe(ctx: ServerRequestContext[Any, Any], params: types.SubscribeRequestParams) -> types.EmptyResult:
        async def work(caller: Caller) -> types.EmptyResult:
            uri = str(params.uri)
            resource = dispatcher.visible_resource(caller, uri)
            if resource is None:
                raise ResourceNotFound(uri)
            # An upstream's resource, in a session with a channel to push updates on: relayed. A
            # native resource, a sessionless request or a command upstream run in the tenant's
            # dedicated worker: accepted, and nothing is relayed.
            upstream = resource.upstream
            connection = getattr(ctx.session, "_connection", None) if caller.session_id is not None else None
            if (
                subscriptions is not None
                and upstream is not None
                and connection is not None
                and not dispatcher.runs_in_worker(caller.tenant_id, upstream)
            ):
                await subscriptions.subscribe(caller, connection, upstream, uri)
            return types.EmptyResult()

        return await guarded(ctx, work)

    async def unsubscribe(
        ctx: ServerRequestContext[Any, Any], params: types.UnsubscribeRequestParams
    ) -> types.EmptyResult:
        async def work(caller: Caller) -> types.EmptyResult:
            if subscriptions is not None and caller.session_id is not None:
                await subscriptions.unsubscribe(caller.session_id, str(params.uri))
            return types.EmptyResult()

        return await guarded(ctx, work)

    async def list_prompts(
        ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListPromptsResult:
        async def work(caller: Caller) -> types.ListPromptsResult:
            return types.ListPromptsResult(prompts=dispatcher.list_prompts(caller), ttl_ms=0, cache_scope="private")

        return await guarded(ctx, work)

    async def get_prompt(
        ctx: ServerRequestContext[Any, Any], params: types.GetPromptRequestParams
    ) -> types.GetPromptResult | types.InputRequiredResult:
        channel = McpClientChannel(ctx, params)
        return await guarded(ctx, lambda caller: dispatcher.get_prompt(caller, params.name, params.arguments, channel))

    async def complete(
        ctx: ServerRequestContext[Any, Any], params: types.CompleteRequestParams
    ) -> types.CompleteResult:
        argument = (params.argument.name, params.argument.value)
        chosen = params.context.arguments if params.context is not None else None
        return await guarded(ctx, lambda caller: dispatcher.complete(caller, params.ref, argument, chosen))

    async def set_logging_level(
        ctx: ServerRequestContext[Any, Any], params: types.SetLevelRequestParams
    ) -> types.EmptyResult:
        return await guarded(ctx, lambda caller: _empty())

    def tool_input_schema(tool_name: str) -> dict[str, Any] | None:
        caller = CURRENT_CALLER.get()
        return None if caller is None else dispatcher.tool_input_schema(caller, tool_name)

    app = dispatcher.app
    has_resources = bool(app.resources) or serve_resources
    has_prompts = bool(app.prompts) or serve_prompts
    with warnings.catch_warnings():
        # logging/setLevel is deprecated at 2026-07-28 but still part of the handshake era we serve.
        warnings.simplefilter("ignore", MCPDeprecationWarning)
        server: Server[Any] = _ListChangedServer(  # type: ignore[misc]
            name,
            version=version,
            instructions=instructions,
            cache_hints=dict.fromkeys(_CACHEABLE, _PRIVATE),  # type: ignore[arg-type]
            get_tool_input_schema=tool_input_schema,
            on_list_tools=list_tools,
            on_call_tool=call_tool,
            on_list_resources=list_resources if has_resources else None,
            on_list_resource_templates=list_resource_templates if has_resources else None,
            on_read_resource=read_resource if has_resources else None,
            on_subscribe_resource=subscribe if has_resources else None,
            on_unsubscribe_resource=unsubscribe if has_resources else None,
            on_list_prompts=list_prompts if has_prompts else None,
            on_get_prompt=get_prompt if has_prompts else None,
            on_completion=complete if has_prompts or has_resources else None,
            on_set_logging_level=set_logging_level,
        )
    security = request_state_security or RequestStateSecurity.ephemeral()
    if not tracing_configured():
        # The SDK opens an OpenTelemetry span around every request; with no tracer provider
        # installed each one is a no-op that still costs a few per cent of a tool call.
        server.middleware[:] = [m for m in server.middleware if not isinstance(m, OpenTelemetryMiddleware)]
    server.middleware.append(RequestStateBoundary(security, default_audience=audience or name))
    return server


def tracing_configured() -> bool:
    """Whether an OpenTelemetry tracer provider is installed (e.g. by ``opentelemetry-instrument``)."""
    provider = trace.get_tracer_provider()
    return not isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider)


class _ListChangedServer(Server[Any]):
    """Advertises ``listChanged`` in the handshake era: grants and registrations change while the
    server runs, and its sessions are told (see :mod:`tenantry.server.list_changed`)."""

    def create_initialization_options(
        self,
        notification_options: NotificationOptions | None = None,
        experimental_capabilities: dict[str, dict[str, Any]] | None = None,
        extensions: dict[str, dict[str, Any]] | None = None,
    ) -> InitializationOptions:
        options = notification_options or NotificationOptions(
            prompts_changed=True, resources_changed=True, tools_changed=True
        )
        return super().create_initialization_options(options, experimental_capabilities, extensions)


async def _empty() -> types.EmptyResult:
    return types.EmptyResult()
