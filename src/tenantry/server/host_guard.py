"""``Host``/``Origin`` checks for every HTTP route, not only ``/mcp``.

``/mcp`` checks them itself (its gate parses the headers once for every check); every other
route goes through :class:`HostGuard`, so no response, redirect or discovery document is
ever built for a host this deployment does not serve (DNS rebinding, host-header
poisoning). Public discovery documents may be read from any browser origin; everything else
refuses a foreign ``Origin``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.types import Receive, Scope, Send

from tenantry.server.errors import error_response
from tenantry.server.guards import HostOriginPolicy, MisdirectedRequest
from tenantry.server.headers import RequestHeaders

__all__ = ["HostGuard"]

ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class HostGuard:
    """:param skip_path: a path that runs the same checks itself (``/mcp``).
    :param public_prefixes: paths any browser origin may read (public, credential-free documents).
    """

    def __init__(
        self, app: ASGIApp, policy: HostOriginPolicy, *, skip_path: str, public_prefixes: tuple[str, ...] = ()
    ) -> None:
        self._app = app
        self._policy = policy
        self._skip = skip_path
        self._public = public_prefixes

    @property
    def app(self) -> ASGIApp:
        """The guarded application (its lifespan is the whole server's)."""
        return self._app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == self._skip:
            await self._app(scope, receive, send)
            return
        headers = RequestHeaders(scope["headers"])
        refusal = self._policy.refusal(headers)
        if (
            refusal is not None
            and not isinstance(refusal, MisdirectedRequest)
            and scope["path"].startswith(self._public)
        ):
            refusal = None
        if refusal is not None:
            await error_response(refusal)(scope, receive, send)
            return
        await self._app(scope, receive, send)
