"""The framework API: schemas from signatures, resource markers, tenant-only tools."""

from __future__ import annotations

from typing import Annotated

import pytest
from pydantic import Field

import tenantry
from tenantry.core.errors import UsageError


def test_schema_comes_from_the_signature_without_the_context() -> None:
    app = tenantry.App()

    @app.tool()
    async def query_crm(
        ctx: tenantry.ToolContext, filter: str = "", limit: Annotated[int, Field(le=100)] = 20
    ) -> list[dict]:
        """Find customers."""
        return []

    tool = app.tools["query_crm"]
    assert tool.context_param == "ctx"
    assert tool.description == "Find customers."
    assert set(tool.input_schema["properties"]) == {"filter", "limit"}
    assert tool.input_schema["additionalProperties"] is False
    assert tool.input_schema["properties"]["limit"]["maximum"] == 100


def test_resource_path_parameters_are_marked_for_pre_checks() -> None:
    app = tenantry.App()

    @app.tool()
    async def read(ctx: tenantry.ToolContext, path: tenantry.ResourcePath, note: str = "") -> str:
        return ""

    assert set(app.tools["read"].resource_arguments) == {"path"}


def test_tenant_specific_tools_exist_only_for_their_tenants() -> None:
    app = tenantry.App()

    @app.tool()
    async def shared() -> str:
        return ""

    @app.tool(tenants=["globex"])
    async def globex_only() -> str:
        return ""

    assert app.registered_for("globex") == {"shared", "globex_only"}
    assert app.registered_for("acme") == {"shared"}


@pytest.mark.parametrize("bad", ["has space", "", "x" * 129, "semi;colon"])
def test_invalid_tool_names_are_refused(bad: str) -> None:
    app = tenantry.App()
    with pytest.raises(UsageError):
        app.tool(bad)(_noop)


def test_duplicate_names_are_refused_across_kinds() -> None:
    app = tenantry.App()
    app.tool("dup")(_noop)
    with pytest.raises(UsageError):
        app.prompt("dup")(_noop)


def test_sync_functions_are_refused() -> None:
    app = tenantry.App()

    def sync_tool() -> str:
        return ""

    with pytest.raises(UsageError, match="async"):
        app.tool()(sync_tool)


def test_tenants_must_be_a_list_of_valid_ids() -> None:
    app = tenantry.App()
    with pytest.raises(UsageError):
        app.tool(tenants="globex")(_noop)
    with pytest.raises(UsageError):
        app.tool(tenants=["Not Valid"])(_noop)


async def _noop() -> str:
    return ""
