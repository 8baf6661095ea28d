"""Signed checkpoints of audit stream heads, and signed statements of exports.

A checkpoint is a JWS (EdDSA, the audit key ring in ``<data_dir>/keys``, header
``typ: tenantry-audit-checkpoint+jws``) over the RFC 8785 canonical JSON
``{"kind", "tenant_id", "seq", "hash", "created", "iss"}``. ``head`` checkpoints pin where a
stream stood, so truncating or rewriting its tail is evident; ``purge`` checkpoints anchor
what remains after an explicit purge. Only the verified payload is trusted, never the
columns stored beside it.

An export statement (``typ: tenantry-audit-export+jws``, ``kind: export``) is signed by the
same key ring over the canonical JSON ``{"kind", "tenant_id", "first_seq", "anchor",
"last_seq", "last_hash", "records", "file_sha256", "created", "iss"}``: exactly which part of
a stream an export file holds and where it ends. Its ``typ`` and ``kind`` differ from a
checkpoint's, and each verifier requires its own, so one can never pass for the other.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import anyio
import anyio.to_thread
import pydantic_core
from joserfc import jws
from joserfc.errors import JoseError, SecurityWarning
from joserfc.jwk import ECKey, OKPKey

from tenantry.audit.chain import from_hex, to_hex
from tenantry.audit.events import canonical_json, iso_timestamp
from tenantry.audit.store.base import AuditStore, CheckpointKind, StoredCheckpoint
from tenantry.auth.keys import KeyRing
from tenantry.core.errors import TenantryError
from tenantry.core.threads import BlockingRunner

__all__ = [
    "AUDIT_KEY_FILE",
    "CheckpointSigner",
    "CheckpointClaims",
    "ExportClaims",
    "InvalidCheckpoint",
    "Checkpointer",
    "TrustedKeys",
    "VerifyingKey",
    "verify_checkpoint",
    "verify_export_statement",
    "DeletionClaims",
    "verify_deletion_certificate",
]

logger = logging.getLogger(__name__)

warnings.filterwarnings("ignore", message="EdDSA is deprecated", category=SecurityWarning)

AUDIT_KEY_FILE = "audit-signing-keys.json"
"""The audit key ring's file in ``<data_dir>/keys``."""

_TYPE = "tenantry-audit-checkpoint+jws"
_EXPORT_TYPE = "tenantry-audit-export+jws"
_DELETION_TYPE = "tenantry-deletion-certificate+jws"
_CHECKPOINT_KINDS = ("head", "purge")
_ALGORITHMS: dict[str, Literal["EdDSA", "ES256"]] = {"OKP": "EdDSA", "EC": "ES256"}


class InvalidCheckpoint(ValueError):
    """A checkpoint whose signature or payload does not verify."""


@dataclass(frozen=True, slots=True)
class CheckpointClaims:
    kind: CheckpointKind
    tenant_id: str
    seq: int
    hash: bytes
    created: str


@dataclass(frozen=True, slots=True)
class ExportClaims:
    """What an export file holds: records ``first_seq..last_seq`` of one stream, nothing else."""

    tenant_id: str
    first_seq: int
    anchor: bytes
    """The hash the first record links to (the genesis, or a purge anchor)."""
    last_seq: int
    """The seq the export ends at (``first_seq - 1`` when it holds no record)."""
    last_hash: bytes
    records: int
    file_sha256: str
    """``sha256:<hex>`` of the export file's bytes."""
    created: str
    issuer: str
    kid: str = ""
    """The key that signed the statement (from the verified header)."""


@dataclass(frozen=True, slots=True)
class VerifyingKey:
    kid: str
    alg: Literal["EdDSA", "ES256"]
    key: OKPKey | ECKey


class TrustedKeys:
    """The public keys a verifier accepts signatures from, and where they came from.

    :param source: shown to the user (``"the export's own JWKS"``, ``"--jwks keys.json"``).
    """

    def __init__(self, keys: Iterable[VerifyingKey], *, source: str, pinned: bool) -> None:
        self._keys = {key.kid: key for key in keys}
        self.source = source
        self.pinned = pinned
        """``False`` when the keys came with the material they check (a forger can swap both)."""

    @classmethod
    def from_jwks(cls, jwks: object, *, source: str, pinned: bool) -> TrustedKeys:
        """Public keys from a JWKS; every ``kid`` must be its key's RFC 7638 thumbprint, so a
        pinned key id pins the key itself.

        :raises InvalidCheckpoint: a malformed set, a private key, or a ``kid`` that is not the thumbprint.
        """
        if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
            raise InvalidCheckpoint(f"{source} is not a JWKS (an object with a list of keys)")
        keys: list[VerifyingKey] = []
        for jwk in jwks["keys"]:
            try:
                kty = jwk["kty"]
                alg = _ALGORITHMS[kty]
                if "d" in jwk:
                    raise InvalidCheckpoint(f"{source} holds a private key; give public keys only")
                key: OKPKey | ECKey = OKPKey.import_key(jwk) if kty == "OKP" else ECKey.import_key(jwk)
                kid = str(jwk["kid"])
            except InvalidCheckpoint:
                raise
            except (JoseError, ValueError, KeyError, TypeError) as exc:
                raise InvalidCheckpoint(f"{source} holds a key that cannot be read ({exc})") from None
            if key.thumbprint() != kid:
                raise InvalidCheckpoint(f"{source}: key id {kid} is not the thumbprint of its key")
            keys.append(VerifyingKey(kid, alg, key))
        return cls(keys, source=source, pinned=pinned)

    @classmethod
    def from_ring(cls, ring: KeyRing, *, source: str) -> TrustedKeys:
        """Every key of an audit key ring, retired ones included (old checkpoints stay verifiable)."""
        return cls((VerifyingKey(k.kid, k.alg, k.key) for k in ring.all()), source=source, pinned=True)

    def only(self, kids: Collection[str], *, source: str) -> TrustedKeys:
        """The keys among these whose id (thumbprint) is in ``kids``: a pin."""
        return TrustedKeys((k for k in self._keys.values() if k.kid in kids), source=source, pinned=True)

    def get(self, kid: str) -> VerifyingKey | None:
        return self._keys.get(kid)

    def kids(self) -> list[str]:
        return sorted(self._keys)

    def jwks(self) -> dict[str, Any]:
        keys = []
        for k in self._keys.values():
            jwk = dict(k.key.as_dict(private=False))
            jwk.update({"kid": k.kid, "alg": k.alg, "use": "sig"})
            keys.append(jwk)
        return {"keys": keys}


KeyLookup = Callable[[str], "VerifyingKey | None"]


def _ring_lookup(ring: KeyRing) -> KeyLookup:
    def lookup(kid: str) -> VerifyingKey | None:
        key = ring.get(kid, include_retired=True)
        return None if key is None else VerifyingKey(key.kid, key.alg, key.key)

    return lookup


def _verified_payload(token: str, typ: str, lookup: KeyLookup, what: str) -> tuple[str, dict[str, Any]]:
    """``(kid, payload)`` of a compact JWS of type ``typ`` signed by a key ``lookup`` knows.

    :raises InvalidCheckpoint: wrong type, unknown key, bad signature or a payload that is not an object.
    """
    try:
        header = jws.extract_compact(token.encode()).headers()
        if header.get("typ") != typ:
            article = "an" if what[0] in "aeiou" else "a"
            raise InvalidCheckpoint(f"not {article} {what} (type {header.get('typ')!r})")
        kid = str(header.get("kid"))
        key = lookup(kid)
        if key is None or header.get("alg") != key.alg:
            raise InvalidCheckpoint(f"{what} signed by an unknown key ({kid})")
        payload = pydantic_core.from_json(jws.deserialize_compact(token, key.key, algorithms=[key.alg]).payload)
    except InvalidCheckpoint:
        raise
    except (JoseError, ValueError, KeyError, TypeError) as exc:
        raise InvalidCheckpoint(f"{what} does not verify: {exc}") from None
    if not isinstance(payload, dict):
        raise InvalidCheckpoint(f"{what} does not verify: the payload is not an object")
    return kid, payload


def verify_checkpoint(token: str, keys: TrustedKeys | KeyRing) -> CheckpointClaims:
    """A checkpoint's signed claims.

    :raises InvalidCheckpoint: bad signature, unknown key, an export statement, or a malformed payload.
    """
    lookup = _ring_lookup(keys) if isinstance(keys, KeyRing) else keys.get
    _, payload = _verified_payload(token, _TYPE, lookup, "checkpoint")
    try:
        kind = payload["kind"]
        if kind not in _CHECKPOINT_KINDS:
            raise InvalidCheckpoint(f"checkpoint of unknown kind {kind!r}")
        return CheckpointClaims(
            kind=kind,
            tenant_id=str(payload["tenant_id"]),
            seq=int(payload["seq"]),
            hash=from_hex(payload["hash"]),
            created=str(payload["created"]),
        )
    except InvalidCheckpoint:
        raise
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidCheckpoint(f"checkpoint does not verify: {exc}") from None


def verify_export_statement(token: str, keys: TrustedKeys | KeyRing) -> ExportClaims:
    """An export statement's signed claims.

    :raises InvalidCheckpoint: bad signature, unknown key, a checkpoint, or a malformed payload.
    """
    lookup = _ring_lookup(keys) if isinstance(keys, KeyRing) else keys.get
    kid, payload = _verified_payload(token, _EXPORT_TYPE, lookup, "export statement")
    try:
        if payload["kind"] != "export":
            raise InvalidCheckpoint(f"export statement of unknown kind {payload['kind']!r}")
        claims = ExportClaims(
            tenant_id=str(payload["tenant_id"]),
            first_seq=int(payload["first_seq"]),
            anchor=from_hex(payload["anchor"]),
            last_seq=int(payload["last_seq"]),
            last_hash=from_hex(payload["last_hash"]),
            records=int(payload["records"]),
            file_sha256=str(payload["file_sha256"]),
            created=str(payload["created"]),
            issuer=str(payload["iss"]),
            kid=kid,
        )
    except InvalidCheckpoint:
        raise
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidCheckpoint(f"export statement does not verify: {exc}") from None
    if claims.records != claims.last_seq - claims.first_seq + 1 or claims.first_seq < 1:
        raise InvalidCheckpoint("export statement is inconsistent (record count and seq range differ)")
    return claims


@dataclass(frozen=True, slots=True)
class DeletionClaims:
    """What a deletion certificate states: which tenant was erased from which stores, when and by
    whom, and the audit tombstone (seq and hash in the tenant's stream) that records it."""

    tenant_id: str
    erased: list[str]
    retained: list[str]
    started: str
    completed: str
    actor: str
    tombstone_seq: int
    tombstone_hash: bytes
    issuer: str
    kid: str


def verify_deletion_certificate(token: str, keys: TrustedKeys | KeyRing) -> DeletionClaims:
    """A deletion certificate's signed claims.

    :raises InvalidCheckpoint: bad signature, unknown key, another kind of statement, or a malformed payload.
    """
    lookup = _ring_lookup(keys) if isinstance(keys, KeyRing) else keys.get
    kid, payload = _verified_payload(token, _DELETION_TYPE, lookup, "deletion certificate")
    try:
        if payload["kind"] != "deletion":
            raise InvalidCheckpoint(f"deletion certificate of unknown kind {payload['kind']!r}")
        return DeletionClaims(
            tenant_id=str(payload["tenant_id"]),
            erased=[str(s) for s in payload["erased"]],
            retained=[str(s) for s in payload["retained"]],
            started=str(payload["started"]),
            completed=str(payload["completed"]),
            actor=str(payload["actor"]),
            tombstone_seq=int(payload["tombstone_seq"]),
            tombstone_hash=from_hex(payload["tombstone_hash"]),
            issuer=str(payload["iss"]),
            kid=kid,
        )
    except InvalidCheckpoint:
        raise
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidCheckpoint(f"deletion certificate does not verify: {exc}") from None


class CheckpointSigner:
    def __init__(self, keys: KeyRing, *, issuer: str) -> None:
        self._keys = keys
        self._issuer = issuer

    def sign(self, tenant_id: str, seq: int, digest: bytes, kind: CheckpointKind, created: float) -> str:
        payload = {
            "kind": kind,
            "tenant_id": tenant_id,
            "seq": seq,
            "hash": to_hex(digest),
            "created": iso_timestamp(created),
            "iss": self._issuer,
        }
        return self._sign(_TYPE, payload)

    def sign_export(
        self,
        tenant_id: str,
        *,
        first_seq: int,
        anchor: bytes,
        last_seq: int,
        last_hash: bytes,
        file_sha256: str,
        created: float,
    ) -> str:
        """Sign the statement of an export file holding records ``first_seq..last_seq`` of a stream."""
        payload = {
            "kind": "export",
            "tenant_id": tenant_id,
            "first_seq": first_seq,
            "anchor": to_hex(anchor),
            "last_seq": last_seq,
            "last_hash": to_hex(last_hash),
            "records": last_seq - first_seq + 1,
            "file_sha256": file_sha256,
            "created": iso_timestamp(created),
            "iss": self._issuer,
        }
        return self._sign(_EXPORT_TYPE, payload)

    def sign_deletion(
        self,
        tenant_id: str,
        *,
        erased: list[str],
        retained: list[str],
        started: float,
        completed: float,
        actor: str,
        tombstone_seq: int,
        tombstone_hash: bytes,
    ) -> str:
        """Sign the certificate that ``tenant_id`` was erased from the ``erased`` stores."""
        payload = {
            "kind": "deletion",
            "tenant_id": tenant_id,
            "erased": sorted(erased),
            "retained": sorted(retained),
            "started": iso_timestamp(started),
            "completed": iso_timestamp(completed),
            "actor": actor,
            "tombstone_seq": tombstone_seq,
            "tombstone_hash": to_hex(tombstone_hash),
            "iss": self._issuer,
        }
        return self._sign(_DELETION_TYPE, payload)

    def _sign(self, typ: str, payload: dict[str, Any]) -> str:
        key = self._keys.current()
        header = {"alg": key.alg, "kid": key.kid, "typ": typ}
        return jws.serialize_compact(header, canonical_json(payload), key.key, algorithms=[key.alg])

    def checkpoint(
        self, tenant_id: str, seq: int, digest: bytes, kind: CheckpointKind, created: float
    ) -> StoredCheckpoint:
        token = self.sign(tenant_id, seq, digest, kind, created)
        return StoredCheckpoint(tenant_id, seq, kind, digest, created, token)

    def verify(self, token: str) -> CheckpointClaims:
        """The checkpoint's signed claims.

        :raises InvalidCheckpoint: bad signature, unknown key or malformed payload.
        """
        return verify_checkpoint(token, self._keys)

    def trusted_keys(self, *, source: str) -> TrustedKeys:
        """The public half of every key of the ring (for an export's sidecar)."""
        return TrustedKeys.from_ring(self._keys, source=source)


class Checkpointer:
    """Signs the head of every stream that moved, every ``interval`` seconds (and on demand).

    Each checkpoint is stored beside the records and also written as a structured log line,
    so a copy leaves the host with the logs: rewriting the store alone cannot hide a
    truncated or rewritten tail.
    """

    def __init__(self, signer: CheckpointSigner, *, interval: float, offload: BlockingRunner | None = None) -> None:
        """:param offload: runs the blocking store work (default: anyio's shared thread pool);
        the server passes the system's reserved thread capacity."""
        self._signer = signer
        self._interval = interval
        self._offload: BlockingRunner = offload or anyio.to_thread.run_sync
        self._signed: dict[str, int] = {}

    def checkpoint_now(self, store: AuditStore) -> int:
        """Sign and store a checkpoint for every stream head not signed yet; returns how many."""
        count = 0
        for tenant_id, (seq, digest) in sorted(store.heads().items()):
            if self._signed.get(tenant_id) == seq:
                continue
            checkpoint = self._signer.checkpoint(tenant_id, seq, digest, "head", time.time())
            store.add_checkpoint(checkpoint)
            self._signed[tenant_id] = seq
            logger.info(
                "audit checkpoint",
                extra={"tenant_id": tenant_id, "seq": seq, "hash": to_hex(digest), "checkpoint": checkpoint.token},
            )
            count += 1
        return count

    async def run(self, store_factory: Callable[[], AuditStore]) -> None:
        """Checkpoint until cancelled; a failing store is retried at the next interval."""
        while True:
            await anyio.sleep(self._interval)
            await self._offload(lambda: self._once(store_factory))

    def final(self, store_factory: Callable[[], AuditStore]) -> None:
        """One last checkpoint at shutdown, so the heads at exit are pinned."""
        self._once(store_factory)

    def _once(self, store_factory: Callable[[], AuditStore]) -> None:
        try:
            store = store_factory()
            try:
                self.checkpoint_now(store)
            finally:
                store.close()
        except TenantryError as exc:
            logger.error("audit checkpoint failed", extra={"code": exc.code})
