"""The gateway: which upstreams exist, one session per (upstream, tenant), their tools in the app.

Lifecycle, per upstream:

* **sessions**: a command (stdio) upstream runs one process per tenant, started at the tenant's
  first call; an HTTP upstream gets one session per tenant, or one shared by every tenant when
  it is declared tenant-agnostic. Each tenant's session carries that tenant's credentials only.
* **discovery**: the upstream's tools (and the resources, resource templates and prompts it
  advertises) are listed through the session of the first tenant allowed to use it (or the
  shared one), mapped to ``<upstream>__<name>`` (resource URIs to ``upstream://<upstream>/<uri>``)
  and registered in the app; a ``list_changed`` notification of any kind lists them again.
* **health**: live sessions are pinged every ``health_interval``; a session that fails, crashes
  or stops answering is closed and started again at the next call, after a backoff that doubles
  with each consecutive failure (at most 30 s). While backing off, calls fail at once with
  ``upstream_unavailable``. Idle sessions are closed after ``idle_timeout``.
* **process caps**: at most ``max_processes`` command-upstream processes live at once (all
  tenants together) and ``max_processes_per_tenant`` for any one tenant; a call that would
  start one more is refused with ``upstream_unavailable`` saying which limit is reached, and
  nothing running is stopped to make room. A process counts until it has exited.
* **subscriptions**: a client's ``resources/subscribe`` of an upstream resource subscribes the
  tenant's own session (the shared one, for a tenant-agnostic upstream) to the upstream's URI, once
  however many of the tenant's sessions ask (:meth:`Gateway.subscribe_resource`); the upstream's
  ``notifications/resources/updated`` on it goes to the listener for each tenant subscribed to
  that URI on that session, and to no other. A session with subscriptions is not closed as idle;
  one that ends is started again (after its backoff) and subscribes again to what is still
  subscribed.
* **storage**: what a tenant's command upstream writes in the tenant's directory counts against
  its file quota (see :mod:`tenantry.gateway.storage`): its calls are refused while the tenant
  is at its quota, and each one ends with the tenant's usage reconciled with the disk.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Coroutine, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import anyio
import anyio.abc
import anyio.to_thread
import mcp_types as types
from mcp.client._transport import TransportStreams
from mcp.client.session import ClientSession
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError

from tenantry.core.errors import NotFound, ResultTooLarge, TenantryError, UsageError
from tenantry.core.upstreams import SEPARATOR, TemplateValues, UpstreamSpec, exposed_uri, render_template
from tenantry.framework.app import App, PromptDefinition, ResourceDefinition, TenantView, ToolDefinition
from tenantry.framework.redaction import SecretRedactor
from tenantry.framework.views import ViewedTenant
from tenantry.gateway.errors import UpstreamError, UpstreamUnavailable
from tenantry.gateway.http_calls import HttpCalls
from tenantry.gateway.items import upstream_prompt_definition, upstream_resource_definition
from tenantry.gateway.naming import Exposed, ExposedItem, Kind, Skipped, map_items, map_tools
from tenantry.gateway.session import UpstreamSession
from tenantry.gateway.storage import UpstreamStorage
from tenantry.gateway.tools import upstream_tool_definition
from tenantry.gateway.transports import StderrTail, http_streams, stdio_streams
from tenantry.scoping.files.local import tenant_files_root

__all__ = ["Gateway", "UpstreamReport", "SecretReader"]

logger = logging.getLogger(__name__)

SecretReader = Callable[[str, str], Awaitable[str]]
"""``(tenant_id, name) -> value``; raises :class:`~tenantry.core.errors.NotFound` for a missing secret."""

_SHARED = "*"
_MAX_BACKOFF = 30.0
_PAGES = 100
_T = TypeVar("_T")
_FILE_SIZE_LIMIT = Path(__file__).with_name("file_size_limit.py")
_SANDBOX = Path(__file__).with_name("sandbox.py")
_DIE_WITH_PARENT = Path(__file__).with_name("die_with_parent.py")


@dataclass
class UpstreamReport:
    """What the last discovery of one upstream found (published for ``tenantry upstream list``)."""

    name: str
    state: str = "pending"
    """``pending``, ``ready`` or ``unavailable``."""
    error: str | None = None
    tools: list[str] = field(default_factory=list)
    resources: list[str] = field(default_factory=list)
    """The grantable names of its resources and resource templates."""
    prompts: list[str] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    discovered_at: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "state": self.state,
            "error": self.error,
            "tools": self.tools,
            "resources": self.resources,
            "prompts": self.prompts,
            "skipped": [
                {"tool": s.upstream_tool, "kind": s.kind, "reason": s.reason, "why": s.explanation}
                for s in self.skipped
            ],
            "discovered_at": self.discovered_at,
        }


@dataclass
class _Backoff:
    failures: int = 0
    retry_at: float = 0.0


class Gateway:
    """:param tenants: the ids of the tenants that exist now and are not halted (discovery picks one
        allowed to use an upstream; a view listed for a tenant no longer among them is dropped).
    :param publish: told every new :class:`UpstreamReport` (the server stores it for the CLI).
    :param max_message: the largest single message accepted from an upstream (bytes).
    :param max_processes: command-upstream processes alive at once, all tenants together.
    :param max_processes_per_tenant: command-upstream processes alive at once for one tenant.
    :param storage: counts what tenants' command upstreams write against their file quotas
        (without it, nothing does).
    :param max_view_items: tools, resources and prompts kept in all tenants' views together; past
        it, the least recently listed views are dropped (listed again at their tenant's next request).
    """

    def __init__(
        self,
        app: App,
        *,
        data_dir: Path,
        read_secret: SecretReader,
        tenants: Callable[[], Iterable[str]],
        max_message: int = 4 * 1024 * 1024,
        publish: Callable[[UpstreamReport], Awaitable[None]] | None = None,
        health_interval: float = 15.0,
        idle_timeout: float = 600.0,
        max_processes: int = 64,
        max_processes_per_tenant: int = 8,
        storage: UpstreamStorage | None = None,
        max_view_items: int = 100_000,
        sandbox: Literal["required", "auto", "off"] = "auto",
        die_with_parent: bool = False,
    ) -> None:
        self._app = app
        self._sandbox = sandbox if sys.platform.startswith("linux") else "off"
        self._die_with_parent = die_with_parent and sys.platform.startswith("linux")
        self._storage = storage
        self._data_dir = data_dir
        self._read_secret = read_secret
        self._tenants = tenants
        self._max_message = max_message
        self._publish = publish
        self._health_interval = health_interval
        self._idle_timeout = idle_timeout
        self._max_processes = max_processes
        self._max_processes_per_tenant = max_processes_per_tenant
        self._processes: dict[UpstreamSession, str] = {}
        """Command-upstream sessions whose process may be alive, and their tenant."""
        self._retired: set[UpstreamSession] = set()
        """Sessions replaced while calls were in flight on them: closed when the last one ends."""
        self._specs: dict[str, UpstreamSpec] = {}
        self._sessions: dict[tuple[str, str], UpstreamSession] = {}
        self._locks: dict[tuple[str, str], anyio.Lock] = {}
        self._backoff: dict[tuple[str, str], _Backoff] = {}
        self._reports: dict[str, UpstreamReport] = {}
        self._discovering: dict[str, bool] = {}
        self._views: dict[tuple[str, str], _ViewState] = {}
        """(upstream, tenant) -> that tenant's own listing of a per-tenant upstream."""
        self._view_sizes: dict[tuple[str, str], int] = {}
        """Items in each tenant's view, least recently listed first (the views' memory budget)."""
        self._max_view_items = max_view_items
        self._current: dict[str, tuple[frozenset[str], float]] = {}
        """tenant -> the grants its views were loaded for, and until when they are current."""
        self._subscriptions: dict[tuple[str, str, str], _Subscription] = {}
        """(upstream, session's tenant or ``*``, the upstream's URI) -> who subscribed to it."""
        self._on_resource_updated: Callable[[str, str], None] | None = None
        self._tasks: anyio.abc.TaskGroup | None = None
        self._started = anyio.Event()

    # -- running ----------------------------------------------------------------------------

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Gateway]:
        """Sessions live while this is entered; leaving it closes every one."""
        async with anyio.create_task_group() as tasks:
            self._tasks = tasks
            self._started.set()
            tasks.start_soon(self._health_loop)
            try:
                yield self
            finally:
                with anyio.CancelScope(shield=True):
                    await self._close_where(lambda key: True)
                tasks.cancel_scope.cancel()
        self._tasks = None

    def on_resource_updated(self, listener: Callable[[str, str], None]) -> None:
        """``listener(tenant_id, exposed_uri)`` is told (without awaiting) of each update of a resource
        the tenant subscribed to, that the upstream sent on the session serving that tenant."""
        self._on_resource_updated = listener

    def report(self, name: str) -> UpstreamReport | None:
        return self._reports.get(name)

    def route(self, upstream: str | None) -> UpstreamSpec:
        """The configured upstream behind a tool, resource or prompt definition's ``upstream``.

        :raises UpstreamUnavailable: the upstream was removed meanwhile.
        """
        spec = None if upstream is None else self._specs.get(upstream)
        if spec is None:
            raise UpstreamUnavailable("the upstream serving this was removed")
        return spec

    async def apply(self, specs: Mapping[str, UpstreamSpec]) -> None:
        """Make the configured upstreams ``specs``: new ones are discovered (in the background),
        removed ones' tools disappear and their sessions close, changed ones start afresh."""
        await self._started.wait()
        for name in [n for n in self._specs if n not in specs or specs[n] != self._specs[n]]:
            del self._specs[name]
            self._forget_tools(name)
            self._reports.pop(name, None)
            await self._close_where(lambda key, name=name: key[0] == name)  # type: ignore[misc]
            logger.info("upstream removed", extra={"upstream": name})
        for name, spec in specs.items():
            if name not in self._specs:
                self._specs[name] = spec
                self._current.clear()  # each tenant's next request lists what it is granted of it
                self._spawn(self.rediscover, name)

    async def check(self, spec: UpstreamSpec) -> UpstreamReport:
        """Connect to ``spec`` now and list its tools (``tenantry upstream add`` does this once)."""
        await self._started.wait()
        self._specs[spec.name] = spec
        report = await self._discover(spec.name)
        assert report is not None
        return report

    async def rediscover_soon(self, name: str) -> None:
        """List the upstream's tools again, in the background."""
        await self._started.wait()
        self._spawn(self.rediscover, name)

    def _spawn(self, fn: Callable[[str], Coroutine[Any, Any, Any]], name: str) -> None:
        if self._tasks is not None:  # None once the gateway has stopped: nothing more to do
            self._tasks.start_soon(fn, name)

    # -- discovery --------------------------------------------------------------------------

    async def rediscover(self, name: str) -> UpstreamReport | None:
        """List the upstream's tools again and register them (at most one listing at a time)."""
        if self._discovering.get(name) is not None:
            self._discovering[name] = True  # run once more when the current listing ends
            return self._reports.get(name)
        self._discovering[name] = False
        try:
            while True:
                report = await self._discover(name)
                if not self._discovering.get(name):
                    return report
                self._discovering[name] = False
        finally:
            self._discovering.pop(name, None)

    async def _discover(self, name: str) -> UpstreamReport | None:
        spec = self._specs.get(name)
        if spec is None:
            return None
        report = UpstreamReport(name=name)
        candidates = [_SHARED] if spec.tenant_agnostic else [t for t in sorted(self._tenants()) if spec.available_to(t)]
        if not candidates:
            report.state, report.error = "unavailable", "no tenant may use this upstream yet (create one, or --tenants)"
        for tenant_id in candidates[:3]:
            try:
                listing = await self._list_all(spec, tenant_id)
            except TenantryError as exc:
                where = "" if tenant_id == _SHARED else f" (listing through tenant {tenant_id})"
                report.state, report.error = "unavailable", exc.message + where
                continue
            if self._specs.get(name) is not spec:
                return None  # removed or replaced while it was being listed
            self._register(spec, listing, report, tenant_id)
            break
        report.discovered_at = int(time.time())
        self._reports[name] = report
        if report.skipped:
            logger.warning(
                "some tools, resources or prompts of an upstream are not exposed",
                extra={"upstream": name, "skipped": {s.upstream_tool: s.reason for s in report.skipped[:50]}},
            )
        if report.error:
            logger.warning("upstream discovery failed", extra={"upstream": name, "reason": report.error})
        if self._publish is not None:
            try:
                await self._publish(report)
            except TenantryError as exc:
                logger.warning("could not publish an upstream's report", extra={"upstream": name, "code": exc.code})
        return report

    async def _list_all(self, spec: UpstreamSpec, tenant_id: str) -> _Listing:
        """Every tool of the upstream, and the resources, templates and prompts it advertises,
        each capped at ``max_tools`` (+1, so that going over it is reported)."""
        _, client = await self._session(spec, tenant_id)
        capabilities = client.server_capabilities
        listing = _Listing()
        try:
            with anyio.fail_after(spec.call_timeout):
                listing.tools = await _pages(lambda p: client.list_tools(params=p), "tools", spec.max_tools)
                if capabilities is not None and capabilities.resources is not None:
                    listing.resources = await _pages(
                        lambda p: client.list_resources(params=p), "resources", spec.max_tools, optional=True
                    )
                    listing.templates = await _pages(
                        lambda p: client.list_resource_templates(params=p),
                        "resource_templates",
                        spec.max_tools,
                        optional=True,
                    )
                if capabilities is not None and capabilities.prompts is not None:
                    listing.prompts = await _pages(
                        lambda p: client.list_prompts(params=p), "prompts", spec.max_tools, optional=True
                    )
        except TimeoutError:
            raise UpstreamUnavailable(
                f"upstream {spec.name!r} did not list its tools, resources and prompts in time"
            ) from None
        except MCPError as exc:
            raise UpstreamUnavailable(
                f"upstream {spec.name!r} refused to list its tools, resources or prompts: {exc.error.message[:200]}"
            ) from None
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            raise UpstreamUnavailable(f"upstream {spec.name!r} closed the connection") from None
        return listing

    def _register(self, spec: UpstreamSpec, listing: _Listing, report: UpstreamReport, tenant_id: str) -> None:
        """Serve the listing: to every tenant allowed (a tenant-agnostic upstream), or as the view of
        the one tenant it was listed through (any other upstream: it may quote that tenant's data)."""
        if spec.tenant_agnostic:
            mapped = self._mapped(spec, listing, self._taken(spec.name, None))
            self._app.replace_upstream(spec.name, *mapped.definitions(spec.name, spec.tenants))
        else:
            self._app.replace_upstream(spec.name)  # nothing of it is shared
            mapped = self._set_view(spec, tenant_id, listing)
        report.state, report.error = "ready", None
        report.tools = sorted(e.name for e in mapped.tools)
        report.resources = sorted(e.name for e in mapped.items if e.kind != "prompt")
        report.prompts = sorted(e.name for e in mapped.items if e.kind == "prompt")
        report.skipped = mapped.skipped

    def _taken(self, upstream: str, tenant_id: str | None) -> tuple[set[str], set[str]]:
        """The names and resource URIs ``upstream`` may not use: what anything else registered for
        everyone, and what other upstreams serve in their views (of ``tenant_id``, or of anyone
        when ``upstream`` is shared)."""
        names = {n for n in self._app.capability_names() if self._upstream_of(n) != upstream}
        uris = {r.uri for r in self._app.resources.values() if r.upstream != upstream}
        for other, viewer in self._views:
            view = (
                None if other == upstream or tenant_id not in (None, viewer) else self._app.tenant_view(other, viewer)
            )
            if view is not None:
                names.update(view.names())
                uris.update(r.uri for r in view.resources.values())
        return names, uris

    def _upstream_of(self, name: str) -> str | None:
        item = self._app.tools.get(name) or self._app.resources.get(name) or self._app.prompts.get(name)
        return None if item is None else item.upstream

    @staticmethod
    def _mapped(spec: UpstreamSpec, listing: _Listing, taken: tuple[set[str], set[str]]) -> _Mapped:
        names, uris = taken
        tools, skipped = map_tools(spec.name, listing.tools, names, max_tools=spec.max_tools)
        names.update(e.name for e in tools)
        items: list[ExposedItem] = []
        kinds: list[tuple[Kind, Sequence[Any]]] = [
            ("resource", listing.resources),
            ("resource_template", listing.templates),
            ("prompt", listing.prompts),
        ]
        for kind, listed in kinds:
            exposed, refused = map_items(spec.name, kind, listed, names, uris, max_items=spec.max_tools)
            names.update(e.name for e in exposed)
            uris.update(e.uri for e in exposed if e.uri is not None)
            items += exposed
            skipped += refused
        return _Mapped(tools, items, skipped)

    def _set_view(self, spec: UpstreamSpec, tenant_id: str, listing: _Listing) -> _Mapped:
        mapped = self._mapped(spec, listing, self._taken(spec.name, tenant_id))
        tools, resources, prompts = mapped.definitions(spec.name, frozenset({tenant_id}))
        self._app.set_tenant_view(
            spec.name,
            tenant_id,
            TenantView(
                tools={t.name: t for t in tools},
                resources={r.name: r for r in resources},
                prompts={p.name: p for p in prompts},
            ),
        )
        key = (spec.name, tenant_id)
        self._views[key] = _ViewState(loaded=True, spec=spec)
        self._view_sizes.pop(key, None)
        self._view_sizes[key] = len(tools) + len(resources) + len(prompts)
        self._evict_views(keep=key)
        return mapped

    def _evict_views(self, keep: tuple[str, str]) -> None:
        """Drop the least recently listed views while all of them hold more than the budget."""
        total = sum(self._view_sizes.values())
        for key in list(self._view_sizes):
            if total <= self._max_view_items:
                return
            if key == keep:
                continue
            total -= self._view_sizes.pop(key)
            state = self._views.get(key)
            if state is not None and state.loading is None:
                del self._views[key]
            self._app.set_tenant_view(key[0], key[1], None)
            self._current.pop(key[1], None)

    def _forget_tools(self, name: str) -> None:
        self._app.replace_upstream(name)
        self._app.drop_tenant_views(name)
        for key in [k for k in self._views if k[0] == name]:
            del self._views[key]
        for key in [k for k in self._view_sizes if k[0] == name]:
            del self._view_sizes[key]
        self._current.clear()

    # -- per-tenant views -------------------------------------------------------------------

    def views_current(self, tenant: ViewedTenant) -> bool:
        """Whether every per-tenant upstream ``tenant`` is granted something of has been listed
        through its own session (or failed recently enough not to be tried again yet)."""
        current = self._current.get(tenant.id)
        if current is None:
            return not self._specs
        grants, until = current
        return (grants is tenant.grants or grants == tenant.grants) and time.monotonic() < until

    async def load_views(self, tenant: ViewedTenant) -> None:
        """List, through ``tenant``'s own sessions, each per-tenant upstream it is granted something
        of and has no current view of (concurrently, each within the upstream's call timeout).

        A listing that fails leaves the tenant the view it had, or else its granted tools of that
        upstream without descriptions (so that calling one answers ``upstream_unavailable``, and is
        audited), and is tried again after the session's backoff.
        """
        until = float("inf")
        wanted = [
            spec
            for spec in self._specs.values()
            if not spec.tenant_agnostic and spec.available_to(tenant.id) and _granted_any(tenant.grants, spec.name)
        ]
        async with anyio.create_task_group() as tasks:
            for spec in wanted:
                state = self._views.get((spec.name, tenant.id))
                if state is not None and state.spec is spec and (state.loaded or time.monotonic() < state.retry_at):
                    if not state.loaded:
                        until = min(until, state.retry_at)
                    continue
                tasks.start_soon(self._load_view, spec, tenant)
        for spec in wanted:
            state = self._views.get((spec.name, tenant.id))
            if state is not None and not state.loaded:
                until = min(until, state.retry_at)
        if len(self._current) > 100_000:
            self._current.clear()
        self._current[tenant.id] = (tenant.grants, until)

    async def _load_view(self, spec: UpstreamSpec, tenant: ViewedTenant) -> None:
        key = (spec.name, tenant.id)
        state = self._views.get(key)
        if state is not None and state.loading is not None:
            await state.loading.wait()  # another request of this tenant is listing it
            return
        loading = anyio.Event()
        self._views[key] = _ViewState(loaded=False, spec=spec, loading=loading, retry_at=0.0)
        try:
            try:
                listing = await self._list_all(spec, tenant.id)
            except TenantryError as exc:
                logger.warning(
                    "could not list an upstream through a tenant's session",
                    extra={"upstream": spec.name, "tenant_id": tenant.id, "reason": exc.message},
                )
                self._view_failed(spec, tenant)
                return
            if self._specs.get(spec.name) is not spec:
                return  # removed or replaced while it was being listed
            if tenant.id not in set(self._tenants()):
                return  # deleted (or halted) while it was being listed: nothing is kept in its name
            try:
                self._set_view(spec, tenant.id, listing)
            except UsageError as exc:  # a name another upstream took for this tenant meanwhile
                logger.warning(
                    "an upstream's view of a tenant was refused", extra={"upstream": spec.name, "why": str(exc)}
                )
                self._view_failed(spec, tenant)
            if tenant.tier == "dedicated" and spec.transport == "stdio":
                # The tenant's calls run its command upstreams in its worker; this process was
                # started for the listing only.
                await self._close_where(lambda k: k == (spec.name, tenant.id))
        finally:
            loading.set()
            state = self._views.get(key)
            if state is not None and state.loading is loading:
                state.loading = None

    def _view_failed(self, spec: UpstreamSpec, tenant: ViewedTenant) -> None:
        """Keep the view the tenant had; without one, serve the tenant's own grants of ``spec``'s
        names as tools with no description, so that a call reaches the gateway and answers
        ``upstream_unavailable`` like any call of an upstream that is down. Only the tenant's
        grants decide them, not the discovery's report (another tenant's listing)."""
        key = (spec.name, tenant.id)
        backoff = self._backoff.get(key)
        retry_at = max(time.monotonic() + 1.0, backoff.retry_at if backoff is not None else 0.0)
        self._views[key] = _ViewState(loaded=False, spec=spec, retry_at=retry_at)
        if self._app.tenant_view(spec.name, tenant.id) is not None:
            return
        prefix = spec.name + SEPARATOR
        placeholders = {}
        for name in sorted(n for n in tenant.grants if n.startswith(prefix))[: spec.max_tools]:
            own = types.Tool(name=name[len(prefix) :], input_schema={"type": "object"})
            placeholders[name] = upstream_tool_definition(
                spec.name, Exposed(name, own.name, own), frozenset({tenant.id})
            )
        with contextlib.suppress(UsageError):  # a name another upstream serves this tenant: it keeps that one
            self._app.set_tenant_view(spec.name, tenant.id, TenantView(tools=placeholders))

    async def forget_tenants(self, remaining: Collection[str]) -> None:
        """Drop the views of tenants that no longer exist, and close their sessions: a tenant made
        later under the same id must not be served by a process started (with the credentials,
        and holding what it read of the files) of the deleted one."""
        gone = {tenant_id for _, tenant_id in (*self._views, *self._sessions) if tenant_id not in remaining}
        gone.discard(_SHARED)
        if not gone:
            return
        await self._close_where(lambda key: key[1] in gone)
        for key in [k for k in self._backoff if k[1] in gone]:
            del self._backoff[key]
        for upstream in {u for u, t in self._views if t in gone}:
            self._app.drop_tenant_views(upstream, keep=lambda tenant_id: tenant_id not in gone)
        for key in [k for k in self._views if k[1] in gone]:
            del self._views[key]
        for key in [k for k in self._view_sizes if k[1] in gone]:
            del self._view_sizes[key]
        for tenant_id in gone:
            self._current.pop(tenant_id, None)

    async def _reload_view(self, name: str, tenant_id: str) -> None:
        """The upstream said its list changed on this tenant's session: list it again for this tenant."""
        self._views.pop((name, tenant_id), None)
        self._current.pop(tenant_id, None)  # the tenant's next request lists it again

    # -- calls ------------------------------------------------------------------------------

    async def call_tool(
        self, spec: UpstreamSpec, tenant_id: str, tool: str, arguments: dict[str, Any]
    ) -> types.CallToolResult:
        """Call ``tool`` on the tenant's session (started if needed).

        :raises UpstreamUnavailable: the upstream cannot be reached or the session broke.
        :raises UpstreamError: the upstream answered with a protocol error.
        """

        async def direct_call(
            direct: HttpCalls, client: ClientSession, session: UpstreamSession
        ) -> types.CallToolResult:
            result = await direct.call_tool(
                tool,
                arguments,
                stamp=client._stamp,  # the SDK session's own stamp for its negotiated era
                on_notification=session.handle_notification,
                fail_session=session.fail,
            )
            if not result.is_error:
                await client.validate_tool_result(tool, result)  # against the tool's output schema
            return result

        return await self._request(spec, tenant_id, lambda client: client.call_tool(tool, arguments), direct_call)

    async def read_resource(self, spec: UpstreamSpec, tenant_id: str, uri: str) -> types.ReadResourceResult:
        """Read the upstream's own ``uri`` on the tenant's session. :raises: as :meth:`call_tool`."""
        return await self._request(spec, tenant_id, lambda client: client.read_resource(uri))

    async def get_prompt(
        self, spec: UpstreamSpec, tenant_id: str, prompt: str, arguments: dict[str, str]
    ) -> types.GetPromptResult:
        """Get the upstream's prompt ``prompt`` on the tenant's session. :raises: as :meth:`call_tool`."""
        return await self._request(spec, tenant_id, lambda client: client.get_prompt(prompt, arguments))

    async def complete(
        self,
        spec: UpstreamSpec,
        tenant_id: str,
        ref: types.PromptReference | types.ResourceTemplateReference,
        argument: dict[str, str],
        context_arguments: dict[str, str] | None,
    ) -> types.CompleteResult:
        """Ask for completions of ``argument`` of the upstream's own prompt or template ``ref`` on the
        tenant's session; an upstream that offers no completions is not asked. :raises: as
        :meth:`call_tool`."""

        async def send(client: ClientSession) -> types.CompleteResult:
            capabilities = client.server_capabilities
            if capabilities is None or capabilities.completions is None:
                return types.CompleteResult(completion=types.Completion(values=[]))
            return await client.complete(ref, argument, context_arguments)

        return await self._request(spec, tenant_id, send)

    async def _request(
        self,
        spec: UpstreamSpec,
        tenant_id: str,
        send: Callable[[ClientSession], Awaitable[_T]],
        direct_send: Callable[[HttpCalls, ClientSession, UpstreamSession], Awaitable[_T]] | None = None,
    ) -> _T:
        """:meth:`_send`, for a tenant's command upstream inside its storage quota (refused at the
        quota, usage reconciled after; see :mod:`tenantry.gateway.storage`).

        :raises StorageQuotaExceeded: the tenant is at its quota (the upstream is not called).
        """
        storage = self._storage if spec.transport == "stdio" and not spec.tenant_agnostic else None
        if storage is None:
            return await self._send(spec, tenant_id, send, direct_send)
        await storage.check_room(tenant_id)
        try:
            return await self._send(spec, tenant_id, send, direct_send)
        finally:
            await storage.reconcile(tenant_id)

    async def _send(
        self,
        spec: UpstreamSpec,
        tenant_id: str,
        send: Callable[[ClientSession], Awaitable[_T]],
        direct_send: Callable[[HttpCalls, ClientSession, UpstreamSession], Awaitable[_T]] | None = None,
    ) -> _T:
        """``send`` on the tenant's session (started if needed), or ``direct_send`` when the session
        has a direct HTTP path; the session's failures and the upstream's protocol errors are
        translated in this one place."""
        key = (spec.name, _SHARED if spec.tenant_agnostic else tenant_id)
        session = self._sessions.get(key)
        client = session.client if session is not None else None
        if session is None or client is None or self._outgrown(session, key[1]):
            session, client = await self._session(spec, tenant_id)
        session.in_flight += 1
        session.last_used = time.monotonic()
        direct = session.direct
        try:
            if direct_send is not None and direct is not None and direct.ready:
                # An HTTP upstream: one POST on the session's keep-alive connection (see http_calls).
                return await direct_send(direct, client, session)
            return await send(client)
        except MCPError as exc:
            if "byte limit" in exc.error.message:  # the transport's bound on one message (the session lives on)
                raise ResultTooLarge(
                    f"the upstream's answer is larger than the {self._max_message} byte limit"
                ) from None
            if not session.alive or exc.error.code == types.CONNECTION_CLOSED:
                session.fail("the connection closed")  # the next call starts a new session (after a backoff)
                raise UpstreamUnavailable(f"upstream {spec.name!r} closed the connection during the call") from None
            raise UpstreamError(f"upstream {spec.name!r}: {exc.error.message[:500]}") from None
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream):
            raise UpstreamUnavailable(f"upstream {spec.name!r} closed the connection during the call") from None
        except (TimeoutError, ValueError, RuntimeError) as exc:
            raise UpstreamError(f"upstream {spec.name!r} gave an unusable answer ({type(exc).__name__})") from None
        finally:
            session.in_flight -= 1
            if session.in_flight == 0 and session in self._retired:
                self._retired.discard(session)
                self._spawn_close(session)

    async def _session(self, spec: UpstreamSpec, tenant_id: str) -> tuple[UpstreamSession, ClientSession]:
        """The tenant's live session with ``spec`` and its client, started if needed.

        :raises UpstreamUnavailable: it cannot be started, or is backing off after failures.
        """
        key = (spec.name, _SHARED if spec.tenant_agnostic else tenant_id)
        lock = self._locks.setdefault(key, anyio.Lock())
        async with lock:
            session = self._sessions.get(key)
            if session is not None and not session.done and self._outgrown(session, key[1]):
                # Its process runs under a file size limit the tenant's quota has since been lowered
                # below: replaced by one under the new limit. Calls in flight finish on the old one,
                # closed once they have; waiting for a moment with none would let an agent that
                # always keeps one call going keep the old limit for ever.
                del self._sessions[key]
                if session.in_flight == 0:
                    self._spawn_close(session)
                else:
                    self._retired.add(session)  # closed by the last of them (see _send)
                session = None
            if session is None or session.done:
                backoff = self._backoff.get(key)
                wait = 0.0 if backoff is None else backoff.retry_at - time.monotonic()
                if wait > 0:
                    raise UpstreamUnavailable(
                        f"upstream {spec.name!r} is unavailable (failed {backoff.failures} time(s) in a row;"  # type: ignore[union-attr]
                        f" next attempt in {wait:.1f}s)"
                    )
                session = await self._open(spec, key[1])
                if spec.transport == "stdio":
                    self._admit_process(spec, key[1])  # no await from here to the insert: no race
                    self._processes[session] = key[1]
                self._sessions[key] = session
                assert self._tasks is not None
                self._tasks.start_soon(self._supervise, key, session)
                if self._subscribed_on(key):
                    self._tasks.start_soon(self._resubscribe, spec, key, session)
        client = await session.ready()
        self._backoff.pop(key, None)
        return session, client

    # -- resource subscriptions -------------------------------------------------------------

    async def subscribe_resource(self, upstream: str, tenant_id: str, uri: str) -> None:
        """One more session of ``tenant_id`` subscribes to ``upstream``'s own resource ``uri``: the
        session serving the tenant subscribes to it upstream unless it already has (nothing is
        sent to an upstream that does not advertise ``resources.subscribe``: it sends no updates).

        :raises UpstreamUnavailable: the upstream was removed, cannot be reached or did not answer.
        :raises UpstreamError: it refused the subscription.
        """
        spec = self.route(upstream)
        key = (spec.name, _SHARED if spec.tenant_agnostic else tenant_id, uri)
        state = self._subscriptions.setdefault(key, _Subscription())
        state.counts[tenant_id] = state.counts.get(tenant_id, 0) + 1
        try:
            async with state.lock:
                if state.on is None or state.on.done:
                    session, client = await self._session(spec, tenant_id)
                    if _subscribable(client):
                        try:
                            with anyio.fail_after(spec.call_timeout):
                                await self._send(spec, tenant_id, lambda c: _subscription(c, uri, subscribe=True))
                        except TimeoutError:
                            raise UpstreamUnavailable(
                                f"upstream {spec.name!r} did not answer the subscription in time"
                            ) from None
                    state.on = session
        except BaseException:
            self._uncount(state, tenant_id)
            if not state.counts and not state.lock.locked() and self._subscriptions.get(key) is state:
                del self._subscriptions[key]
            raise

    async def unsubscribe_resource(self, upstream: str, tenant_id: str, uri: str) -> None:
        """One session of ``tenant_id`` no longer subscribes to ``uri``; the last one's going
        unsubscribes the session upstream (best effort)."""
        spec = self._specs.get(upstream)
        keys = [(upstream, tenant_id, uri), (upstream, _SHARED, uri)]
        if spec is not None:
            keys = keys[1:] if spec.tenant_agnostic else keys[:1]
        for key in keys:
            state = self._subscriptions.get(key)
            if state is None or tenant_id not in state.counts:
                continue
            self._uncount(state, tenant_id)
            if state.counts:
                return
            async with state.lock:
                if state.counts:
                    return  # subscribed again meanwhile: the upstream's subscription stays
                session, state.on = state.on, None
                client = session.client if session is not None else None
                if client is not None and _subscribable(client):
                    timeout = spec.call_timeout if spec is not None else 5.0
                    with anyio.move_on_after(timeout):
                        try:
                            await _subscription(client, uri, subscribe=False)
                        except Exception:
                            logger.debug("an upstream did not take an unsubscription", exc_info=True)
                if not state.counts and self._subscriptions.get(key) is state:
                    del self._subscriptions[key]
            return

    @staticmethod
    def _uncount(state: _Subscription, tenant_id: str) -> None:
        count = state.counts.get(tenant_id, 0) - 1
        if count > 0:
            state.counts[tenant_id] = count
        else:
            state.counts.pop(tenant_id, None)

    def _subscribed_on(self, key: tuple[str, str]) -> bool:
        return any(k[:2] == key and state.counts for k, state in self._subscriptions.items())

    def _spawn_restore(self, key: tuple[str, str]) -> None:
        """Start the session again (after its backoff) for what is still subscribed on it."""

        async def restore() -> None:
            backoff = self._backoff.get(key)
            if backoff is not None:
                await anyio.sleep(max(0.0, backoff.retry_at - time.monotonic()))
            spec = self._specs.get(key[0])
            if spec is None or not self._subscribed_on(key) or key in self._sessions:
                return
            try:
                await self._session(spec, key[1])  # resubscribes (see _session)
            except TenantryError as exc:
                logger.warning(
                    "could not restart an upstream session for its subscriptions",
                    extra={"upstream": key[0], "reason": exc.message},
                )

        if self._tasks is not None:
            self._tasks.start_soon(restore)

    async def _resubscribe(self, spec: UpstreamSpec, key: tuple[str, str], session: UpstreamSession) -> None:
        """A new session of ``key``: subscribe it to what is still subscribed (best effort)."""
        try:
            client = await session.ready()
        except UpstreamUnavailable:
            return  # it ended; its end restarts it (see _supervise)
        for sub_key, state in list(self._subscriptions.items()):
            if sub_key[:2] != key:
                continue
            async with state.lock:
                if not state.counts or (state.on is not None and not state.on.done) or session.done:
                    continue
                if _subscribable(client):
                    try:
                        with anyio.fail_after(spec.call_timeout):
                            await _subscription(client, sub_key[2], subscribe=True)
                    except Exception:
                        logger.warning("could not subscribe again to an upstream resource", extra={"upstream": key[0]})
                        continue
                state.on = session

    def _admit_process(self, spec: UpstreamSpec, tenant_id: str) -> None:
        """:raises UpstreamUnavailable: one more process would exceed a cap (nothing is stopped for it)."""
        reaped = f"idle ones stop after {self._idle_timeout:g}s"
        mine = sum(1 for owner in self._processes.values() if owner == tenant_id)
        if mine >= self._max_processes_per_tenant:
            raise UpstreamUnavailable(
                f"upstream {spec.name!r} cannot start a process for this tenant: the limit of"
                f" {self._max_processes_per_tenant} upstream processes per tenant is reached"
                f" (gateway.max_stdio_processes_per_tenant; {reaped})"
            )
        if len(self._processes) >= self._max_processes:
            raise UpstreamUnavailable(
                f"upstream {spec.name!r} cannot start a process: this server's limit of"
                f" {self._max_processes} upstream processes is reached (gateway.max_stdio_processes;"
                f" {reaped}); try again later"
            )

    async def _supervise(self, key: tuple[str, str], session: UpstreamSession) -> None:
        try:
            await session.run()
        finally:
            self._processes.pop(session, None)  # run() returns once the process has exited
        if not session.closed_by_gateway:
            backoff = self._backoff.setdefault(key, _Backoff())
            backoff.failures += 1
            backoff.retry_at = time.monotonic() + min(_MAX_BACKOFF, 0.25 * 2 ** (backoff.failures - 1))
            if session.stderr is not None and session.stderr.text():
                logger.warning(
                    "upstream process ended; its last stderr lines follow\n%s",
                    session.stderr.text(),
                    extra={"upstream": key[0], "tenant_id": key[1]},
                )
        if self._sessions.get(key) is session:
            del self._sessions[key]
            if not session.closed_by_gateway and self._subscribed_on(key):
                self._spawn_restore(key)

    async def _open(self, spec: UpstreamSpec, tenant_id: str) -> UpstreamSession:
        """A new (not yet started) session for ``tenant_id`` with its own credentials."""
        values = await self._template_values(spec, tenant_id)

        async def tools_changed() -> None:
            if tenant_id == _SHARED:
                self._spawn(self.rediscover, spec.name)
            else:
                await self._reload_view(spec.name, tenant_id)

        def resource_updated(uri: str) -> None:
            state = self._subscriptions.get((spec.name, tenant_id, uri))
            if state is None or self._on_resource_updated is None:
                return  # nobody subscribed to it on this session: ignored
            for subscriber in list(state.counts):
                self._on_resource_updated(subscriber, exposed_uri(spec.name, uri))

        if spec.transport == "http":
            assert spec.url is not None
            url = render_template(spec.url, values)
            headers = {h: render_template(t, values) for h, t in spec.headers}
            direct = HttpCalls(spec.name, url, max_message=self._max_message)

            def opener() -> AbstractAsyncContextManager[TransportStreams]:
                return http_streams(
                    url,
                    headers,
                    allow_private=spec.allow_private,
                    connect_timeout=spec.connect_timeout,
                    max_message=self._max_message,
                    direct=direct,
                )

            return UpstreamSession(
                spec.name,
                opener,
                connect_timeout=spec.connect_timeout,
                on_tools_changed=tools_changed,
                on_resource_updated=resource_updated,
                direct=direct,
            )
        command = [render_template(part, values) for part in spec.command]
        file_size_limit: int | None = None
        if self._storage is not None and tenant_id != _SHARED:
            file_size_limit = self._storage.file_size_limit(tenant_id)
            command = [sys.executable, "-I", "-S", str(_FILE_SIZE_LIMIT), str(file_size_limit), *command]
        env = {v: render_template(t, values) for v, t in spec.env}
        tail = StderrTail(redact=SecretRedactor(values.secret_values).text)
        if tenant_id != _SHARED:
            cwd: str | None = str(Path(values.tenant_dir).parent / "upstreams" / spec.name)
            home = Path(str(cwd))
            kept = [str(home), values.tenant_dir]  # resolved by the launcher
        else:
            cwd = None
            home = self._data_dir / "shared-upstreams" / spec.name
            kept = []
        # The process's home, caches and temporary files are the tenant's own (many servers keep
        # login caches under ~): the server's HOME would share them with every other tenant.
        await anyio.to_thread.run_sync(lambda: (home / ".tmp").mkdir(parents=True, exist_ok=True))
        if cwd is not None:
            env = _private_home(home) | env  # what the operator configured explicitly wins
        if self._sandbox != "off":
            keep = [part for path in kept for part in ("--keep", path)]
            sandbox = [str(self._data_dir), str(home / ".tmp"), *keep, "--"]
            command = [sys.executable, "-I", "-S", str(_SANDBOX), self._sandbox, *sandbox, *command]
        if self._die_with_parent:
            command = [sys.executable, "-I", "-S", str(_DIE_WITH_PARENT), str(os.getpid()), *command]

        def stdio_opener() -> AbstractAsyncContextManager[TransportStreams]:
            return stdio_streams(command, env, cwd=cwd, max_message=self._max_message, stderr=tail)

        return UpstreamSession(
            spec.name,
            stdio_opener,
            connect_timeout=spec.connect_timeout,
            on_tools_changed=tools_changed,
            on_resource_updated=resource_updated,
            stderr=tail,
            file_size_limit=file_size_limit,
        )

    async def _template_values(self, spec: UpstreamSpec, tenant_id: str) -> TemplateValues:
        if tenant_id == _SHARED:
            return TemplateValues(tenant_id="", tenant_dir="", secret=_no_secret)
        secrets: dict[str, str] = {}
        for name in spec.credential_secrets():
            try:
                secrets[name] = await self._read_secret(tenant_id, name)
            except NotFound:
                raise UpstreamUnavailable(
                    f"upstream {spec.name!r} needs this tenant's secret {name!r}, which is not set"
                ) from None
        root = tenant_files_root(self._data_dir, tenant_id)
        await anyio.to_thread.run_sync(lambda: root.mkdir(parents=True, exist_ok=True))
        return TemplateValues(
            tenant_id=tenant_id,
            tenant_dir=str(root),
            secret=secrets.__getitem__,
            secret_values=frozenset(secrets.values()),
        )

    # -- health -----------------------------------------------------------------------------

    async def _health_loop(self) -> None:
        while True:
            await anyio.sleep(self._health_interval)
            now = time.monotonic()
            subscribed = {k[:2] for k, state in self._subscriptions.items() if state.counts}
            for key, session in list(self._sessions.items()):
                client = session.client
                if client is None:
                    continue
                idle = session.in_flight == 0 and now - session.last_used > self._idle_timeout
                if idle and key not in subscribed:
                    # Out of the table before it closes: a call arriving meanwhile starts a new
                    # session instead of taking this closing one (and failing on it).
                    del self._sessions[key]
                    self._spawn_close(session)
                    continue
                self._spawn_ping(key, session)

    def _outgrown(self, session: UpstreamSession, tenant_id: str) -> bool:
        started_with = session.file_size_limit
        return (
            started_with is not None
            and self._storage is not None
            and self._storage.file_size_limit(tenant_id) < started_with
        )

    def _spawn_close(self, session: UpstreamSession) -> None:
        assert self._tasks is not None
        self._tasks.start_soon(session.close)

    def _spawn_ping(self, key: tuple[str, str], session: UpstreamSession) -> None:
        async def ping() -> None:
            client = session.client
            if client is None:
                return
            try:
                with anyio.fail_after(5):
                    await client.send_ping()
            except Exception:
                logger.warning("upstream failed its health check; restarting it", extra={"upstream": key[0]})
                session.fail("it failed its health check")

        assert self._tasks is not None
        self._tasks.start_soon(ping)

    def close_idle_processes_of(self, tenant_id: str) -> None:
        """Stop, in the background, the tenant's command-upstream processes that have no call in
        flight (the tenant moved to the dedicated tier, whose worker runs them); calls in flight
        finish on theirs."""
        self._spawn(self._close_idle_processes, tenant_id)

    async def _close_idle_processes(self, tenant_id: str) -> None:
        def idle_stdio(key: tuple[str, str]) -> bool:
            spec = self._specs.get(key[0])
            session = self._sessions.get(key)
            return (
                key[1] == tenant_id
                and spec is not None
                and spec.transport == "stdio"
                and session is not None
                and session.in_flight == 0
            )

        await self._close_where(idle_stdio)

    async def _close_where(self, match: Callable[[tuple[str, str]], bool]) -> None:
        doomed = [s for k, s in self._sessions.items() if match(k)]
        for key in [k for k in self._sessions if match(k)]:
            del self._sessions[key]
            self._backoff.pop(key, None)
        async with anyio.create_task_group() as tasks:
            for session in doomed:
                tasks.start_soon(session.close)


def _private_home(home: Path) -> dict[str, str]:
    """The environment that gives a command upstream ``home`` as its home and temporary directory."""
    return {
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        "XDG_STATE_HOME": str(home / ".local" / "state"),
        "TMPDIR": str(home / ".tmp"),
    }


def _no_secret(name: str) -> str:
    raise NotFound(f"no secret named {name!r}")


@dataclass
class _Subscription:
    counts: dict[str, int] = field(default_factory=dict)
    """tenant -> how many of its sessions subscribed."""
    lock: anyio.Lock = field(default_factory=anyio.Lock)
    on: UpstreamSession | None = None
    """The session that subscribed upstream (or found it could not), while it lives."""


def _subscription(client: ClientSession, uri: str, *, subscribe: bool) -> Coroutine[Any, Any, types.EmptyResult]:
    """``resources/subscribe`` (or ``unsubscribe``): deprecated by the SDK for the 2026-07-28 era
    (``subscriptions/listen``), and what the handshake era the gateway's sessions speak has."""
    with warnings.catch_warnings():  # no await in here: the filter is not seen by other tasks
        warnings.simplefilter("ignore", MCPDeprecationWarning)
        return client.subscribe_resource(uri) if subscribe else client.unsubscribe_resource(uri)


def _subscribable(client: ClientSession) -> bool:
    capabilities = client.server_capabilities
    return capabilities is not None and capabilities.resources is not None and bool(capabilities.resources.subscribe)


@dataclass
class _ViewState:
    loaded: bool = False
    spec: UpstreamSpec | None = None
    """The configuration it was listed under (a changed upstream is listed afresh)."""
    retry_at: float = 0.0
    """After a failed listing: when it is tried again."""
    loading: anyio.Event | None = None


@dataclass
class _Mapped:
    tools: list[Exposed]
    items: list[ExposedItem]
    skipped: list[Skipped]

    def definitions(
        self, upstream: str, tenants: frozenset[str] | None
    ) -> tuple[list[ToolDefinition], list[ResourceDefinition], list[PromptDefinition]]:
        return (
            [upstream_tool_definition(upstream, e, tenants) for e in self.tools],
            [upstream_resource_definition(upstream, e, tenants) for e in self.items if e.kind != "prompt"],
            [upstream_prompt_definition(upstream, e, tenants) for e in self.items if e.kind == "prompt"],
        )


def _granted_any(grants: frozenset[str], upstream: str) -> bool:
    prefix = upstream + SEPARATOR
    return any(name.startswith(prefix) for name in grants)


@dataclass
class _Listing:
    tools: list[types.Tool] = field(default_factory=list)
    resources: list[types.Resource] = field(default_factory=list)
    templates: list[types.ResourceTemplate] = field(default_factory=list)
    prompts: list[types.Prompt] = field(default_factory=list)


async def _pages(
    list_page: Callable[[types.PaginatedRequestParams | None], Awaitable[Any]],
    key: str,
    cap: int,
    *,
    optional: bool = False,
) -> Any:
    """Follow ``nextCursor`` (at most ``_PAGES`` pages) until more than ``cap`` items are in hand.

    :param optional: a method the upstream does not implement (``resources/templates/list`` of a
        server with static resources only, say) lists nothing rather than failing the discovery.
    """
    items: list[Any] = []
    cursor: str | None = None
    for _ in range(_PAGES):
        try:
            page = await list_page(types.PaginatedRequestParams(cursor=cursor) if cursor else None)
        except MCPError as exc:
            if optional and exc.error.code == types.METHOD_NOT_FOUND:
                return items
            raise
        items.extend(getattr(page, key))
        cursor = page.next_cursor
        if cursor is None or len(items) > cap:
            break
    return items
