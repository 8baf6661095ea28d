"""An external identity provider's signing keys, fetched from its JWKS URL and cached.

Refreshes happen when the cache is older than ``max_age`` or when a token names a key id
the cache does not hold (a provider rotated its keys), but never more often than once per
``min_refresh_interval``: a flood of tokens with random ``kid`` values costs the provider
at most one request per interval, and concurrent requests share one fetch. A failed
refresh keeps the last good keys. Only public signature keys of the allowed types are kept.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

import anyio
import httpx2
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, OKPKey, RSAKey, import_key

from tenantry.core.errors import InvalidCredential

__all__ = ["RemoteJwks", "VerificationKey", "KEY_TYPES", "discover_jwks_url"]

logger = logging.getLogger(__name__)

KEY_TYPES: Mapping[str, tuple[str, str | None]] = {
    "RS256": ("RSA", None),
    "RS384": ("RSA", None),
    "RS512": ("RSA", None),
    "PS256": ("RSA", None),
    "PS384": ("RSA", None),
    "PS512": ("RSA", None),
    "ES256": ("EC", "P-256"),
    "ES384": ("EC", "P-384"),
    "ES512": ("EC", "P-521"),
    "EdDSA": ("OKP", "Ed25519"),
}
"""Asymmetric algorithms an identity provider may use, with the key type (and curve) each needs."""
_MIN_RSA_BITS = 2048
_MAX_DOCUMENT_BYTES = 256 * 1024

PublicKey = RSAKey | ECKey | OKPKey


@dataclass(frozen=True, slots=True)
class VerificationKey:
    kid: str | None
    key: PublicKey
    alg: str | None
    """The ``alg`` the provider pinned to this key, if any."""

    def usable_for(self, alg: str) -> bool:
        if self.alg is not None and self.alg != alg:
            return False
        kty, crv = KEY_TYPES[alg]
        if self.key.key_type != kty:
            return False
        return crv is None or self.key.get("crv") == crv


class JwksUnavailable(Exception):
    pass


@cache
def _system_tls() -> ssl.SSLContext:
    """httpx2's ``verify=True`` context (the system's CAs), built once. A refresh runs on the
    event loop, and loading the CAs for a new client held it for about 60 ms idle (over a second
    on a loaded host) on every refresh, with every tenant's requests waiting."""
    return httpx2.create_ssl_context(verify=True, trust_env=False)


async def _get_json(client: httpx2.AsyncClient, url: str) -> dict[str, Any]:
    try:
        response = await client.get(url, headers={"Accept": "application/json"})
    except httpx2.HTTPError as exc:
        raise JwksUnavailable(f"{url}: {type(exc).__name__}") from None
    if response.status_code != 200:
        raise JwksUnavailable(f"{url}: HTTP {response.status_code}")
    if len(response.content) > _MAX_DOCUMENT_BYTES:
        raise JwksUnavailable(f"{url}: document too large")
    try:
        document = response.json()
    except ValueError:
        raise JwksUnavailable(f"{url}: not JSON") from None
    if not isinstance(document, dict):
        raise JwksUnavailable(f"{url}: not a JSON object")
    return document


async def discover_jwks_url(client: httpx2.AsyncClient, discovery_url: str, issuer: str) -> str:
    """The ``jwks_uri`` of an OpenID Connect / RFC 8414 discovery document whose ``issuer`` matches."""
    document = await _get_json(client, discovery_url)
    if document.get("issuer") != issuer:
        raise JwksUnavailable(f"{discovery_url}: its issuer does not match the configured issuer")
    jwks_uri = document.get("jwks_uri")
    if not isinstance(jwks_uri, str) or not jwks_uri.startswith(("https://", "http://")):
        raise JwksUnavailable(f"{discovery_url}: no usable jwks_uri")
    return jwks_uri


def _import_public_keys(document: Mapping[str, Any], allowed_algs: frozenset[str]) -> dict[str | None, VerificationKey]:
    keys: dict[str | None, VerificationKey] = {}
    entries = document.get("keys")
    if not isinstance(entries, list):
        raise JwksUnavailable("JWKS has no key list")
    allowed_types = {KEY_TYPES[alg][0] for alg in allowed_algs}
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("kty") not in allowed_types:
            continue
        if entry.get("use", "sig") != "sig":
            continue
        alg = entry.get("alg")
        if alg is not None and alg not in allowed_algs:
            continue
        public = {k: v for k, v in entry.items() if k not in ("d", "p", "q", "dp", "dq", "qi", "oth", "k")}
        try:
            key = import_key(public)
        except (JoseError, ValueError, TypeError):
            continue
        if not isinstance(key, RSAKey | ECKey | OKPKey):
            continue
        if isinstance(key, RSAKey) and key.raw_value.key_size < _MIN_RSA_BITS:
            continue
        kid = entry.get("kid") if isinstance(entry.get("kid"), str) else None
        keys[kid] = VerificationKey(kid=kid, key=key, alg=alg)
    return keys


class RemoteJwks:
    """The cached key set of one identity provider.

    :param jwks_url: the JWKS URL, or ``None`` to find it through ``discovery_url``.
    """

    def __init__(
        self,
        *,
        issuer: str,
        jwks_url: str | None,
        discovery_url: str | None,
        allowed_algs: frozenset[str],
        max_age: float,
        min_refresh_interval: float,
        timeout: float,
    ) -> None:
        self._issuer = issuer
        self._jwks_url = jwks_url
        self._discovery_url = discovery_url
        self._allowed_algs = allowed_algs
        self._max_age = max_age
        self._min_interval = min_refresh_interval
        self._timeout = timeout
        self._keys: dict[str | None, VerificationKey] = {}
        self._fetched_at = float("-inf")
        self._attempted_at = float("-inf")
        self._lock: anyio.Lock | None = None
        self.fetches = 0
        """Requests made to the provider (discovery and JWKS)."""
        self.version = 0
        """Bumped whenever the key set changes; verifier caches key on it."""

    async def key(self, kid: str | None, alg: str) -> VerificationKey:
        """The key that may verify a token with this ``kid`` and ``alg``.

        :raises InvalidCredential: no such key (after at most one rate-limited refresh), or the
            provider's keys could never be fetched.
        """
        now = time.monotonic()
        if now - self._fetched_at > self._max_age:
            await self._refresh(now)
        found = self._find(kid, alg)
        if found is None and time.monotonic() - self._attempted_at >= self._min_interval:
            await self._refresh(time.monotonic())
            found = self._find(kid, alg)
        if found is None:
            if not self._keys and self._fetched_at == float("-inf"):
                raise InvalidCredential("the identity provider's keys are unavailable; try again later")
            raise InvalidCredential("token signed by a key the identity provider does not publish")
        return found

    async def prefetch(self) -> bool:
        """Fetch the keys now (at start-up); returns whether the provider has usable keys."""
        await self._refresh(time.monotonic())
        return bool(self._keys)

    def _find(self, kid: str | None, alg: str) -> VerificationKey | None:
        if kid is None:
            # Without a kid, only an unambiguous key set will do.
            candidates = [k for k in self._keys.values() if k.usable_for(alg)]
            return candidates[0] if len(candidates) == 1 else None
        key = self._keys.get(kid)
        return key if key is not None and key.usable_for(alg) else None

    async def _refresh(self, wanted_at: float) -> None:
        if self._lock is None:
            self._lock = anyio.Lock()
        async with self._lock:
            if self._attempted_at >= wanted_at:
                return  # someone refreshed while this request waited
            self._attempted_at = time.monotonic()
            try:
                keys = await self._fetch()
            except JwksUnavailable as exc:
                logger.warning(
                    "could not refresh an identity provider's keys; keeping the last good set",
                    extra={"issuer": self._issuer, "reason": str(exc)},
                )
                return
            self._keys = keys
            self.version += 1
            self._fetched_at = time.monotonic()

    async def _fetch(self) -> dict[str | None, VerificationKey]:
        async with httpx2.AsyncClient(
            timeout=self._timeout, follow_redirects=False, trust_env=False, verify=_system_tls()
        ) as client:
            url = self._jwks_url
            if url is None:
                assert self._discovery_url is not None
                self.fetches += 1
                url = await discover_jwks_url(client, self._discovery_url, self._issuer)
                self._jwks_url = url
            self.fetches += 1
            return _import_public_keys(await _get_json(client, url), self._allowed_algs)
