"""Configuration: one TOML file, overridden by ``TENANTRY_*`` environment variables.

Built once at the entry point (CLI) and passed down; nothing else reads the environment.
Precedence, strongest first: explicit overrides (CLI flags), environment, TOML file, defaults.
Nested keys use ``__`` in the environment: ``TENANTRY_SERVER__PORT=9000``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from tenantry.core.durations import parse_duration
from tenantry.core.errors import UsageError

__all__ = [
    "Settings",
    "ServerSettings",
    "AuthSettings",
    "ToolSettings",
    "ControlPlaneSettings",
    "AuditSettings",
    "AlertSettings",
    "MetricsSettings",
    "LoggingSettings",
    "load_settings",
    "DEFAULT_PORT",
]

DEFAULT_PORT = 8750
_MIB = 1024 * 1024


def _seconds(value: Any) -> Any:
    """Durations accept plain seconds (``30``, ``"30"``) or ``s``/``m``/``h`` strings (``"15m"``)."""
    if isinstance(value, str):
        return int(value) if value.strip().isdigit() else parse_duration(value)
    return value


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=DEFAULT_PORT, ge=0, le=65535)
    response_mode: Literal["json", "sse"] = "json"
    """``json`` answers each POST with one JSON body (cheapest); ``sse`` streams, which lets tools
    send progress and log notifications during a call."""
    max_body_bytes: int = Field(default=_MIB, gt=0)
    max_json_depth: int = Field(default=64, ge=4, le=512)
    session_idle_timeout: int = Field(default=1800, gt=0)
    max_sessions: int = Field(default=10_000, gt=0)
    allowed_origins: tuple[str, ...] = ()
    """Browser origins allowed besides this server's own (``scheme://host[:port]``; ``:*`` for any port)."""
    allowed_hosts: tuple[str, ...] = ()
    """Host header values allowed besides the bound address, localhost and the public URL's host."""

    _secs = field_validator("session_idle_timeout", mode="before")(_seconds)


class AuthSettings(_Section):
    signing_alg: Literal["EdDSA", "ES256"] = "EdDSA"
    default_token_ttl: int = Field(default=15 * 60, gt=0)
    max_token_lifetime: int = Field(default=60 * 60, gt=0)
    clock_leeway: int = Field(default=30, ge=0, le=300)
    max_token_bytes: int = Field(default=8192, ge=1024)

    _secs = field_validator("default_token_ttl", "max_token_lifetime", "clock_leeway", mode="before")(_seconds)


class ToolSettings(_Section):
    timeout: int = Field(default=30, gt=0)
    """Seconds a tool call may run before it is cancelled."""
    max_file_bytes: int = Field(default=10 * _MIB, gt=0)
    sql_row_limit: int = Field(default=10_000, gt=0)

    _secs = field_validator("timeout", mode="before")(_seconds)


class ControlPlaneSettings(_Section):
    url: str | None = None
    """Where tenants and grants live: ``sqlite:///PATH`` (default ``<data_dir>/control.sqlite3``)
    or ``postgresql://user@host/db`` shared by every replica."""


class AuditSettings(_Section):
    url: str | None = None
    """Audit store: ``sqlite:///PATH`` (default ``<data_dir>/audit.sqlite3``) or ``postgresql://``
    as the application role, which may only INSERT and SELECT records."""
    admin_url: str | None = None
    """PostgreSQL only: the owner role's URL, used by ``tenantry audit purge`` and ``tenantry db init``."""
    checkpoint_interval: int = Field(default=60, gt=0)
    """Seconds between signed checkpoints of the stream heads that moved."""
    retention: int = Field(default=365 * 86400, ge=365 * 86400)
    """Records younger than this are never purged (at least 12 months)."""
    busy_timeout: float = Field(default=2.0, gt=0)
    """Seconds a write may wait for the store before the call fails closed."""

    _secs = field_validator("checkpoint_interval", "retention", mode="before")(_seconds)


class AlertSettings(_Section):
    webhook_url: str | None = None
    """POST each anomaly alert here (JSON, signed with ``webhook_secret``)."""
    webhook_secret: SecretStr | None = None
    denial_burst: int = Field(default=10, gt=0)
    denial_window: int = Field(default=60, gt=0)
    rate_factor: float = Field(default=5.0, gt=1)
    rate_floor: int = Field(default=60, gt=0)
    cooldown: int = Field(default=300, ge=0)

    _secs = field_validator("denial_window", "cooldown", mode="before")(_seconds)


class MetricsSettings(_Section):
    token: SecretStr | None = None
    """When set, ``/metrics`` requires ``Authorization: Bearer <token>``."""
    max_tenant_labels: int = Field(default=100, gt=0)
    """Tenants beyond this many share the label ``_other`` (bounded cardinality)."""


class LoggingSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["json", "text"] = "json"


class Settings(BaseSettings):
    """Every setting Tenantry reads. Frozen: build a new one to change it."""

    model_config = SettingsConfigDict(
        env_prefix="TENANTRY_",
        env_nested_delimiter="__",
        frozen=True,
        extra="forbid",
    )

    data_dir: Path = Path("tenantry-data")
    public_url: str | None = None
    """Base URL clients use to reach this deployment (``https://mcp.example.com``). Tokens are
    issued for ``<public_url>/mcp``. Defaults to the bound address, recorded in the data dir."""
    server: ServerSettings = ServerSettings()
    auth: AuthSettings = AuthSettings()
    tools: ToolSettings = ToolSettings()
    controlplane: ControlPlaneSettings = ControlPlaneSettings()
    audit: AuditSettings = AuditSettings()
    alerts: AlertSettings = AlertSettings()
    metrics: MetricsSettings = MetricsSettings()
    logging: LoggingSettings = LoggingSettings()

    @field_validator("public_url")
    @classmethod
    def _check_public_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.rstrip("/")
        if not value.startswith(("http://", "https://")) or "?" in value or "#" in value:
            raise ValueError("public_url must be an http(s) base URL without query or fragment")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = _CONFIG_FILE.get("path")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)


# pydantic-settings picks sources per class; the TOML path is handed over through this slot
# only for the duration of one ``load_settings`` call.
_CONFIG_FILE: dict[str, Path | None] = {"path": None}


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings from defaults, the TOML file, the environment and ``overrides``.

    Overrides whose value is ``None`` are ignored, so CLI options can be passed straight through.
    Nested overrides are dicts (``server={"port": 9000}``).

    :raises UsageError: on a missing or invalid config file or an invalid value, with a one-line reason.
    """
    if config_file is not None and not config_file.is_file():
        raise UsageError(f"config file not found: {config_file}")
    clean = {key: value for key, value in overrides.items() if value is not None}
    _CONFIG_FILE["path"] = config_file
    try:
        return Settings(**clean)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise UsageError(f"invalid setting {where}: {first['msg']}") from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read config file {config_file}: {exc}") from None
    finally:
        _CONFIG_FILE["path"] = None
