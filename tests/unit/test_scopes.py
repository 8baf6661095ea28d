"""The scope vocabulary behind RFC 9728 ``scopes_supported``, the 401 ``scope`` and step-up."""

from __future__ import annotations

from tenantry.auth.scopes import ScopeMap
from tenantry.core.settings import IdentityProviderSettings

BUILTIN = "https://tenantry.test"


def provider(name: str, **kwargs: object) -> IdentityProviderSettings:
    return IdentityProviderSettings.model_validate(
        {"name": name, "issuer": f"https://{name}.test", "tenants": ["acme"], **kwargs}
    )


ENTRA = provider("entra", scope_tools={"crm.read": ["query_crm"], "files.read": ["read_file"], "gone": ["old_tool"]})
OKTA = provider("okta", tools_claim="allowed_tools")
REGISTERED = {"query_crm", "read_file", "whoami"}


def test_authorization_servers_list_the_providers_first_then_the_built_in_issuer() -> None:
    servers = ScopeMap(BUILTIN, [OKTA, ENTRA]).authorization_servers
    assert servers == ["https://okta.test", "https://entra.test", BUILTIN]
    assert ScopeMap(BUILTIN, []).authorization_servers == [BUILTIN]
    machines = provider("machines", tools_claim="allowed_tools", advertise=False)
    assert ScopeMap(BUILTIN, [machines, ENTRA]).authorization_servers == ["https://entra.test", BUILTIN]


def test_scopes_supported_are_the_providers_scopes_that_reach_a_registered_tool() -> None:
    assert ScopeMap(BUILTIN, [OKTA, ENTRA]).supported(REGISTERED) == ["crm.read", "files.read"]
    assert ScopeMap(BUILTIN, [OKTA]).supported(REGISTERED) == []


def test_a_401_names_scopes_only_when_one_provider_maps_scopes() -> None:
    assert ScopeMap(BUILTIN, [OKTA, ENTRA]).challenge_scope(REGISTERED) == "crm.read files.read"
    other = provider("keycloak", scope_tools={"mcp": ["whoami"]})
    assert ScopeMap(BUILTIN, [ENTRA, other]).challenge_scope(REGISTERED) is None
    assert ScopeMap(BUILTIN, [OKTA]).challenge_scope(REGISTERED) is None


def test_step_up_scopes_exist_only_at_a_scope_mapping_provider() -> None:
    scopes = ScopeMap(BUILTIN, [OKTA, ENTRA])
    assert scopes.scopes_for_tool("https://entra.test", "query_crm") == ("crm.read",)
    assert scopes.scopes_for_tool("https://entra.test", "whoami") == ()
    assert scopes.scopes_for_tool("https://okta.test", "query_crm") == ()  # tools from a claim
    assert scopes.scopes_for_tool(BUILTIN, "query_crm") == ()  # its scope only narrows a key's grant
    assert scopes.scopes_for_tool("https://unknown.test", "query_crm") == ()
