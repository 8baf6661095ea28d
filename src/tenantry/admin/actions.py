"""Administrative actions on credentials and tenants, shared by the CLI and the server's
automatic response (and, later, the admin API).

Each action makes its change in the control store and returns the audit event describing
it, with who acted and why; the caller records the event through its own audit path (the
CLI synchronously, the server through its durable sink). The change comes first: a
revocation or a halt must take effect even if recording it then fails, and the caller
reports that failure loudly.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from tenantry.audit.events import SYSTEM_STREAM, AuditEvent
from tenantry.auth.apikeys import IssuedApiKey, api_key_subject, generate_api_key
from tenantry.controlplane.base import ControlStore, Tenant, Tier
from tenantry.core.credentials import ApiKeyRecord, Revocation, RevocationKind
from tenantry.core.durations import parse_duration
from tenantry.core.errors import NotFound, UsageError
from tenantry.core.ids import validate_subject, validate_tenant_id
from tenantry.core.limits import LIMIT_NAMES, parse_limit_overrides

__all__ = [
    "Revoked",
    "revoke_tokens",
    "create_api_key",
    "revoke_api_key",
    "halt_tenant",
    "resume_tenant",
    "parse_limit_assignments",
    "set_tenant_limits",
    "move_tenant",
    "SecretWriter",
    "set_secret",
    "delete_secret",
    "shred_tenant_key",
]


@dataclass(frozen=True)
class Revoked:
    revocation: Revocation
    event: AuditEvent


def _require_tenant(store: ControlStore, tenant_id: str) -> Tenant:
    tenant = store.get_tenant(tenant_id)
    if tenant is None:
        raise NotFound(f"no tenant {tenant_id!r}")
    return tenant


def revoke_tokens(
    store: ControlStore,
    *,
    actor: str,
    longest_lifetime: int,
    jti: str | None = None,
    tenant_id: str | None = None,
    subject: str | None = None,
    reason: str | None = None,
    now: int | None = None,
) -> Revoked:
    """Revoke one token (``jti``), a subject's tokens, or all of a tenant's tokens issued until now.

    :param longest_lifetime: seconds after which every token the entry could catch has expired.
    :raises UsageError: for a bad combination. :raises NotFound: for an unknown tenant.
    """
    at = int(time.time()) if now is None else now
    if jti is not None:
        if subject is not None:
            raise UsageError("give --jti, or --tenant with an optional --sub, not both")
        if not 0 < len(jti) <= 128 or not jti.isprintable():
            raise UsageError("--jti must be 1-128 printable characters")
        if tenant_id is not None:
            _require_tenant(store, tenant_id)
        revocation = Revocation("jti", tenant_id, at, at + longest_lifetime, jti=jti, reason=reason, actor=actor)
    elif tenant_id is not None:
        _require_tenant(store, validate_tenant_id(tenant_id))
        kind: RevocationKind = "subject" if subject is not None else "tenant"
        if subject is not None:
            validate_subject(subject)
        revocation = Revocation(
            kind, tenant_id, at, at + longest_lifetime, subject=subject, cutoff=at, reason=reason, actor=actor
        )
    else:
        raise UsageError("give --jti JTI, or --tenant ID [--sub SUBJECT]")
    store.add_revocation(revocation)
    store.prune_revocations(at)
    event = AuditEvent(
        event_type="token_revoked",
        tenant_id=revocation.tenant_id or SYSTEM_STREAM,
        result_status="ok",
        subject=subject,
        actor=actor,
        reason=reason,
        detail={
            "scope": revocation.kind,
            **({"jti": jti} if jti is not None else {"issued_until": at}),
        },
    )
    return Revoked(revocation, event)


def create_api_key(
    store: ControlStore,
    tenant_id: str,
    *,
    actor: str,
    tools: Iterable[str] | None = None,
    name: str | None = None,
    expires_at: int | None = None,
) -> tuple[IssuedApiKey, AuditEvent]:
    """A new key for the tenant; its tools default to the tenant's grants and may not exceed them.

    :raises NotFound: unknown tenant. :raises UsageError: a tool the tenant is not granted.
    """
    tenant = _require_tenant(store, tenant_id)
    wanted = sorted(tenant.grants) if tools is None else sorted(set(tools))
    outside = sorted(set(wanted) - tenant.grants)
    if outside:
        raise UsageError(f"not granted to tenant {tenant_id!r}: {', '.join(outside)}")
    if name is not None and (not 0 < len(name) <= 100 or not name.isprintable()):
        raise UsageError("--name must be 1-100 printable characters")
    issued = generate_api_key(tenant_id, wanted, name=name, expires_at=expires_at, created_by=actor)
    store.add_api_key(issued.record)
    event = AuditEvent(
        event_type="api_key_created",
        tenant_id=tenant_id,
        result_status="ok",
        subject=api_key_subject(issued.record.key_id),
        actor=actor,
        detail={
            "key_id": issued.record.key_id,
            "name": issued.record.name,
            "tools": wanted,
            "expires_at": expires_at,
        },
    )
    return issued, event


def revoke_api_key(
    store: ControlStore,
    key_id: str,
    *,
    actor: str,
    longest_lifetime: int,
    reason: str | None = None,
    now: int | None = None,
) -> tuple[ApiKeyRecord, AuditEvent]:
    """Revoke a key, and with it every token exchanged for it so far.

    :raises NotFound: unknown key id.
    """
    at = int(time.time()) if now is None else now
    record = store.revoke_api_key(key_id, at)
    # Tokens exchanged at /oauth/token act as the key's subject. No token of that subject may
    # outlive the key, not even one a server exchanged after this moment, before its view of the
    # control plane caught up (a later second than ``at``): the cutoff runs as far as a server
    # could possibly still be exchanging the key, and the entry lasts until such a token expired.
    cutoff = at + longest_lifetime
    store.add_revocation(
        Revocation(
            "subject",
            record.tenant_id,
            at,
            cutoff + longest_lifetime,
            subject=api_key_subject(key_id),
            cutoff=cutoff,
            reason=reason or "API key revoked",
            actor=actor,
        )
    )
    event = AuditEvent(
        event_type="api_key_revoked",
        tenant_id=record.tenant_id,
        result_status="ok",
        subject=api_key_subject(key_id),
        actor=actor,
        reason=reason,
        detail={"key_id": key_id, "name": record.name},
    )
    return record, event


def halt_tenant(store: ControlStore, tenant_id: str, *, actor: str, reason: str) -> tuple[Tenant, AuditEvent]:
    """Switch the tenant's kill switch on.

    :raises NotFound: unknown tenant. :raises UsageError: an empty reason.
    """
    reason = reason.strip()
    if not reason or len(reason) > 500 or not reason.isprintable():
        raise UsageError("--reason must be 1-500 printable characters saying why")
    tenant = store.set_status(tenant_id, "halted", reason)
    event = AuditEvent(event_type="tenant_halted", tenant_id=tenant_id, result_status="ok", actor=actor, reason=reason)
    return tenant, event


def resume_tenant(
    store: ControlStore, tenant_id: str, *, actor: str, reason: str | None = None
) -> tuple[Tenant, AuditEvent]:
    """Switch the tenant's kill switch off.

    :raises NotFound: unknown tenant.
    """
    before = _require_tenant(store, tenant_id)
    tenant = store.set_status(tenant_id, "active", None)
    event = AuditEvent(
        event_type="tenant_resumed",
        tenant_id=tenant_id,
        result_status="ok",
        actor=actor,
        reason=reason,
        detail={"was_halted": before.halted, "halted_reason": before.halted_reason},
    )
    return tenant, event


_DURATION_LIMITS = frozenset({"tool_timeout", "session_idle", "sql_statement_timeout"})


def parse_limit_assignments(assignments: Iterable[str]) -> dict[str, float | int]:
    """``NAME=VALUE`` strings (durations may be written ``30s``, ``15m``) as validated overrides.

    :raises UsageError: for a malformed assignment, an unknown limit or a bad value.
    """
    raw: dict[str, object] = {}
    for assignment in assignments:
        name, sep, value = assignment.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name or not value:
            raise UsageError(f"limits are NAME=VALUE, e.g. calls_per_second=20 (got {assignment!r})")
        raw[name] = parse_duration(value) if name in _DURATION_LIMITS and value[-1:].isalpha() else value
    try:
        return parse_limit_overrides(raw)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def set_tenant_limits(
    store: ControlStore,
    tenant_id: str,
    values: Mapping[str, float | int],
    *,
    clear: Iterable[str] = (),
    actor: str,
) -> tuple[Tenant, AuditEvent]:
    """Override some of the tenant's limits (``values``) and return others to the default (``clear``).

    :raises NotFound: unknown tenant. :raises UsageError: an unknown limit name in ``clear``.
    """
    cleared = sorted(set(clear))
    unknown = [name for name in cleared if name not in LIMIT_NAMES]
    if unknown:
        raise UsageError(f"unknown limit {unknown[0]!r} (known: {', '.join(LIMIT_NAMES)})")
    _require_tenant(store, tenant_id)
    tenant = store.set_limits(tenant_id, dict(values), cleared)
    event = AuditEvent(
        event_type="tenant_limits_changed",
        tenant_id=tenant_id,
        result_status="ok",
        actor=actor,
        detail={"set": dict(sorted(values.items())), "cleared": cleared},
    )
    return tenant, event


def move_tenant(store: ControlStore, tenant_id: str, tier: str, *, actor: str) -> tuple[Tenant, AuditEvent]:
    """Move the tenant to another isolation tier. Its data stays where it is (the same stores
    serve both tiers); a running server sends the tenant's next calls to the new place within
    one poll, and calls in flight finish where they started.

    :raises NotFound: unknown tenant. :raises UsageError: an unknown tier.
    """
    if tier not in ("logical", "dedicated"):
        raise UsageError("the tier must be logical or dedicated")
    target: Tier = "dedicated" if tier == "dedicated" else "logical"
    before = _require_tenant(store, tenant_id)
    tenant = store.set_tier(tenant_id, target) if before.tier != target else before
    event = AuditEvent(
        event_type="tenant_moved",
        tenant_id=tenant_id,
        result_status="ok",
        actor=actor,
        detail={"from": before.tier, "to": target, "changed": before.tier != target},
    )
    return tenant, event


class SecretWriter(Protocol):
    """The write side of the secret scopes (``tenantry.scoping.secrets.store.StoredSecretScopes``):
    it seals values, so these actions never handle key material. Methods block.
    """

    def set_secret(self, tenant_id: str, name: str, value: str) -> bool:
        """Store the value; ``True`` when the name was new. :raises UsageError: bad name or value."""
        ...

    def delete_secret(self, tenant_id: str, name: str) -> bool: ...

    def shred_tenant_key(self, tenant_id: str) -> bool: ...


# Secret events name the secret and nothing else: never its value, length or a hash of it
# (a hash of a short or guessable value is as good as the value).


def set_secret(
    store: ControlStore, secrets: SecretWriter, tenant_id: str, name: str, value: str, *, actor: str
) -> AuditEvent:
    """Create or replace the tenant's secret ``name``.

    :raises NotFound: unknown tenant. :raises UsageError: an invalid name or value.
    :raises SecretsUnavailable: the tenant's data key cannot be unwrapped (wrong master key).
    """
    _require_tenant(store, tenant_id)
    created = secrets.set_secret(tenant_id, name, value)
    return AuditEvent(
        event_type="secret_set",
        tenant_id=tenant_id,
        result_status="ok",
        actor=actor,
        detail={"name": name, "created": created},
    )


def delete_secret(store: ControlStore, secrets: SecretWriter, tenant_id: str, name: str, *, actor: str) -> AuditEvent:
    """Delete the tenant's secret ``name``.

    :raises NotFound: unknown tenant or no such secret. :raises UsageError: an invalid name.
    """
    _require_tenant(store, tenant_id)
    if not secrets.delete_secret(tenant_id, name):
        raise NotFound(f"no secret named {name!r}")
    return AuditEvent(
        event_type="secret_deleted", tenant_id=tenant_id, result_status="ok", actor=actor, detail={"name": name}
    )


def shred_tenant_key(
    store: ControlStore, secrets: SecretWriter, tenant_id: str, *, actor: str, reason: str | None = None
) -> AuditEvent:
    """Delete the tenant's data key and every secret sealed under it (crypto-shredding); any
    copy of the sealed values left elsewhere can no longer be decrypted.

    :raises NotFound: unknown tenant.
    """
    _require_tenant(store, tenant_id)
    names = [info.name for info in store.list_secrets(tenant_id)]
    had_key = secrets.shred_tenant_key(tenant_id)
    return AuditEvent(
        event_type="tenant_key_shredded",
        tenant_id=tenant_id,
        result_status="ok",
        actor=actor,
        reason=reason,
        detail={"had_key": had_key, "secrets": names},
    )
