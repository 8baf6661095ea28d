"""A TCP (optionally TLS) server on 127.0.0.1 for tests of the gateway's HTTP clients, and a fake resolver."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio
from anyio.abc import ByteStream, SocketAttribute
from anyio.streams.tls import TLSListener


@asynccontextmanager
async def serving(
    handle: Callable[[ByteStream], Awaitable[None]],
    *,
    tls: ssl.SSLContext | None = None,
    server_names: list[str | None] | None = None,
) -> AsyncIterator[int]:
    """Serve each connection with ``handle`` while entered; yields the port. With ``tls``, the
    SNI name of each TLS handshake is appended to ``server_names``."""
    tcp = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = tcp.extra(SocketAttribute.local_port)
    if tls is not None and server_names is not None:
        tls.sni_callback = lambda sock, name, ctx: server_names.append(name)
    listener = tcp if tls is None else TLSListener(tcp, tls, standard_compatible=False)
    async with listener, anyio.create_task_group() as tasks:
        tasks.start_soon(listener.serve, handle)
        try:
            yield port
        finally:
            tasks.cancel_scope.cancel()


class Dns:
    """Answers each lookup with the next of ``answers`` (the last one from then on)."""

    def __init__(self, *answers: list[str]) -> None:
        self._answers = list(answers)
        self.lookups: list[str] = []

    async def __call__(self, host: str) -> list[str]:
        self.lookups.append(host)
        return self._answers.pop(0) if len(self._answers) > 1 else self._answers[0]
