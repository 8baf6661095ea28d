"""Choosing the verifier for a presented credential: API key, built-in issuer or an external
identity provider. The choice is made from the credential's shape and its (unverified)
``iss``; the chosen verifier then checks everything, so a lie in ``iss`` only selects a
verifier that will refuse the token."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from tenantry.auth.apikeys import ApiKeyVerifier, looks_like_api_key
from tenantry.auth.claims import peek_issuer
from tenantry.auth.tokens import JwtVerifier
from tenantry.core.errors import InvalidCredential
from tenantry.core.identity import Principal

if TYPE_CHECKING:  # the provider verifier (and its HTTP client) loads only when providers are configured
    from tenantry.auth.idp import IdentityProviderVerifier

__all__ = ["CredentialRouter"]


class CredentialRouter:
    """A :class:`~tenantry.auth.tokens.CredentialVerifier` over every accepted kind of credential."""

    def __init__(
        self,
        builtin: JwtVerifier,
        *,
        api_keys: ApiKeyVerifier | None = None,
        providers: Iterable[IdentityProviderVerifier] = (),
    ) -> None:
        self.builtin = builtin
        self.api_keys = api_keys
        self.providers = {p.issuer: p for p in providers}
        if builtin.issuer in self.providers:
            raise ValueError("an identity provider cannot use the built-in issuer's URL")

    def is_api_key(self, credential: str) -> bool:
        return self.api_keys is not None and looks_like_api_key(credential)

    async def verify(self, credential: str) -> Principal:
        if self.api_keys is not None and looks_like_api_key(credential):
            return await self.api_keys.verify(credential)
        if not self.providers:
            return self.builtin.verify_sync(credential)
        issuer = peek_issuer(credential)
        if issuer is None or issuer == self.builtin.issuer:
            return self.builtin.verify_sync(credential)
        provider = self.providers.get(issuer)
        if provider is None:
            raise InvalidCredential("token issuer not accepted")
        return await provider.verify(credential)
