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
