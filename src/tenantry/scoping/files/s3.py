"""S3-compatible object storage: every key is ``<root>/<tenant_id>/<path>``.

Paths pass the same checks as on the local filesystem (:mod:`tenantry.scoping.files.scope`)
before they become keys, so a key is always ``<root>/<tenant_id>/`` followed by canonical
components. A listing asks for ``<root>/<tenant_id>/<sub>/`` with the trailing slash, so
``acme`` never sees ``acme-evil``; keys the bucket holds that are not canonical (``a//b``,
``../x``, written by someone else) are skipped, never returned.

Storage usage lives in one ledger object per tenant, ``<root>/<tenant_id>/.tenantry-usage.json``
(a reserved name no path can reach), updated with conditional writes (``If-Match`` its ETag,
``If-None-Match: *`` to create it): a write reserves its bytes in the ledger before it uploads, so
concurrent writers, in any process, are serialised by the store itself and never pass the quota;
an upload that fails gives its reservation back. A missing ledger is rebuilt from a listing.
Deleting the ledger object makes the next write recount (after a crash between reservation and
upload left the ledger counting more than is stored).

One botocore client per :class:`S3FileScopes` (clients are thread-safe); every blocking call
runs in a worker thread, within the tenant's bounded capacity. botocore errors become
:class:`~tenantry.core.errors.StorageError` whose text names the failure, never the endpoint, bucket or credentials.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import botocore.session
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
)

from tenantry.core.errors import NotFound, StorageError, TenantryError, UsageError
from tenantry.core.ids import validate_tenant_id
from tenantry.core.limits import TenantLimits
from tenantry.core.paths import PathRejected, join_parts, normalize_path, normalize_prefix, within_prefix
from tenantry.scoping.files.base import FileEntry, FileListing, TextOverBytes
from tenantry.scoping.files.scope import (
    HIDDEN_NAME_PREFIX,
    MAX_LIST_ENTRIES,
    list_limit,
    quota_check,
    resolve_file_path,
    scope_for_listing,
)
from tenantry.scoping.threads import ThreadBulkheads, default_bulkheads

__all__ = ["S3FileScopes", "S3FileHandle", "translate_boto_error"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")
_ROOT = re.compile(r"[A-Za-z0-9_-]{1,64}")
_MISSING = frozenset({"NoSuchKey", "404", "NotFound"})
_DENIED = frozenset(
    {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403", "ExpiredToken", "InvalidToken"}
)
_UNSAFE_CODE = re.compile(r"[^A-Za-z0-9._-]")
_DELETE_BATCH = 1000  # DeleteObjects takes at most 1000 keys
_NOT_XML_SAFE = re.compile("[^\t\n\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
USAGE_LEDGER = HIDDEN_NAME_PREFIX + "usage.json"
_LEDGER_ATTEMPTS = 16


class S3FileScopes:
    """Hands out :class:`S3FileHandle` objects over one bucket.

    :param bucket: the bucket holding every tenant's files.
    :param root: first key component (``tenants``); letters, digits, ``_`` and ``-``.
    :param endpoint_url: for S3-compatible stores (MinIO, Ceph, moto); ``None`` means AWS.
    :param access_key_id: with ``secret_access_key``; both ``None`` uses boto3's credential chain.
    :param max_file_bytes: largest file a handle reads or writes.
    :param connect_timeout: seconds; with ``max_attempts``, bounds how long an unreachable store stalls a call.
    :raises UsageError: for an invalid ``root``.
    """

    def __init__(
        self,
        *,
        bucket: str,
        root: str = "tenants",
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        max_file_bytes: int = 10 * 1024 * 1024,
        connect_timeout: float = 2.0,
        read_timeout: float = 10.0,
        max_attempts: int = 2,
        bulkheads: ThreadBulkheads | None = None,
    ) -> None:
        self.bulkheads = bulkheads or default_bulkheads()
        if not _ROOT.fullmatch(root):
            raise UsageError("files root must be 1-64 letters, digits, '_' or '-'")
        self.bucket = bucket
        self.root = root
        self.max_file_bytes = max_file_bytes
        options: dict[str, Any] = {
            "connect_timeout": connect_timeout,
            "read_timeout": read_timeout,
            "retries": {"max_attempts": max_attempts, "mode": "standard"},
            "max_pool_connections": 32,
        }
        if endpoint_url:
            # S3-compatible stores rarely support virtual-host buckets or the newer default checksums.
            options["s3"] = {"addressing_style": "path"}
            options["request_checksum_calculation"] = "when_required"
            options["response_checksum_validation"] = "when_required"
        self._client: Any = _create_client(
            endpoint_url=endpoint_url,
            region=region,
            access_key_id=access_key_id,
            secret_access_key=secret_access_key,
            config=Config(**options),
        )

    def for_tenant(self, tenant_id: str, *, prefix: str | None = None) -> S3FileHandle:
        """A handle on ``tenant_id``'s files, narrowed to ``prefix`` when given.

        :raises UsageError: for an invalid tenant id.
        """
        return S3FileHandle(self, tenant_id, self._tenant_key_prefix(tenant_id), prefix=prefix)

    async def drop_tenant(self, tenant_id: str) -> int:
        """Delete every object under the tenant's key prefix (valid paths or not); returns how many.

        :raises StorageError: when the store fails or refuses a deletion.
        """
        key_prefix = self._tenant_key_prefix(tenant_id)
        return await self.bulkheads.run(lambda: self._drop_sync(key_prefix), tenant_id=tenant_id)

    # -- tenant export and erasure (blocking; the CLI's ``tenant export``/``tenant delete``) ----

    def tenant_objects(self, tenant_id: str) -> Iterator[tuple[str, int]]:
        """``(key relative to the tenant's prefix, size)`` of every object the tenant holds, the
        usage ledger included, in key order; one listing page in memory at a time.

        :raises StorageError: when the store fails.
        """
        key_prefix = self._tenant_key_prefix(tenant_id)
        with _storage_errors():
            for obj in self._iter_objects(key_prefix):
                yield str(obj["Key"])[len(key_prefix) :], int(obj.get("Size", 0))

    def object_chunks(self, tenant_id: str, relative_key: str, *, chunk_bytes: int = 1 << 20) -> Iterator[bytes]:
        """The bytes of one of the tenant's objects, streamed.

        :raises StorageError: when the store fails. :raises NotFound: the object is gone.
        """
        key = self._tenant_key_prefix(tenant_id) + relative_key
        with _storage_errors(missing=NotFound("no such file")):
            body = self._client.get_object(Bucket=self.bucket, Key=key)["Body"]
            try:
                yield from body.iter_chunks(chunk_bytes)
            finally:
                body.close()

    def drop_tenant_blocking(self, tenant_id: str) -> int:
        """:meth:`drop_tenant` in the calling thread."""
        return self._drop_sync(self._tenant_key_prefix(tenant_id))

    async def check(self) -> None:
        """Readiness: the bucket exists and these credentials may use it.

        :raises StorageError: when it does not or they may not.
        """
        await self.bulkheads.run_system(self._check_sync)

    def close(self) -> None:
        """Release the client's connections."""
        self._client.close()

    # -- worker thread ------------------------------------------------------------------

    def _tenant_key_prefix(self, tenant_id: str) -> str:
        return f"{self.root}/{validate_tenant_id(tenant_id)}/"

    def _check_sync(self) -> None:
        # HeadBucket has no body, so a missing bucket is a bare 404.
        with _storage_errors(missing=StorageError("object storage bucket does not exist")):
            self._client.head_bucket(Bucket=self.bucket)

    def _drop_sync(self, key_prefix: str) -> int:
        deleted = 0
        batch: list[dict[str, str]] = []
        with _storage_errors():
            for obj in self._iter_objects(key_prefix):
                key = obj["Key"]
                if _NOT_XML_SAFE.search(key):
                    # DeleteObjects sends keys in an XML body, which cannot carry these characters.
                    self._client.delete_object(Bucket=self.bucket, Key=key)
                    deleted += 1
                    continue
                batch.append({"Key": key})
                if len(batch) == _DELETE_BATCH:
                    deleted += self._delete_batch(batch)
                    batch = []
            if batch:
                deleted += self._delete_batch(batch)
        return deleted

    def _delete_batch(self, batch: list[dict[str, str]]) -> int:
        response = self._client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
        errors = response.get("Errors") or []
        if errors:
            code = str(errors[0].get("Code", "unknown"))
            raise StorageError(f"object storage refused to delete {len(errors)} object(s) ({code})")
        return len(batch)

    def _iter_objects(self, key_prefix: str) -> Iterator[dict[str, Any]]:
        """Every object under ``key_prefix`` (blocking; botocore errors propagate)."""
        paginator = self._client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=key_prefix, PaginationConfig={"PageSize": 1000}):
            yield from page.get("Contents") or []


_session_lock = threading.Lock()
_session: Any = None


def _create_client(
    *, endpoint_url: str | None, region: str, access_key_id: str | None, secret_access_key: str | None, config: Config
) -> Any:
    """An S3 client. One botocore session is shared so the S3 service model is parsed once, not per
    client; credentials go to the client, never the session, and creation is serialised because a
    session is not thread-safe."""
    global _session
    with _session_lock:
        if _session is None:
            _session = botocore.session.get_session()
        return _session.create_client(
            "s3",
            region_name=region,
            endpoint_url=endpoint_url,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            config=config,
        )


class S3FileHandle(TextOverBytes):
    """``ctx.files`` on S3-compatible storage. See :class:`~tenantry.scoping.files.base.FileHandle`."""

    def __init__(self, scopes: S3FileScopes, tenant_id: str, key_prefix: str, *, prefix: str | None) -> None:
        self._scopes = scopes
        self._tenant_id = tenant_id
        self._key_prefix = key_prefix
        self._prefix = normalize_prefix(prefix) if prefix else None

    async def list(self, prefix: str = "", *, limit: int = MAX_LIST_ENTRIES) -> FileListing:
        parts = scope_for_listing(prefix, self._prefix)
        limit = list_limit(limit)
        return await self._offload(lambda: self._list_sync(parts, limit))

    async def read_bytes(self, path: str) -> bytes:
        parts = resolve_file_path(path, self._prefix)
        return await self._offload(lambda: self._read_sync(parts))

    async def write_bytes(self, path: str, data: bytes) -> FileEntry:
        parts = resolve_file_path(path, self._prefix)
        if len(data) > self._scopes.max_file_bytes:
            raise UsageError(f"file larger than the {self._scopes.max_file_bytes} byte limit")
        limits = self._scopes.bulkheads.limits_for(self._tenant_id)
        return await self._offload(lambda: self._write_sync(parts, data, limits))

    async def delete(self, path: str) -> bool:
        parts = resolve_file_path(path, self._prefix)
        return await self._offload(lambda: self._delete_sync(parts))

    # -- worker thread ------------------------------------------------------------------

    async def _offload(self, work: Callable[[], _T]) -> _T:
        return await self._scopes.bulkheads.run(work, tenant_id=self._tenant_id)

    def _key(self, parts: tuple[str, ...]) -> str:
        return self._key_prefix + join_parts(parts)

    def _read_sync(self, parts: tuple[str, ...]) -> bytes:
        limit = self._scopes.max_file_bytes
        with _storage_errors(missing=NotFound("no such file")):
            response = self._scopes._client.get_object(Bucket=self._scopes.bucket, Key=self._key(parts))
            body = response["Body"]
            try:
                if int(response.get("ContentLength") or 0) > limit:
                    raise UsageError(f"file larger than the {limit} byte limit")
                data: bytes = body.read(limit + 1)
            finally:
                body.close()
        if len(data) > limit:
            raise UsageError(f"file larger than the {limit} byte limit")
        return data

    def _write_sync(self, parts: tuple[str, ...], data: bytes, limits: TenantLimits) -> FileEntry:
        client, bucket, key = self._scopes._client, self._scopes.bucket, self._key(parts)
        with _storage_errors():
            old_size = self._existing_size(key)

            def reserve(used_bytes: int, used_files: int) -> tuple[int, int]:
                return quota_check(
                    used_bytes=used_bytes,
                    used_files=used_files,
                    old_size=old_size,
                    new_size=len(data),
                    limit_bytes=limits.file_bytes,
                    limit_files=limits.file_count,
                    disclose_usage=self._prefix is None,
                )

            before = self._update_usage(reserve)
            try:
                client.put_object(Bucket=bucket, Key=key, Body=data)
            except BaseException:
                self._give_back(before, reserve)
                raise
        return FileEntry(path=join_parts(parts), size=len(data), modified=time.time())

    def _delete_sync(self, parts: tuple[str, ...]) -> bool:
        key = self._key(parts)
        client, bucket = self._scopes._client, self._scopes.bucket
        with _storage_errors():
            # DeleteObject succeeds for a missing key, and HeadObject's bare 404 cannot tell a missing
            # key from a missing bucket; the exact key sorts first among the keys it prefixes.
            found = client.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1).get("Contents") or []
            if not found or found[0]["Key"] != key:
                return False
            size = int(found[0].get("Size") or 0)
            client.delete_object(Bucket=bucket, Key=key)
            self._update_usage(
                lambda used_bytes, used_files: (max(used_bytes - size, 0), max(used_files - 1, 0)),
                recounted_includes_change=True,
            )
        return True

    # -- usage ledger (worker thread) ---------------------------------------------------------

    def _existing_size(self, key: str) -> int | None:
        try:
            head = self._scopes._client.head_object(Bucket=self._scopes.bucket, Key=key)
        except ClientError as exc:
            if _error_code(exc) in _MISSING:
                return None
            raise
        return int(head.get("ContentLength") or 0)

    def _update_usage(
        self, change: Callable[[int, int], tuple[int, int]], *, recounted_includes_change: bool = False
    ) -> tuple[int, int]:
        """Apply ``change`` to the ledger with a conditional write, retrying on a concurrent one;
        returns the usage it replaced. ``change`` may raise (a refusal) to write nothing.

        :param recounted_includes_change: the change is already in the store, so a ledger rebuilt
            from a listing now must not apply it again.
        """
        client, bucket = self._scopes._client, self._scopes.bucket
        ledger_key = self._key_prefix + USAGE_LEDGER
        for _attempt in range(_LEDGER_ATTEMPTS):
            current, etag, recounted = self._read_ledger(ledger_key)
            after = current if recounted and recounted_includes_change else change(*current)
            body = json.dumps({"bytes": after[0], "files": after[1]}).encode()
            condition = {"IfMatch": etag} if etag is not None else {"IfNoneMatch": "*"}
            try:
                client.put_object(Bucket=bucket, Key=ledger_key, Body=body, **condition)
            except ClientError as exc:
                if _error_code(exc) in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409"):
                    continue  # another writer updated the ledger first: read it again
                raise
            return current
        raise StorageError("the storage usage of this tenant is changing too fast; try again")

    def _give_back(self, before: tuple[int, int], reserve: Callable[[int, int], tuple[int, int]]) -> None:
        reserved = reserve(*before)
        delta = (reserved[0] - before[0], reserved[1] - before[1])
        with contextlib.suppress(Exception):  # the upload's own error is the one to report
            self._update_usage(lambda b, f: (max(b - delta[0], 0), max(f - delta[1], 0)))

    def _read_ledger(self, ledger_key: str) -> tuple[tuple[int, int], str | None, bool]:
        """``((bytes, files), etag, recounted)``; a missing or unreadable ledger is recounted (etag
        ``None`` for a missing one, so that only one writer creates it)."""
        client, bucket = self._scopes._client, self._scopes.bucket
        try:
            response = client.get_object(Bucket=bucket, Key=ledger_key)
        except ClientError as exc:
            if _error_code(exc) not in _MISSING:
                raise
            return self._recount(), None, True
        body = response["Body"]
        try:
            raw = body.read(4096)
        finally:
            body.close()
        try:
            record = json.loads(raw)
            return (int(record["bytes"]), int(record["files"])), str(response["ETag"]), False
        except (ValueError, KeyError, TypeError):
            return self._recount(), str(response["ETag"]), True

    def _recount(self) -> tuple[int, int]:
        total, count = 0, 0
        for obj in self._scopes._iter_objects(self._key_prefix):
            if obj["Key"].rsplit("/", 1)[-1].startswith(HIDDEN_NAME_PREFIX):
                continue
            total += int(obj.get("Size") or 0)
            count += 1
        return total, count

    def _list_sync(self, parts: tuple[str, ...], limit: int) -> FileListing:
        listed = self._key_prefix + "".join(f"{part}/" for part in parts)
        entries: list[FileEntry] = []
        with _storage_errors():
            # Keys come in UTF-8 byte order, which is the order of the paths as strings.
            for obj in self._scopes._iter_objects(listed):
                rel = self._relative_parts(obj["Key"], parts)
                if rel is None:
                    continue
                if len(entries) == limit:
                    return FileListing(entries, truncated=True, limit=limit)
                entries.append(FileEntry(join_parts(rel), int(obj.get("Size") or 0), obj["LastModified"].timestamp()))
        return FileListing(entries, limit=limit)

    def _relative_parts(self, key: str, listed: tuple[str, ...]) -> tuple[str, ...] | None:
        """The components of ``key`` below the tenant root, or ``None`` for a key no path could name."""
        if not key.startswith(self._key_prefix):
            return None
        rest = key[len(self._key_prefix) :]
        try:
            rel = normalize_path(rest)
        except PathRejected:
            return None
        if not rel or join_parts(rel) != rest:  # "a//b", "./a", "a/": not something a handle writes
            return None
        if rel[: len(listed)] != listed or not within_prefix(rel, self._prefix):
            return None
        if rel[-1].startswith(HIDDEN_NAME_PREFIX):
            return None
        return rel


@contextlib.contextmanager
def _storage_errors(*, missing: TenantryError | None = None) -> Iterator[None]:
    """Translate botocore errors raised inside the block into safe Tenantry errors.

    :param missing: raised instead for a missing key (``NoSuchKey``/404); otherwise a StorageError.
    """
    try:
        yield
    except TenantryError:
        raise
    except (BotoCoreError, ClientError) as exc:
        if missing is not None and isinstance(exc, ClientError) and _error_code(exc) in _MISSING:
            raise missing from None
        translated = translate_boto_error(exc)
        assert translated is not None
        logger.warning("object storage call failed", extra={"code": translated.code, "error": type(exc).__name__})
        raise translated from None


def translate_boto_error(exc: BaseException) -> StorageError | None:
    """A :class:`StorageError` for a botocore error (``None`` for anything else).

    The text names the kind of failure only: botocore's own messages can carry the
    endpoint URL, the bucket or the access key id.
    """
    if isinstance(exc, ClientError):
        code = _error_code(exc)
        if code in _DENIED:
            return StorageError(f"object storage refused the request ({code}); check the credentials")
        if code == "NoSuchBucket":
            return StorageError("object storage bucket does not exist")
        return StorageError(f"object storage error ({code})")
    if isinstance(exc, EndpointConnectionError | ConnectTimeoutError):
        return StorageError("object storage endpoint is unreachable")
    if isinstance(exc, ReadTimeoutError):
        return StorageError("object storage did not answer in time")
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return StorageError("no usable credentials for object storage")
    if isinstance(exc, BotoCoreError):
        return StorageError(f"object storage error ({type(exc).__name__})")
    return None


def _error_code(exc: ClientError) -> str:
    """The error code the store sent, reduced to characters safe to show (it comes from the server)."""
    error = exc.response.get("Error") or {}
    code = str(error.get("Code") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or "")
    return _UNSAFE_CODE.sub("", code)[:64] or "unknown"
