"""One live MCP client session with an upstream, for one tenant (or shared by all, tenant-agnostic).

A session runs in a task of its own (the transport's cancel scopes must open and close in one
task); callers use its :class:`~mcp.client.session.ClientSession` from their own tasks. The
upstream's server→client requests are refused: sampling, elicitation and roots would otherwise
let a third-party server talk to (or read from) a tenant's client on its own initiative.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

import anyio
import mcp_types as types
from mcp.client._transport import TransportStreams
from mcp.client.session import ClientSession

from tenantry import __version__
from tenantry.gateway.errors import UpstreamUnavailable
from tenantry.gateway.transports import StderrTail

if TYPE_CHECKING:
    from tenantry.gateway.http_calls import HttpCalls

__all__ = ["UpstreamSession", "REFUSED_BY_GATEWAY"]

logger = logging.getLogger(__name__)

REFUSED_BY_GATEWAY = "refused by the Tenantry gateway: upstream servers may not send requests to clients"

Opener = Callable[[], AbstractAsyncContextManager[TransportStreams]]

_LIST_CHANGED = (
    types.ToolListChangedNotification,
    types.ResourceListChangedNotification,
    types.PromptListChangedNotification,
)


async def _refuse_sampling(context: Any, params: types.CreateMessageRequestParams) -> types.ErrorData:
    return types.ErrorData(code=types.INVALID_REQUEST, message=REFUSED_BY_GATEWAY)


async def _refuse_elicitation(context: Any, params: types.ElicitRequestParams) -> types.ErrorData:
    return types.ErrorData(code=types.INVALID_REQUEST, message=REFUSED_BY_GATEWAY)


async def _refuse_roots(context: Any) -> types.ErrorData:
    return types.ErrorData(code=types.INVALID_REQUEST, message=REFUSED_BY_GATEWAY)


async def _ignore_log(params: types.LoggingMessageNotificationParams) -> None:
    return None  # an upstream's log lines could quote anything; they are not relayed


class UpstreamSession:
    """:param on_tools_changed: called (in the session's task) on ``notifications/tools/list_changed``
    (and the resources and prompts equivalents).
    :param on_resource_updated: called (without awaiting anything) with the URI of each
        ``notifications/resources/updated``.
    :param direct: an HTTP session's direct ``tools/call`` path (see :mod:`tenantry.gateway.http_calls`).
    :param file_size_limit: the ``RLIMIT_FSIZE`` a command upstream's process runs under, if any.
    """

    def __init__(
        self,
        upstream: str,
        opener: Opener,
        *,
        connect_timeout: float,
        on_tools_changed: Callable[[], Awaitable[None]] | None = None,
        on_resource_updated: Callable[[str], None] | None = None,
        stderr: StderrTail | None = None,
        direct: HttpCalls | None = None,
        file_size_limit: int | None = None,
    ) -> None:
        self.upstream = upstream
        self.file_size_limit = file_size_limit
        self._opener = opener
        self._connect_timeout = connect_timeout
        self._on_tools_changed = on_tools_changed
        self._on_resource_updated = on_resource_updated
        self.stderr = stderr
        self.direct = direct
        self._ready = anyio.Event()
        self._closing = anyio.Event()
        self._done = anyio.Event()
        self._client: ClientSession | None = None
        self.error: str | None = None
        self.last_used = time.monotonic()
        self.in_flight = 0
        self.closed_by_gateway = False

    @property
    def alive(self) -> bool:
        return self._client is not None and not self._done.is_set()

    @property
    def client(self) -> ClientSession | None:
        """The initialised session while it is alive (no await on the hot path)."""
        return self._client if not self._done.is_set() else None

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def fail(self, reason: str) -> None:
        """End the session as failed (it counts towards the upstream's backoff)."""
        self.error = reason
        self._closing.set()

    async def run(self) -> None:
        """The session's task: connect, initialise, serve until :meth:`close` or the upstream ends."""
        try:
            async with (
                self._opener() as (read, write),
                ClientSession(
                    read,
                    write,
                    sampling_callback=_refuse_sampling,
                    elicitation_callback=_refuse_elicitation,
                    list_roots_callback=_refuse_roots,
                    logging_callback=_ignore_log,
                    message_handler=self._on_message,
                    client_info=types.Implementation(name="tenantry-gateway", version=__version__),
                ) as client,
            ):
                with anyio.fail_after(self._connect_timeout):
                    await client.initialize()
                self._client = client
                self._ready.set()
                await self._closing.wait()
        except TimeoutError:
            self.error = f"the upstream did not complete the MCP handshake within {self._connect_timeout:g}s"
        except UpstreamUnavailable as exc:
            self.error = exc.message
        except Exception as exc:
            self.error = _describe(exc)
        finally:
            if self.error and self._client is None and self.stderr is not None and self.stderr.text():
                self.error += f" (its last stderr line: {self.stderr.text().splitlines()[-1][:300]})"
            self._client = None
            self._done.set()
            self._ready.set()
            if self.error:
                logger.warning("upstream session ended", extra={"upstream": self.upstream, "reason": self.error})

    async def handle_notification(self, message: Any) -> None:
        """A server notification that arrived outside the SDK session (on a direct call's stream)."""
        await self._on_message(message)

    async def _on_message(self, message: Any) -> None:
        if isinstance(message, _LIST_CHANGED) and self._on_tools_changed is not None:
            await self._on_tools_changed()
        elif isinstance(message, types.ResourceUpdatedNotification) and self._on_resource_updated is not None:
            self._on_resource_updated(str(message.params.uri))

    async def ready(self) -> ClientSession:
        """The initialised session. :raises UpstreamUnavailable: it could not be established."""
        await self._ready.wait()
        client = self._client
        if client is None:
            raise UpstreamUnavailable(f"upstream {self.upstream!r} is unavailable: {self.error or 'it closed'}")
        return client

    async def close(self) -> None:
        self.closed_by_gateway = True
        self._closing.set()
        with anyio.move_on_after(5):
            await self._done.wait()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        inner = exc.exceptions[0] if exc.exceptions else exc
        return _describe(inner)
    if isinstance(exc, UpstreamUnavailable):
        return exc.message
    text = str(exc).splitlines()[0][:200] if str(exc) else ""
    return f"{type(exc).__name__}{': ' + text if text else ''}"
