"""``httpx2``'s request functions and clients with one TLS context per test process.

A client built the default way loads the system's CA certificates, about 40 ms of CPU on an idle
host and several times that on a loaded one, even for a plain ``http://`` URL. The suite builds
thousands (each readiness poll of a starting server, each JSON-RPC post, each SDK client), so it
spent minutes of CPU on certificate parsing, on the same two cores its servers start on. These
are ``httpx2``'s own functions with ``verify`` defaulting to a context built once; anything else
(cookies, connections, redirects) stays per call, as before. A test that passes ``verify`` gets
exactly what it passes.
"""

from __future__ import annotations

import ssl
from contextlib import AbstractContextManager
from functools import cache
from typing import Any

import httpx2

__all__ = ["AsyncClient", "Client", "delete", "get", "post", "put", "request", "stream", "tls"]


@cache
def tls() -> ssl.SSLContext:
    return httpx2.create_ssl_context()


def _verified(options: dict[str, Any]) -> dict[str, Any]:
    options.setdefault("verify", tls())
    return options


def request(method: str, url: str | httpx2.URL, **options: Any) -> httpx2.Response:
    return httpx2.request(method, url, **_verified(options))


def get(url: str | httpx2.URL, **options: Any) -> httpx2.Response:
    return httpx2.get(url, **_verified(options))


def post(url: str | httpx2.URL, **options: Any) -> httpx2.Response:
    return httpx2.post(url, **_verified(options))


def put(url: str | httpx2.URL, **options: Any) -> httpx2.Response:
    return httpx2.put(url, **_verified(options))


def delete(url: str | httpx2.URL, **options: Any) -> httpx2.Response:
    return httpx2.delete(url, **_verified(options))


def stream(method: str, url: str | httpx2.URL, **options: Any) -> AbstractContextManager[httpx2.Response]:
    return httpx2.stream(method, url, **_verified(options))


def Client(**options: Any) -> httpx2.Client:
    return httpx2.Client(**_verified(options))


def AsyncClient(**options: Any) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(**_verified(options))
