"""Per-tenant views (gateway mode): what an upstream lists on one tenant's session is that tenant's
alone, under the same names another tenant's view may use with other content."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mcp_types as types
import pytest

import tenantry
from tenantry.controlplane.directory import TenantDirectory
from tenantry.controlplane.sqlite import SqliteTenantStore
from tenantry.core.errors import UsageError
from tenantry.framework.app import TenantView
from tenantry.framework.dispatcher import Dispatcher
from tenantry.gateway.items import upstream_resource_definition
from tenantry.gateway.naming import Exposed, ExposedItem
from tenantry.gateway.tools import upstream_tool_definition
from tests.unit.test_dispatcher import RecordingSink, caller, data_scopes


def view(tenant_id: str, description: str, *, tool: str = "notes__count", uri: str | None = None) -> TenantView:
    own = types.Tool(name=tool.split("__", 1)[1], description=description, input_schema={"type": "object"})
    tools = {tool: upstream_tool_definition("notes", Exposed(tool, own.name, own), frozenset({tenant_id}))}
    resources: dict[str, Any] = {}
    if uri is not None:
        item = types.Resource(name="readme", uri=uri, description=description)
        exposed = ExposedItem("resource", "notes__readme", "readme", item, f"upstream://notes/{uri}")
        resources["notes__readme"] = upstream_resource_definition("notes", exposed, frozenset({tenant_id}))
    return TenantView(tools=tools, resources=resources)


def shared_app() -> tenantry.App:
    app = tenantry.App()

    @app.tool()
    async def whoami(ctx: tenantry.ToolContext) -> str:
        return ctx.tenant_id

    return app


def test_a_view_exists_for_its_tenant_only() -> None:
    app = shared_app()
    app.set_tenant_view("notes", "acme", view("acme", "acme-canary: 3 notes"))
    assert app.tools_for("acme")["notes__count"].description == "acme-canary: 3 notes"
    assert "notes__count" in app.registered_for("acme")
    assert "notes__count" not in app.tools_for("globex")  # the attack: globex asks for acme's listing
    assert "notes__count" not in app.registered_for("globex")
    assert "whoami" in app.tools_for("globex") and "whoami" in app.tools_for("acme")  # the positive control


def test_two_tenants_see_their_own_content_under_one_name() -> None:
    app = shared_app()
    app.set_tenant_view("notes", "acme", view("acme", "acme-canary", uri="notes://README.md"))
    app.set_tenant_view("notes", "globex", view("globex", "globex-canary", uri="notes://README.md"))
    assert app.tools_for("acme")["notes__count"].description == "acme-canary"
    assert app.tools_for("globex")["notes__count"].description == "globex-canary"
    assert app.resources_for("globex")["notes__readme"].description == "globex-canary"
    assert "notes__count" not in app.tools  # nothing of a per-tenant upstream is shared


def test_a_view_may_not_take_a_shared_name_nor_a_shared_name_a_viewed_one() -> None:
    app = shared_app()
    app.set_tenant_view("notes", "acme", view("acme", "x"))

    with pytest.raises(UsageError):

        @app.tool(name="notes__count")
        async def notes__count() -> int:
            return 0

    with pytest.raises(UsageError):
        app.replace_upstream("other", [view("acme", "y").tools["notes__count"]])
    assert app.tools_for("acme")["notes__count"].description == "x"


def test_a_viewed_name_that_is_taken_for_everyone_is_refused() -> None:
    app = shared_app()
    clash = TenantView(tools={"whoami": view("acme", "x").tools["notes__count"]})
    with pytest.raises(UsageError):
        app.set_tenant_view("notes", "acme", clash)
    assert app.tools_for("acme")["whoami"].upstream is None


def test_another_upstreams_view_of_the_same_tenant_keeps_its_names_and_uris() -> None:
    app = shared_app()
    app.set_tenant_view("notes", "acme", view("acme", "first", uri="notes://a"))
    with pytest.raises(UsageError):
        app.set_tenant_view("files", "acme", view("acme", "second"))
    app.set_tenant_view("files", "globex", view("globex", "globex's own"))  # another tenant: free
    assert app.tools_for("acme")["notes__count"].description == "first"


def test_dropping_views_keeps_those_asked_for_and_tells_listeners() -> None:
    app = shared_app()
    changes: list[frozenset[str] | None] = []
    app.add_change_listener(changes.append)
    app.set_tenant_view("notes", "acme", view("acme", "a"))
    app.set_tenant_view("notes", "globex", view("globex", "g"))
    app.drop_tenant_views("notes", keep=lambda tenant_id: tenant_id == "globex")
    assert "notes__count" not in app.tools_for("acme")
    assert app.tools_for("globex")["notes__count"].description == "g"
    assert changes == [{"acme"}, {"globex"}, {"acme"}]  # only the tenant whose view changed is told
    app.set_tenant_view("notes", "globex", None)
    assert "notes__count" not in app.tools_for("globex")


def test_the_dispatcher_lists_each_tenant_its_own_view_after_the_other_was_listed(tmp_path: Path) -> None:
    """The tool models the dispatcher keeps between listings are per view: listing acme's first
    must not make globex's listing of the same name show acme's description."""
    store = SqliteTenantStore(tmp_path / "control.sqlite3")
    store.create_tenant("acme", tools=["notes__count"])
    store.create_tenant("globex", tools=["notes__count"])
    directory = TenantDirectory(store)
    directory.refresh(force=True)
    app = shared_app()
    dispatcher = Dispatcher(app, directory, data_scopes(tmp_path, store), RecordingSink())
    app.add_change_listener(dispatcher.catalogue_changed)
    app.set_tenant_view("notes", "acme", view("acme", "acme-canary"))
    app.set_tenant_view("notes", "globex", view("globex", "globex-canary"))
    for tenant_id in ("acme", "globex", "acme"):
        listed = dispatcher.list_tools(caller(tenant_id, {"notes__count"}))
        assert [(t.name, t.description) for t in listed] == [("notes__count", f"{tenant_id}-canary")]


def test_a_tenants_view_changing_is_told_as_that_tenants_change_only() -> None:
    """Listeners (which tell sessions) hear a view change as the one tenant's; a registration for
    everyone (the positive control) as everyone's."""
    app = shared_app()
    heard: list[frozenset[str] | None] = []
    app.add_change_listener(heard.append)
    app.set_tenant_view("notes", "acme", view("acme", "a"))
    app.set_tenant_view("notes", "globex", view("globex", "g"))
    app.drop_tenant_views("notes", keep=lambda tenant_id: tenant_id == "globex")
    assert heard == [frozenset({"acme"}), frozenset({"globex"}), frozenset({"acme"})]
    own = types.Tool(name="stat", input_schema={"type": "object"})
    app.replace_upstream("files", [upstream_tool_definition("files", Exposed("files__stat", "stat", own), None)])
    assert heard[-1] is None
