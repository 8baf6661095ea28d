from __future__ import annotations

from pathlib import Path

import pytest

from tenantry.core.errors import UsageError
from tenantry.core.settings import load_settings


def test_defaults() -> None:
    settings = load_settings()
    assert settings.server.port == 8750
    assert settings.server.host == "127.0.0.1"
    assert settings.server.max_body_bytes == 1024 * 1024
    assert settings.auth.default_token_ttl == 900
    assert settings.auth.max_token_lifetime == 3600


def test_toml_then_environment_then_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "tenantry.toml"
    config.write_text(
        'data_dir = "from-toml"\n[server]\nport = 9001\nhost = "0.0.0.0"\n[auth]\ndefault_token_ttl = "5m"\n'
    )
    settings = load_settings(config)
    assert (settings.data_dir, settings.server.port, settings.auth.default_token_ttl) == (Path("from-toml"), 9001, 300)
    monkeypatch.setenv("TENANTRY_SERVER__PORT", "9002")
    monkeypatch.setenv("TENANTRY_DATA_DIR", "from-env")
    settings = load_settings(config)
    assert (settings.data_dir, settings.server.port, settings.server.host) == (Path("from-env"), 9002, "0.0.0.0")
    settings = load_settings(config, data_dir=Path("from-cli"), server={"port": 9003})
    assert (settings.data_dir, settings.server.port) == (Path("from-cli"), 9003)
    assert settings.server.host == "0.0.0.0"


@pytest.mark.parametrize(
    "content",
    [
        '[server]\nport = "high"\n',
        "[server]\nunknown = 1\n",
        "not toml at all [",
        '[auth]\ndefault_token_ttl = "soon"\n',
    ],
)
def test_bad_configuration_is_one_clear_usage_error(tmp_path: Path, content: str) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(content)
    with pytest.raises(UsageError):
        load_settings(config)


def test_missing_config_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not found"):
        load_settings(tmp_path / "absent.toml")


def test_identity_providers_come_from_toml(tmp_path: Path) -> None:
    config = tmp_path / "tenantry.toml"
    config.write_text(
        """
[[identity_providers]]
name = "okta"
issuer = "https://acme.okta.example"
audience = ["api://tenantry"]
algorithms = ["RS256"]
tenant_claim = "org_id"
tenants = ["acme"]
tools_claim = "allowed_tools"

[[identity_providers]]
name = "entra"
issuer = "https://login.microsoftonline.example/tid/v2.0"
tenant_claim = "tid"
tenant_map = { "3f2a-guid" = "globex" }
scope_tools = { "crm.read" = ["query_crm"], "files.read" = ["list_files", "read_file"] }
"""
    )
    settings = load_settings(config)
    okta, entra = settings.identity_providers
    assert (okta.tenant_claim, okta.tenants, okta.algorithms) == ("org_id", ("acme",), ("RS256",))
    assert entra.tenant_map == {"3f2a-guid": "globex"}
    assert entra.scope_tools["files.read"] == ("list_files", "read_file")


@pytest.mark.parametrize(
    ("provider", "complaint"),
    [
        ({"tenants": ["acme"]}, "exactly one of tools_claim and scope_tools"),
        ({"tools_claim": "t", "scope_tools": {"s": ["whoami"]}, "tenants": ["acme"]}, "exactly one"),
        ({"tools_claim": "t"}, "tenants"),
        ({"tools_claim": "t", "tenants": ["acme"], "algorithms": ["HS256"]}, "no shared-secret"),
        ({"tools_claim": "t", "tenants": ["acme"], "algorithms": ["none"]}, "no 'none'"),
        ({"tools_claim": "t", "tenants": ["acme"], "jwks_url": "file:///etc/keys"}, "http(s) URL"),
    ],
)
def test_an_unsafe_identity_provider_is_refused(provider: dict[str, object], complaint: str) -> None:
    with pytest.raises(UsageError, match="identity_providers") as refused:
        load_settings(identity_providers=[{"name": "idp", "issuer": "https://idp.example", **provider}])
    assert complaint in refused.value.message


def test_two_providers_may_not_share_an_issuer() -> None:
    one = {"name": "a", "issuer": "https://idp.example", "tools_claim": "t", "tenants": ["acme"]}
    with pytest.raises(UsageError, match="have the same issuer"):
        load_settings(identity_providers=[one, {**one, "name": "b"}])


def test_failed_attempt_limit_must_be_a_rate() -> None:
    assert load_settings(auth={"failed_attempts": "5/second"}).auth.failed_attempts == "5/second"
    with pytest.raises(UsageError, match="failed_attempts"):
        load_settings(auth={"failed_attempts": "lots"})


def test_gateway_process_caps_come_from_toml(tmp_path: Path) -> None:
    defaults = load_settings().gateway
    assert (defaults.max_stdio_processes, defaults.max_stdio_processes_per_tenant, defaults.idle_timeout) == (
        64,
        8,
        600.0,
    )
    config = tmp_path / "tenantry.toml"
    config.write_text('[gateway]\nmax_stdio_processes = 3\nmax_stdio_processes_per_tenant = 1\nidle_timeout = "2m"\n')
    gateway = load_settings(config).gateway
    assert (gateway.max_stdio_processes, gateway.max_stdio_processes_per_tenant, gateway.idle_timeout) == (3, 1, 120)


@pytest.mark.parametrize(
    "content", ["[gateway]\nmax_stdio_processes = 0\n", "[gateway]\nmax_stdio_processes_per_tenant = -1\n"]
)
def test_a_gateway_process_cap_must_be_positive(tmp_path: Path, content: str) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(content)
    with pytest.raises(UsageError):
        load_settings(config)
