"""``tools/call`` to an HTTP upstream straight over the session's pooled keep-alive connection.

The SDK's :class:`~mcp.client.session.ClientSession` keeps the session's lifecycle (handshake,
listing, the GET stream of server notifications, pings). A call through it, though, crosses
two memory streams, a task group and a spawned task per request, and the transport's generic
JSON-RPC parsing (about 0.6 ms of a 3 ms call measured in isolation; see bench/README.md). Here a
call is one POST on an ``aiohttp`` session of the upstream session's own
(:func:`~tenantry.gateway.transports.guarded_session`, about 0.9 ms a call cheaper than httpx2
and its h11; same guard as the SDK's httpx2 client: the address check on every new connection,
the configured URL only, no redirects, only the configured headers, no cookies), carrying the
session's ``Mcp-Session-Id`` and protocol version as the SDK sent them, answered as JSON or SSE:

* the response is bounded: a JSON body or one SSE event over ``max_message`` bytes is refused
  with ``result_too_large`` and the session lives on (both are read chunk by chunk, the event
  stream's lines split here, on ``\r\n``, ``\n`` or ``\r``); an encoded (compressed) answer is
  refused (``identity`` is asked for, nothing is decompressed);
* requests the upstream interleaves on the stream (sampling, elicitation, roots...) are refused
  exactly as the session refuses them; its pings are answered; its notifications go to the
  session's handler (``tools/list_changed`` lists the tools again);
* a stream the upstream closes before answering is resumed from its last event id, as the SDK does;
* a call cancelled by a halt or its timeout answers at once: aiohttp closes the call's
  connection where it waits (no socket is awaited), and the upstream is told with
  ``notifications/cancelled`` in a task of the session's (below the 2026 protocol, where
  closing the stream is the signal);
* a broken connection or a terminated session fails the session, which starts again at the
  next call after the usual backoff (``upstream_unavailable``); a protocol error is
  ``upstream_error``.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import aiohttp
import anyio
import httpx2
import mcp_types as types
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import ValidationError
from yarl import URL

from tenantry.core.errors import ResultTooLarge
from tenantry.gateway.errors import UpstreamError, UpstreamUnavailable
from tenantry.gateway.ignored_notifications import is_ignored
from tenantry.gateway.session import REFUSED_BY_GATEWAY

__all__ = ["HttpCalls"]

logger = logging.getLogger(__name__)


_SESSION_ID = "mcp-session-id"
_PROTOCOL_VERSION = "mcp-protocol-version"
_LAST_EVENT_ID = "last-event-id"
_CONTENT_ENCODING = "content-encoding"
_CANCEL_GRACE = 2.0
_RESUME_ATTEMPTS = 2
_MAX_RETRY_MS = 10_000
_ids = itertools.count(1)

Stamp = Callable[[dict[str, Any], Any], None]
NotificationHandler = Callable[[Any], Awaitable[None]]
Spawn = Callable[..., object]


@dataclass
class _Event:
    event: str
    data: str
    id: str
    retry: int | None


class _EventParser:
    """Server-sent events fed chunk by chunk, parsed as ``httpx2.EventSource`` does (the HTML spec).

    Lines end in ``\r\n``, ``\n`` or ``\r`` (a ``\r\n`` split across two chunks is one end); a
    blank line dispatches the event (``event`` defaults to ``message``, ``data`` lines are joined
    with ``\n``, the last ``id`` without NUL is kept from one event to the next, ``retry`` is an
    integer). An event's lines (comments aside) and the line still unterminated together stay
    within ``max_event`` bytes, else :class:`ResultTooLarge`.
    """

    def __init__(self, max_event: int, too_large: Callable[[], Exception]) -> None:
        self._max_event = max_event
        self._too_large = too_large
        self._partial = bytearray()
        self._after_cr = False
        self._size = 0
        self._event = ""
        self._data: list[str] = []
        self._id = ""
        self._retry: int | None = None
        self._pending = False

    def feed(self, chunk: bytes) -> list[_Event]:
        if self._after_cr:
            self._after_cr = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        events: list[_Event] = []
        start = 0
        # bytes.find is a memchr; a regex over the chunk cost about 3 us per KiB, which made a
        # 4 MB answer hold the event loop for tens of milliseconds (attack review finding 7).
        next_lf, next_cr = chunk.find(b"\n"), chunk.find(b"\r")
        view = memoryview(chunk)  # slices of it are appended to the partial line without copies
        while next_lf >= 0 or next_cr >= 0:
            if next_cr < 0 or 0 <= next_lf < next_cr:
                end, after = next_lf, next_lf + 1
            else:
                end = next_cr
                after = end + 2 if chunk[end + 1 : end + 2] == b"\n" else end + 1
            if self._partial:
                self._partial += view[start:end]
                event = self._line(self._partial)
                self._partial.clear()
            else:
                event = self._line(chunk[start:end])
            start = after
            if 0 <= next_lf < start:
                next_lf = chunk.find(b"\n", start)
            if 0 <= next_cr < start:
                next_cr = chunk.find(b"\r", start)
            if event is not None:
                events.append(event)
        self._partial += view[start:]
        self._after_cr = chunk[-1:] == b"\r"
        if self._size + len(self._partial) > self._max_event:
            raise self._too_large()
        return events

    def _line(self, raw: bytes | bytearray) -> _Event | None:
        if not raw:
            self._size = 0
            if not self._pending:
                return None
            event = _Event(self._event or "message", "\n".join(self._data), self._id, self._retry)
            self._event, self._data, self._retry, self._pending = "", [], None, False
            return event
        if raw[:1] == b":":
            return None
        self._size += len(raw)
        if self._size > self._max_event:
            raise self._too_large()
        colon = raw.find(b":")
        if colon < 0:
            field, value = raw.decode(errors="replace"), ""
        else:
            field = raw[:colon].decode(errors="replace")
            begins = colon + 2 if raw[colon + 1 : colon + 2] == b" " else colon + 1
            with memoryview(raw) as view:  # a data line may be megabytes: decoded in place, once
                value = str(view[begins:], "utf-8", "replace")
        if field == "event":
            self._event, self._pending = value, True
        elif field == "data":
            self._data.append(value)
            self._pending = True
        elif field == "id":
            if "\0" not in value:
                self._id, self._pending = value, True
        elif field == "retry":
            with suppress(ValueError):
                self._retry, self._pending = int(value), True
        return None


@dataclass
class _Resume:
    """Where a call's event stream can be resumed from (its last event id) and when (the retry hint)."""

    last_event_id: str | None = None
    retry_ms: int = 1000


class HttpCalls:
    """The direct call path of one HTTP upstream session (one per session, so one tenant's).

    :meth:`observe` is the client's request hook: it learns the session id and protocol
    version from the SDK's own requests; until the handshake has been seen, :attr:`ready` is
    false and calls go through the SDK session instead.
    """

    def __init__(self, upstream: str, url: str, *, max_message: int) -> None:
        self.upstream = upstream
        self.url = URL(url)  # parsed once, not at every request
        self.max_message = max_message
        self.session: aiohttp.ClientSession | None = None
        self.session_id: str | None = None
        self.protocol_version: str | None = None
        self._spawn: Spawn | None = None

    @property
    def ready(self) -> bool:
        return self.session is not None and self.protocol_version is not None

    def attach(self, session: aiohttp.ClientSession, spawn: Spawn) -> None:
        """Use ``session`` (guarded, see :func:`~tenantry.gateway.transports.guarded_session`) from now
        on; ``spawn`` starts a task of the session's (the ``notifications/cancelled`` of a
        call that was interrupted)."""
        self.session, self.session_id, self.protocol_version = session, None, None
        self._spawn = spawn

    def detach(self) -> None:
        self.session, self._spawn = None, None

    async def observe(self, request: httpx2.Request) -> None:
        version = request.headers.get(_PROTOCOL_VERSION)
        if version is not None:
            self.protocol_version = version
            self.session_id = request.headers.get(_SESSION_ID)

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = {
            "accept": "application/json, text/event-stream",
            "content-type": "application/json",
            "accept-encoding": "identity",
        }
        if self.session_id:
            headers[_SESSION_ID] = self.session_id
        if self.protocol_version:
            headers[_PROTOCOL_VERSION] = self.protocol_version
        if extra:
            headers.update(extra)
        return headers

    async def call_tool(
        self,
        tool: str,
        arguments: dict[str, Any],
        *,
        stamp: Stamp,
        on_notification: NotificationHandler,
        fail_session: Callable[[str], None],
    ) -> types.CallToolResult:
        """:param stamp: the SDK session's per-request stamp (``_meta`` and headers of its era).

        :raises UpstreamUnavailable: the connection broke or the session is gone (it is failed).
        :raises UpstreamError: the upstream answered with an error or an unusable message.
        :raises ResultTooLarge: the answer is over ``max_message`` bytes.
        """
        session, spawn = self.session, self._spawn
        if session is None or spawn is None:
            raise UpstreamUnavailable(f"upstream {self.upstream!r} closed the connection")
        request_id = f"tenantry-{next(_ids)}"
        data: dict[str, Any] = {"method": "tools/call", "params": {"name": tool, "arguments": arguments}}
        opts: dict[str, Any] = {}
        stamp(data, opts)
        body = json.dumps({"jsonrpc": "2.0", "id": request_id, **data}, separators=(",", ":")).encode()
        headers = self._headers(opts.get("headers"))
        # The exchange runs in the caller's task: a halt or a timeout cancels it where it waits,
        # aiohttp closes the call's connection without awaiting the socket (its call_cancelled
        # answer waits for nothing), and the upstream is told in a task of the session's.
        try:
            raw = await self._exchange(session, body, headers, request_id, on_notification, fail_session)
        except BaseException as exc:
            if not isinstance(exc, Exception):  # cancelled (a halt, a timeout) while in flight
                spawn(self._cancel, request_id)
            raise
        if "error" in raw:
            error = raw.get("error") or {}
            message = str(error.get("message", "")) if isinstance(error, dict) else ""
            raise UpstreamError(f"upstream {self.upstream!r}: {message[:500]}")
        try:
            return types.CallToolResult.model_validate(raw.get("result"), by_name=False)
        except ValidationError:
            raise UpstreamError(f"upstream {self.upstream!r} gave an unusable answer (ValidationError)") from None

    async def _exchange(
        self,
        session: aiohttp.ClientSession,
        body: bytes,
        headers: dict[str, str],
        request_id: str,
        on_notification: NotificationHandler,
        fail_session: Callable[[str], None],
    ) -> dict[str, Any]:
        try:
            async with session.post(self.url, data=body, headers=headers, allow_redirects=False) as response:
                return await self._answer(session, response, request_id, on_notification, fail_session)
        except aiohttp.ClientError:
            fail_session("the connection failed")
            raise UpstreamUnavailable(f"upstream {self.upstream!r} closed the connection during the call") from None

    async def _answer(
        self,
        session: aiohttp.ClientSession,
        response: aiohttp.ClientResponse,
        request_id: str,
        on_notification: NotificationHandler,
        fail_session: Callable[[str], None],
    ) -> dict[str, Any]:
        status = response.status
        content_type = response.headers.get("content-type", "").partition(";")[0].strip().lower()
        if 300 <= status < 400:
            raise UpstreamUnavailable(f"upstream {self.upstream!r} answered with a redirect; refused (not followed)")
        if status == 404 and self.session_id is not None:
            raise self._gone("the upstream ended the session", fail_session)
        self._check_encoding(response)
        if status >= 400 or status == 202:
            if content_type == "application/json":
                message = await self._read_json(response)
                if isinstance(message, dict) and isinstance(message.get("error"), dict):
                    return message
            raise UpstreamError(f"upstream {self.upstream!r} answered the call with HTTP {status}")
        if content_type == "application/json":
            message = await self._read_json(response)
            if not isinstance(message, dict) or message.get("id") != request_id:
                raise UpstreamError(f"upstream {self.upstream!r} answered with a message that is not the call's")
            return message
        if content_type == "text/event-stream":
            resume = _Resume()
            async for message in self._events(response, resume):
                if await self._handle(message, request_id, on_notification):
                    return message
            # A resumable stream the upstream closed early: resumed from its last event, as the SDK does.
            for _ in range(_RESUME_ATTEMPTS):
                if resume.last_event_id is None or self.session is None:
                    break
                await anyio.sleep(resume.retry_ms / 1000)
                headers = self._headers({_LAST_EVENT_ID: resume.last_event_id})
                headers.pop("content-type")
                async with session.get(self.url, headers=headers, allow_redirects=False) as resumed:
                    if resumed.status != 200 or not resumed.headers.get("content-type", "").startswith(
                        "text/event-stream"
                    ):
                        break
                    self._check_encoding(resumed)
                    async for message in self._events(resumed, resume):
                        if await self._handle(message, request_id, on_notification):
                            return message
            raise self._gone("the upstream ended the call's event stream without an answer", fail_session)
        raise UpstreamError(f"upstream {self.upstream!r} answered with an unexpected content type")

    def _gone(self, why: str, fail_session: Callable[[str], None]) -> UpstreamUnavailable:
        # The session cannot serve calls any more: the gateway starts a new one at the next call.
        fail_session(why)
        return UpstreamUnavailable(f"upstream {self.upstream!r} closed the connection during the call")

    def _too_large(self) -> ResultTooLarge:
        return ResultTooLarge(f"the upstream's answer is larger than the {self.max_message} byte limit")

    def _check_encoding(self, response: aiohttp.ClientResponse) -> None:
        encoding = response.headers.get(_CONTENT_ENCODING, "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise UpstreamError(f"upstream {self.upstream!r} answered with an encoded body; refused (not decoded)")

    async def _read_json(self, response: aiohttp.ClientResponse) -> Any:
        if (response.content_length or 0) > self.max_message:
            raise self._too_large()
        size = 0
        chunks: list[bytes] = []
        async for chunk in response.content.iter_any():
            size += len(chunk)
            if size > self.max_message:
                raise self._too_large()
            chunks.append(chunk)
        try:
            return json.loads(b"".join(chunks))
        except ValueError:
            raise UpstreamError(f"upstream {self.upstream!r} answered with malformed JSON") from None

    async def _events(self, response: aiohttp.ClientResponse, resume: _Resume) -> AsyncIterator[dict[str, Any]]:
        parser = _EventParser(self.max_message, self._too_large)
        async for chunk in response.content.iter_any():
            for event in parser.feed(chunk):
                if event.id:
                    resume.last_event_id = event.id
                if event.retry is not None:
                    resume.retry_ms = min(event.retry, _MAX_RETRY_MS)
                if event.event != "message" or not event.data:
                    continue  # priming events and other event types carry no message
                try:
                    message = json.loads(event.data)
                except ValueError:
                    message = None
                if not isinstance(message, dict):
                    raise UpstreamError(f"upstream {self.upstream!r} sent a message that is not JSON-RPC")
                yield message

    async def _handle(self, message: dict[str, Any], request_id: str, on_notification: NotificationHandler) -> bool:
        """Deal with one message of the call's stream; true when it is the call's answer."""
        method = message.get("method")
        if method is None:
            return message.get("id") == request_id and ("result" in message or "error" in message)
        if "id" in message:  # a request of the server's own: pings are answered, nothing else is
            if method == "ping":
                reply: dict[str, Any] = {"jsonrpc": "2.0", "id": message["id"], "result": {}}
            else:
                error = {"code": types.INVALID_REQUEST, "message": REFUSED_BY_GATEWAY}
                reply = {"jsonrpc": "2.0", "id": message["id"], "error": error}
            await self._post(reply)
            return False
        if is_ignored(message):
            return False
        try:
            notification = types.server_notification_adapter.validate_python(message, by_name=False)
        except ValidationError:
            return False  # a notification this SDK does not know: ignored, as the SDK session does
        await on_notification(notification)
        return False

    async def _post(self, message: dict[str, Any]) -> None:
        session = self.session
        if session is None:
            return
        body = json.dumps(message, separators=(",", ":")).encode()
        with anyio.move_on_after(_CANCEL_GRACE):
            try:
                async with session.post(self.url, data=body, headers=self._headers(), allow_redirects=False):
                    pass  # the answer (an acknowledgement) is not read
            except (aiohttp.ClientError, UpstreamUnavailable):
                logger.debug("an upstream did not take a message", extra={"upstream": self.upstream})

    async def _cancel(self, request_id: str) -> None:
        if self.protocol_version in MODERN_PROTOCOL_VERSIONS:
            return  # at 2026, closing the call's stream is its cancellation
        params = {"requestId": request_id, "reason": "the call was cancelled"}
        await self._post({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": params})
