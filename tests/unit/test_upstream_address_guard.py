"""The SSRF guard of URL upstreams connects to the very address it checked (no DNS-rebinding window).

A resolver is injected (a DNS server that answers what the test says) and, where a "public"
address must be reachable, a network that routes that one address to a listener on loopback;
everything else about the connection (httpx, httpcore, TLS, real sockets) is the real thing.
"""

from __future__ import annotations

import datetime
import ssl
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import httpcore2
import httpx2
import pytest
from anyio.abc import ByteStream
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tenantry.gateway.errors import UpstreamUnavailable
from tenantry.gateway.transports import guarded_client, resolve_host
from tests.support.loopback import Dns, serving

pytestmark = pytest.mark.anyio

PUBLIC = "93.184.215.14"
HOST = "upstream.test"


@dataclass
class Listener:
    """An HTTP/1.1 server on loopback that answers ``ok`` and closes each connection."""

    port: int = 0
    connections: int = 0
    hosts: list[str] = field(default_factory=list)
    server_names: list[str | None] = field(default_factory=list)

    async def handle(self, stream: ByteStream) -> None:
        self.connections += 1
        with suppress(anyio.EndOfStream, anyio.BrokenResourceError, ssl.SSLError, OSError):
            async with stream:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += await stream.receive()
                for line in data.decode().split("\r\n")[1:]:
                    name, _, value = line.partition(":")
                    if name.lower() == "host":
                        self.hosts.append(value.strip())
                await stream.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")


@asynccontextmanager
async def listening(tls: ssl.SSLContext | None = None) -> AsyncIterator[Listener]:
    state = Listener()
    async with serving(state.handle, tls=tls, server_names=state.server_names) as port:
        state.port = port
        yield state


class Network(httpcore2.AsyncNetworkBackend):
    """The machine's sockets, with ``routes`` (address -> loopback port) standing in for the
    Internet: any other address has no route. Records every address it is asked to reach."""

    def __init__(self, routes: dict[str, int]) -> None:
        self._routes = routes
        self._sockets = httpcore2.AnyIOBackend()
        self.asked: list[str] = []

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[httpcore2.SOCKET_OPTION] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        self.asked.append(host)
        if host not in self._routes:
            raise httpcore2.ConnectError(f"no route to {host}")
        return await self._sockets.connect_tcp("127.0.0.1", self._routes[host], timeout=timeout)

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)


async def test_a_name_rebound_to_loopback_after_the_check_is_never_connected_to() -> None:
    async with listening() as upstream:
        dns = Dns([PUBLIC], ["127.0.0.1"])
        network = Network({PUBLIC: upstream.port})
        url = f"http://{HOST}:{upstream.port}/mcp"
        async with guarded_client(url, {}, allow_private=False, connect_timeout=2, resolver=dns, network=network) as c:
            first = await c.get(url)  # positive control: the checked public address is reached
            assert first.text == "ok"
            with pytest.raises(UpstreamUnavailable, match="private, loopback or link-local"):
                await c.get(url)  # the listener closed the connection: the new one resolves and checks again
        assert dns.lookups == [HOST, HOST]  # once per connection, never a second time before connecting
        assert network.asked == [PUBLIC]
        assert upstream.connections == 1


async def test_an_answer_with_any_private_address_is_refused_before_connecting() -> None:
    async with listening() as upstream:
        dns = Dns([PUBLIC, "169.254.169.254"])
        network = Network({PUBLIC: upstream.port})
        url = f"http://{HOST}:{upstream.port}/"
        async with guarded_client(url, {}, allow_private=False, connect_timeout=2, resolver=dns, network=network) as c:
            with pytest.raises(UpstreamUnavailable):
                await c.get(url)
        assert network.asked == []
        assert upstream.connections == 0


async def test_an_allowed_private_address_is_reached_with_the_configured_host_header() -> None:
    async with listening() as upstream:
        dns = Dns(["127.0.0.1"])
        url = f"http://{HOST}:{upstream.port}/mcp"
        async with guarded_client(url, {"X-Key": "k"}, allow_private=True, connect_timeout=2, resolver=dns) as c:
            response = await c.get(url)
        assert response.status_code == 200
        assert response.text == "ok"
        assert upstream.hosts == [f"{HOST}:{upstream.port}"]
        assert dns.lookups == [HOST]


async def test_a_request_off_the_configured_origin_is_refused() -> None:
    async with listening() as upstream:
        dns = Dns(["127.0.0.1"])
        url = f"http://{HOST}:{upstream.port}/mcp"
        async with guarded_client(url, {}, allow_private=True, connect_timeout=2, resolver=dns) as c:
            with pytest.raises(UpstreamUnavailable, match="off its configured origin"):
                await c.get(f"http://elsewhere.test:{upstream.port}/mcp")
        assert upstream.connections == 0


def _certificate(tmp_path: Path, name: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a self-signed certificate for ``name`` and a client context trusting it."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    (tmp_path / "cert.pem").write_bytes(pem)
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    client = ssl.create_default_context(cadata=pem.decode())
    return server, client


async def test_tls_to_the_checked_address_verifies_the_configured_host_name(tmp_path: Path) -> None:
    server, client = _certificate(tmp_path, HOST)
    async with listening(server) as upstream:
        url = f"https://{HOST}:{upstream.port}/mcp"
        dns = Dns(["127.0.0.1"])
        async with guarded_client(url, {}, allow_private=True, connect_timeout=2, resolver=dns, verify=client) as c:
            response = await c.get(url)
        assert response.text == "ok"
        assert upstream.server_names == [HOST]  # SNI names the host, not the address connected to
        assert upstream.hosts == [f"{HOST}:{upstream.port}"]


async def test_tls_refuses_a_certificate_for_another_name(tmp_path: Path) -> None:
    server, client = _certificate(tmp_path, "someone-else.test")
    async with listening(server) as upstream:
        url = f"https://{HOST}:{upstream.port}/mcp"
        dns = Dns(["127.0.0.1"])
        async with guarded_client(url, {}, allow_private=True, connect_timeout=2, resolver=dns, verify=client) as c:
            with pytest.raises(httpx2.ConnectError, match="certificate verify failed"):
                await c.get(url)
        assert upstream.hosts == []  # no request was sent over the unverified connection


async def test_the_checked_addresses_are_tried_in_the_resolvers_order() -> None:
    async with listening() as upstream:
        unreachable = "93.184.215.15"
        dns = Dns([unreachable, PUBLIC])
        network = Network({PUBLIC: upstream.port})
        url = f"http://{HOST}:{upstream.port}/"
        async with guarded_client(url, {}, allow_private=False, connect_timeout=2, resolver=dns, network=network) as c:
            assert (await c.get(url)).text == "ok"
        assert network.asked == [unreachable, PUBLIC]


async def test_the_system_resolver_answers_addresses_and_ip_literals_as_themselves() -> None:
    assert "127.0.0.1" in await resolve_host("localhost")
    assert await resolve_host("::1") == ["::1"]
