"""Assembling the HTTP application.

``/mcp`` is the :class:`~tenantry.server.gate.McpGate` in front of the SDK's session
manager, so a request is refused as early (and as cheaply) as possible: a foreign origin
before any token work, a bad token before the body is read, a hijacked session before the
body is parsed. The other routes are discovery documents and health checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import anyio
from mcp.server.connection import Connection
from mcp.server.lowlevel.server import Server
from mcp.server.request_state import RequestStateSecurity
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Scope

from tenantry import __version__
from tenantry.audit.anomaly import AnomalyDetector, AnomalyThresholds
from tenantry.audit.events import SYSTEM_STREAM, AuditEvent
from tenantry.auth.apikeys import ApiKeyVerifier
from tenantry.auth.scopes import ScopeMap
from tenantry.auth.verifiers import CredentialRouter
from tenantry.controlplane.directory import ChangeListener, ControlSnapshot
from tenantry.core.errors import TenantryError
from tenantry.framework.app import App
from tenantry.framework.dispatcher import Dispatcher
from tenantry.gateway.invoker import UpstreamInvoker
from tenantry.ratelimit.failures import FailedAttempts
from tenantry.ratelimit.fair_share import FairShare
from tenantry.ratelimit.pacing import RefusalPacer
from tenantry.ratelimit.record_budget import RecordBudget
from tenantry.ratelimit.requests import RequestBudget
from tenantry.ratelimit.windows import MovingWindow
from tenantry.runtime import MCP_PATH, Runtime
from tenantry.server.alerts import AlertRecorder, WebhookNotifier
from tenantry.server.authn import Authenticator
from tenantry.server.credential_lifetime import CredentialLifetime
from tenantry.server.gate import McpGate
from tenantry.server.guards import HostOriginPolicy
from tenantry.server.host_guard import HostGuard
from tenantry.server.list_changed import ListChangedNotifier
from tenantry.server.mcp import build_mcp_server, http_caller
from tenantry.server.metrics import TenantMetrics, metrics_route
from tenantry.server.oauth import token_route
from tenantry.server.response import AutomaticResponse
from tenantry.server.session_streams import ReleasingSessionManager
from tenantry.server.sessions import SessionCloser, SessionRegistry
from tenantry.server.single_exchange import SingleExchange
from tenantry.server.step_up import StepUp
from tenantry.server.subscriptions import Subscriptions
from tenantry.server.upstreams import build_gateway, follow_upstreams, hand_over_to_workers
from tenantry.server.wellknown import discovery_routes, health_routes
from tenantry.server.workers import WorkerSource, follow_tier_moves, worker_invoker

__all__ = ["create_http_app", "HttpApp", "allowed_hosts_and_origins", "WorkerSource"]

logger = logging.getLogger(__name__)


@dataclass
class HttpApp:
    """The ASGI app plus the parts tests and operators may want to look at."""

    asgi: HostGuard
    dispatcher: Dispatcher
    mcp_server: Server[Any]
    sessions: SessionRegistry
    session_manager: StreamableHTTPSessionManager


def allowed_hosts_and_origins(runtime: Runtime) -> tuple[list[str], list[str]]:
    server = runtime.settings.server
    port = server.port
    public = urlsplit(runtime.endpoints.public_url)
    hosts = [f"{h}:{port}" for h in ("127.0.0.1", "localhost", "[::1]")]
    hosts += [public.netloc, *server.allowed_hosts]
    if server.host not in ("0.0.0.0", "::", "127.0.0.1", "localhost"):  # noqa: S104
        hosts.append(f"{server.host}:{port}")
    origins = [f"http://{h}:{port}" for h in ("127.0.0.1", "localhost", "[::1]")]
    origins += [f"{public.scheme}://{public.netloc}", *server.allowed_origins]
    return sorted(set(hosts)), sorted(set(origins))


def create_http_app(runtime: Runtime, app: App, *, workers: WorkerSource | None = None) -> HttpApp:
    """Build the whole HTTP surface of one deployment serving ``app``; ``workers`` says how to
    start dedicated-tier workers (without it, dedicated tenants' calls are refused)."""
    settings = runtime.settings
    dedicated = worker_invoker(runtime, workers) if workers is not None else None
    runtime.prepare_keys()
    verifier = runtime.credential_verifier()
    failures = FailedAttempts(settings.auth.failed_attempts)
    gateway = build_gateway(runtime, app)
    limiter = runtime.tenant_limiter()
    upstream_invoker = UpstreamInvoker(gateway)
    dispatcher = Dispatcher(
        app,
        runtime.directory,
        runtime.scopes,
        runtime.audit,
        limiter=limiter,
        upstream_invoker=upstream_invoker,
        completer=upstream_invoker,
        dedicated=dedicated,
        max_result_bytes=settings.tools.max_result_bytes,
        start_before=settings.audit.start_before,
        views=gateway,
        refusal_pacer=RefusalPacer(
            hold=settings.limits.refusal_hold,
            per_tenant=settings.limits.refusals_held_per_tenant,
            overall=settings.limits.refusals_held_total,
        ),
    )
    # Upstreams' resources and prompts can appear while the server runs (gateway mode).
    list_changed = ListChangedNotifier(resources=True, prompts=True)
    runtime.directory.add_listener(follow_upstreams(gateway))
    app.add_change_listener(_on_catalogue_change(dispatcher, list_changed))
    lifetime = CredentialLifetime(
        runtime.directory, own_issuer=runtime.endpoints.issuer, clock_leeway=settings.auth.clock_leeway
    )
    subscriptions = Subscriptions(gateway, dispatcher.resource_visible, lapsed=lifetime.lapsed)
    gateway.on_resource_updated(subscriptions.updated)
    mcp_server = build_mcp_server(
        dispatcher,
        http_caller,
        notifier=list_changed,
        subscriptions=subscriptions,
        serve_resources=True,
        serve_prompts=True,
        name=app.name,
        version=__version__,
        request_state_security=RequestStateSecurity(keys=[runtime.request_state_key()]),
        audience=runtime.endpoints.resource,
    )
    hosts, origins = allowed_hosts_and_origins(runtime)
    scope_map = ScopeMap(runtime.endpoints.issuer, settings.identity_providers)
    manager = ReleasingSessionManager(
        app=mcp_server,
        json_response=settings.server.response_mode == "json",
        security_settings=TransportSecuritySettings(
            enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins
        ),
        max_request_body_size=settings.server.max_body_bytes,
        session_idle_timeout=settings.server.session_idle_timeout,
        max_sessions=settings.server.max_sessions,
    )
    sessions = SessionRegistry(
        audit=runtime.audit,
        idle_timeout=settings.server.session_idle_timeout,
        limits_for=runtime.directory.limits,
        closer=_session_closer(manager),
        on_closed=subscriptions.release_session,
        budget=RecordBudget(
            per_source=settings.audit.refused_records_per_source, overall=settings.audit.refused_records_total
        ),
    )
    authenticator = Authenticator(
        verifier=verifier,
        directory=runtime.directory,
        audit=runtime.audit,
        failures=failures,
        budget=RecordBudget(
            per_source=settings.audit.refused_records_per_source, overall=settings.audit.refused_records_total
        ),
    )
    fair_share = (
        FairShare(capacity=settings.limits.fair_share_capacity, quantum=settings.limits.fair_share_quantum)
        if settings.limits.fair_share_capacity > 0
        else None
    )
    mcp_endpoint = McpGate(
        manager.handle_request,
        policy=HostOriginPolicy(allowed_hosts=hosts, allowed_origins=origins),
        authenticator=authenticator,
        sessions=sessions,
        resource_metadata_url=runtime.endpoints.resource_metadata,
        max_body_bytes=settings.server.max_body_bytes,
        max_json_depth=settings.server.max_json_depth,
        body_timeout=settings.server.body_timeout,
        sse_responses=settings.server.response_mode == "sse",
        step_up=StepUp(dispatcher, scope_map),
        challenge_scope=scope_map.challenge_scope(app.tools.keys()),
        single_exchange=SingleExchange(mcp_server, lambda: manager.lifespan_state),
        live_session=_live_session(manager, list_changed),
        requests=RequestBudget(runtime.directory.limits),
        pacer=RefusalPacer(
            hold=settings.limits.refusal_hold,
            per_tenant=settings.limits.refusals_held_per_tenant,
            overall=settings.limits.refusals_held_total,
        ),
        refused_credentials=MovingWindow(settings.auth.failed_attempts, max_keys=100_000),
        address_pacer=RefusalPacer(
            hold=settings.limits.refusal_hold,
            per_tenant=settings.limits.refusals_held_per_tenant,
            overall=settings.limits.refusals_held_total,
        ),
        lifetime=lifetime,
        fair_share=fair_share,
    )

    checkpointer = runtime.checkpointer()
    detector, notifier = _anomaly_detection(runtime, app)
    runtime.directory.add_listener(dispatcher.on_control_change)
    if dedicated is not None:
        runtime.directory.add_listener(follow_tier_moves(dedicated))
        runtime.directory.add_listener(hand_over_to_workers(gateway))
    runtime.directory.add_listener(_close_sessions_of_halted_tenants(sessions))
    runtime.directory.add_listener(_notify_grant_changes(list_changed))
    runtime.directory.add_listener(_release_deleted_tenants(runtime))
    metrics = TenantMetrics(
        tools=app.tools_for,
        max_tenant_labels=settings.metrics.max_tenant_labels,
        gauges=lambda: {
            "tenantry_sessions_open": ("Open handshake-era sessions", float(len(sessions.sessions))),
            "tenantry_audit_available": ("1 while the audit store accepts writes", float(runtime.audit.available)),
            "tenantry_audit_records_committed": ("Audit records made durable", float(runtime.audit.committed)),
            "tenantry_audit_group_commits": (
                "Transactions committed by the writer thread",
                float(runtime.audit.batches),
            ),
            "tenantry_fair_share_waiting": (
                "Requests waiting for their tenant's fair share of the server",
                float(fair_share.waiting_total if fair_share is not None else 0),
            ),
            "tenantry_fair_share_waited": (
                "Requests that waited for their tenant's fair share, since the server started",
                float(fair_share.waited if fair_share is not None else 0),
            ),
        },
    )
    runtime.audit.add_observer(metrics)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await runtime.bulkheads.run_system(lambda: runtime.directory.refresh(force=True))
        await runtime.bulkheads.run_system(lambda: _seed_known_addresses(runtime, detector))
        async with manager.run(), gateway.running(), anyio.create_task_group() as tasks:
            tasks.start_soon(runtime.directory.run)
            tasks.start_soon(sessions.reap_idle)
            tasks.start_soon(checkpointer.run, runtime.audit_store)
            tasks.start_soon(_maintain_credentials, runtime, verifier, authenticator, dispatcher, sessions)
            if notifier is not None:
                tasks.start_soon(notifier.run)
            if dedicated is not None:
                tasks.start_soon(dedicated.run)
            try:
                yield
            finally:
                tasks.cancel_scope.cancel()
                if dedicated is not None:
                    await dedicated.aclose()
        await runtime.audit.aclose()
        await runtime.bulkheads.run_system(lambda: checkpointer.final(runtime.audit_store))

    async def not_found(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 404
        return JSONResponse(
            {"error": "not_found" if status == 404 else "http_error", "error_description": "No such endpoint"},
            status_code=status,
        )

    routes: list[Route] = [
        Route(MCP_PATH, mcp_endpoint),
        token_route(
            issuer=runtime.token_issuer(),
            api_keys=verifier.api_keys or ApiKeyVerifier(runtime.directory.api_key, runtime.store.get_api_key),
            directory=runtime.directory,
            audit=runtime.audit,
            failures=failures,
            assertion_issuers=verifier.providers,
            audience=runtime.endpoints.issuer,
            resource=runtime.endpoints.resource,
            ledger=runtime.assertion_ledger(),
            limiter=limiter,
        ),
        *discovery_routes(
            runtime.endpoints,
            runtime.keys,
            signing_alg=settings.auth.signing_alg,
            jwt_bearer=any(p.identity_assertions for p in settings.identity_providers),
            scopes=scope_map,
            registered=app.tools.keys,
        ),
        *health_routes(runtime.directory, runtime.keys, lambda: {"audit_store": runtime.audit.available}),
        metrics_route(metrics, runtime.metrics_token()),
    ]
    starlette = Starlette(routes=routes, lifespan=lifespan, exception_handlers={404: not_found, 405: not_found})
    # No trailing-slash redirects: a redirect is built from the request's Host header.
    starlette.router.redirect_slashes = False
    asgi = HostGuard(
        starlette,
        HostOriginPolicy(allowed_hosts=hosts, allowed_origins=origins),
        skip_path=MCP_PATH,
        public_prefixes=("/.well-known/",),
    )
    return HttpApp(
        asgi=asgi,
        dispatcher=dispatcher,
        mcp_server=mcp_server,
        sessions=sessions,
        session_manager=manager,
    )


def _live_session(
    manager: ReleasingSessionManager, known: ListChangedNotifier
) -> Callable[[str, Scope], tuple[Connection, AbstractContextManager[None]] | None]:
    """The SDK connection of an open session, for the gate's single-exchange path: only once the
    SDK has served the session a request (which showed us its connection), while its transport
    lives and for the credential that opened it."""

    def live(session_id: str, scope: Scope) -> tuple[Connection, AbstractContextManager[None]] | None:
        connection = known.connection_of(session_id)
        if not isinstance(connection, Connection) or not manager.serves(session_id, scope.get("user")):
            return None
        return connection, manager.request_in_flight(session_id)

    return live


def _session_closer(manager: StreamableHTTPSessionManager) -> SessionCloser:
    """Ends a session in the SDK's manager. ``_server_instances`` is private to the SDK (pinned
    version): a session's transport ends when its idle scope is cancelled, and the manager then
    discards it exactly as after an idle timeout."""

    async def close(session_id: str) -> None:
        transport = manager._server_instances.get(session_id)
        if transport is None:
            return
        if transport.idle_scope is not None:
            transport.idle_scope.cancel()
        else:
            await transport.terminate()

    return close


def _close_sessions_of_halted_tenants(sessions: SessionRegistry) -> ChangeListener:
    # Closing waits for the halted calls' answers (bounded): in a task of its own, so that the
    # control-plane poll and the listeners after this one are not held up meanwhile.
    closing: set[asyncio.Task[int]] = set()

    async def on_change(before: ControlSnapshot, after: ControlSnapshot) -> None:
        for tenant in after.tenants.values():
            was = before.tenants.get(tenant.id)
            if tenant.halted and (was is None or not was.halted):
                task = asyncio.create_task(sessions.close_tenant(tenant.id, "tenant_halted"))
                closing.add(task)
                task.add_done_callback(closing.discard)

    return on_change


def _release_deleted_tenants(runtime: Runtime) -> ChangeListener:
    """A tenant gone from the control plane (``tenant delete``): close the handles this process
    keeps open on its stores (a file deleted while open lives on until closed), so that a tenant
    made later under the same id starts from nothing."""

    async def on_change(before: ControlSnapshot, after: ControlSnapshot) -> None:
        gone = set(before.tenants) - set(after.tenants)
        if gone and before.revision is not None:
            scopes = runtime.scopes

            def release() -> None:
                for tenant_id in sorted(gone):
                    scopes.release_tenant(tenant_id)

            await runtime.bulkheads.run_system(release)

    return on_change


def _notify_grant_changes(notifier: ListChangedNotifier) -> ChangeListener:
    async def on_change(before: ControlSnapshot, after: ControlSnapshot) -> None:
        changed = {
            tenant.id
            for tenant in after.tenants.values()
            if (was := before.tenants.get(tenant.id)) is not None and was.grants != tenant.grants
        }
        if changed and before.revision is not None:
            await notifier.notify(changed)

    return on_change


def _on_catalogue_change(
    dispatcher: Dispatcher, notifier: ListChangedNotifier
) -> Callable[[frozenset[str] | None], None]:
    """Tools that appear or disappear while serving: forget derived views, tell the sessions of the
    tenants concerned (every session for a shared registration; a tenant's own view changing, its
    own sessions only: another tenant's would learn when it listed)."""
    tasks: set[asyncio.Task[int]] = set()

    def changed(tenants: frozenset[str] | None) -> None:
        dispatcher.catalogue_changed(tenants)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # registered before the server runs: nobody to tell
        task = loop.create_task(notifier.notify(tenants))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    return changed


def _anomaly_detection(runtime: Runtime, app: App) -> tuple[AnomalyDetector, WebhookNotifier | None]:
    settings = runtime.settings.alerts
    restricted = {name: tool.tenants for name, tool in app.tools.items() if tool.tenants is not None}
    foreign: dict[str, frozenset[str]] = {}

    def foreign_tools(tenant_id: str) -> frozenset[str]:
        names = foreign.get(tenant_id)
        if names is None:
            names = foreign[tenant_id] = frozenset(n for n, owners in restricted.items() if tenant_id not in owners)
        return names

    detector = AnomalyDetector(
        AnomalyThresholds(
            denial_burst=settings.denial_burst,
            denial_window=settings.denial_window,
            rate_factor=settings.rate_factor,
            rate_floor=settings.rate_floor,
            cooldown=settings.cooldown,
        ),
        foreign_tools=foreign_tools,
    )
    detector.add_handler(AlertRecorder(runtime.audit))
    detector.add_handler(
        AutomaticResponse(
            runtime.settings.response,
            runtime.directory,
            runtime.audit,
            longest_lifetime=runtime.longest_token_lifetime(),
        )
    )
    notifier = None
    if settings.webhook_url:
        secret = settings.webhook_secret.get_secret_value().encode() if settings.webhook_secret else b""
        notifier = WebhookNotifier(settings.webhook_url, secret)
        detector.add_handler(notifier)
    runtime.audit.add_observer(detector)
    return detector, notifier


_MAINTENANCE_INTERVAL = 2.0
_PRUNE_EVERY = 30  # maintenance rounds between prunes of expired revocations


async def _maintain_credentials(
    runtime: Runtime,
    verifier: CredentialRouter,
    authenticator: Authenticator,
    dispatcher: Dispatcher,
    sessions: SessionRegistry,
) -> None:
    """Warm the identity providers' key caches, then periodically retire signing keys whose
    overlap has passed (persisted and audited), prune expired revocations, and summarise the
    refusals that were over the audit record budget."""
    for provider in verifier.providers.values():
        if not await provider.jwks.prefetch():
            logger.warning(
                "identity provider has no usable keys yet; its tokens are refused until it does",
                extra={"issuer": provider.issuer},
            )
    rounds = 0
    while True:
        rounds += 1
        try:
            retired = await runtime.bulkheads.run_system(runtime.keys.retire_expired)
            for key in retired:
                await runtime.audit.record(
                    AuditEvent(
                        event_type="key_retired",
                        tenant_id=SYSTEM_STREAM,
                        result_status="ok",
                        actor="tenantry:server",
                        detail={"kid": key.kid, "alg": key.alg, "retire_after": key.retire_after},
                    )
                )
            if rounds % _PRUNE_EVERY == 0:
                await runtime.bulkheads.run_system(lambda: runtime.store.prune_revocations(int(time.time())))
            await authenticator.record_suppressed()
            await dispatcher.record_suppressed()
            await sessions.record_suppressed()
        except TenantryError as exc:
            logger.warning("credential maintenance failed; will retry", extra={"code": exc.code})
        await anyio.sleep(_MAINTENANCE_INTERVAL)


def _seed_known_addresses(runtime: Runtime, detector: AnomalyDetector) -> None:
    """Addresses already in the audit history are not "new" after a restart."""
    import pydantic_core

    try:
        store = runtime.audit_store()
        try:
            for stored in store.recent(None, 20_000):
                fields = pydantic_core.from_json(stored.record)
                if fields.get("ip_address"):
                    detector.know_address(stored.tenant_id, fields["ip_address"])
        finally:
            store.close()
    except TenantryError as exc:
        logger.warning("could not read recent addresses from the audit store", extra={"code": exc.code})
