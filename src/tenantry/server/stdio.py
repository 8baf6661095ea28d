"""Serving one tenant over stdio: the start-up credential is the session's credential.

It is verified under the same rules as over HTTP (any accepted kind: a built-in token, an
API key, an identity provider's token), and re-checked on every request against the
control-plane view the process keeps polling: a revocation or a halt from the CLI stops
the session at its next request, and an expired token ends it.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import anyio
from mcp.server.context import ServerRequestContext
from mcp.server.stdio import stdio_server

from tenantry.audit.events import AuditEvent
from tenantry.core.calls import Caller
from tenantry.core.errors import InvalidCredential
from tenantry.core.identity import Principal
from tenantry.framework.app import App
from tenantry.framework.dispatcher import Dispatcher
from tenantry.runtime import Runtime
from tenantry.server.authn import api_key_counts, check_standing
from tenantry.server.mcp import build_mcp_server
from tenantry.server.workers import WorkerSource, follow_tier_moves, worker_invoker

__all__ = ["serve_stdio", "verify_startup_token"]


async def verify_startup_token(runtime: Runtime, token: str) -> Principal:
    """Verify the credential under the same rules as HTTP, plus revocation, tenant existence and
    kill switch.

    :raises InvalidCredential: bad, revoked or expired credential, or unknown tenant.
    :raises TenantHalted: halted tenant.
    """
    verifier = runtime.credential_verifier()
    for provider in verifier.providers.values():
        await provider.jwks.prefetch()
    principal = await verifier.verify(token)
    await runtime.bulkheads.run_system(lambda: runtime.directory.refresh(force=True))
    check_standing(principal, runtime.directory)
    return principal


async def serve_stdio(runtime: Runtime, app: App, principal: Principal, *, workers: WorkerSource | None = None) -> None:
    session_id = f"stdio-{uuid.uuid4().hex}"
    dedicated = worker_invoker(runtime, workers) if workers is not None else None
    dispatcher = Dispatcher(
        app,
        runtime.directory,
        runtime.scopes,
        runtime.audit,
        limiter=runtime.tenant_limiter(),
        dedicated=dedicated,
        max_result_bytes=runtime.settings.tools.max_result_bytes,
        start_before=runtime.settings.audit.start_before,
    )

    # Our own tokens expire exactly at ``exp`` (issuer and verifier share a clock); an external
    # identity provider's get the configured clock leeway.
    own = principal.issuer == runtime.endpoints.issuer
    expiry_leeway = 0 if own else runtime.settings.auth.clock_leeway

    def caller_for(_: ServerRequestContext[Any, Any]) -> Caller:
        if time.time() >= principal.expires_at + expiry_leeway:
            raise InvalidCredential("the start-up token has expired; restart with a fresh token")
        if principal.credential_kind == "api_key" and not api_key_counts(
            runtime.directory, principal.token_id, principal.tenant_id
        ):
            raise InvalidCredential("the start-up API key is no longer valid")
        check_standing(principal, runtime.directory)
        return Caller(principal=principal, request_id=uuid.uuid4().hex, session_id=session_id, client_address="stdio")

    runtime.directory.add_listener(dispatcher.on_control_change)
    if dedicated is not None:
        runtime.directory.add_listener(follow_tier_moves(dedicated))
    server = build_mcp_server(dispatcher, caller_for, name=app.name)

    async def record(event_type: str, reason: str | None = None) -> None:
        await runtime.audit.record(
            AuditEvent(
                event_type=event_type,  # type: ignore[arg-type]
                tenant_id=principal.tenant_id,
                result_status="ok",
                session_id=session_id,
                subject=principal.subject,
                ip_address="stdio",
                reason=reason,
            )
        )

    await record("connection_opened")
    try:
        async with stdio_server() as (read_stream, write_stream), anyio.create_task_group() as tasks:
            tasks.start_soon(runtime.directory.run)
            if dedicated is not None:
                tasks.start_soon(dedicated.run)
            await server.run(read_stream, write_stream, server.create_initialization_options())
            tasks.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            if dedicated is not None:
                await dedicated.aclose()
            await record("connection_closed", "stdin closed")
            await runtime.audit.aclose()
            await runtime.bulkheads.run_system(lambda: runtime.checkpointer().final(runtime.audit_store))
