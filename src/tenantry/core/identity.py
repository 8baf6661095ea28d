"""Who is calling: the principal derived from a verified credential, and nothing else."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["Principal", "PrincipalKey", "CredentialKind"]

CredentialKind = Literal["jwt", "api_key", "stdio"]

PrincipalKey = tuple[str, str, str]
"""``(issuer, tenant_id, subject)``: the identity a session belongs to."""


@dataclass(frozen=True, slots=True)
class Principal:
    """A verified caller. Built only by a credential verifier; never from request content.

    ``allowed_tools`` is what the credential grants; the effective tool set is its
    intersection with the tenant's grants and the registered tools (see ``tenantry.policy``).
    """

    issuer: str
    tenant_id: str
    subject: str
    allowed_tools: frozenset[str]
    token_id: str
    expires_at: int
    issued_at: int
    resource_prefix: str | None = None
    credential_kind: CredentialKind = "jwt"
    via_api_key: str | None = None
    """For a token exchanged at ``/oauth/token``: the id of the API key it was exchanged for (its
    ``client_id`` claim). Such a token counts only while that key does (see ``check_standing``)."""

    @property
    def key(self) -> PrincipalKey:
        """Session ownership compares the full principal, never the subject alone."""
        return (self.issuer, self.tenant_id, self.subject)
