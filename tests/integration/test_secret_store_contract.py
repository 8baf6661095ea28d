"""One secret-store contract, every control-plane backend: SQLite (embedded) and PostgreSQL."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tenantry.controlplane.base import ControlStore, WrappedKey
from tenantry.controlplane.factory import open_tenant_store
from tenantry.core.errors import NotFound, SecretsUnavailable
from tenantry.scoping.secrets.envelope import MasterKey
from tenantry.scoping.secrets.store import StoredSecretScopes
from tests.integration.conftest import DatabaseRoles

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], ControlStore]]:
    """Opens a new connection to one fresh store (each call: another client of the same data)."""
    url: str | None = None
    if request.param == "postgres":
        import psycopg

        url = request.getfixturevalue("postgres_url")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DROP SCHEMA IF EXISTS tenantry CASCADE")
    opened: list[ControlStore] = []

    def open_store() -> ControlStore:
        store = open_tenant_store(url, tmp_path)
        opened.append(store)
        return store

    yield open_store
    for store in opened:
        store.close()


@pytest.fixture
def store(opener: Callable[[], ControlStore]) -> ControlStore:
    store = opener()
    store.create_tenant("acme")
    store.create_tenant("globex")
    return store


def wrapped(tag: bytes) -> WrappedKey:
    return WrappedKey(key_id="0123456789abcdef", wrapped=tag * 60, created_at=7)


def test_sealed_values_round_trip_per_tenant(store: ControlStore) -> None:
    store.put_data_key("acme", wrapped(b"a"))
    store.put_data_key("globex", wrapped(b"g"))
    before = store.revision()
    assert store.put_secret("acme", "mail_api_key", b"\x00sealed-acme", 100) is True
    assert store.put_secret("acme", "mail_api_key", b"\x01sealed-acme-2", 200) is False
    assert store.put_secret("acme", "b_key", b"sealed-b", 150) is True
    assert store.put_secret("globex", "mail_api_key", b"sealed-globex", 100) is True
    assert store.revision() == before  # secrets are read at call time; the directory does not change
    assert store.get_secret("acme", "mail_api_key") == b"\x01sealed-acme-2"
    assert store.get_secret("globex", "mail_api_key") == b"sealed-globex"
    assert store.get_secret("acme", "missing") is None
    assert store.sealed_secrets("acme") == {"mail_api_key": b"\x01sealed-acme-2", "b_key": b"sealed-b"}
    infos = store.list_secrets("acme")
    assert [(i.name, i.created_at, i.updated_at) for i in infos] == [("b_key", 150, 150), ("mail_api_key", 100, 200)]
    assert store.delete_secret("acme", "b_key") is True
    assert store.delete_secret("acme", "b_key") is False
    assert [i.name for i in store.list_secrets("acme")] == ["mail_api_key"]


def test_unknown_tenants(store: ControlStore) -> None:
    with pytest.raises(NotFound):
        store.put_data_key("ghost", wrapped(b"x"))
    with pytest.raises(NotFound):
        store.put_secret("ghost", "api_key", b"sealed", 1)
    assert store.get_secret("ghost", "api_key") is None
    assert store.get_data_key("ghost") is None
    assert store.list_secrets("ghost") == [] and store.sealed_secrets("ghost") == {}
    assert store.delete_secret("ghost", "api_key") is False
    assert store.delete_data_key("ghost") is False


def test_a_secret_needs_the_tenants_data_key(store: ControlStore) -> None:
    with pytest.raises(SecretsUnavailable):
        store.put_secret("acme", "api_key", b"sealed", 1)


def test_the_first_data_key_wins(store: ControlStore) -> None:
    assert store.get_data_key("acme") is None
    first = store.put_data_key("acme", wrapped(b"1"))
    assert first == wrapped(b"1")
    assert store.put_data_key("acme", wrapped(b"2")) == first
    assert store.get_data_key("acme") == first


def test_deleting_the_data_key_deletes_the_tenants_secrets_only(store: ControlStore) -> None:
    for tenant in ("acme", "globex"):
        store.put_data_key(tenant, wrapped(tenant[:1].encode()))
        store.put_secret(tenant, "api_key", b"sealed", 1)
    assert store.delete_data_key("acme") is True
    assert store.get_data_key("acme") is None and store.list_secrets("acme") == []
    assert store.delete_data_key("acme") is False
    assert store.get_secret("globex", "api_key") == b"sealed" and store.get_data_key("globex") is not None


def test_concurrent_first_writers_get_one_data_key(opener: Callable[[], ControlStore], store: ControlStore) -> None:
    writers = 6
    clients = [opener() for _ in range(writers)]
    barrier = threading.Barrier(writers)
    results: list[WrappedKey] = []

    def put(index: int) -> None:
        barrier.wait()
        results.append(clients[index].put_data_key("acme", wrapped(bytes([65 + index]))))

    threads = [threading.Thread(target=put, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == writers and len({r.wrapped for r in results}) == 1
    assert store.get_data_key("acme") == results[0]


async def test_secret_scopes_over_the_store(opener: Callable[[], ControlStore], store: ControlStore) -> None:
    master = MasterKey(os.urandom(32))
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def first_set(index: int) -> None:
        try:
            barrier.wait()
            StoredSecretScopes(opener(), master).set_secret("acme", f"key_{index}", f"acme-value-{index}")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=first_set, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    scopes = StoredSecretScopes(store, master)
    assert await scopes.for_tenant("acme").get("key_3") == "acme-value-3"
    assert sorted(await scopes.values_of("acme")) == [f"acme-value-{i}" for i in range(4)]
    with pytest.raises(NotFound):
        await scopes.for_tenant("globex").get("key_3")
    assert scopes.shred_tenant_key("acme") is True
    with pytest.raises(NotFound):
        await scopes.for_tenant("acme").get("key_3")


@pytest.mark.postgres
def test_the_application_role_keeps_secrets_after_db_init(db_roles: DatabaseRoles, tmp_path: Path) -> None:
    store = open_tenant_store(db_roles.app_url, tmp_path)
    try:
        store.create_tenant("acme")
        scopes = StoredSecretScopes(store, MasterKey(os.urandom(32)))
        scopes.set_secret("acme", "api_key", "acme-app-role-value")
        assert scopes.read_secret("acme", "api_key") == "acme-app-role-value"
        assert scopes.delete_secret("acme", "api_key") and scopes.shred_tenant_key("acme")
    finally:
        store.close()


@pytest.mark.postgres
def test_an_older_postgres_schema_gains_the_secret_tables(postgres_url: str, tmp_path: Path) -> None:
    import psycopg

    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS tenantry CASCADE")
    open_tenant_store(postgres_url, tmp_path).close()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("DROP TABLE tenantry.secrets, tenantry.tenant_data_keys")
    store = open_tenant_store(postgres_url, tmp_path)
    try:
        store.create_tenant("acme")
        store.put_data_key("acme", wrapped(b"k"))
        assert store.get_data_key("acme") is not None
    finally:
        store.close()
