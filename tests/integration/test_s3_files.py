"""S3-only behaviour: key layout, keys planted behind a handle's back, errors, readiness, drop.

Runs against a real moto server (``s3_server``), a fresh bucket per test.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError, PartialCredentialsError
from pydantic import SecretStr

from tenantry.core.errors import NotFound, ScopeViolation, StorageError, UsageError
from tenantry.core.settings import FileSettings
from tenantry.scoping.files.factory import open_file_scopes
from tenantry.scoping.files.local import LocalFileScopes
from tenantry.scoping.files.s3 import S3FileScopes, translate_boto_error
from tests.support.s3 import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, MotoServer
from tests.support.server import free_port

pytestmark = pytest.mark.anyio

LIMIT = 1024


@pytest.fixture
def bucket(s3_server: MotoServer) -> Iterator[str]:
    name = s3_server.create_bucket()
    yield name
    s3_server.delete_bucket(name)


@pytest.fixture
def scopes(s3_server: MotoServer, bucket: str) -> Iterator[S3FileScopes]:
    scopes = make_scopes(s3_server.endpoint_url, bucket)
    yield scopes
    scopes.close()


def make_scopes(endpoint_url: str, bucket: str, **options: Any) -> S3FileScopes:
    return S3FileScopes(
        bucket=bucket,
        endpoint_url=endpoint_url,
        region=REGION,
        access_key_id=ACCESS_KEY_ID,
        secret_access_key=SECRET_ACCESS_KEY,
        max_file_bytes=LIMIT,
        **options,
    )


def raw_keys(s3_server: MotoServer, bucket: str) -> list[str]:
    response = s3_server.client().list_objects_v2(Bucket=bucket)
    return sorted(obj["Key"] for obj in response.get("Contents", []))


def plant(s3_server: MotoServer, bucket: str, key: str, body: bytes) -> None:
    s3_server.client().put_object(Bucket=bucket, Key=key, Body=body)


async def test_keys_are_root_tenant_and_canonical_path(s3_server: MotoServer, bucket: str) -> None:
    scopes = make_scopes(s3_server.endpoint_url, bucket, root="custom-root")
    await scopes.for_tenant("acme").write_text("./reports//q3.txt", "x")
    await scopes.for_tenant("acme-evil").write_text("a", "y")
    assert raw_keys(s3_server, bucket) == [
        "custom-root/acme-evil/.tenantry-usage.json",  # each tenant's storage usage ledger
        "custom-root/acme-evil/a",
        "custom-root/acme/.tenantry-usage.json",
        "custom-root/acme/reports/q3.txt",
    ]
    scopes.close()


@pytest.mark.parametrize("root", ["", "a/b", "..", "tenants/", "x" * 65])
def test_invalid_root_is_refused(root: str) -> None:
    make_scopes("http://127.0.0.1:9", "bucket", root="tenants").close()  # positive control
    with pytest.raises(UsageError):
        make_scopes("http://127.0.0.1:9", "bucket", root=root)


WEIRD_KEYS = [
    "tenants/acme/../globex/x",
    "tenants/acme/a//b",
    "tenants/acme/./c",
    "tenants/acme/dir/",
    "tenants/acme//lead",
    "tenants/acme/%2e%2e%2fglobex%2fx",
    "tenants/acme/back\\slash",
    "tenants/acme/nul\x01byte",
    "tenants/acme/.tenantry-upload.tmp",
    "tenants/acme",
    "tenants/acmex/y",
    "tenants/acme-evil/x",
]


async def test_planted_keys_that_no_path_could_name_are_not_listed(s3_server: MotoServer, bucket: str) -> None:
    scopes = make_scopes(s3_server.endpoint_url, bucket)
    acme = scopes.for_tenant("acme")
    await acme.write_text("a/b/ok.txt", "acme-own")  # positive control
    for key in WEIRD_KEYS:
        plant(s3_server, bucket, key, b"planted-canary")
    plant(s3_server, bucket, "tenants/globex/x", b"globex-canary")
    assert [e.path for e in await acme.list()] == ["a/b/ok.txt"]
    assert [e.path for e in await acme.list("a")] == ["a/b/ok.txt"]
    assert await acme.list("dir") == []
    scopes.close()


@pytest.mark.parametrize("path", ["a//b", "./c", "c", "dir", "lead", "b"])
async def test_planted_non_canonical_key_is_not_read(s3_server: MotoServer, bucket: str, path: str) -> None:
    scopes = make_scopes(s3_server.endpoint_url, bucket)
    acme = scopes.for_tenant("acme")
    for key in WEIRD_KEYS:
        plant(s3_server, bucket, key, b"planted-canary")
    await acme.write_text("ok.txt", "acme-own")
    assert await acme.read_text("ok.txt") == "acme-own"  # positive control
    with pytest.raises(NotFound):
        await acme.read_text(path)
    scopes.close()


@pytest.mark.parametrize("path", ["../globex/x", "../acme-evil/x", "%2e%2e%2fglobex%2fx", "back\\slash", "nul\x01byte"])
async def test_path_spelling_a_planted_escape_key_is_refused(s3_server: MotoServer, bucket: str, path: str) -> None:
    scopes = make_scopes(s3_server.endpoint_url, bucket)
    for key in WEIRD_KEYS:
        plant(s3_server, bucket, key, b"planted-canary")
    plant(s3_server, bucket, "tenants/globex/x", b"globex-canary")
    acme = scopes.for_tenant("acme")
    with pytest.raises(ScopeViolation) as caught:
        await acme.read_text(path)
    assert "canary" not in str(caught.value)
    assert await scopes.for_tenant("globex").read_text("x") == "globex-canary"  # positive control
    scopes.close()


async def test_listing_uses_a_slash_bounded_prefix(scopes: S3FileScopes, s3_server: MotoServer, bucket: str) -> None:
    await scopes.for_tenant("acme").write_text("reports/q3.txt", "acme")
    await scopes.for_tenant("acme").write_text("reports-old/x", "acme old")
    await scopes.for_tenant("acme-evil").write_text("reports/q3.txt", "acme-evil-canary")
    assert [e.path for e in await scopes.for_tenant("acme").list("reports")] == ["reports/q3.txt"]
    assert [e.path for e in await scopes.for_tenant("acme").list()] == ["reports-old/x", "reports/q3.txt"]


async def test_object_over_the_limit_is_refused_on_read(
    scopes: S3FileScopes, s3_server: MotoServer, bucket: str
) -> None:
    plant(s3_server, bucket, "tenants/acme/big.bin", b"x" * (LIMIT + 1))
    plant(s3_server, bucket, "tenants/acme/fits.bin", b"x" * LIMIT)
    acme = scopes.for_tenant("acme")
    assert len(await acme.read_bytes("fits.bin")) == LIMIT
    with pytest.raises(UsageError, match="limit"):
        await acme.read_bytes("big.bin")


async def test_missing_key_message_names_neither_bucket_nor_tenant(scopes: S3FileScopes, bucket: str) -> None:
    with pytest.raises(NotFound) as caught:
        await scopes.for_tenant("acme").read_text("reports/missing.txt")
    assert bucket not in str(caught.value)
    assert "acme" not in str(caught.value)
    assert "tenants/" not in str(caught.value)


async def test_many_concurrent_calls_share_one_client(scopes: S3FileScopes) -> None:
    acme = scopes.for_tenant("acme")

    async def write(i: int) -> None:
        await acme.write_text(f"n/{i:03}.txt", str(i))

    async with anyio.create_task_group() as tg:
        for i in range(40):
            tg.start_soon(write, i)
    entries = await acme.list("n")
    assert [e.path for e in entries] == [f"n/{i:03}.txt" for i in range(40)]
    assert await acme.read_text("n/039.txt") == "39"


async def test_drop_tenant_removes_only_that_tenant(scopes: S3FileScopes, s3_server: MotoServer, bucket: str) -> None:
    await scopes.for_tenant("acme").write_text("a.txt", "acme")
    await scopes.for_tenant("acme").write_text("d/b.txt", "acme")
    plant(s3_server, bucket, "tenants/acme/a//weird", b"planted")
    plant(s3_server, bucket, "tenants/acme/ctl\x01key", b"planted")  # cannot travel in DeleteObjects' XML
    await scopes.for_tenant("acme-evil").write_text("a.txt", "acme-evil-canary")
    await scopes.for_tenant("globex").write_text("a.txt", "globex-canary")
    assert await scopes.drop_tenant("acme") == 5  # four objects and the usage ledger
    assert await scopes.for_tenant("acme").list() == []
    assert raw_keys(s3_server, bucket) == [
        "tenants/acme-evil/.tenantry-usage.json",
        "tenants/acme-evil/a.txt",
        "tenants/globex/.tenantry-usage.json",
        "tenants/globex/a.txt",
    ]
    assert await scopes.drop_tenant("acme") == 0
    with pytest.raises(UsageError):
        await scopes.drop_tenant("../globex")


async def test_check_passes_for_an_existing_bucket(scopes: S3FileScopes) -> None:
    await scopes.check()


async def test_missing_bucket_is_a_storage_error_that_does_not_name_it(s3_server: MotoServer) -> None:
    scopes = make_scopes(s3_server.endpoint_url, "tenantry-no-such-bucket-42")
    with pytest.raises(StorageError) as caught:
        await scopes.check()
    with pytest.raises(StorageError):
        await scopes.for_tenant("acme").read_text("a.txt")
    with pytest.raises(StorageError):
        await scopes.for_tenant("acme").write_text("a.txt", "x")
    with pytest.raises(StorageError):
        await scopes.for_tenant("acme").delete("a.txt")  # not a quiet False
    with pytest.raises(StorageError):
        await scopes.for_tenant("acme").list()
    assert str(caught.value) == "object storage bucket does not exist"
    scopes.close()


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            ClientError({"Error": {"Code": "AccessDenied", "Message": "key AKIASECRET denied"}}, "GetObject"),
            "AccessDenied",
        ),
        (ClientError({"Error": {"Code": "Evil<script>code\n", "Message": "x"}}, "GetObject"), "(Evilscriptcode)"),
        (ClientError({"ResponseMetadata": {"HTTPStatusCode": 500}}, "GetObject"), "500"),
        (EndpointConnectionError(endpoint_url="http://AKIASECRET@10.0.0.1:9000/bucket"), "unreachable"),
        (NoCredentialsError(), "no usable credentials"),
        (PartialCredentialsError(provider="env", cred_var="AKIASECRET"), "no usable credentials"),
    ],
    ids=["access_denied", "unsafe_code", "bare_status", "unreachable", "no_credentials", "partial_credentials"],
)
def test_driver_errors_become_storage_errors_without_driver_text(error: Exception, expected: str) -> None:
    translated = translate_boto_error(error)
    assert isinstance(translated, StorageError)
    assert expected in translated.message
    assert "AKIASECRET" not in translated.message
    assert "10.0.0.1" not in translated.message
    assert translate_boto_error(ValueError("not a driver error")) is None  # positive control


async def test_unreachable_endpoint_is_a_quick_storage_error() -> None:
    port = free_port()  # nothing listens here
    scopes = make_scopes(f"http://127.0.0.1:{port}", "bucket")
    started = time.monotonic()
    for call in (scopes.check, lambda: scopes.for_tenant("acme").read_text("a.txt"), scopes.for_tenant("acme").list):
        with pytest.raises(StorageError) as caught:
            await call()
        message = str(caught.value)
        assert "unreachable" in message
        for secret in (str(port), "bucket", ACCESS_KEY_ID, SECRET_ACCESS_KEY):
            assert secret not in message
        assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert time.monotonic() - started < 15
    scopes.close()


def test_factory_builds_local_scopes_by_default(tmp_path: Path) -> None:
    scopes = open_file_scopes(FileSettings(), tmp_path, max_file_bytes=123)
    assert isinstance(scopes, LocalFileScopes)
    assert scopes.max_file_bytes == 123


async def test_factory_builds_s3_scopes_from_settings(s3_server: MotoServer, bucket: str, tmp_path: Path) -> None:
    settings = FileSettings(
        backend="s3",
        s3_bucket=bucket,
        s3_endpoint_url=s3_server.endpoint_url,
        s3_region=REGION,
        s3_root="objects",
        s3_access_key_id=ACCESS_KEY_ID,
        s3_secret_access_key=SecretStr(SECRET_ACCESS_KEY),
    )
    scopes = open_file_scopes(settings, tmp_path, max_file_bytes=LIMIT)
    assert isinstance(scopes, S3FileScopes)
    await scopes.check()
    await scopes.for_tenant("acme").write_text("x.txt", "hello")
    assert raw_keys(s3_server, bucket) == ["objects/acme/.tenantry-usage.json", "objects/acme/x.txt"]
    with pytest.raises(UsageError):
        await scopes.for_tenant("acme").write_bytes("big", b"x" * (LIMIT + 1))
    scopes.close()
