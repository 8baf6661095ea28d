"""One contract, every control-plane backend: SQLite (embedded) and PostgreSQL (shared)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tenantry.auth.apikeys import generate_api_key
from tenantry.controlplane.base import ControlStore as TenantStore
from tenantry.controlplane.factory import open_tenant_store
from tenantry.core.credentials import Revocation
from tenantry.core.errors import AlreadyExists, NotFound, StorageError, UsageError


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TenantStore]:
    if request.param == "sqlite":
        opened = open_tenant_store(None, tmp_path)
    else:
        import psycopg

        url = request.getfixturevalue("postgres_url")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DROP SCHEMA IF EXISTS tenantry CASCADE")
        opened = open_tenant_store(url, tmp_path)
    yield opened
    opened.close()


def test_create_get_and_list(store: TenantStore) -> None:
    created = store.create_tenant("acme", name="Acme", tools=["whoami", "query_crm"])
    assert (created.id, created.name, created.tier, created.status) == ("acme", "Acme", "logical", "active")
    assert created.grants == {"whoami", "query_crm"}
    store.create_tenant("globex", tier="dedicated")
    assert [t.id for t in store.list_tenants()] == ["acme", "globex"]
    assert store.get_tenant("globex").tier == "dedicated"
    assert store.get_tenant("ghost") is None


def test_grants_and_revision(store: TenantStore) -> None:
    store.create_tenant("acme", tools=["whoami"])
    before = store.revision()
    assert store.grant("acme", ["read_file", "whoami"]).grants == {"whoami", "read_file"}
    assert store.ungrant("acme", ["whoami", "never_granted"]).grants == {"read_file"}
    assert store.revision() == before + 2


def test_status_changes(store: TenantStore) -> None:
    store.create_tenant("acme")
    halted = store.set_status("acme", "halted", "incident 42")
    assert halted.halted and halted.halted_reason == "incident 42"
    assert not store.set_status("acme", "active").halted


def test_tier_moves_keep_everything_else_and_bump_the_revision(store: TenantStore) -> None:
    store.create_tenant("acme", name="Acme", tools=["whoami"])
    store.set_limits("acme", {"burst": 7})
    before = store.revision()
    moved = store.set_tier("acme", "dedicated")
    assert (moved.tier, moved.name, moved.grants, moved.limit_overrides) == (
        "dedicated",
        "Acme",
        {"whoami"},
        (("burst", 7.0),),
    )
    assert store.get_tenant("acme").tier == "dedicated"
    assert store.revision() == before + 1  # a running server's poll sees the move
    assert store.set_tier("acme", "logical").tier == "logical"
    with pytest.raises(NotFound):
        store.set_tier("ghost", "dedicated")


def test_errors(store: TenantStore) -> None:
    store.create_tenant("acme")
    with pytest.raises(AlreadyExists):
        store.create_tenant("acme")
    with pytest.raises(NotFound):
        store.grant("ghost", ["whoami"])
    with pytest.raises(UsageError):
        store.create_tenant("Not Valid")
    with pytest.raises(UsageError):
        store.grant("acme", ["bad tool"])


def test_meta_round_trip(store: TenantStore) -> None:
    assert store.get_meta("public_url") is None
    store.set_meta("public_url", "http://a")
    store.set_meta("public_url", "http://b")
    assert store.get_meta("public_url") == "http://b"


def test_list_meta_returns_the_entries_under_a_prefix(store: TenantStore) -> None:
    store.set_meta("catalogue:notes", "1")
    store.set_meta("catalogue:crm", "2")
    store.set_meta("catalogue_other", "3")
    store.set_meta("public_url", "http://a")
    assert store.list_meta("catalogue:") == {"catalogue:notes": "1", "catalogue:crm": "2"}
    assert store.list_meta("catalogue:%") == {}  # the prefix is matched literally, not as a pattern
    assert store.list_meta("nothing:") == {}


def test_unreachable_postgres_is_a_storage_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="cannot connect"):
        open_tenant_store("postgresql://postgres@127.0.0.1:1/none", tmp_path)


def test_unknown_scheme_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        open_tenant_store("mysql://x", tmp_path)


def test_revocations_round_trip_and_prune(store: TenantStore) -> None:
    before = store.revision()
    store.add_revocation(Revocation("jti", None, created_at=100, expires_at=200, jti="abc", actor="cli:ops"))
    store.add_revocation(
        Revocation("subject", "acme", created_at=100, expires_at=300, subject="alice", cutoff=100, reason="left")
    )
    store.add_revocation(Revocation("tenant", "globex", created_at=100, expires_at=150, cutoff=100))
    assert store.revision() == before + 3
    live = store.list_revocations(160)
    assert [(r.kind, r.tenant_id, r.jti, r.subject) for r in live] == [
        ("jti", None, "abc", None),
        ("subject", "acme", None, "alice"),
    ]
    assert live[0].actor == "cli:ops" and live[1].reason == "left" and live[1].cutoff == 100
    assert store.prune_revocations(250) == 2
    assert [r.kind for r in store.list_revocations(0)] == ["subject"]


def test_api_keys_round_trip_and_revoke(store: TenantStore) -> None:
    store.create_tenant("acme", tools=["whoami"])
    store.create_tenant("globex")
    issued = generate_api_key("acme", ["whoami", "query_crm"], name="ci bot", created_by="cli:ops")
    other = generate_api_key("globex", ["whoami"])
    before = store.revision()
    store.add_api_key(issued.record)
    store.add_api_key(other.record)
    assert store.revision() == before + 2
    loaded = store.get_api_key(issued.record.key_id)
    assert loaded == issued.record
    assert issued.key.split("_")[-1].encode() not in repr(loaded).encode()  # the secret is never stored
    assert [k.key_id for k in store.list_api_keys("acme")] == [issued.record.key_id]
    assert len(store.list_api_keys()) == 2
    revoked = store.revoke_api_key(issued.record.key_id, 1234)
    assert revoked.revoked_at == 1234 and not revoked.active
    assert store.revoke_api_key(issued.record.key_id, 9999).revoked_at == 1234  # idempotent
    with pytest.raises(NotFound):
        store.revoke_api_key("0" * 16, 1)
    with pytest.raises(AlreadyExists):
        store.add_api_key(issued.record)
    with pytest.raises(NotFound):
        store.add_api_key(generate_api_key("ghost", []).record)


def _fill(store: TenantStore, tenant_id: str, now: int) -> None:
    from tenantry.core.secrets import WrappedKey

    store.create_tenant(tenant_id, tools=["whoami"])
    store.set_limits(tenant_id, {"burst": 5})
    store.add_api_key(generate_api_key(tenant_id, ["whoami"], name="k").record)
    store.put_data_key(tenant_id, WrappedKey("m1", b"wrapped-" + tenant_id.encode(), now))
    store.put_secret(tenant_id, "mail", b"sealed", now)
    store.add_revocation(Revocation("subject", tenant_id, now, now + 600, subject="bob", cutoff=now))


def test_erase_tenant_removes_every_row_of_the_tenant_only(store: TenantStore) -> None:
    from tenantry.controlplane.erase import TenantEraser

    now = int(time.time())
    _fill(store, "acme", now)
    _fill(store, "globex", now)
    store.add_revocation(Revocation("tenant", "acme", now, now + 600, cutoff=now, reason="tenant deleted"))
    store.add_revocation(Revocation("tenant", "acme", now - 100, now + 600, cutoff=now - 100))
    assert isinstance(store, TenantEraser)
    full = store.tenant_footprint("acme")
    assert set(full) == {"tenants", "grants", "tenant_limits", "api_keys", "secrets", "tenant_data_keys", "revocations"}
    before = store.revision()

    store.erase_tenant("acme", keep_revocations_from=now)
    store.erase_tenant("acme", keep_revocations_from=now)  # idempotent
    assert store.tenant_footprint("acme") == {}
    assert store.revision() > before  # every server drops the tenant at its next poll
    assert store.get_tenant("acme") is None and store.list_api_keys("acme") == [] and store.get_data_key("acme") is None
    kept = [r for r in store.list_revocations(now) if r.tenant_id == "acme"]
    assert [(r.kind, r.cutoff) for r in kept] == [("tenant", now)]  # the deletion's own, until it expires
    assert store.tenant_footprint("globex") == full  # the other tenant keeps every row
    assert store.sealed_secrets("globex") == {"mail": b"sealed"}


def test_upstreams_round_trip_and_bump_the_revision(store: TenantStore) -> None:
    from tenantry.core.upstreams import UpstreamSpec

    spec = UpstreamSpec(
        name="crm",
        transport="http",
        url="https://crm.example/mcp",
        headers=(("Authorization", "Bearer {secret:crm_token}"),),
        tenants=frozenset({"acme"}),
        call_timeout=12.5,
        created_at=1_700_000_000,
    ).validated()
    before = store.revision()
    store.add_upstream(spec)
    assert store.revision() > before
    assert store.list_upstreams() == [spec]
    with pytest.raises(AlreadyExists):
        store.add_upstream(spec)
    local = UpstreamSpec(name="files", transport="stdio", command=("mcp-fs", "{tenant_dir}"), created_at=1).validated()
    store.add_upstream(local)
    assert [u.name for u in store.list_upstreams()] == ["crm", "files"]
    before = store.revision()
    assert store.remove_upstream("crm") is True
    assert store.revision() > before
    assert store.remove_upstream("crm") is False
    assert store.list_upstreams() == [local]
