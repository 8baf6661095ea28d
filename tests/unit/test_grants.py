"""Granting tools checked against the published catalogues (admin actions over a SQLite store)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tenantry.admin.grants import (
    create_tenant,
    grant_tools,
    publish_catalogue,
    published_catalogue,
    unserved_grants,
)
from tenantry.controlplane.base import ControlStore
from tenantry.controlplane.factory import open_tenant_store
from tenantry.core.errors import AlreadyExists, GrantRefused, NotFound, StorageError, UsageError
from tenantry.policy.catalogue import Catalogue

CATALOGUE = Catalogue.of([("whoami", None), ("add_note", None), ("globex_only", ["globex"])])


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ControlStore]:
    opened = open_tenant_store(None, tmp_path)
    opened.create_tenant("acme", tools=["whoami"])
    opened.create_tenant("globex")
    yield opened
    opened.close()


def test_granting_an_unknown_tool_is_refused_and_changes_nothing(store: ControlStore) -> None:
    before = store.revision()
    with pytest.raises(GrantRefused) as refused:
        grant_tools(store, "acme", ["add_note", "no_such_tool"], CATALOGUE, actor="t")
    assert refused.value.message == (
        "no server here serves a tool named 'no_such_tool' (known: add_note, whoami); "
        "to grant a tool that will appear later, add --pending"
    )
    assert store.get_tenant("acme").grants == {"whoami"}
    assert store.revision() == before


def test_granting_another_tenants_private_tool_is_refused_even_as_pending(store: ControlStore) -> None:
    for pending in (False, True):
        with pytest.raises(GrantRefused) as refused:
            grant_tools(store, "acme", ["globex_only"], CATALOGUE, actor="t", pending=pending)
        assert refused.value.message == "'globex_only' is registered for other tenants only, not for 'acme'"
    assert store.get_tenant("acme").grants == {"whoami"}


def test_granting_served_tools_succeeds_and_is_audited(store: ControlStore) -> None:
    tenant, event = grant_tools(store, "globex", ["globex_only", "add_note"], CATALOGUE, actor="cli:op")
    assert tenant.grants == {"globex_only", "add_note"}
    assert (event.event_type, event.tenant_id, event.actor) == ("tenant_granted", "globex", "cli:op")
    assert event.detail == {"tools": ["add_note", "globex_only"]}


def test_pending_grants_unknown_names_and_the_audit_marks_them(store: ControlStore) -> None:
    tenant, event = grant_tools(store, "acme", ["later_tool", "add_note"], CATALOGUE, actor="t", pending=True)
    assert tenant.grants == {"whoami", "add_note", "later_tool"}
    assert event.detail == {"tools": ["add_note", "later_tool"], "pending": ["later_tool"]}
    assert unserved_grants(tenant, CATALOGUE) == ["later_tool"]


def test_creating_a_tenant_checks_its_grants_first(store: ControlStore) -> None:
    with pytest.raises(GrantRefused, match="no server here serves tools named 'nope', 'zilch'"):
        create_tenant(store, "initech", CATALOGUE, actor="t", tools=["whoami", "zilch", "nope"])
    with pytest.raises(GrantRefused, match="other tenants only"):
        create_tenant(store, "initech", CATALOGUE, actor="t", tools=["globex_only"], pending=True)
    assert store.get_tenant("initech") is None
    tenant, event = create_tenant(store, "initech", CATALOGUE, actor="t", tools=["whoami", "soon"], pending=True)
    assert tenant.grants == {"whoami", "soon"}
    assert event.detail == {"tier": "logical", "grants": ["soon", "whoami"], "pending": ["soon"]}


def test_other_errors_keep_their_own_messages(store: ControlStore) -> None:
    with pytest.raises(NotFound):
        grant_tools(store, "ghost", ["whoami"], CATALOGUE, actor="t")
    with pytest.raises(UsageError, match="tool name must be"):
        grant_tools(store, "acme", ["bad tool"], CATALOGUE, actor="t", pending=True)
    with pytest.raises(UsageError, match="tenant id must be"):
        create_tenant(store, "Bad_Id", CATALOGUE, actor="t", tools=["globex_only"])
    with pytest.raises(AlreadyExists):
        create_tenant(store, "acme", CATALOGUE, actor="t", tools=["whoami"])


def test_the_known_list_is_what_the_tenant_could_be_granted_and_is_cut_short(store: ControlStore) -> None:
    many = Catalogue.of([(f"tool_{i:02}", None) for i in range(10)] + [("globex_secret_tool", ["globex"])])
    with pytest.raises(GrantRefused) as refused:
        grant_tools(store, "acme", ["typo"], many, actor="t")
    assert "(known: tool_00, tool_01, tool_02, tool_03, tool_04, tool_05, ... and 4 more)" in refused.value.message
    assert "globex_secret_tool" not in refused.value.message


def test_published_catalogues_are_merged_by_app_name(store: ControlStore) -> None:
    assert published_catalogue(store) == Catalogue()
    publish_catalogue(store, "notes", Catalogue.of([("add_note", None), ("old_tool", None)]))
    publish_catalogue(store, "crm", Catalogue.of([("crm_only", ["globex"])]))
    publish_catalogue(store, "notes", Catalogue.of([("add_note", None)]))  # a restart replaces the app's entry
    assert published_catalogue(store) == Catalogue.of([("add_note", None), ("crm_only", ["globex"])])


def test_an_unreadable_published_catalogue_is_a_storage_error(store: ControlStore) -> None:
    store.set_meta("catalogue:broken", "{not json")
    with pytest.raises(StorageError, match="app 'broken' is unreadable"):
        published_catalogue(store)
