"""Which names a tenant may be granted: what servers serve, and to whom."""

from __future__ import annotations

import pytest

import tenantry
from tenantry.core.errors import UsageError
from tenantry.demo.catalogue import DEMO_CATALOGUE
from tenantry.demo.tools import demo_app
from tenantry.policy.catalogue import Catalogue

CATALOGUE = Catalogue.of([("shared", None), ("globex_only", ["globex"]), ("pair", ["acme", "globex"])])


def test_a_name_no_catalogue_knows_is_refused_as_not_served() -> None:
    assert CATALOGUE.refusal("no_such_tool", "initech") == "not_served"


def test_a_name_registered_for_other_tenants_only_is_refused() -> None:
    assert CATALOGUE.refusal("globex_only", "acme") == "other_tenants_only"
    assert CATALOGUE.refusal("pair", "initech") == "other_tenants_only"


def test_a_name_private_to_this_tenant_can_be_granted() -> None:
    assert CATALOGUE.refusal("globex_only", "globex") is None
    assert CATALOGUE.refusal("pair", "acme") is None


def test_a_shared_name_can_be_granted_to_any_tenant() -> None:
    assert CATALOGUE.refusal("shared", "initech") is None


def test_pending_accepts_unknown_names_but_not_other_tenants_private_ones() -> None:
    assert CATALOGUE.refusal("will_appear_later", "acme", pending=True) is None
    assert CATALOGUE.refusal("globex_only", "acme", pending=True) == "other_tenants_only"


def test_merging_makes_a_name_available_where_any_part_does() -> None:
    other = Catalogue.of([("globex_only", ["acme"]), ("pair", None), ("new_tool", ["initech"])])
    merged = CATALOGUE.merged(other)
    assert merged.serves("globex_only", "acme") and merged.serves("globex_only", "globex")
    assert not merged.serves("globex_only", "initech")
    assert merged.serves("pair", "initech")
    assert merged.servable_to("initech") == ["new_tool", "pair", "shared"]
    assert CATALOGUE.refusal("new_tool", "initech") == "not_served"  # merging returns a new catalogue


def test_the_storage_form_round_trips() -> None:
    assert Catalogue.from_dict(CATALOGUE.to_dict()) == CATALOGUE


@pytest.mark.parametrize(
    "data",
    [
        None,
        [],
        {"format": 2, "capabilities": {}},
        {"format": 1},
        {"format": 1, "capabilities": {"a": "globex"}},
        {"format": 1, "capabilities": {"a": [1]}},
    ],
)
def test_anything_but_the_storage_form_is_refused(data: object) -> None:
    with pytest.raises(UsageError):
        Catalogue.from_dict(data)


def test_an_apps_catalogue_holds_tools_resources_and_prompts_with_their_tenants() -> None:
    app = tenantry.App("cat")

    @app.tool()
    async def shared_tool() -> str:
        return ""

    @app.tool(tenants=["globex"])
    async def globex_tool() -> str:
        return ""

    @app.resource("test://doc", tenants=["acme"])
    async def acme_doc() -> str:
        return ""

    @app.prompt()
    async def greet() -> str:
        return ""

    assert app.catalogue() == Catalogue.of(
        [("shared_tool", None), ("globex_tool", ["globex"]), ("acme_doc", ["acme"]), ("greet", None)]
    )


def test_the_demo_catalogue_the_cli_consults_is_what_the_demo_app_registers() -> None:
    assert demo_app.catalogue() == DEMO_CATALOGUE


def test_the_demo_catalogue_keeps_globex_forecast_private_to_globex() -> None:
    catalogue = DEMO_CATALOGUE
    assert catalogue.refusal("globex_forecast", "acme") == "other_tenants_only"
    assert catalogue.refusal("globex_forecast", "globex") is None
    assert catalogue.refusal("whoami", "initech") is None
