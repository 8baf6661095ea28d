"""Refreshing an identity provider's keys loads no CA certificates on the event loop.

A key refresh runs on the server's event loop, and building an HTTP client with the system's CAs
held that loop for about 60 ms idle (over a second on a loaded CI host) on every refresh: every
tenant's requests waited for it. Refreshes now share one TLS context.
"""

from __future__ import annotations

import json
import ssl
from typing import Any

import httpx2
import pytest
from anyio.abc import ByteStream
from joserfc.jwk import ECKey

from tenantry.auth.jwks import RemoteJwks
from tests.support.loopback import serving

pytestmark = pytest.mark.anyio

KEY = ECKey.generate_key("P-256")
JWKS = json.dumps({"keys": [{**KEY.as_dict(private=False), "kid": "k1", "alg": "ES256"}]}).encode()


async def answer_jwks(stream: ByteStream) -> None:
    async with stream:
        request = b""
        while b"\r\n\r\n" not in request:
            request += await stream.receive()
        head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(JWKS)}\r\n"
        await stream.send(head.encode() + b"Connection: close\r\n\r\n" + JWKS)


@pytest.fixture
def ca_loads(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    loads: list[Any] = []
    original = ssl.SSLContext.load_verify_locations

    def counted(self: ssl.SSLContext, *args: Any, **kwargs: Any) -> None:
        loads.append(args or kwargs)
        original(self, *args, **kwargs)

    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", counted)
    return loads


async def test_key_refreshes_load_no_ca_certificates(ca_loads: list[Any]) -> None:
    async with serving(answer_jwks) as port:
        jwks = RemoteJwks(
            issuer="http://127.0.0.1",
            jwks_url=f"http://127.0.0.1:{port}/jwks",
            discovery_url=None,
            allowed_algs=frozenset({"ES256"}),
            max_age=300,
            min_refresh_interval=0,
            timeout=5,
        )
        assert await jwks.prefetch()
        ca_loads.clear()  # the process's one TLS context may have been built by now, not again
        for _ in range(2):
            with pytest.raises(Exception, match="does not publish"):
                await jwks.key("unknown", "ES256")  # each unknown kid refreshes
        assert (await jwks.key("k1", "ES256")).kid == "k1"
    assert jwks.fetches == 3
    assert ca_loads == []


async def test_a_client_built_the_default_way_does_load_them(ca_loads: list[Any]) -> None:
    # The control: the counter sees what the key refresh used to do.
    async with httpx2.AsyncClient(timeout=5):
        pass
    assert ca_loads
