"""Credential state shared by the control plane and every verifier: revocations and API keys.

Plain values only; the control plane stores them and the request path reads a snapshot.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from tenantry.core.identity import Principal

__all__ = ["Revocation", "RevocationKind", "RevocationList", "ApiKeyRecord"]

RevocationKind = Literal["jti", "subject", "tenant"]


@dataclass(frozen=True, slots=True)
class Revocation:
    """One revocation entry.

    * ``jti``: the token with this id, whoever holds it (``tenant_id``, when known, records whose it was).
    * ``subject``: every token of ``subject`` in ``tenant_id`` issued at or before ``cutoff``.
    * ``tenant``: every token of ``tenant_id`` issued at or before ``cutoff``.

    ``cutoff`` is a whole second: a token issued in the same second as the revocation is also
    revoked (a fresh token issued a second later is not). ``expires_at`` is when every token
    the entry can catch has expired; the entry is pruned after that.
    """

    kind: RevocationKind
    tenant_id: str | None
    created_at: int
    expires_at: int
    subject: str | None = None
    jti: str | None = None
    cutoff: int | None = None
    reason: str | None = None
    actor: str | None = None


class RevocationList:
    """An immutable set of revocations, indexed for a check on every request."""

    __slots__ = ("_jtis", "_subjects", "_tenants", "entries")

    def __init__(self, entries: Iterable[Revocation] = ()) -> None:
        self.entries = tuple(entries)
        self._jtis: set[str] = set()
        self._subjects: dict[tuple[str, str], int] = {}
        self._tenants: dict[str, int] = {}
        for entry in self.entries:
            if entry.kind == "jti" and entry.jti is not None:
                self._jtis.add(entry.jti)
            elif entry.tenant_id is None or entry.cutoff is None:
                continue
            elif entry.kind == "subject" and entry.subject is not None:
                key = (entry.tenant_id, entry.subject)
                self._subjects[key] = max(entry.cutoff, self._subjects.get(key, entry.cutoff))
            elif entry.kind == "tenant":
                self._tenants[entry.tenant_id] = max(entry.cutoff, self._tenants.get(entry.tenant_id, entry.cutoff))

    def __len__(self) -> int:
        return len(self.entries)

    def reason(self, principal: Principal) -> str | None:
        """Why ``principal``'s credential is revoked, or ``None`` if it is not.

        API keys used directly are revoked with the key itself (``apikey revoke``); tokens
        exchanged for them are JWTs and fall under these rules like any other.
        """
        if not (self._jtis or self._subjects or self._tenants):
            return None
        if principal.credential_kind == "api_key":
            return None
        if principal.token_id in self._jtis:
            return "token revoked"
        issued = principal.issued_at
        cutoff = self._tenants.get(principal.tenant_id)
        if cutoff is not None and issued <= cutoff:
            return "token revoked (all of the tenant's tokens issued before the revocation)"
        cutoff = self._subjects.get((principal.tenant_id, principal.subject))
        if cutoff is not None and issued <= cutoff:
            return "token revoked (all of the subject's tokens issued before the revocation)"
        return None


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    """A stored API key: never the key itself, only a salted hash of its secret part."""

    key_id: str
    tenant_id: str
    name: str
    tools: frozenset[str]
    salt: bytes
    secret_hash: bytes
    created_at: int
    expires_at: int | None = None
    revoked_at: int | None = None
    created_by: str | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at
