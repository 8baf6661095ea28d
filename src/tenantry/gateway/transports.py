"""The byte-level connections to upstreams, bounded so a misbehaving server cannot hurt the gateway.

* **stdio**: the process gets only the environment the operator configured (over a minimal
  default: ``PATH``, ``HOME``...), never the server's own; its own session and process group, so
  stopping it stops its children; one message (line) at most ``max_message`` bytes, beyond
  which the connection is failed; stderr drained, its last lines kept for diagnostics.
* **http**: only the configured headers are sent (never the client's); every request must go to
  the configured origin; its addresses are resolved and checked against private, loopback and
  link-local ranges unless ``allow_private``.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import subprocess
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import anyio
import httpx2
import mcp_types as types
from anyio.abc import Process
from mcp.client._transport import TransportStreams
from mcp.client.stdio import get_default_environment
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.message import SessionMessage

from tenantry.gateway.errors import UpstreamUnavailable

if TYPE_CHECKING:
    from tenantry.gateway.http_calls import HttpCalls

__all__ = ["stdio_streams", "http_streams", "check_address", "StderrTail"]

logger = logging.getLogger(__name__)

_STOP_GRACE = 2.0


class StderrTail:
    """The last lines an upstream process wrote to stderr (bounded; for diagnostics only)."""

    def __init__(self, lines: int = 20, line_bytes: int = 500) -> None:
        self._lines: deque[str] = deque(maxlen=lines)
        self._line_bytes = line_bytes
        self.total_bytes = 0

    def add(self, chunk: bytes) -> None:
        self.total_bytes += len(chunk)
        for line in chunk.decode(errors="replace").splitlines():
            if line.strip():
                self._lines.append(line[: self._line_bytes])

    def text(self) -> str:
        return "\n".join(self._lines)


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
        async with read_writer:
            with suppress(anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
                while True:
                    buffer += await process.stdout.receive()
                    while (end := buffer.find(b"\n")) >= 0:
                        line = bytes(buffer[:end])
                        del buffer[: end + 1]
                        if line.strip():
                            await read_writer.send(_parse(line))
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


def _parse(line: bytes) -> SessionMessage | Exception:
    try:
        return SessionMessage(types.jsonrpc_message_adapter.validate_json(line, by_name=False))
    except ValueError as exc:
        return exc


def check_address(address: str, *, allow_private: bool) -> None:
    """:raises UpstreamUnavailable: ``address`` is private, loopback, link-local or otherwise special."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        # An IPv4 address inside an IPv6 one (mapped, 6to4, Teredo) is judged as that address.
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is not None:
            ip = embedded
    special = (
        ip.is_private
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


def _origin(url: httpx2.URL | str) -> tuple[str, str, int | None]:
    parts = urlsplit(str(url))
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.scheme, (parts.hostname or "").lower(), port


async def _resolve(host: str) -> list[str]:
    try:
        ipaddress.ip_address(host)
        return [host]
    except ValueError:
        pass
    try:
        infos = await anyio.getaddrinfo(host, None)
    except OSError:
        raise UpstreamUnavailable("the upstream's host name does not resolve") from None
    return sorted({str(info[4][0]) for info in infos})


@asynccontextmanager
async def http_streams(
    url: str,
    headers: Mapping[str, str],
    *,
    allow_private: bool,
    connect_timeout: float,
    max_message: int,
    direct: HttpCalls | None = None,
) -> AsyncIterator[TransportStreams]:
    """A streamable HTTP connection to ``url`` sending exactly ``headers`` (and the protocol's own).

    :param direct: given the connection's client (with its guard) for direct calls while it is open.
    """
    origin = _origin(url)

    async def guard(request: httpx2.Request) -> None:
        if _origin(request.url) != origin:
            raise UpstreamUnavailable("the upstream redirected off its configured origin; refused")
        for address in await _resolve(origin[1]):
            check_address(address, allow_private=allow_private)

    client = httpx2.AsyncClient(
        headers=dict(headers),
        timeout=httpx2.Timeout(connect_timeout, read=300.0),
        follow_redirects=False,
        trust_env=False,
        event_hooks={"request": [guard] if direct is None else [guard, direct.observe]},
    )
    async with client, streamable_http_client(url, http_client=client, max_sse_event_size=max_message) as streams:
        if direct is None:
            yield streams
            return
        async with anyio.create_task_group() as background:  # what direct calls send after they end
            direct.attach(client, background.start_soon)
            try:
                yield streams
            finally:
                direct.detach()
                background.cancel_scope.cancel()
