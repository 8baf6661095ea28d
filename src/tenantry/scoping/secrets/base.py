"""The tenant-scoped secret handle tools receive as ``ctx.secrets``."""

from __future__ import annotations

from typing import Protocol

__all__ = ["SecretHandle", "SecretScopes"]


class SecretHandle(Protocol):
    """Read-only access to the calling tenant's secrets, decrypted at call time.

    A value read here must never be logged or returned to the agent: the server redacts every
    secret value of the tenant from tool results and error messages before they leave.

    :raises NotFound: for a name the tenant has no secret under (the message names only the name).
    :raises SecretsUnavailable: when the tenant's data key is gone (crypto-shredded) or the
        master key cannot unwrap it.
    """

    async def get(self, name: str) -> str: ...

    async def names(self) -> list[str]: ...


class SecretScopes(Protocol):
    def for_tenant(self, tenant_id: str) -> SecretHandle: ...

    async def values_of(self, tenant_id: str) -> list[str]:
        """Every current secret value of one tenant, longest first, for redaction (never for display).

        :raises SecretsUnavailable: a stored value cannot be decrypted; withhold the result (fail closed).
        """
        ...
