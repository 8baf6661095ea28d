"""The socket ``tenantry serve`` listens on makes asyncio turn Nagle's algorithm off per connection.

A response goes out in two writes (head, then body); with Nagle on, the body waits for the
client's delayed ACK, about 40 ms per call on Linux.
"""

from __future__ import annotations

import asyncio
import socket

from tenantry.cli.serve import listen_socket


async def _accepted_nodelay(sock: socket.socket) -> int:
    accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    class Probe(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            raw = transport.get_extra_info("socket")
            accepted.set_result(raw.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            transport.close()

    server = await asyncio.get_running_loop().create_server(Probe, sock=sock)
    port = sock.getsockname()[1]
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        return await asyncio.wait_for(accepted, 5)
    finally:
        writer.close()
        server.close()
        await server.wait_closed()


def test_connections_accepted_on_the_serve_socket_have_nodelay() -> None:
    sock = listen_socket("127.0.0.1", 0)
    assert sock.proto == socket.IPPROTO_TCP
    assert asyncio.run(_accepted_nodelay(sock)) != 0


def test_control_a_socket_made_without_the_protocol_number_would_keep_nagle_on() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    assert asyncio.run(_accepted_nodelay(sock)) == 0
