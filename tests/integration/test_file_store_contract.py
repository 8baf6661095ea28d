"""One contract over every file backend (local directory, S3 on a real moto server).

Three tenants hold canary files: ``acme``, its prefix sibling ``acme-evil`` and
``globex``. Every refusal keeps a positive control beside it, and checks afterwards that
no other tenant's canary leaked and nothing was written.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tenantry.core.errors import NotFound, ScopeViolation, TenantryError, UsageError
from tenantry.scoping.files.base import FileHandle, FileScopes
from tenantry.scoping.files.local import LocalFileScopes
from tests.support.s3 import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY

pytestmark = pytest.mark.anyio

LIMIT = 1024
TENANTS = ("acme", "acme-evil", "globex")
SEED = {
    "acme": {
        "README.md": "acme-canary",
        "reports/q3.txt": "acme report acme-canary",
        "reports-old/x": "acme old acme-canary",
        "other/x": "acme other acme-canary",
    },
    "acme-evil": {"README.md": "acme-evil-canary", "x": "acme-evil-canary x"},
    "globex": {"README.md": "globex-canary", "ledger.csv": "globex-canary ledger", "reports/q3.txt": "globex-canary"},
}
FOREIGN_CANARIES = ("acme-evil-canary", "globex-canary")


@dataclass
class Store:
    name: str
    scopes: FileScopes
    secrets: tuple[str, ...]
    """Backend details (bucket, directory) no error message may show."""

    def acme(self, prefix: str | None = None) -> FileHandle:
        return self.scopes.for_tenant("acme", prefix=prefix)


@pytest.fixture(params=["local", "s3"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "local":
        store = Store("local", LocalFileScopes(tmp_path, max_file_bytes=LIMIT), (str(tmp_path),))
    else:
        from tenantry.scoping.files.s3 import S3FileScopes

        server = request.getfixturevalue("s3_server")
        bucket = server.create_bucket()
        s3 = S3FileScopes(
            bucket=bucket,
            endpoint_url=server.endpoint_url,
            region=REGION,
            access_key_id=ACCESS_KEY_ID,
            secret_access_key=SECRET_ACCESS_KEY,
            max_file_bytes=LIMIT,
        )
        store = Store("s3", s3, (bucket, server.endpoint_url))
    for tenant, files in SEED.items():
        handle = store.scopes.for_tenant(tenant)
        for path, text in files.items():
            await handle.write_text(path, text)
    yield store
    if request.param == "s3":
        s3.close()
        server.delete_bucket(bucket)


async def snapshot(store: Store) -> dict[str, dict[str, str]]:
    """Every tenant's files and contents, to show a refusal changed nothing."""
    result: dict[str, dict[str, str]] = {}
    for tenant in TENANTS:
        handle = store.scopes.for_tenant(tenant)
        result[tenant] = {e.path: await handle.read_text(e.path) for e in await handle.list()}
    return result


def assert_safe_message(exc: TenantryError, store: Store) -> None:
    text = str(exc)
    for needle in (*FOREIGN_CANARIES, "acme-evil", "globex", *store.secrets):
        assert needle not in text, f"{needle!r} leaked in {text!r}"


Operation = Callable[[FileHandle, str], Awaitable[object]]
OPERATIONS: dict[str, Operation] = {
    "read": lambda h, p: h.read_text(p),
    "read_bytes": lambda h, p: h.read_bytes(p),
    "write": lambda h, p: h.write_text(p, "planted by acme"),
    "delete": lambda h, p: h.delete(p),
    "list": lambda h, p: h.list(p),
}
FILE_OPERATIONS = ("read", "read_bytes", "write", "delete")


async def assert_refused(store: Store, handle: FileHandle, path: str, operations: tuple[str, ...]) -> None:
    before = await snapshot(store)
    for name in operations:
        with pytest.raises(ScopeViolation) as caught:
            await OPERATIONS[name](handle, path)
        assert_safe_message(caught.value, store)
    assert await snapshot(store) == before


# -- positive behaviour -----------------------------------------------------------------


async def test_write_read_list_delete_round_trip(store: Store) -> None:
    files = store.acme()
    entry = await files.write_text("notes/today.txt", "hello")
    assert (entry.path, entry.size) == ("notes/today.txt", 5)
    assert await files.read_text("notes/today.txt") == "hello"
    assert await files.read_bytes("notes/today.txt") == b"hello"
    listed = {e.path: e for e in await files.list()}
    assert listed["notes/today.txt"].size == 5
    assert listed["notes/today.txt"].modified > 0
    await files.write_text("notes/today.txt", "replaced")
    assert await files.read_text("notes/today.txt") == "replaced"
    assert await files.delete("notes/today.txt") is True
    assert await files.delete("notes/today.txt") is False
    with pytest.raises(NotFound):
        await files.read_text("notes/today.txt")
    assert "notes/today.txt" not in [e.path for e in await files.list()]


async def test_nested_directories_are_listed_recursively_and_sorted(store: Store) -> None:
    files = store.scopes.for_tenant("initech")
    for path in ("b.txt", "a/z.txt", "a/b/c.txt", "a.txt", "a/b/a.txt"):
        await files.write_text(path, path)
    assert [e.path for e in await files.list()] == ["a.txt", "a/b/a.txt", "a/b/c.txt", "a/z.txt", "b.txt"]
    assert [e.path for e in await files.list("a")] == ["a/b/a.txt", "a/b/c.txt", "a/z.txt"]
    assert [e.path for e in await files.list("a/b/")] == ["a/b/a.txt", "a/b/c.txt"]
    assert await files.list("missing") == []
    assert await files.read_text("a/b/c.txt") == "a/b/c.txt"


async def test_redundant_separators_name_the_same_file(store: Store) -> None:
    files = store.acme()
    assert await files.read_text("./reports//q3.txt") == "acme report acme-canary"
    await files.write_text("new//./dir/f.txt", "x")
    assert "new/dir/f.txt" in [e.path for e in await files.list()]


async def test_binary_data_round_trips_and_is_not_read_as_text(store: Store) -> None:
    files = store.acme()
    data = bytes(range(256))
    await files.write_bytes("blob.bin", data)
    assert await files.read_bytes("blob.bin") == data
    with pytest.raises(UsageError):
        await files.read_text("blob.bin")


async def test_file_over_the_size_limit_is_refused(store: Store) -> None:
    files = store.acme()
    await files.write_bytes("exact.bin", b"x" * LIMIT)  # positive control: exactly at the limit
    assert len(await files.read_bytes("exact.bin")) == LIMIT
    with pytest.raises(UsageError):
        await files.write_bytes("big.bin", b"x" * (LIMIT + 1))
    with pytest.raises(NotFound):
        await files.read_bytes("big.bin")


async def test_missing_file_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound) as caught:
        await store.acme().read_text("nope.txt")
    assert_safe_message(caught.value, store)


# -- refusals: path tricks --------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["..", "../globex/README.md", "reports/../../globex/README.md", "a/../README.md", "../acme/README.md"]
)
async def test_dot_dot_path_is_refused(store: Store, path: str) -> None:
    assert await store.acme().read_text("README.md") == "acme-canary"
    await assert_refused(store, store.acme(), path, (*FILE_OPERATIONS, "list"))


@pytest.mark.parametrize("path", ["/README.md", "/etc/passwd", "//globex/README.md", "C:/README.md", "~/README.md"])
async def test_absolute_path_is_refused(store: Store, path: str) -> None:
    assert await store.acme().read_text("README.md") == "acme-canary"
    await assert_refused(store, store.acme(), path, (*FILE_OPERATIONS, "list"))


@pytest.mark.parametrize("path", ["..\\globex\\README.md", "reports\\q3.txt", "\\README.md"])
async def test_backslash_path_is_refused(store: Store, path: str) -> None:
    assert await store.acme().read_text("reports/q3.txt") == "acme report acme-canary"
    await assert_refused(store, store.acme(), path, (*FILE_OPERATIONS, "list"))


@pytest.mark.parametrize(
    "path",
    [
        "%2e%2e%2fglobex%2fREADME.md",
        "..%2fglobex%2fREADME.md",
        "%2E%2E/globex/README.md",
        "reports%2Fq3.txt",
        "reports%5cq3.txt",
        "%252e%252e%252fglobex",
        "\uff0e\uff0e/globex/README.md",
        "reports\uff0fq3.txt",
    ],
)
async def test_encoded_separator_is_refused(store: Store, path: str) -> None:
    assert await store.acme().read_text("reports/q3.txt") == "acme report acme-canary"
    await assert_refused(store, store.acme(), path, (*FILE_OPERATIONS, "list"))


@pytest.mark.parametrize("path", ["README.md\x00.txt", "\x00", "reports/\x00/../../globex", "a\nb", "a\tb"])
async def test_nul_or_control_character_is_refused(store: Store, path: str) -> None:
    assert await store.acme().read_text("README.md") == "acme-canary"
    await assert_refused(store, store.acme(), path, (*FILE_OPERATIONS, "list"))


@pytest.mark.parametrize("path", ["", ".", "./", "./."])
async def test_empty_file_path_is_refused(store: Store, path: str) -> None:
    # Positive control: the same text lists the tenant's root.
    assert "README.md" in [e.path for e in await store.acme().list(path)]
    await assert_refused(store, store.acme(), path, FILE_OPERATIONS)


# -- refusals: other tenants ------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "../acme-evil/x",
        "../acme-evil/README.md",
        "../../tenants/acme-evil/files/x",
        "..%2facme-evil%2fx",
        "reports/../../acme-evil/x",
    ],
)
async def test_prefix_sibling_tenant_cannot_be_reached_by_path_tricks(store: Store, path: str) -> None:
    assert await store.scopes.for_tenant("acme-evil").read_text("x") == "acme-evil-canary x"
    await assert_refused(store, store.acme(), path, (*FILE_OPERATIONS, "list"))


async def test_prefix_sibling_tenant_is_not_listed_or_read_by_name(store: Store) -> None:
    acme = store.acme()
    assert sorted(e.path for e in await acme.list("")) == sorted(SEED["acme"])
    for path in ("x", "acme-evil/x", "acme-evil/README.md"):
        with pytest.raises(NotFound) as caught:
            await acme.read_text(path)
        assert_safe_message(caught.value, store)
    assert await acme.list("acme-evil") == []
    assert await store.scopes.for_tenant("acme-evil").read_text("x") == "acme-evil-canary x"


async def test_another_tenants_relative_path_is_not_found(store: Store) -> None:
    assert await store.scopes.for_tenant("globex").read_text("ledger.csv") == "globex-canary ledger"
    acme = store.acme()
    with pytest.raises(NotFound) as caught:
        await acme.read_text("ledger.csv")
    assert_safe_message(caught.value, store)
    assert await acme.delete("ledger.csv") is False
    assert await acme.read_text("reports/q3.txt") == "acme report acme-canary"  # same name, own content
    for entry in await acme.list():
        text = await acme.read_text(entry.path)
        assert not any(c in text for c in FOREIGN_CANARIES)
    assert await store.scopes.for_tenant("globex").read_text("ledger.csv") == "globex-canary ledger"


@pytest.mark.parametrize("tenant", ["../globex", "globex/..", "ACME", "acme/", "", "-acme", "acme\x00"])
async def test_invalid_tenant_id_is_refused(store: Store, tenant: str) -> None:
    store.scopes.for_tenant("acme")  # positive control
    with pytest.raises(UsageError):
        store.scopes.for_tenant(tenant)


# -- refusals: resource prefix ----------------------------------------------------------


@pytest.mark.parametrize("path", ["reports-old/x", "other/x", "README.md", "reportsx", "reports-old"])
async def test_path_outside_resource_prefix_is_refused(store: Store, path: str) -> None:
    narrowed = store.acme(prefix="reports")
    assert await narrowed.read_text("reports/q3.txt") == "acme report acme-canary"
    await assert_refused(store, narrowed, path, (*FILE_OPERATIONS, "list"))


async def test_listing_under_resource_prefix_shows_only_the_prefix(store: Store) -> None:
    narrowed = store.acme(prefix="reports")
    await narrowed.write_text("reports/2026/q1.txt", "q1")
    assert [e.path for e in await narrowed.list("")] == ["reports/2026/q1.txt", "reports/q3.txt"]
    assert [e.path for e in await narrowed.list("reports/2026")] == ["reports/2026/q1.txt"]
    deeper = store.acme(prefix="reports/2026")
    assert [e.path for e in await deeper.list("reports")] == ["reports/2026/q1.txt"]
    with pytest.raises(ScopeViolation):
        await deeper.read_text("reports/q3.txt")
    assert await store.acme().read_text("reports-old/x") == "acme old acme-canary"  # unnarrowed control
