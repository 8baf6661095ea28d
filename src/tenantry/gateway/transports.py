"""The byte-level connections to upstreams, bounded so a misbehaving server cannot hurt the gateway.

* **stdio**: the process gets only the environment the operator configured (over a minimal
  default: ``PATH``, ``HOME``...), never the server's own; its own session and process group, so
  stopping it stops its children; one message (line) at most ``max_message`` bytes, beyond
  which the connection is failed; stderr drained, its last lines kept for diagnostics.
* **http**: only the configured headers are sent (never the client's); every request must go to
  the configured origin; each new connection resolves the host once, checks every address
  against private, loopback and link-local ranges unless ``allow_private``, and connects to one
  of those very addresses (the name is not resolved again between the check and the connect,
  so DNS rebinding cannot steer the socket elsewhere); the Host header, TLS SNI and certificate
  verification still use the configured host name. The direct ``tools/call`` path
  (:mod:`tenantry.gateway.http_calls`) speaks ``aiohttp`` (:func:`guarded_session`) under the same
  guard: the same resolver and address check for each new connection (an IP-literal host is
  checked once, at construction, as aiohttp never resolves one), the same TLS verification, the
  configured headers only, no redirects, no proxy, no cookies, no decompression.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import socket
import ssl
import subprocess
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from functools import cache
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import aiohttp
import aiohttp.abc
import anyio
import httpcore2
import httpx2
import mcp_types as types
from anyio.abc import Process
from mcp.client._transport import TransportStreams
from mcp.client.stdio import get_default_environment
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.message import SessionMessage

from tenantry.gateway.errors import UpstreamUnavailable
from tenantry.gateway.ignored_notifications import is_ignored

if TYPE_CHECKING:
    from tenantry.gateway.http_calls import HttpCalls

__all__ = [
    "stdio_streams",
    "http_streams",
    "guarded_client",
    "guarded_session",
    "check_address",
    "resolve_host",
    "Resolver",
    "StderrTail",
]

logger = logging.getLogger(__name__)

_STOP_GRACE = 2.0


class StderrTail:
    """The last lines an upstream process wrote to stderr (bounded; for diagnostics only), with
    ``redact`` applied: a process may print the credential it was started with."""

    def __init__(self, lines: int = 20, line_bytes: int = 500, redact: Callable[[str], str] = str) -> None:
        self._lines: deque[str] = deque(maxlen=lines)
        self._line_bytes = line_bytes
        self._redact = redact
        self.total_bytes = 0

    def add(self, chunk: bytes) -> None:
        self.total_bytes += len(chunk)
        for line in chunk.decode(errors="replace").splitlines():
            if line.strip():
                self._lines.append(line[: self._line_bytes])

    def text(self) -> str:
        return self._redact("\n".join(self._lines))


async def _drain(stream: anyio.abc.ByteReceiveStream, tail: StderrTail) -> None:
    with suppress(anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
        while True:
            tail.add(await stream.receive())


async def _stop(process: Process) -> None:
    with anyio.CancelScope(shield=True):
        if process.stdin is not None:
            with suppress(OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
                await process.stdin.aclose()
        with anyio.move_on_after(_STOP_GRACE):
            # Polled, not process.wait(): that also waits for EOF on pipes a child may still hold.
            while process.returncode is None:  # noqa: ASYNC110
                await anyio.sleep(0.05)
        if process.returncode is None:
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            with anyio.move_on_after(_STOP_GRACE):
                await process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                with suppress(OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
                    await stream.aclose()


@asynccontextmanager
async def stdio_streams(
    command: Sequence[str],
    env: Mapping[str, str],
    *,
    cwd: str | None,
    max_message: int,
    stderr: StderrTail,
) -> AsyncIterator[TransportStreams]:
    """Start ``command`` and speak newline-delimited JSON-RPC with it.

    :raises UpstreamUnavailable: the command cannot be started.
    """
    try:
        process = await anyio.open_process(
            list(command),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=get_default_environment() | dict(env),
            cwd=cwd,
            start_new_session=True,
        )
    except OSError as exc:
        raise UpstreamUnavailable(f"the upstream command could not be started: {exc.strerror or exc}") from None
    read_writer, read_stream = anyio.create_memory_object_stream[SessionMessage | Exception](0)
    write_stream, write_reader = anyio.create_memory_object_stream[SessionMessage](0)

    async def reader() -> None:
        assert process.stdout is not None
        buffer = bytearray()
        junk = 0
        async with read_writer:
            with suppress(anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
                scanned = 0  # how much of the buffer is known to hold no line end (a long line comes in many chunks)
                while True:
                    buffer += await process.stdout.receive()
                    while (end := buffer.find(b"\n", scanned)) >= 0:
                        scanned = 0
                        line = bytes(buffer[:end])
                        del buffer[: end + 1]
                        if not line.strip():
                            continue
                        message = _parse(line)
                        if message is not None and is_ignored(message.message):
                            continue
                        if message is None:
                            # Junk on stdout (a stray print): dropped here, as the SDK session
                            # would ignore it too, but without its per-line handling and log.
                            junk += 1
                            if junk == 1:
                                logger.warning("an upstream process wrote lines that are not JSON-RPC; ignored")
                            continue
                        await read_writer.send(message)
                    scanned = len(buffer)
                    if len(buffer) > max_message:
                        logger.warning("an upstream process sent a message over the size limit; disconnecting")
                        return

    async def writer() -> None:
        assert process.stdin is not None
        with suppress(anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
            async with write_reader:
                async for message in write_reader:
                    data = message.message.model_dump_json(by_alias=True, exclude_unset=True)
                    await process.stdin.send(data.encode() + b"\n")
        await read_writer.aclose()

    async with anyio.create_task_group() as tasks:
        assert process.stderr is not None
        tasks.start_soon(reader)
        tasks.start_soon(writer)
        tasks.start_soon(_drain, process.stderr, stderr)
        try:
            yield read_stream, write_stream
        finally:
            await _stop(process)
            tasks.cancel_scope.cancel()


def _parse(line: bytes) -> SessionMessage | None:
    """The JSON-RPC message on ``line``, or ``None`` when it is not one."""
    try:
        return SessionMessage(types.jsonrpc_message_adapter.validate_json(line, by_name=False))
    except ValueError:
        return None


def check_address(address: str, *, allow_private: bool) -> None:
    """:raises UpstreamUnavailable: ``address`` is private, loopback, link-local or otherwise special."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        # An IPv4 address inside an IPv6 one (mapped, 6to4, Teredo, NAT64) is judged as that address.
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is None and any(ip in prefix for prefix in _NAT64):
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            ip = embedded
    special = (
        not ip.is_global  # every IANA special-purpose range, whatever it is called
        or (isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local)  # fec0::/10, deprecated, still routed inside
        or ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or (isinstance(ip, ipaddress.IPv4Address) and ip in _SHARED_ADDRESS_SPACE)
    )
    if special and not allow_private:
        raise UpstreamUnavailable(
            "the upstream's address is private, loopback or link-local; refused (add the upstream"
            " with --allow-private to permit it)"
        )


_SHARED_ADDRESS_SPACE = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
"""A NAT64 gateway turns these into the IPv4 address in their last 32 bits (RFC 6052, RFC 8215)."""


def _origin(url: httpx2.URL | str) -> tuple[str, str, int | None]:
    parts = urlsplit(str(url))
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.scheme, (parts.hostname or "").lower(), port


Resolver = Callable[[str], Awaitable[list[str]]]
"""``host -> addresses`` (an IP literal is its own address); :func:`resolve_host` unless a test injects one."""


async def resolve_host(host: str) -> list[str]:
    """The addresses of ``host`` from the system resolver. :raises UpstreamUnavailable: it does not resolve."""
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
        return [host]
    except ValueError:
        pass
    try:
        infos = await anyio.getaddrinfo(host, None)
    except OSError:
        raise UpstreamUnavailable("the upstream's host name does not resolve") from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))  # the system's order of preference


async def _checked_addresses(resolver: Resolver, host: str, *, allow_private: bool) -> list[str]:
    """``host``'s addresses, every one of them checked: the only addresses a connection may be opened to.

    :raises UpstreamUnavailable: the name does not resolve, or one of its addresses is refused.
    """
    addresses = await resolver(host)
    if not addresses:
        raise UpstreamUnavailable("the upstream's host name does not resolve")
    for address in addresses:
        check_address(address, allow_private=allow_private)
    return addresses


class _CheckedAddressBackend(httpcore2.AsyncNetworkBackend):
    """Opens each TCP connection to an address it has just resolved and checked.

    httpcore asks for ``connect_tcp(host, port)`` once per new connection (a reconnect included)
    and then starts TLS with ``server_hostname=host``: resolving here, checking every answer and
    connecting to one of those addresses leaves no second resolution to rebind, while SNI and
    certificate verification still concern the configured name.
    """

    def __init__(
        self, resolver: Resolver, *, allow_private: bool, network: httpcore2.AsyncNetworkBackend | None = None
    ) -> None:
        self._resolver = resolver
        self._allow_private = allow_private
        self._sockets = httpcore2.AnyIOBackend() if network is None else network

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[httpcore2.SOCKET_OPTION] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        try:
            with anyio.fail_after(timeout):
                addresses = await _checked_addresses(self._resolver, host, allow_private=self._allow_private)
        except TimeoutError:
            raise httpcore2.ConnectTimeout("resolving the upstream's host name timed out") from None
        failure: Exception | None = None
        for address in addresses:
            try:
                return await self._sockets.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore2.ConnectError, httpcore2.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: Iterable[httpcore2.SOCKET_OPTION] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        raise UpstreamUnavailable("upstreams are reached over TCP only")

    async def sleep(self, seconds: float) -> None:
        await self._sockets.sleep(seconds)


@cache
def _system_tls() -> ssl.SSLContext:
    """httpx2's ``verify=True`` context (the system's CAs), built once: loading the CAs holds the
    event loop for tens of milliseconds, and a client context keeps no per-connection state."""
    return httpx2.create_ssl_context(verify=True, trust_env=False)


def _tls(verify: ssl.SSLContext | bool) -> ssl.SSLContext:
    return _system_tls() if verify is True else httpx2.create_ssl_context(verify=verify, trust_env=False)


class _CheckedAddressTransport(httpx2.AsyncHTTPTransport):
    """httpx's own transport over a pool whose sockets go through :class:`_CheckedAddressBackend`."""

    def __init__(self, backend: _CheckedAddressBackend, *, verify: ssl.SSLContext | bool) -> None:
        context = _tls(verify)
        super().__init__(verify=context, trust_env=False)
        limits = httpx2.Limits(max_connections=100, max_keepalive_connections=20)  # httpx's defaults
        # httpx's transport takes no network backend, so its pool is replaced by the same one with ours.
        self._pool = httpcore2.AsyncConnectionPool(
            ssl_context=context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=backend,
        )


def guarded_client(
    url: str,
    headers: Mapping[str, str],
    *,
    allow_private: bool,
    connect_timeout: float,
    resolver: Resolver = resolve_host,
    verify: ssl.SSLContext | bool = True,
    network: httpcore2.AsyncNetworkBackend | None = None,
) -> httpx2.AsyncClient:
    """An HTTP client for the upstream at ``url`` that sends exactly ``headers``, follows no redirect,
    refuses any request off ``url``'s origin and connects only to checked addresses (see the module).

    :param resolver: where host names are resolved (the system resolver).
    :param verify: how the upstream's certificate is verified (the system's CAs).
    :param network: where checked addresses are connected to (the machine's sockets).

    Refusals raise :class:`UpstreamUnavailable` from the request.
    """
    origin = _origin(url)

    async def same_origin(request: httpx2.Request) -> None:
        if _origin(request.url) != origin:
            raise UpstreamUnavailable("the upstream redirected off its configured origin; refused")

    return httpx2.AsyncClient(
        headers=dict(headers),
        timeout=httpx2.Timeout(connect_timeout, read=300.0),
        follow_redirects=False,
        trust_env=False,
        event_hooks={"request": [same_origin]},
        transport=_CheckedAddressTransport(
            _CheckedAddressBackend(resolver, allow_private=allow_private, network=network), verify=verify
        ),
    )


class _CheckedAddressResolver(aiohttp.abc.AbstractResolver):
    """aiohttp's resolver for one upstream: the addresses of :func:`_checked_addresses`, in the resolver's order.

    aiohttp asks it once per new connection (its DNS cache is off) and connects to one of the
    addresses it answers, with SNI, certificate verification and Host still the configured name.
    """

    def __init__(self, resolver: Resolver, *, allow_private: bool) -> None:
        self._resolver = resolver
        self._allow_private = allow_private

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[aiohttp.abc.ResolveResult]:
        addresses = await _checked_addresses(self._resolver, host, allow_private=self._allow_private)
        results: list[aiohttp.abc.ResolveResult] = []
        for address in addresses:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
            found = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
            if family in (socket.AF_UNSPEC, found):
                results.append(
                    {"hostname": host, "host": address, "port": port, "family": found, "proto": 0, "flags": 0}
                )
        if not results:
            raise UpstreamUnavailable("the upstream's host name does not resolve")
        return results

    async def close(self) -> None:
        return None


def guarded_session(
    url: str,
    headers: Mapping[str, str],
    *,
    allow_private: bool,
    connect_timeout: float,
    resolver: Resolver = resolve_host,
    verify: ssl.SSLContext | bool = True,
) -> aiohttp.ClientSession:
    """An aiohttp session for requests to ``url`` itself under :func:`guarded_client`'s guard.

    It sends ``headers`` as its defaults; the caller asks for ``url`` only, with
    ``allow_redirects=False`` (the session cannot refuse another origin by itself). Its responses
    are not decompressed (the caller asks for ``identity``). Must be closed.

    :raises UpstreamUnavailable: ``url``'s host is an IP literal that is refused.
    """
    host = urlsplit(url).hostname or ""
    try:
        literal = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        pass
    else:  # aiohttp connects to an IP literal without asking the resolver
        check_address(str(literal), allow_private=allow_private)
    connector = aiohttp.TCPConnector(
        resolver=_CheckedAddressResolver(resolver, allow_private=allow_private),
        use_dns_cache=False,  # every new connection resolves and checks again, as httpx's pool does
        ssl=_tls(verify),
        happy_eyeballs_delay=None,  # the addresses one after the other, in the resolver's order
        keepalive_timeout=5.0,  # httpx's keep-alive expiry
    )
    return aiohttp.ClientSession(
        connector=connector,
        headers=dict(headers),
        timeout=aiohttp.ClientTimeout(total=None, connect=connect_timeout, sock_read=300.0),
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        trust_env=False,
    )


@asynccontextmanager
async def http_streams(
    url: str,
    headers: Mapping[str, str],
    *,
    allow_private: bool,
    connect_timeout: float,
    max_message: int,
    resolver: Resolver = resolve_host,
    direct: HttpCalls | None = None,
) -> AsyncIterator[TransportStreams]:
    """A streamable HTTP connection to ``url`` sending exactly ``headers`` (and the protocol's own).

    :param direct: given an aiohttp session under the same guard (:func:`guarded_session`) for
        direct calls while the connection is open; it is closed with the connection.
    """
    client = guarded_client(
        url, headers, allow_private=allow_private, connect_timeout=connect_timeout, resolver=resolver
    )
    if direct is None:
        async with client, streamable_http_client(url, http_client=client, max_sse_event_size=max_message) as streams:
            yield streams
        return
    client.event_hooks = {**client.event_hooks, "request": [*client.event_hooks["request"], direct.observe]}
    session = guarded_session(
        url, headers, allow_private=allow_private, connect_timeout=connect_timeout, resolver=resolver
    )
    try:
        async with (
            client,
            streamable_http_client(url, http_client=client, max_sse_event_size=max_message) as streams,
            anyio.create_task_group() as background,  # what direct calls send after they end
        ):
            direct.attach(session, background.start_soon)
            try:
                yield streams
            finally:
                direct.detach()
                background.cancel_scope.cancel()
                with anyio.CancelScope(shield=True):
                    await session.close()  # direct calls in flight end now, not after the SDK's teardown
    finally:
        with anyio.CancelScope(shield=True):
            await session.close()
