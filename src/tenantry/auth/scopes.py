"""The OAuth scope vocabulary of every accepted issuer, for discovery and step-up.

A client asks an authorization server for scopes, not tools. A provider configured with
``scope_tools`` uses its own scope names, each mapped to tools: there a client can step up.
A provider whose tools come from a claim (``tools_claim``) has no scope that names a tool.
The built-in issuer's ``scope`` only narrows what the client's API key (or identity assertion)
already grants, so asking it again cannot widen a token: no step-up points there either.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from tenantry.core.settings import IdentityProviderSettings

__all__ = ["ScopeMap"]


class ScopeMap:
    """Which scopes of which issuer grant which tools."""

    def __init__(self, builtin_issuer: str, providers: Sequence[IdentityProviderSettings]) -> None:
        self.builtin_issuer = builtin_issuer
        self._providers = {p.issuer: p for p in providers}
        self._order = [p.issuer for p in providers if p.advertise]

    @property
    def authorization_servers(self) -> list[str]:
        """RFC 9728 ``authorization_servers``: the advertised providers (in configured order), then the
        built-in issuer.

        Clients take the first entry for an interactive login, and only the providers offer one
        (the built-in issuer grants ``client_credentials`` and the JWT-bearer grant alone).
        """
        return [*self._order, self.builtin_issuer]

    def supported(self, registered: Collection[str]) -> list[str]:
        """``scopes_supported``: the providers' scopes that map to at least one registered tool.

        Scope names are the operator's configuration, not tool names, so listing them on a public
        document reveals no tenant's tools.
        """
        scopes = {
            scope
            for provider in self._providers.values()
            for scope, tools in provider.scope_tools.items()
            if any(tool in registered for tool in tools)
        }
        return sorted(scopes)

    def challenge_scope(self, registered: Collection[str]) -> str | None:
        """The ``scope`` of a ``401`` challenge: only when one provider maps scopes (several
        providers' vocabularies cannot share one challenge)."""
        mapping = [p for p in self._providers.values() if p.scope_tools]
        if len(mapping) != 1:
            return None
        scopes = [s for s, tools in mapping[0].scope_tools.items() if any(t in registered for t in tools)]
        return " ".join(sorted(scopes)) or None

    def scopes_for_tool(self, issuer: str, tool: str) -> tuple[str, ...]:
        """Scopes of ``issuer`` that would grant ``tool``; empty when no scope of it can."""
        provider = self._providers.get(issuer)
        if provider is None:
            return ()
        return tuple(sorted(scope for scope, tools in provider.scope_tools.items() if tool in tools))
