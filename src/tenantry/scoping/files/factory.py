"""Choosing the file backend ``ctx.files`` uses from settings."""

from __future__ import annotations

from pathlib import Path

from tenantry.core.settings import FileSettings
from tenantry.scoping.files.base import FileScopes
from tenantry.scoping.files.local import LocalFileScopes
from tenantry.scoping.threads import ThreadBulkheads

__all__ = ["open_file_scopes"]


def open_file_scopes(
    settings: FileSettings, data_dir: Path, *, max_file_bytes: int, bulkheads: ThreadBulkheads | None = None
) -> FileScopes:
    """Local files under ``data_dir`` (default) or an S3-compatible bucket.

    Opening does no I/O beyond building the client; call ``check()`` on S3 scopes for readiness.

    :raises UsageError: for an invalid S3 root.
    """
    if settings.backend == "local":
        return LocalFileScopes(data_dir, max_file_bytes=max_file_bytes, bulkheads=bulkheads)
    from tenantry.scoping.files.s3 import S3FileScopes  # botocore is only imported when S3 is configured

    assert settings.s3_bucket, "FileSettings guarantees a bucket for the s3 backend"
    secret = settings.s3_secret_access_key
    return S3FileScopes(
        bucket=settings.s3_bucket,
        root=settings.s3_root,
        endpoint_url=settings.s3_endpoint_url,
        region=settings.s3_region,
        access_key_id=settings.s3_access_key_id,
        secret_access_key=secret.get_secret_value() if secret is not None else None,
        max_file_bytes=max_file_bytes,
        bulkheads=bulkheads,
    )
