"""The one TLS client context Tenantry's outbound HTTP uses (the system's CAs).

Loading the CAs holds the event loop for tens of milliseconds (about 60 ms idle, far more on a
loaded host), so a client built per request (an identity provider's key refresh, an alert
webhook) would stall every tenant's requests that long. A client context keeps no
per-connection state, so one is shared by all.
"""

from __future__ import annotations

import ssl
from functools import cache

import httpx2

__all__ = ["system_tls", "client_tls"]


@cache
def system_tls() -> ssl.SSLContext:
    """httpx2's ``verify=True`` context, built once."""
    return httpx2.create_ssl_context(verify=True, trust_env=False)


def client_tls(verify: ssl.SSLContext | bool) -> ssl.SSLContext:
    """The shared context for ``verify=True``; ``verify`` itself when it is a context (or off)."""
    return system_tls() if verify is True else httpx2.create_ssl_context(verify=verify, trust_env=False)
