"""``tenantry.App``: where a tool author registers tools, resources and prompts.

Tools, resources and prompts share one namespace of *capability names*. A tenant sees a
capability when it is registered for that tenant (all tenants, or the ``tenants=`` list),
granted to the tenant, and present in the credential's ``allowed_tools``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, get_type_hints

from mcp.server.mcpserver.utilities.func_metadata import FuncMetadata, func_metadata
from mcp.shared.uri_template import InvalidUriTemplate, UriTemplate
from mcp_types import ToolAnnotations

from tenantry.core.errors import UsageError
from tenantry.core.ids import validate_tenant_id, validate_tool_name
from tenantry.framework.context import ToolContext
from tenantry.framework.markers import ResourceArgument, find_resource_arguments
from tenantry.policy.catalogue import Catalogue

__all__ = ["App", "ToolDefinition", "ResourceDefinition", "PromptDefinition", "TenantView"]

_F = TypeVar("_F", bound=Callable[..., Any])


def _context_parameter(fn: Callable[..., Any]) -> str | None:
    """The name of the parameter annotated ``ToolContext``, if any."""
    try:
        hints = get_type_hints(fn)
    except (NameError, TypeError) as exc:
        raise UsageError(f"cannot resolve the type hints of {fn.__qualname__}: {exc}") from None
    for name, hint in hints.items():
        if hint is ToolContext:
            return name
    return None


def _tenant_set(tenants: Iterable[str] | None) -> frozenset[str] | None:
    if tenants is None:
        return None
    if isinstance(tenants, str):
        raise UsageError("tenants= takes a list of tenant ids, not a single string")
    return frozenset(validate_tenant_id(t) for t in tenants)


def _signature_for_schema(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn``, or a stand-in whose bare ``dict``/``list`` return is read as ``dict[str, Any]``/``list[Any]``,
    so that ``-> dict`` tools publish structured output like ``-> dict[str, Any]`` ones do."""
    signature = inspect.signature(fn, eval_str=True)
    returned = signature.return_annotation
    if returned is not dict and returned is not list:
        return fn
    widened: Any = dict[str, Any] if returned is dict else list[Any]

    def stand_in(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)  # the SDK only reads the signature; calling it still works

    stand_in.__signature__ = signature.replace(return_annotation=widened)  # type: ignore[attr-defined]
    stand_in.__name__ = fn.__name__
    return stand_in


def _require_async(fn: Callable[..., Any]) -> None:
    if not inspect.iscoroutinefunction(fn):
        raise UsageError(f"{fn.__qualname__} must be an async function (tools run on the event loop)")


@dataclass(frozen=True)
class ToolDefinition:
    name: str
    fn: Callable[..., Any]
    description: str
    metadata: FuncMetadata
    input_schema: dict[str, Any]
    context_param: str | None
    tenants: frozenset[str] | None
    resource_arguments: Mapping[str, ResourceArgument]
    title: str | None = None
    annotations: ToolAnnotations | None = None
    argument_names: frozenset[str] = field(default_factory=frozenset)
    validate_off_loop: bool = False
    """Its arguments are validated in the tenant's own threads, never on the event loop (an
    upstream schema with regular expressions: matching may take up to its time budget)."""
    upstream: str | None = None
    """Gateway mode: the upstream MCP server that runs this tool (``None``: a Python function here)."""
    upstream_name: str | None = None
    """The tool's own name on its upstream."""

    def available_to(self, tenant_id: str) -> bool:
        return self.tenants is None or tenant_id in self.tenants


@dataclass(frozen=True)
class ResourceDefinition:
    name: str
    uri: str
    fn: Callable[..., Any]
    description: str
    mime_type: str
    context_param: str | None
    tenants: frozenset[str] | None
    title: str | None = None
    template: UriTemplate | None = None
    """Set for a resource template (``test://items/{id}``); its variables become the function's arguments."""
    upstream: str | None = None
    """Gateway mode: the upstream MCP server that serves this resource (``None``: a Python function here)."""
    upstream_name: str | None = None
    """The resource's own name on its upstream."""

    def available_to(self, tenant_id: str) -> bool:
        return self.tenants is None or tenant_id in self.tenants

    def match(self, uri: str) -> dict[str, Any] | None:
        """The function's arguments when ``uri`` names this resource, else ``None``."""
        if self.template is None:
            return {} if uri == self.uri else None
        return self.template.match(uri)


@dataclass(frozen=True)
class PromptDefinition:
    name: str
    fn: Callable[..., Any]
    description: str
    metadata: FuncMetadata
    context_param: str | None
    tenants: frozenset[str] | None
    arguments: tuple[tuple[str, bool, str | None], ...]
    """``(name, required, description)`` per argument."""
    title: str | None = None
    upstream: str | None = None
    """Gateway mode: the upstream MCP server that serves this prompt."""
    upstream_name: str | None = None
    """The prompt's own name on its upstream."""

    def available_to(self, tenant_id: str) -> bool:
        return self.tenants is None or tenant_id in self.tenants


@dataclass(frozen=True)
class TenantView:
    """What one upstream serves to one tenant (gateway mode, an upstream that is not tenant-agnostic):
    listed through that tenant's own session, so its names, descriptions and URIs may quote that
    tenant's data and are shown to nobody else."""

    tools: Mapping[str, ToolDefinition] = field(default_factory=dict)
    resources: Mapping[str, ResourceDefinition] = field(default_factory=dict)
    prompts: Mapping[str, PromptDefinition] = field(default_factory=dict)

    def names(self) -> list[str]:
        return [*self.tools, *self.resources, *self.prompts]


@dataclass(frozen=True)
class _Effective:
    """One tenant's whole registry: the shared one with its views laid over it."""

    tools: Mapping[str, ToolDefinition]
    resources: Mapping[str, ResourceDefinition]
    prompts: Mapping[str, PromptDefinition]


class App:
    """A set of tools (and resources and prompts) served to tenants.

    Example::

        app = tenantry.App()

        @app.tool()
        async def whoami(ctx: tenantry.ToolContext) -> dict:
            return {"tenant": ctx.tenant_id}
    """

    def __init__(self, name: str = "tenantry") -> None:
        self.name = name
        self._tools: dict[str, ToolDefinition] = {}
        self._resources: dict[str, ResourceDefinition] = {}
        self._prompts: dict[str, PromptDefinition] = {}
        self._views: dict[str, dict[str, TenantView]] = {}
        """tenant id -> upstream -> what that upstream serves that tenant alone."""
        self._effective: dict[str, _Effective] = {}
        self._listeners: list[Callable[[frozenset[str] | None], None]] = []

    def add_change_listener(self, listener: Callable[[frozenset[str] | None], None]) -> None:
        """Call ``listener(tenants)`` whenever a tool, resource or prompt is registered or removed:
        ``tenants`` names the tenants whose catalogue changed (a change of their own views), or is
        ``None`` when it changed for everyone. A tenant's view changing is nobody else's business:
        not even the moment it happened may reach another tenant."""
        self._listeners.append(listener)

    def _changed(self, tenants: frozenset[str] | None = None) -> None:
        if tenants is None:
            self._effective.clear()
        else:
            for tenant_id in tenants:
                self._effective.pop(tenant_id, None)
        for listener in self._listeners:
            listener(tenants)

    def remove(self, name: str) -> bool:
        """Unregister the tool, resource or prompt ``name`` (it disappears for every tenant at once);
        ``True`` if it was registered."""
        removed = any(
            registry.pop(name, None) is not None for registry in (self._tools, self._resources, self._prompts)
        )
        if removed:
            self._changed()
        return removed

    def replace_upstream_tools(self, upstream: str, tools: Iterable[ToolDefinition]) -> None:
        """Gateway mode: make ``tools`` the whole set of tools registered for ``upstream`` (its
        resources and prompts stay). :raises UsageError: as :meth:`replace_upstream`."""
        resources = [r for r in self._resources.values() if r.upstream == upstream]
        prompts = [p for p in self._prompts.values() if p.upstream == upstream]
        self.replace_upstream(upstream, tools, resources, prompts)

    def replace_upstream(
        self,
        upstream: str,
        tools: Iterable[ToolDefinition] = (),
        resources: Iterable[ResourceDefinition] = (),
        prompts: Iterable[PromptDefinition] = (),
    ) -> None:
        """Gateway mode: make these the whole set of tools, resources and prompts registered for
        ``upstream`` (one change notification). Names and resource URIs taken by anything else are
        refused, and nothing changes.

        :raises UsageError: a native capability or another upstream's already has the name (or URI).
        """
        new_tools = {tool.name: tool for tool in tools}
        new_resources = {resource.name: resource for resource in resources}
        new_prompts = {prompt.name: prompt for prompt in prompts}
        registries = (self._tools, self._resources, self._prompts)
        mine = {name for registry in registries for name, item in registry.items() if item.upstream == upstream}
        names = [*new_tools, *new_resources, *new_prompts]
        if len(names) != len(set(names)):
            raise UsageError(f"upstream {upstream!r} would register one name twice")
        for name in names:
            if name not in mine:
                self._claim(name)
        viewed = {
            n for views in self._views.values() for u, view in views.items() if u != upstream for n in view.names()
        }
        if viewed.intersection(names):
            raise UsageError(f"upstream {upstream!r} would register a name another upstream serves a tenant")
        others = {r.uri for r in self._resources.values() if r.upstream != upstream}
        for resource in new_resources.values():
            if resource.uri in others:
                raise UsageError(f"resource URI {resource.uri!r} is registered twice")
        for registry in registries:
            for name in [n for n, item in registry.items() if item.upstream == upstream]:
                del registry[name]
        self._tools.update(new_tools)
        self._resources.update(new_resources)
        self._prompts.update(new_prompts)
        if mine or names:
            self._changed()

    def set_tenant_view(self, upstream: str, tenant_id: str, view: TenantView | None) -> None:
        """Gateway mode: make ``view`` what ``upstream`` serves ``tenant_id`` (``None``: nothing),
        seen by that tenant only. Its names and URIs must be free for that tenant: not registered
        for everyone, nor by another upstream's view of the same tenant.

        :raises UsageError: a name or URI is taken (nothing changes then).
        """
        views = self._views.get(tenant_id, {})
        before = views.get(upstream)
        if view is None or not view.names():
            if before is not None:
                del views[upstream]
                if not views:
                    self._views.pop(tenant_id, None)
                self._changed(frozenset({tenant_id}))
            return
        names = view.names()
        if len(names) != len(set(names)):
            raise UsageError(f"upstream {upstream!r} would register one name twice")
        shared = self._registries_names()
        others = {n for u, v in views.items() if u != upstream for n in v.names()}
        if shared.intersection(names) or others.intersection(names):
            raise UsageError(f"upstream {upstream!r} would register a name that is already taken")
        uris = {r.uri for r in self._resources.values()} | {
            r.uri for u, v in views.items() if u != upstream for r in v.resources.values()
        }
        if any(r.uri in uris for r in view.resources.values()):
            raise UsageError(f"upstream {upstream!r} would register a resource URI that is already taken")
        self._views.setdefault(tenant_id, {})[upstream] = view
        self._changed(frozenset({tenant_id}))

    def drop_tenant_views(self, upstream: str, keep: Callable[[str], bool] = lambda tenant_id: False) -> None:
        """Forget what ``upstream`` serves each tenant, but for the tenants ``keep`` names."""
        changed: set[str] = set()
        for tenant_id in list(self._views):
            views = self._views[tenant_id]
            if upstream in views and not keep(tenant_id):
                del views[upstream]
                changed.add(tenant_id)
                if not views:
                    del self._views[tenant_id]
        if changed:
            self._changed(frozenset(changed))

    def tenant_view(self, upstream: str, tenant_id: str) -> TenantView | None:
        return self._views.get(tenant_id, {}).get(upstream)

    def _registries_names(self) -> frozenset[str]:
        return frozenset(self._tools) | frozenset(self._resources) | frozenset(self._prompts)

    def _for(self, tenant_id: str) -> _Effective:
        views = self._views.get(tenant_id)
        if not views:
            return _Effective(self._tools, self._resources, self._prompts)
        effective = self._effective.get(tenant_id)
        if effective is None:
            tools, resources, prompts = dict(self._tools), dict(self._resources), dict(self._prompts)
            for view in views.values():
                tools.update(view.tools)
                resources.update(view.resources)
                prompts.update(view.prompts)
            effective = self._effective[tenant_id] = _Effective(tools, resources, prompts)
        return effective

    def tools_for(self, tenant_id: str) -> Mapping[str, ToolDefinition]:
        """The tools registered for everyone or some tenants, with what upstreams serve ``tenant_id``
        alone (filter by :meth:`ToolDefinition.available_to` as for :attr:`tools`)."""
        return self._for(tenant_id).tools

    def resources_for(self, tenant_id: str) -> Mapping[str, ResourceDefinition]:
        return self._for(tenant_id).resources

    def prompts_for(self, tenant_id: str) -> Mapping[str, PromptDefinition]:
        return self._for(tenant_id).prompts

    # -- registration ---------------------------------------------------------------------

    def tool(
        self,
        name: str | None = None,
        *,
        description: str | None = None,
        tenants: Iterable[str] | None = None,
        title: str | None = None,
        annotations: ToolAnnotations | None = None,
    ) -> Callable[[_F], _F]:
        """Register an async function as a tool. Its JSON schema comes from its signature.

        :param tenants: restrict the tool to these tenants; it does not exist for anyone else.
        :raises UsageError: for a duplicate or invalid name or a non-async function.
        """

        def register(fn: _F) -> _F:
            _require_async(fn)
            tool_name = validate_tool_name(fn.__name__ if name is None else name)
            self._claim(tool_name)
            context_param = _context_parameter(fn)
            metadata = func_metadata(_signature_for_schema(fn), skip_names=[context_param] if context_param else [])
            schema = metadata.arg_model.model_json_schema(by_alias=True)
            schema["additionalProperties"] = False
            fields = metadata.arg_model.model_fields
            names = frozenset(info.alias or key for key, info in fields.items())
            self._tools[tool_name] = ToolDefinition(
                name=tool_name,
                fn=fn,
                description=description or inspect.getdoc(fn) or "",
                metadata=metadata,
                input_schema=schema,
                context_param=context_param,
                tenants=_tenant_set(tenants),
                resource_arguments=find_resource_arguments(fn),
                title=title,
                annotations=annotations,
                argument_names=names,
            )
            self._changed()
            return fn

        return register

    def resource(
        self,
        uri: str,
        *,
        name: str | None = None,
        description: str | None = None,
        mime_type: str = "text/plain",
        tenants: Iterable[str] | None = None,
        title: str | None = None,
    ) -> Callable[[_F], _F]:
        """Register a resource at ``uri`` whose content the function returns (str or bytes).

        A URI with ``{variables}`` (RFC 6570) registers a resource template; the variables
        are passed to the function by name.
        """

        def register(fn: _F) -> _F:
            _require_async(fn)
            resource_name = validate_tool_name(fn.__name__ if name is None else name)
            self._claim(resource_name)
            if any(r.uri == uri for r in self._resources.values()):
                raise UsageError(f"resource URI {uri!r} is registered twice")
            template: UriTemplate | None = None
            if UriTemplate.is_template(uri):
                try:
                    template = UriTemplate.parse(uri)
                except InvalidUriTemplate as exc:
                    raise UsageError(f"invalid resource template {uri!r}: {exc}") from None
            self._resources[resource_name] = ResourceDefinition(
                name=resource_name,
                uri=uri,
                fn=fn,
                description=description or inspect.getdoc(fn) or "",
                mime_type=mime_type,
                context_param=_context_parameter(fn),
                tenants=_tenant_set(tenants),
                title=title,
                template=template,
            )
            self._changed()
            return fn

        return register

    def prompt(
        self,
        name: str | None = None,
        *,
        description: str | None = None,
        tenants: Iterable[str] | None = None,
        title: str | None = None,
    ) -> Callable[[_F], _F]:
        """Register a prompt; the function returns a string or a list of ``PromptMessage``."""

        def register(fn: _F) -> _F:
            _require_async(fn)
            prompt_name = validate_tool_name(fn.__name__ if name is None else name)
            self._claim(prompt_name)
            context_param = _context_parameter(fn)
            metadata = func_metadata(fn, skip_names=[context_param] if context_param else [], structured_output=False)
            arguments = tuple(
                (info.alias or key, info.is_required(), info.description)
                for key, info in metadata.arg_model.model_fields.items()
            )
            self._prompts[prompt_name] = PromptDefinition(
                name=prompt_name,
                fn=fn,
                description=description or inspect.getdoc(fn) or "",
                metadata=metadata,
                context_param=context_param,
                tenants=_tenant_set(tenants),
                arguments=arguments,
                title=title,
            )
            self._changed()
            return fn

        return register

    def include(self, other: App) -> None:
        """Add every tool, resource and prompt of ``other`` (names must not collide)."""
        for tool in other._tools.values():
            self._claim(tool.name)
            self._tools[tool.name] = tool
        for resource in other._resources.values():
            self._claim(resource.name)
            self._resources[resource.name] = resource
        for prompt in other._prompts.values():
            self._claim(prompt.name)
            self._prompts[prompt.name] = prompt
        self._changed()

    def _claim(self, name: str) -> None:
        if name in self._tools or name in self._resources or name in self._prompts:
            raise UsageError(f"{name!r} is registered twice (tools, resources and prompts share one namespace)")
        if any(name in view.names() for views in self._views.values() for view in views.values()):
            raise UsageError(f"{name!r} is already served to a tenant by an upstream")

    # -- lookup -----------------------------------------------------------------------------

    @property
    def tools(self) -> Mapping[str, ToolDefinition]:
        return self._tools

    @property
    def resources(self) -> Mapping[str, ResourceDefinition]:
        return self._resources

    @property
    def prompts(self) -> Mapping[str, PromptDefinition]:
        return self._prompts

    def capability_names(self) -> frozenset[str]:
        """The names registered for everyone or some tenants (not those of tenants' views)."""
        return self._registries_names()

    def registered_for(self, tenant_id: str) -> frozenset[str]:
        """Every capability name that exists for ``tenant_id`` (before grants)."""
        effective = self._for(tenant_id)
        return frozenset(
            name
            for registry in (effective.tools, effective.resources, effective.prompts)
            for name, item in registry.items()
            if item.available_to(tenant_id)
        )

    def catalogue(self) -> Catalogue:
        """Every capability name with the tenants it is registered for (``None``: all)."""
        return Catalogue.of(
            (name, item.tenants)
            for registry in (self._tools, self._resources, self._prompts)
            for name, item in registry.items()
        )
