"""Keeping a tenant's secret values out of what leaves the server.

A safety net, not a guarantee: it replaces every verbatim occurrence of a secret value in a
result, an error message or a tool's log line. A tool that encodes, splits or transforms a
secret before returning it defeats it, which is why tools should never handle secret values
beyond passing them to the service they authenticate to.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable
from typing import Any, TypeVar

from pydantic import BaseModel

from tenantry.scoping.secrets.base import SecretScopes

__all__ = ["SecretRedactor", "TenantSecretValues", "REDACTED"]

REDACTED = "[redacted]"
_M = TypeVar("_M", bound=BaseModel)


class SecretRedactor:
    """Replaces the given secret values wherever they appear in strings, however deeply nested."""

    __slots__ = ("_json_safe", "_pattern")

    def __init__(self, values: Iterable[str]) -> None:
        unique = sorted({v for v in values if v}, key=len, reverse=True)  # longest first: no partial leftovers
        self._pattern = re.compile("|".join(re.escape(v) for v in unique)) if unique else None
        # Values JSON writes unchanged can be looked for in a model's JSON form in one pass.
        self._json_safe = all(json.dumps(v, ensure_ascii=False)[1:-1] == v for v in unique)

    def __repr__(self) -> str:
        return "SecretRedactor(<values>)"

    def __bool__(self) -> bool:
        return self._pattern is not None

    def text(self, value: str) -> str:
        if self._pattern is None:
            return value
        return self._pattern.sub(REDACTED, value)

    def value(self, value: Any) -> Any:
        """Redact every string in a JSON-like value (dict keys included)."""
        if self._pattern is None:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.value(k): self.value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(v) for v in value]
        return value

    def model(self, result: _M) -> _M:
        """A copy of a pydantic model (an MCP result) with every secret value replaced."""
        if self._pattern is None:
            return result
        if self._json_safe and self._pattern.search(result.model_dump_json()) is None:
            return result
        dumped = result.model_dump(by_alias=True, exclude_unset=True)
        redacted = self.value(dumped)
        if redacted == dumped:
            return result
        return type(result).model_validate(redacted)


class TenantSecretValues:
    """The redactor for one tenant's results: every current secret value of the tenant, plus
    the values the call itself read (so a secret deleted mid-call is still caught).

    Values are re-read at most every ``ttl`` seconds per tenant; a secret set within that
    window is redacted only if the call read it through ``ctx.secrets``.

    :raises SecretsUnavailable: from :meth:`redactor` when stored values cannot be decrypted
        (the caller withholds the result: fail closed).
    """

    def __init__(self, scopes: SecretScopes, *, ttl: float = 1.0, max_tenants: int = 10_000) -> None:
        self._scopes = scopes
        self._ttl = ttl
        self._max = max_tenants
        self._cache: dict[str, tuple[float, frozenset[str], SecretRedactor]] = {}

    def __repr__(self) -> str:
        return "TenantSecretValues(<values>)"

    async def redactor(self, tenant_id: str, read_by_call: Iterable[str] = ()) -> SecretRedactor:
        now = time.monotonic()
        cached = self._cache.get(tenant_id)
        if cached is None or cached[0] <= now:
            values = frozenset(await self._scopes.values_of(tenant_id))
            if len(self._cache) >= self._max:
                self._cache.clear()
            cached = (now + self._ttl, values, SecretRedactor(values))
            self._cache[tenant_id] = cached
        _, values, redactor = cached
        extra = set(read_by_call) - values
        return SecretRedactor(values | extra) if extra else redactor

    def known_redactor(self, tenant_id: str, read_by_call: Iterable[str] = ()) -> SecretRedactor:
        """Without I/O (for log lines): the values already cached for the tenant, plus the call's."""
        cached = self._cache.get(tenant_id)
        values = cached[1] if cached is not None else frozenset()
        return SecretRedactor(values | set(read_by_call))

    def forget(self, tenant_id: str) -> None:
        self._cache.pop(tenant_id, None)
