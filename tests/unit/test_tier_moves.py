"""Moving tenants between tiers: the admin action, and a running server retiring the worker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tenantry.admin.actions import move_tenant
from tenantry.controlplane.base import ControlStore, Tenant
from tenantry.controlplane.directory import ControlSnapshot
from tenantry.controlplane.factory import open_tenant_store
from tenantry.core.errors import NotFound, UsageError
from tenantry.server.workers import follow_tier_moves

pytestmark = pytest.mark.anyio


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ControlStore]:
    opened = open_tenant_store(None, tmp_path)
    yield opened
    opened.close()


def test_a_move_changes_only_the_tier_and_is_audited(store: ControlStore) -> None:
    store.create_tenant("acme", tools=["whoami"])
    tenant, event = move_tenant(store, "acme", "dedicated", actor="cli:ops")
    assert (tenant.tier, tenant.grants) == ("dedicated", {"whoami"})
    assert (event.event_type, event.tenant_id, event.actor) == ("tenant_moved", "acme", "cli:ops")
    assert event.detail == {"from": "logical", "to": "dedicated", "changed": True}
    again, repeat = move_tenant(store, "acme", "dedicated", actor="cli:ops")
    assert again.tier == "dedicated" and repeat.detail["changed"] is False


def test_a_move_to_an_unknown_tier_or_of_an_unknown_tenant_is_refused(store: ControlStore) -> None:
    store.create_tenant("acme")
    with pytest.raises(UsageError, match="logical or dedicated"):
        move_tenant(store, "acme", "premium", actor="cli:ops")
    with pytest.raises(NotFound):
        move_tenant(store, "ghost", "dedicated", actor="cli:ops")
    assert store.get_tenant("acme").tier == "logical"  # nothing changed


class RecordingInvoker:
    def __init__(self) -> None:
        self.retired: list[str] = []

    def retire(self, tenant_id: str) -> None:
        self.retired.append(tenant_id)


def _snapshot(**tiers: str) -> ControlSnapshot:
    return ControlSnapshot(
        tenants={t: Tenant(t, t, tier, "active", 0) for t, tier in tiers.items()}  # type: ignore[arg-type]
    )


async def test_a_running_server_retires_the_worker_of_a_tenant_moved_off_the_dedicated_tier() -> None:
    invoker = RecordingInvoker()
    listener = follow_tier_moves(invoker)  # type: ignore[arg-type]
    await listener(
        _snapshot(acme="dedicated", globex="dedicated", initech="logical"),
        _snapshot(acme="logical", globex="dedicated", initech="dedicated"),
    )
    assert invoker.retired == ["acme"]  # globex stays, initech starts its worker on its next call
