"""Serving one tenant over stdio: the start-up token is the session's credential."""

from __future__ import annotations

import time
import uuid
from typing import Any

import anyio
from mcp.server.context import ServerRequestContext
from mcp.server.stdio import stdio_server

from tenantry.audit.events import AuditEvent
from tenantry.core.calls import Caller
from tenantry.core.errors import InvalidCredential, TenantHalted
from tenantry.core.identity import Principal
from tenantry.framework.app import App
from tenantry.framework.dispatcher import Dispatcher
from tenantry.runtime import Runtime
from tenantry.server.mcp import build_mcp_server

__all__ = ["serve_stdio", "verify_startup_token"]


def verify_startup_token(runtime: Runtime, token: str) -> Principal:
    """Verify the token under the same rules as HTTP, plus tenant existence and kill switch.

    :raises InvalidCredential: bad token or unknown tenant. :raises TenantHalted: halted tenant.
    """
    principal = runtime.token_verifier().verify_sync(token)
    runtime.directory.refresh(force=True)
    tenant = runtime.directory.get(principal.tenant_id)
    if tenant is None:
        raise InvalidCredential("the token's tenant is not known to this deployment")
    if tenant.halted:
        raise TenantHalted()
    return principal


async def serve_stdio(runtime: Runtime, app: App, principal: Principal) -> None:
    session_id = f"stdio-{uuid.uuid4().hex}"
    dispatcher = Dispatcher(
        app, runtime.directory, runtime.scopes, runtime.audit, tool_timeout=runtime.settings.tools.timeout
    )

    def caller_for(_: ServerRequestContext[Any, Any]) -> Caller:
        if time.time() > principal.expires_at + runtime.settings.auth.clock_leeway:
            raise InvalidCredential("the start-up token has expired; restart with a fresh token")
        return Caller(principal=principal, request_id=uuid.uuid4().hex, session_id=session_id, client_address="stdio")

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
            await server.run(read_stream, write_stream, server.create_initialization_options())
            tasks.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await record("connection_closed", "stdin closed")
            await runtime.audit.aclose()
            await anyio.to_thread.run_sync(runtime.checkpointer().final, runtime.audit_store)
