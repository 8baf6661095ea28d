"""The connection layer counts a request from its first byte to its response (``InFlight.arrived``).

The audit writer commits a lone call's record inline only when nothing else waits; a request
whose bytes are in the server but whose handler has not started yet (the loop was busy)
must count as waiting, or every queued call would commit inline in turn.
"""

from __future__ import annotations

import asyncio
import socket

import pytest
import uvicorn
from starlette.types import Receive, Scope, Send

from tenantry.core.load import InFlight
from tenantry.server.connections import ConnectionPolicy, guarded_protocol

pytestmark = pytest.mark.anyio

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


async def _serve(load: InFlight, app: object) -> tuple[uvicorn.Server, int, asyncio.Task[None]]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        app,  # type: ignore[arg-type]
        http=guarded_protocol(ConnectionPolicy(), load=load),  # type: ignore[arg-type]
        lifespan="off",
        log_config=None,
        access_log=False,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:  # noqa: ASYNC110 - uvicorn offers a flag, not an event
        await asyncio.sleep(0.01)
    return server, sock.getsockname()[1], task


async def _respond(send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


async def test_a_request_whose_bytes_arrived_is_counted_before_its_handler_runs() -> None:
    load = InFlight()
    seen: list[int] = []
    first_started = asyncio.Event()
    look = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if not first_started.is_set():
            first_started.set()
            await look.wait()
            seen.append(load.arrived)
        await _respond(send)

    server, port, task = await _serve(load, app)
    try:
        first_reader, first = await asyncio.open_connection("127.0.0.1", port)
        first.write(REQUEST)
        await first_started.wait()
        # The second request's first bytes are in: no handler can run before its headers end.
        second_reader, second = await asyncio.open_connection("127.0.0.1", port)
        second.write(REQUEST[:20])
        await second.drain()
        await asyncio.sleep(0.1)
        look.set()
        assert (await asyncio.wait_for(first_reader.readuntil(b"ok"), 5)).startswith(b"HTTP/1.1 200")
        assert seen == [2]
        second.write(REQUEST[20:])
        assert (await asyncio.wait_for(second_reader.readuntil(b"ok"), 5)).startswith(b"HTTP/1.1 200")
        # Both answered: the count falls back to nothing (the control).
        await asyncio.sleep(0.05)
        assert load.arrived == 0
        # A request abandoned half-way is uncounted when its connection goes.
        _, third = await asyncio.open_connection("127.0.0.1", port)
        third.write(REQUEST[:20])
        await third.drain()
        await asyncio.sleep(0.05)
        assert load.arrived == 1
        third.close()
        await asyncio.sleep(0.1)
        assert load.arrived == 0
        for writer in (first, second):
            writer.close()
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
