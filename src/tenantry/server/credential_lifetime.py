"""How long a credential verified at a request's start goes on counting.

A request is authorised once, when it arrives. Most end within their tool's timeout, but a
handshake-era session's standalone event stream (``GET /mcp``) stays open for as long as the
client likes, and what the server pushes on it (``list_changed``, resource updates) must not
outlive the credential that opened it. So such a stream ends when its credential expires, is
revoked (the token, the subject's or tenant's tokens, the API key), or its tenant is halted or
deleted, checked every ``recheck`` seconds; the client reconnects with a fresh credential. A
resource update is checked again just before it is pushed (:meth:`CredentialLifetime.lapsed`).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import anyio
from starlette.types import Message, Receive, Scope, Send

from tenantry.controlplane.directory import TenantDirectory
from tenantry.core.errors import TenantryError
from tenantry.core.identity import Principal
from tenantry.server.authn import api_key_counts, check_standing

__all__ = ["CredentialLifetime"]

Handler = Callable[[Scope, Receive, Send], Awaitable[None]]


class CredentialLifetime:
    """:param own_issuer: our own tokens expire exactly at ``exp`` (issuer and verifier share a
    clock); an external identity provider's get ``clock_leeway`` seconds more, as at verification.
    """

    def __init__(self, directory: TenantDirectory, *, own_issuer: str, clock_leeway: int, recheck: float = 1.0) -> None:
        self._directory = directory
        self._own_issuer = own_issuer
        self._leeway = clock_leeway
        self._recheck = recheck

    def expires(self, principal: Principal) -> float:
        return principal.expires_at + (0 if principal.issuer == self._own_issuer else self._leeway)

    def lapsed(self, principal: Principal, now: float | None = None) -> str | None:
        """Why ``principal`` may no longer act, or ``None`` while it still may."""
        current = time.time() if now is None else now
        if current >= self.expires(principal):
            return "the credential has expired"
        if principal.credential_kind == "api_key" and not api_key_counts(
            self._directory, principal.token_id, principal.tenant_id, current
        ):
            return "the API key is no longer valid"
        try:
            check_standing(principal, self._directory)
        except TenantryError as exc:
            return exc.message
        return None

    async def serve_while_valid(
        self, principal: Principal, handler: Handler, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """Run ``handler`` (a long-lived response) until it ends or ``principal`` lapses; then its
        response is ended cleanly (the final empty chunk), so the connection stays usable."""
        started = completed = False

        async def tracked(message: Message) -> None:
            nonlocal started, completed
            if message["type"] == "http.response.start":
                started = True
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                completed = True
            await send(message)

        async with anyio.create_task_group() as group:

            async def watch() -> None:
                while self.lapsed(principal) is None:  # noqa: ASYNC110 (revocations arrive by polling the control plane)
                    await anyio.sleep(max(0.01, min(self._recheck, self.expires(principal) - time.time())))
                group.cancel_scope.cancel()

            group.start_soon(watch)
            try:
                await handler(scope, receive, tracked)
            finally:
                group.cancel_scope.cancel()
        if started and not completed:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        elif not started:  # lapsed before the stream opened
            body = b'{"error": "the credential is no longer valid; reconnect with a fresh one"}'
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            await send({"type": "http.response.start", "status": 401, "headers": headers})
            await send({"type": "http.response.body", "body": body})
