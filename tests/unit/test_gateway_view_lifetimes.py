"""A per-tenant upstream's view is kept in the name of a tenant that still exists (and is not
halted) only: a listing that ends after its tenant was deleted leaves nothing behind for a later
tenant of the same id. The upstream is a real process (``tests/support/notes_upstream.py``)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

from tenantry.core.errors import NotFound
from tenantry.core.upstreams import UpstreamSpec
from tenantry.framework.app import App
from tenantry.gateway.gateway import Gateway

pytestmark = pytest.mark.anyio

NOTES = Path(__file__).parent.parent / "support" / "notes_upstream.py"


@dataclass(frozen=True)
class Tenant:
    id: str
    grants: frozenset[str] = frozenset({"notes__count"})
    tier: Literal["logical", "dedicated"] = "logical"


async def no_secret(tenant_id: str, name: str) -> str:
    raise NotFound(name)


async def test_a_view_listed_for_a_tenant_that_is_gone_is_not_kept(tmp_path: Path) -> None:
    app = App("views")
    existing = ["acme", "globex"]
    spec = UpstreamSpec(
        name="notes", transport="stdio", command=(sys.executable, str(NOTES), "{tenant_dir}"), call_timeout=20
    )
    gateway = Gateway(app, data_dir=tmp_path, read_secret=no_secret, tenants=lambda: existing)
    async with gateway.running():
        await gateway.check(spec)  # listed through acme
        existing.remove("globex")  # globex is deleted while (here: before) its listing ends
        await gateway.load_views(Tenant("globex"))
        assert app.tenant_view("notes", "globex") is None
        assert "notes__count" not in app.tools_for("globex")
        existing.append("initech")  # the positive control: a tenant that exists gets its view
        await gateway.load_views(Tenant("initech"))
        assert "notes__count" in app.tools_for("initech")


async def test_views_past_the_memory_budget_are_dropped_oldest_first_and_listed_again(tmp_path: Path) -> None:
    app = App("views")
    spec = UpstreamSpec(
        name="notes", transport="stdio", command=(sys.executable, str(NOTES), "{tenant_dir}"), call_timeout=20
    )
    tenants = ["acme", "globex", "initech"]
    gateway = Gateway(app, data_dir=tmp_path, read_secret=no_secret, tenants=lambda: tenants, max_view_items=4)
    async with gateway.running():
        await gateway.check(spec)  # acme's view: the two tools
        await gateway.load_views(Tenant("globex"))
        assert "notes__count" in app.tools_for("acme") and "notes__count" in app.tools_for("globex")
        await gateway.load_views(Tenant("initech"))  # six items over a budget of four: acme's goes
        assert "notes__count" not in app.tools_for("acme")
        assert "notes__count" in app.tools_for("globex") and "notes__count" in app.tools_for("initech")
        assert not gateway.views_current(Tenant("acme"))  # its next request lists it again
        await gateway.load_views(Tenant("acme"))
        assert "notes__count" in app.tools_for("acme")
        assert "notes__count" not in app.tools_for("globex")  # now the least recently listed
