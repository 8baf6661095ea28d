"""The secrets of exactly one tenant, already decrypted: a dedicated worker's ``ctx.secrets``.

A dedicated worker is handed its tenant's secret values in its environment and never holds
the master key or anyone else's values; these scopes refuse any other tenant.
"""

from __future__ import annotations

from collections.abc import Mapping

from tenantry.core.errors import NotFound, ScopeViolation
from tenantry.core.ids import validate_tenant_id

__all__ = ["PinnedSecretScopes", "PinnedSecretHandle", "SECRET_ENV_PREFIX", "secrets_from_environ"]

SECRET_ENV_PREFIX = "TENANTRY_SECRET_"  # noqa: S105 - a prefix, not a secret
"""A worker's environment holds secret ``NAME`` as ``TENANTRY_SECRET_NAME`` (the prefix keeps a
secret called ``PATH`` or ``LD_PRELOAD`` from changing how the worker itself runs)."""


def secrets_from_environ(environ: Mapping[str, str]) -> dict[str, str]:
    return {key[len(SECRET_ENV_PREFIX) :]: value for key, value in environ.items() if key.startswith(SECRET_ENV_PREFIX)}


class PinnedSecretHandle:
    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = values

    async def get(self, name: str) -> str:
        """:raises NotFound: no secret of that name."""
        value = self._values.get(name)
        if value is None:
            raise NotFound(f"no secret named {name!r}")
        return value

    async def names(self) -> list[str]:
        return sorted(self._values)

    def __repr__(self) -> str:
        return "PinnedSecretHandle(<values>)"


class PinnedSecretScopes:
    """:class:`~tenantry.scoping.secrets.base.SecretScopes` holding one tenant's values.

    :raises ScopeViolation: for any other tenant id.
    """

    def __init__(self, tenant_id: str, values: Mapping[str, str]) -> None:
        self.tenant_id = validate_tenant_id(tenant_id)
        self._values = dict(values)

    def _check(self, tenant_id: str) -> None:
        if tenant_id != self.tenant_id:
            raise ScopeViolation("this worker serves one tenant only")

    def for_tenant(self, tenant_id: str) -> PinnedSecretHandle:
        self._check(tenant_id)
        return PinnedSecretHandle(self._values)

    async def values_of(self, tenant_id: str) -> list[str]:
        self._check(tenant_id)
        return sorted(self._values.values(), key=len, reverse=True)

    def __repr__(self) -> str:
        return f"PinnedSecretScopes(tenant_id={self.tenant_id!r})"
