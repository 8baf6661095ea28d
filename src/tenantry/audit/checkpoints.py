"""Signed checkpoints of audit stream heads.

A checkpoint is a JWS (EdDSA, the audit key ring in ``<data_dir>/keys``) over the RFC 8785
canonical JSON ``{"kind", "tenant_id", "seq", "hash", "created", "iss"}``. ``head``
checkpoints pin where a stream stood, so truncating or rewriting its tail is evident;
``purge`` checkpoints anchor what remains after an explicit purge. Only the verified
payload is trusted, never the columns stored beside it.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.to_thread
import pydantic_core
from joserfc import jws
from joserfc.errors import JoseError, SecurityWarning

from tenantry.audit.chain import from_hex, to_hex
from tenantry.audit.events import canonical_json, iso_timestamp
from tenantry.audit.store.base import AuditStore, CheckpointKind, StoredCheckpoint
from tenantry.auth.keys import KeyRing
from tenantry.core.errors import TenantryError

__all__ = ["CheckpointSigner", "CheckpointClaims", "InvalidCheckpoint", "Checkpointer"]

logger = logging.getLogger(__name__)

warnings.filterwarnings("ignore", message="EdDSA is deprecated", category=SecurityWarning)

_TYPE = "tenantry-audit-checkpoint+jws"


class InvalidCheckpoint(ValueError):
    """A checkpoint whose signature or payload does not verify."""


@dataclass(frozen=True, slots=True)
class CheckpointClaims:
    kind: CheckpointKind
    tenant_id: str
    seq: int
    hash: bytes
    created: str


class CheckpointSigner:
    def __init__(self, keys: KeyRing, *, issuer: str) -> None:
        self._keys = keys
        self._issuer = issuer

    def sign(self, tenant_id: str, seq: int, digest: bytes, kind: CheckpointKind, created: float) -> str:
        key = self._keys.current()
        payload = canonical_json(
            {
                "kind": kind,
                "tenant_id": tenant_id,
                "seq": seq,
                "hash": to_hex(digest),
                "created": iso_timestamp(created),
                "iss": self._issuer,
            }
        )
        header = {"alg": key.alg, "kid": key.kid, "typ": _TYPE}
        return jws.serialize_compact(header, payload, key.key, algorithms=[key.alg])

    def checkpoint(
        self, tenant_id: str, seq: int, digest: bytes, kind: CheckpointKind, created: float
    ) -> StoredCheckpoint:
        token = self.sign(tenant_id, seq, digest, kind, created)
        return StoredCheckpoint(tenant_id, seq, kind, digest, created, token)

    def verify(self, token: str) -> CheckpointClaims:
        """The checkpoint's signed claims.

        :raises InvalidCheckpoint: bad signature, unknown key or malformed payload.
        """
        try:
            header = jws.extract_compact(token.encode()).headers()
            key = self._keys.get(str(header.get("kid")), include_retired=True)
            if key is None or header.get("alg") != key.alg or header.get("typ") != _TYPE:
                raise InvalidCheckpoint("checkpoint signed by an unknown key")
            payload: dict[str, Any] = pydantic_core.from_json(
                jws.deserialize_compact(token, key.key, algorithms=[key.alg]).payload
            )
            return CheckpointClaims(
                kind=payload["kind"],
                tenant_id=str(payload["tenant_id"]),
                seq=int(payload["seq"]),
                hash=from_hex(payload["hash"]),
                created=str(payload["created"]),
            )
        except InvalidCheckpoint:
            raise
        except (JoseError, ValueError, KeyError, TypeError) as exc:
            raise InvalidCheckpoint(f"checkpoint does not verify: {exc}") from None


class Checkpointer:
    """Signs the head of every stream that moved, every ``interval`` seconds (and on demand).

    Each checkpoint is stored beside the records and also written as a structured log line,
    so a copy leaves the host with the logs: rewriting the store alone cannot hide a
    truncated or rewritten tail.
    """

    def __init__(self, signer: CheckpointSigner, *, interval: float) -> None:
        self._signer = signer
        self._interval = interval
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
            await anyio.to_thread.run_sync(self._once, store_factory)

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
