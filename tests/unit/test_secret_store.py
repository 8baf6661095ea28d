"""Secret scopes over the SQLite control store: call-time decryption, tenant isolation,
crypto-shredding, one data key per tenant under concurrency, nothing leaked."""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tenantry.admin.actions import delete_secret, set_secret, shred_tenant_key
from tenantry.controlplane.sqlite import SqliteTenantStore
from tenantry.core.errors import NotFound, SecretsUnavailable, UsageError
from tenantry.core.settings import SecretSettings
from tenantry.scoping.secrets.base import SecretScopes
from tenantry.scoping.secrets.envelope import MasterKey
from tenantry.scoping.secrets.store import StoredSecretScopes, open_secret_scopes

pytestmark = pytest.mark.anyio

ACME_VALUE = "acme-canary-mail-key-0001"
GLOBEX_VALUE = "globex-canary-mail-key-0002"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteTenantStore]:
    opened = SqliteTenantStore(tmp_path / "control.sqlite3")
    opened.create_tenant("acme")
    opened.create_tenant("globex")
    yield opened
    opened.close()


@pytest.fixture
def master() -> MasterKey:
    return MasterKey(os.urandom(32))


@pytest.fixture
def scopes(store: SqliteTenantStore, master: MasterKey) -> StoredSecretScopes:
    scopes = StoredSecretScopes(store, master)
    scopes.set_secret("acme", "mail_api_key", ACME_VALUE)
    scopes.set_secret("globex", "mail_api_key", GLOBEX_VALUE)
    return scopes


def raw(store_path: Path) -> sqlite3.Connection:
    return sqlite3.connect(store_path, isolation_level=None)


def test_it_is_a_secret_scopes(scopes: StoredSecretScopes) -> None:
    typed: SecretScopes = scopes
    assert typed is scopes


async def test_each_tenant_reads_its_own_value_at_call_time(scopes: StoredSecretScopes) -> None:
    assert await scopes.for_tenant("acme").get("mail_api_key") == ACME_VALUE
    assert await scopes.for_tenant("globex").get("mail_api_key") == GLOBEX_VALUE
    scopes.set_secret("acme", "mail_api_key", "acme-rotated-value")
    assert await scopes.for_tenant("acme").get("mail_api_key") == "acme-rotated-value"
    assert await scopes.for_tenant("acme").names() == ["mail_api_key"]


async def test_an_unknown_name_is_not_found_with_the_same_message_for_every_tenant(
    scopes: StoredSecretScopes, store: SqliteTenantStore
) -> None:
    store.create_tenant("initech")  # has no secrets at all
    scopes.set_secret("globex", "stripe_key", GLOBEX_VALUE)
    messages = set()
    for tenant in ("acme", "initech"):
        with pytest.raises(NotFound) as caught:
            await scopes.for_tenant(tenant).get("stripe_key")  # globex has one; acme and initech do not
        messages.add(caught.value.message)
    assert messages == {"no secret named 'stripe_key'"}


async def test_an_invalid_name_is_a_usage_error(scopes: StoredSecretScopes) -> None:
    with pytest.raises(UsageError, match="secret name"):
        await scopes.for_tenant("acme").get("../globex/mail_api_key")


async def test_the_value_is_decrypted_in_a_worker_thread(
    scopes: StoredSecretScopes, store: SqliteTenantStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[threading.Thread] = []
    original = store.get_secret

    def spy(tenant_id: str, name: str) -> bytes | None:
        threads.append(threading.current_thread())
        return original(tenant_id, name)

    monkeypatch.setattr(store, "get_secret", spy)
    await scopes.for_tenant("acme").get("mail_api_key")
    assert threads and threads[0] is not threading.main_thread()


async def test_values_of_returns_only_the_tenants_values_longest_first(scopes: StoredSecretScopes) -> None:
    scopes.set_secret("acme", "short_one", "abcd")
    assert await scopes.values_of("acme") == [ACME_VALUE, "abcd"]
    assert await scopes.values_of("globex") == [GLOBEX_VALUE]


async def test_values_of_a_tenant_without_secrets_is_empty(
    scopes: StoredSecretScopes, store: SqliteTenantStore
) -> None:
    store.create_tenant("initech")
    assert await scopes.values_of("initech") == []


def test_set_reports_new_or_replaced_and_keeps_the_creation_time(store: SqliteTenantStore, master: MasterKey) -> None:
    scopes = StoredSecretScopes(store, master)
    assert scopes.set_secret("acme", "api_key", "first-value", now=100) is True
    assert scopes.set_secret("acme", "api_key", "second-value", now=200) is False
    [info] = scopes.list_secrets("acme")
    assert (info.name, info.created_at, info.updated_at) == ("api_key", 100, 200)


def test_set_on_an_unknown_tenant_is_not_found(store: SqliteTenantStore, master: MasterKey) -> None:
    with pytest.raises(NotFound, match="no tenant"):
        StoredSecretScopes(store, master).set_secret("ghost", "api_key", "some-value")


async def test_delete_removes_only_that_secret(scopes: StoredSecretScopes) -> None:
    scopes.set_secret("acme", "other_key", "other-value")
    assert scopes.delete_secret("acme", "mail_api_key") is True
    assert scopes.delete_secret("acme", "mail_api_key") is False
    with pytest.raises(NotFound):
        await scopes.for_tenant("acme").get("mail_api_key")
    assert await scopes.for_tenant("acme").get("other_key") == "other-value"
    assert await scopes.for_tenant("globex").get("mail_api_key") == GLOBEX_VALUE


def test_values_are_encrypted_at_rest(scopes: StoredSecretScopes, tmp_path: Path) -> None:
    scopes.set_secret("acme", "big_key", "acme-canary-" * 100)
    everything = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert b"acme-canary" not in everything and b"globex-canary" not in everything
    assert b"mail_api_key" in everything  # names are not secret


@pytest.mark.parametrize("swap", ["tenant", "name"])
async def test_a_ciphertext_swapped_between_rows_does_not_decrypt(
    scopes: StoredSecretScopes, store: SqliteTenantStore, master: MasterKey, tmp_path: Path, swap: str
) -> None:
    scopes.set_secret("acme", "other_key", "acme-other-canary")
    source = ("globex", "mail_api_key") if swap == "tenant" else ("acme", "other_key")
    with raw(tmp_path / "control.sqlite3") as conn:
        (stolen,) = conn.execute("SELECT sealed FROM secrets WHERE tenant_id = ? AND name = ?", source).fetchone()
        conn.execute("UPDATE secrets SET sealed = ? WHERE tenant_id = 'acme' AND name = 'mail_api_key'", (stolen,))
    fresh = StoredSecretScopes(store, master)
    with pytest.raises(SecretsUnavailable):
        await fresh.for_tenant("acme").get("mail_api_key")
    with pytest.raises(SecretsUnavailable):  # redaction fails closed rather than skip a value
        await fresh.values_of("acme")
    assert await fresh.for_tenant("globex").get("mail_api_key") == GLOBEX_VALUE  # positive control


async def test_a_data_key_swapped_between_tenants_does_not_unwrap(
    scopes: StoredSecretScopes, store: SqliteTenantStore, master: MasterKey, tmp_path: Path
) -> None:
    with raw(tmp_path / "control.sqlite3") as conn:
        (globex_key,) = conn.execute("SELECT wrapped FROM tenant_data_keys WHERE tenant_id = 'globex'").fetchone()
        conn.execute("UPDATE tenant_data_keys SET wrapped = ? WHERE tenant_id = 'acme'", (globex_key,))
    with pytest.raises(SecretsUnavailable, match="another tenant"):
        await StoredSecretScopes(store, master).for_tenant("acme").get("mail_api_key")


async def test_deleting_the_data_key_makes_the_stored_ciphertexts_undecryptable(
    scopes: StoredSecretScopes, store: SqliteTenantStore, master: MasterKey, tmp_path: Path
) -> None:
    """Crypto-shredding: only the data-key row goes; the ciphertexts stay in the database and
    the master key stays available, yet nothing can be decrypted."""
    with raw(tmp_path / "control.sqlite3") as conn:
        conn.execute("DELETE FROM tenant_data_keys WHERE tenant_id = 'acme'")
        ciphertexts = conn.execute("SELECT name, sealed FROM secrets WHERE tenant_id = 'acme'").fetchall()
    assert [name for name, _ in ciphertexts] == ["mail_api_key"]
    fresh = StoredSecretScopes(store, master)  # same master key, no cached data key
    with pytest.raises(SecretsUnavailable, match="crypto-shredded"):
        await fresh.for_tenant("acme").get("mail_api_key")
    with pytest.raises(SecretsUnavailable):
        await fresh.values_of("acme")
    # A new data key (created by the next set) does not open the old ciphertexts either.
    fresh.set_secret("acme", "new_key", "acme-new-value")
    with pytest.raises(SecretsUnavailable, match="cannot be decrypted"):
        await fresh.for_tenant("acme").get("mail_api_key")
    assert await fresh.for_tenant("acme").get("new_key") == "acme-new-value"
    assert await fresh.for_tenant("globex").get("mail_api_key") == GLOBEX_VALUE


async def test_shredding_invalidates_the_cached_key_and_old_copies_stay_undecryptable(
    scopes: StoredSecretScopes, tmp_path: Path
) -> None:
    acme = scopes.for_tenant("acme")
    assert await acme.get("mail_api_key") == ACME_VALUE  # the data key is now cached
    with raw(tmp_path / "control.sqlite3") as conn:
        backup = conn.execute(
            "SELECT name, sealed, created_at, updated_at FROM secrets WHERE tenant_id = 'acme'"
        ).fetchall()
    assert scopes.shred_tenant_key("acme") is True
    assert scopes.shred_tenant_key("acme") is False
    with pytest.raises(NotFound):
        await acme.get("mail_api_key")
    assert await scopes.values_of("acme") == []
    # Restore the old ciphertexts (an attacker's backup) next to a fresh data key: still unreadable.
    scopes.set_secret("acme", "new_key", "acme-new-value")
    with raw(tmp_path / "control.sqlite3") as conn:
        conn.executemany("INSERT INTO secrets VALUES ('acme', ?, ?, ?, ?)", backup)
    with pytest.raises(SecretsUnavailable):
        await acme.get("mail_api_key")
    assert await scopes.for_tenant("globex").get("mail_api_key") == GLOBEX_VALUE


def test_the_shredded_key_is_not_left_in_the_database_file(scopes: StoredSecretScopes, tmp_path: Path) -> None:
    db = tmp_path / "control.sqlite3"
    with raw(db) as conn:
        (wrapped,) = conn.execute("SELECT wrapped FROM tenant_data_keys WHERE tenant_id = 'acme'").fetchone()
    scopes.shred_tenant_key("acme")
    files = [p for p in tmp_path.iterdir() if p.name.startswith("control.sqlite3")]
    assert all(wrapped not in p.read_bytes() for p in files)


async def test_a_key_replaced_in_another_process_is_re_read(store: SqliteTenantStore, master: MasterKey) -> None:
    here = StoredSecretScopes(store, master, cache_ttl=3600)
    here.set_secret("acme", "api_key", "first-value")
    assert await here.for_tenant("acme").get("api_key") == "first-value"  # cached
    elsewhere = StoredSecretScopes(store, master)
    elsewhere.shred_tenant_key("acme")
    elsewhere.set_secret("acme", "api_key", "second-value")  # under a new data key
    assert await here.for_tenant("acme").get("api_key") == "second-value"


async def test_the_cache_expires(store: SqliteTenantStore, master: MasterKey, tmp_path: Path) -> None:
    now = [0.0]
    scopes = StoredSecretScopes(store, master, cache_ttl=60, clock=lambda: now[0])
    scopes.set_secret("acme", "api_key", "first-value")
    assert await scopes.for_tenant("acme").get("api_key") == "first-value"
    with raw(tmp_path / "control.sqlite3") as conn:
        conn.execute("DELETE FROM tenant_data_keys WHERE tenant_id = 'acme'")
    assert await scopes.for_tenant("acme").get("api_key") == "first-value"  # within the TTL
    now[0] = 61
    with pytest.raises(SecretsUnavailable):
        await scopes.for_tenant("acme").get("api_key")


async def test_a_wrong_master_key_is_refused_clearly(scopes: StoredSecretScopes, store: SqliteTenantStore) -> None:
    other = StoredSecretScopes(store, MasterKey(os.urandom(32)))
    with pytest.raises(SecretsUnavailable, match="master key does not match"):
        await other.for_tenant("acme").get("mail_api_key")
    with pytest.raises(SecretsUnavailable, match="master key does not match"):
        other.set_secret("acme", "api_key", "a-new-value")
    assert await scopes.for_tenant("acme").get("mail_api_key") == ACME_VALUE


def test_concurrent_first_sets_end_with_one_data_key(
    store: SqliteTenantStore, master: MasterKey, tmp_path: Path
) -> None:
    """Separate connections and scopes (as separate processes would have) race to create the key."""
    writers = 8
    barrier = threading.Barrier(writers)
    errors: list[BaseException] = []

    def first_set(index: int) -> None:
        own_store = SqliteTenantStore(tmp_path / "control.sqlite3")
        try:
            barrier.wait()
            StoredSecretScopes(own_store, master).set_secret("acme", f"key_{index}", f"value-number-{index}")
        except BaseException as exc:
            errors.append(exc)
        finally:
            own_store.close()

    threads = [threading.Thread(target=first_set, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with raw(tmp_path / "control.sqlite3") as conn:
        assert conn.execute("SELECT count(*) FROM tenant_data_keys WHERE tenant_id = 'acme'").fetchone() == (1,)
    scopes = StoredSecretScopes(store, master)
    assert sorted(scopes.read_values("acme")) == sorted(f"value-number-{i}" for i in range(writers))


def test_open_secret_scopes_uses_the_data_dir_key(store: SqliteTenantStore, tmp_path: Path) -> None:
    first = open_secret_scopes(SecretSettings(), tmp_path, store)
    first.set_secret("acme", "api_key", "persisted-value")
    again = open_secret_scopes(SecretSettings(), tmp_path, store)
    assert again.master_key_id == first.master_key_id
    assert again.read_secret("acme", "api_key") == "persisted-value"


async def test_no_value_reaches_a_log_repr_or_error(
    scopes: StoredSecretScopes, store: SqliteTenantStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    shown: list[str] = [repr(scopes), repr(scopes.for_tenant("acme"))]
    with raw(tmp_path / "control.sqlite3") as conn:
        conn.execute("UPDATE secrets SET sealed = substr(sealed, 1, 40) WHERE tenant_id = 'acme'")
    for attempt in (
        scopes.for_tenant("acme").get("mail_api_key"),
        StoredSecretScopes(store, MasterKey(os.urandom(32))).for_tenant("globex").get("mail_api_key"),
        scopes.for_tenant("acme").get("missing"),
    ):
        with pytest.raises((SecretsUnavailable, NotFound)) as caught:
            await attempt
        shown += [str(caught.value), repr(caught.value), repr(caught.value.to_dict())]
    with pytest.raises(UsageError) as short:
        scopes.set_secret("acme", "short", "zq9")
    shown.append(str(short.value))
    text = "\n".join(shown) + caplog.text
    for value in (ACME_VALUE, GLOBEX_VALUE, "zq9"):
        assert value not in text


def test_admin_actions_audit_the_name_only(store: SqliteTenantStore, master: MasterKey) -> None:
    scopes = StoredSecretScopes(store, master)
    created = set_secret(store, scopes, "acme", "mail_api_key", ACME_VALUE, actor="cli:ops")
    replaced = set_secret(store, scopes, "acme", "mail_api_key", GLOBEX_VALUE, actor="cli:ops")
    deleted = delete_secret(store, scopes, "acme", "mail_api_key", actor="cli:ops")
    set_secret(store, scopes, "acme", "other_key", ACME_VALUE, actor="cli:ops")
    shredded = shred_tenant_key(store, scopes, "acme", actor="cli:ops", reason="tenant offboarded")
    assert [e.event_type for e in (created, replaced, deleted, shredded)] == [
        "secret_set",
        "secret_set",
        "secret_deleted",
        "tenant_key_shredded",
    ]
    assert created.detail == {"name": "mail_api_key", "created": True} and replaced.detail["created"] is False
    assert deleted.detail == {"name": "mail_api_key"}
    assert shredded.detail == {"had_key": True, "secrets": ["other_key"]}
    assert all(e.actor == "cli:ops" and e.tenant_id == "acme" for e in (created, deleted, shredded))
    recorded = repr([e.to_dict() for e in (created, replaced, deleted, shredded)])
    assert ACME_VALUE not in recorded and GLOBEX_VALUE not in recorded


def test_admin_actions_refuse_unknown_tenants_and_secrets(store: SqliteTenantStore, master: MasterKey) -> None:
    scopes = StoredSecretScopes(store, master)
    with pytest.raises(NotFound, match="no tenant"):
        set_secret(store, scopes, "ghost", "api_key", ACME_VALUE, actor="cli:ops")
    with pytest.raises(NotFound, match="no secret named 'api_key'"):
        delete_secret(store, scopes, "acme", "api_key", actor="cli:ops")
    with pytest.raises(NotFound, match="no tenant"):
        shred_tenant_key(store, scopes, "ghost", actor="cli:ops")
