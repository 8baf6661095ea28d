"""The demo tools' names and whom each is registered for, without importing the tools themselves
(and with them the MCP SDK): the CLI consults this on every grant. A test pins it to ``demo_app``."""

from __future__ import annotations

from tenantry.policy.catalogue import Catalogue

__all__ = ["SHARED_TOOLS", "GLOBEX_TOOLS", "DEMO_CATALOGUE", "ACME_GRANTS", "GLOBEX_GRANTS", "DEMO_TENANTS"]

SHARED_TOOLS = ("whoami", "query_crm", "search_docs", "list_files", "read_file", "write_file", "send_email")
GLOBEX_TOOLS = ("globex_forecast",)
ACME_GRANTS = SHARED_TOOLS
GLOBEX_GRANTS = ("whoami", "query_crm", "list_files", "read_file", "globex_forecast")
DEMO_TENANTS = {
    "acme": ("Acme Corporation", ACME_GRANTS),
    "globex": ("Globex Corporation", GLOBEX_GRANTS),
}

DEMO_CATALOGUE = Catalogue.of(
    [*((name, None) for name in SHARED_TOOLS), *((name, ["globex"]) for name in GLOBEX_TOOLS)]
)
