"""Configuration: one TOML file, overridden by ``TENANTRY_*`` environment variables.

Built once at the entry point (CLI) and passed down; nothing else reads the environment.
Precedence, strongest first: explicit overrides (CLI flags), environment, TOML file, defaults.
Nested keys use ``__`` in the environment: ``TENANTRY_SERVER__PORT=9000``.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from tenantry.core.durations import parse_duration
from tenantry.core.errors import UsageError
from tenantry.core.limits import TenantLimits

__all__ = [
    "Settings",
    "ServerSettings",
    "AuthSettings",
    "ToolSettings",
    "LimitSettings",
    "ControlPlaneSettings",
    "SqlSettings",
    "VectorSettings",
    "FileSettings",
    "SecretSettings",
    "AuditSettings",
    "AlertSettings",
    "MetricsSettings",
    "LoggingSettings",
    "IdentityProviderSettings",
    "ResponseSettings",
    "ResponseAction",
    "WorkerSettings",
    "GatewaySettings",
    "ASYMMETRIC_ALGORITHMS",
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


def _fractional_seconds(value: Any) -> Any:
    """Like :func:`_seconds`, also accepting fractions (``"2.5"``)."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return parse_duration(value)
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
    header_timeout: float = Field(default=10.0, gt=0, le=300)
    """Seconds a client has to send a request's headers, from the connection opening or the
    request's first byte; then ``408`` and the connection is closed (slow-header clients)."""
    body_timeout: float = Field(default=30.0, gt=0, le=3600)
    """Seconds a client has to send the whole body once the headers are in; then ``408``."""
    keep_alive_timeout: int = Field(default=5, gt=0, le=300)
    """Seconds an idle kept-alive connection stays open between requests."""
    max_connections_per_address: int = Field(default=64, gt=0)
    """Connections one client address (an IPv6 ``/64``) may hold open at once; more get ``503``.
    Trusted proxies are exempt."""
    debug_slow_callbacks: float | None = Field(default=None, gt=0)
    """Seconds (``TENANTRY_SERVER__DEBUG_SLOW_CALLBACKS``): run the server's event loop in asyncio
    debug mode and log a warning (logger ``asyncio``, ``Executing ... took N seconds``) for every
    callback that holds the loop longer. For tests and diagnosis: debug mode costs throughput."""
    allowed_origins: tuple[str, ...] = ()
    """Browser origins allowed besides this server's own (``scheme://host[:port]``; ``:*`` for any port)."""
    allowed_hosts: tuple[str, ...] = ()
    """Host header values allowed besides the bound address, localhost and the public URL's host."""
    trusted_proxies: tuple[str, ...] = ()
    """Addresses or networks (``10.0.0.5``, ``10.1.0.0/16``) of reverse proxies whose
    ``X-Forwarded-For``/``X-Forwarded-Proto`` are believed. Default: none, so the client address
    is always the socket's peer and a client cannot forge the audited ``ip_address``."""

    _secs = field_validator("session_idle_timeout", "keep_alive_timeout", mode="before")(_seconds)
    _fractional = field_validator("header_timeout", "body_timeout", mode="before")(_fractional_seconds)

    @field_validator("trusted_proxies")
    @classmethod
    def _check_proxies(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or network (no host names, no '*')") from None
        return value


class AuthSettings(_Section):
    signing_alg: Literal["EdDSA", "ES256"] = "EdDSA"
    default_token_ttl: int = Field(default=15 * 60, gt=0)
    max_token_lifetime: int = Field(default=60 * 60, gt=0)
    clock_leeway: int = Field(default=30, ge=0, le=300)
    """Seconds of clock skew tolerated for ``nbf``/``iat``, and for ``exp`` of external identity
    providers' tokens. Tokens of Tenantry's own issuer expire exactly at ``exp``."""
    max_token_bytes: int = Field(default=8192, ge=1024)
    failed_attempts: str = "10/minute"
    """Failed API-key attempts (at ``/oauth/token`` or as a bearer credential) allowed per client
    address before its further attempts get ``429`` until the window passes (``N/second|minute|hour``)."""

    _secs = field_validator("default_token_ttl", "max_token_lifetime", "clock_leeway", mode="before")(_seconds)

    @field_validator("failed_attempts")
    @classmethod
    def _check_limit(cls, value: str) -> str:
        if not _RATE.fullmatch(value.strip()):
            raise ValueError("must look like 10/minute (per second, minute or hour)")
        return value.strip()


_RATE = re.compile(r"[1-9][0-9]{0,6}\s*/\s*(second|minute|hour)")
ASYMMETRIC_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")


class IdentityProviderSettings(_Section):
    """An external OpenID Connect / OAuth 2 identity provider whose access tokens Tenantry accepts.

    Exactly one of ``tools_claim`` (a claim listing tool names) and ``scope_tools`` (scopes
    mapped to tools) says what a token may call. The provider may only speak for the tenants
    in ``tenants`` (or ``["*"]`` for any) or, with ``tenant_map``, for the tenants its claim
    values map to: a provider run by one customer can never assert another customer's tenant.
    """

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    issuer: str
    jwks_url: str | None = None
    """The provider's JWKS; when absent it is found through ``discovery_url``."""
    discovery_url: str | None = None
    """Defaults to ``<issuer>/.well-known/openid-configuration``."""
    audience: tuple[str, ...] = ()
    """Accepted ``aud`` values; default: this server's resource URL (``<public_url>/mcp``)."""
    algorithms: tuple[str, ...] = ("RS256", "ES256", "EdDSA", "PS256")
    tenant_claim: str = "tenant_id"
    tenant_map: dict[str, str] = Field(default_factory=dict)
    """Claim value -> tenant id (e.g. an Entra ``tid`` GUID -> ``acme``); unmapped values are refused."""
    tenants: tuple[str, ...] = ()
    subject_claim: str = "sub"
    tools_claim: str | None = None
    scope_tools: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    prefix_claim: str | None = None
    """Optional claim narrowing file and object access to a resource prefix."""
    max_token_lifetime: int = Field(default=60 * 60, gt=0)
    advertise: bool = True
    """List this provider in the RFC 9728 ``authorization_servers`` (clients log in at the first
    one listed); ``false`` for a provider that only issues machine tokens."""
    identity_assertions: bool = False
    """Accept this provider's identity assertions (ID-JAG, ``typ: oauth-id-jag+jwt``) at
    ``/oauth/token`` with the RFC 7523 JWT-bearer grant (enterprise-managed authorization)."""
    max_assertion_lifetime: int = Field(default=5 * 60, gt=0, le=60 * 60)
    """Longest accepted ``exp - iat`` of an identity assertion (they are single-use and short)."""
    jwks_cache_ttl: int = Field(default=3600, gt=0)
    jwks_min_refresh_interval: float = Field(default=30.0, ge=0)
    """Seconds between refreshes caused by unknown key ids (a flood cannot hammer the provider)."""
    http_timeout: float = Field(default=5.0, gt=0, le=60)

    _secs = field_validator("max_token_lifetime", "max_assertion_lifetime", "jwks_cache_ttl", mode="before")(_seconds)

    @field_validator("issuer", "jwks_url", "discovery_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://")):
            raise ValueError("must be an http(s) URL")
        return value

    @field_validator("algorithms")
    @classmethod
    def _check_algorithms(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [alg for alg in value if alg not in ASYMMETRIC_ALGORITHMS]
        if unknown or not value:
            raise ValueError(f"allowed: {', '.join(ASYMMETRIC_ALGORITHMS)} (no 'none', no shared-secret HMAC)")
        return value

    @model_validator(mode="after")
    def _check_mapping(self) -> IdentityProviderSettings:
        if (self.tools_claim is None) == (not self.scope_tools):
            raise ValueError("set exactly one of tools_claim and scope_tools")
        if not self.tenants and not self.tenant_map:
            raise ValueError('set tenants (a list, or ["*"] for any) or tenant_map')
        return self


class ToolSettings(_Section):
    timeout: int = Field(default=30, gt=0)
    """Seconds a tool call may run before it is cancelled."""
    max_file_bytes: int = Field(default=10 * _MIB, gt=0)
    sql_row_limit: int = Field(default=10_000, gt=0)
    max_result_bytes: int = Field(default=4 * _MIB, gt=0)
    """The largest result (as JSON) a tool call, resource read or prompt may return."""

    _secs = field_validator("timeout", mode="before")(_seconds)


class LimitSettings(_Section):
    """Per-tenant limits every tenant gets unless ``tenantry tenant limits`` overrides them.

    The defaults of ``tool_timeout`` and ``session_idle`` are ``[tools] timeout`` and
    ``[server] session_idle_timeout``. Rates and quotas are counted in ``storage``: in memory
    (one server) or Redis (``async+redis://host:6379``) so that replicas share one budget.
    """

    calls_per_second: float = Field(default=50.0, gt=0, le=1_000_000)
    burst: int = Field(default=100, gt=0, le=10_000_000)
    concurrent_calls: int = Field(default=16, gt=0, le=100_000)
    daily_calls: int = Field(default=1_000_000, gt=0, le=10**12)
    sessions: int = Field(default=100, gt=0, le=1_000_000)
    file_bytes: int = Field(default=1024 * _MIB, gt=0)
    file_count: int = Field(default=100_000, gt=0)
    sql_statement_timeout: float = Field(default=10.0, gt=0)
    sql_bytes: int = Field(default=1024 * _MIB, gt=0, le=10**15)
    """Bytes a tenant's embedded SQLite database may grow to."""
    vector_bytes: int = Field(default=1024 * _MIB, gt=0, le=10**15)
    """Bytes a tenant's embedded (sqlite-vec) vector store may grow to."""
    blocking_threads: int = Field(default=4, gt=0, le=64)
    requests_per_second: int = Field(default=200, gt=0, le=10_000_000)
    """Requests of any kind on ``/mcp`` a tenant may make within one second (per server process)."""
    blocking_threads_total: int = Field(default=64, gt=0, le=1024)
    """Worker threads all tenants' blocking work may occupy together (not per tenant); the
    server's own work (control-plane polls, audit checkpoints) has 8 more that tenants never get."""
    storage: str = "memory://"
    """``memory://`` or ``async+redis://host:port[/db]`` (the ``limits`` library's storage URIs)."""
    key_prefix: str = Field(default="tenantry", pattern=r"^[A-Za-z0-9_:.-]{1,64}$")
    """Prefix of every key in Redis: deployments sharing one Redis need different prefixes."""
    on_storage_error: Literal["fail_closed", "allow"] = "fail_closed"
    """What happens to calls while the limit storage (Redis) is unreachable."""
    refusal_hold: float = Field(default=0.5, ge=0, le=10)
    """Seconds a refusal by these limits is held before it is answered (never more than its own
    ``retry_after``; 0 answers at once): a client retrying in a tight loop then costs the server
    a few requests a second per connection instead of hundreds."""
    refusals_held_per_tenant: int = Field(default=64, gt=0, le=100_000)
    refusals_held_total: int = Field(default=1024, gt=0, le=1_000_000)
    """Refusals held at once, per tenant and in all; past these they are answered at once."""
    fair_share_capacity: int = Field(default=4, ge=0, le=100_000)
    """Requests in progress at once (all tenants) before a tenant over its fair share of them
    (this divided by the tenants active in the last second) waits its turn; a tenant alone is
    never held back (``0``: no fair shares)."""
    fair_share_quantum: float = Field(default=0.05, gt=0, le=10)
    """Seconds one request counts against its tenant's share at most (a slow call stops
    counting after it)."""

    _secs = field_validator("sql_statement_timeout", "refusal_hold", "fair_share_quantum", mode="before")(_seconds)

    @field_validator("storage")
    @classmethod
    def _check_storage(cls, value: str) -> str:
        if not value.startswith(("memory://", "async+redis://", "async+rediss://")):
            raise ValueError("must be memory:// or async+redis://host:port")
        return value


class WorkerSettings(_Section):
    """Dedicated-tier workers: one supervised OS process per dedicated tenant, running its tools.

    The resource limits are applied with ``setrlimit`` in the worker before it loads any tool
    code. ``processes`` is RLIMIT_NPROC, which Linux counts per user id (threads included), not
    per worker: it bounds a fork bomb only when it is set above what the server's user already
    runs; see docs/dedicated-tier.md.
    """

    address_space_mb: int = Field(default=4096, ge=256)
    """RLIMIT_AS: the worker's virtual address space, in MiB."""
    cpu_seconds: int = Field(default=3600, gt=0)
    """RLIMIT_CPU: CPU seconds a worker may use in its lifetime; past it the kernel kills it and
    the supervisor starts a fresh one (a runaway tool cannot spin forever)."""
    open_files: int = Field(default=256, ge=32)
    """RLIMIT_NOFILE."""
    processes: int = Field(default=4096, ge=16)
    """RLIMIT_NPROC (per user id, see above)."""
    idle_timeout: float = Field(default=300.0, gt=0)
    """A worker with no call for this many seconds is stopped (the next call starts it again)."""
    start_timeout: float = Field(default=30.0, gt=0)
    restart_backoff: float = Field(default=0.5, gt=0)
    """Seconds before a crashed worker may start again; doubled per crash in a row."""
    restart_backoff_max: float = Field(default=30.0, gt=0)
    max_frame_bytes: int = Field(default=16 * _MIB, ge=64 * 1024)
    """The largest message between the server and a worker (a larger result is refused)."""
    inherit_env: tuple[str, ...] = ("PATH", "PYTHONPATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ")
    """The only variables of the server's environment a worker gets (it also gets its tenant's
    secrets, ``HOME`` and ``TMPDIR`` in its own directory, and ``MALLOC_ARENA_MAX``)."""


class GatewaySettings(_Section):
    """Gateway mode: the upstream MCP servers' sessions and processes (see docs/gateway.md).

    A command (stdio) upstream runs one process per tenant using it; the two caps bound how many
    such processes this server runs, so many tenants (or one tenant across many upstreams) cannot
    fork the machine to death. A call that would start a process beyond either cap is refused
    with ``upstream_unavailable`` (saying which limit is reached); running processes are not
    touched. Each replica counts its own processes.
    """

    max_stdio_processes: int = Field(default=64, gt=0)
    """Command-upstream processes alive at once in this server, all tenants and upstreams together."""
    max_stdio_processes_per_tenant: int = Field(default=8, gt=0)
    """Command-upstream processes alive at once for any one tenant (over all its upstreams)."""
    idle_timeout: float = Field(default=600.0, gt=0)
    """A tenant's upstream session (its process, for a command upstream) with no call for this
    long is closed; its next call starts it again."""
    health_interval: float = Field(default=15.0, gt=0)
    """Live upstream sessions are pinged this often (and idle ones closed)."""
    command_sandbox: Literal["required", "auto", "off"] = "auto"
    """Each command upstream runs in Linux namespaces of its own: it sees only its own processes,
    and of the data dir only its working directory and its tenant's files (docs/gateway.md).
    ``required``: an upstream is not started where the kernel refuses them; ``auto``: it then
    runs without them (saying so on its stderr); ``off``: never."""

    _secs = field_validator("idle_timeout", "health_interval", mode="before")(_fractional_seconds)


class ControlPlaneSettings(_Section):
    url: str | None = None
    """Where tenants and grants live: ``sqlite:///PATH`` (default ``<data_dir>/control.sqlite3``)
    or ``postgresql://user@host/db`` shared by every replica."""


class SqlSettings(_Section):
    """Where ``ctx.sql`` lives. No URL: one SQLite file per tenant in the data dir."""

    url: str | None = None
    """``postgresql://tenantry_app@host/db``: the application role (not the owner, no BYPASSRLS)."""
    isolation: Literal["rls", "schema"] = "rls"
    """``rls``: shared tables with row-level security; ``schema``: one schema per tenant as well."""
    schema_name: str = Field(default="tenant_data", pattern=r"^[a-z_][a-z0-9_]{0,40}$")
    """The shared schema holding tenant tables (``rls``), or the prefix of per-tenant schemas."""
    tenant_key: SecretStr | None = None
    """The key proving the tenant of a transaction to the database (base64, written by
    ``tenantry db init``); default: ``<data_dir>/keys/sql-tenant.key``."""
    pool_min: int = Field(default=1, ge=0)
    pool_max: int = Field(default=10, gt=0)
    pool_timeout: float = Field(default=5.0, gt=0)
    statement_timeout: int = Field(default=30, gt=0)
    """Seconds any one statement a tool runs may take."""

    _secs = field_validator("statement_timeout", mode="before")(_seconds)


class VectorSettings(_Section):
    """Where ``ctx.vectors`` lives."""

    backend: Literal["sqlite", "qdrant"] = "sqlite"
    """``sqlite``: one sqlite-vec database per tenant in the data dir; ``qdrant``: one shared
    collection, every point tagged and every search filtered by ``tenant_id``."""
    qdrant_url: str | None = None
    """Qdrant server URL; unset means Qdrant's local mode under ``<data_dir>/vectors/qdrant``."""
    qdrant_api_key: SecretStr | None = None
    qdrant_collection: str = Field(default="tenantry", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    embedder: str = "hashing"
    """``hashing`` (offline, no model) or ``module:object`` naming an :class:`Embedder`."""
    dimensions: int = Field(default=384, ge=8, le=4096)


class FileSettings(_Section):
    """Where ``ctx.files`` lives."""

    backend: Literal["local", "s3"] = "local"
    s3_bucket: str | None = None
    s3_endpoint_url: str | None = None
    """For S3-compatible stores (MinIO, Ceph, moto); unset means AWS."""
    s3_region: str = "us-east-1"
    s3_root: str = Field(default="tenants", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    """Every tenant's keys live under ``<s3_root>/<tenant_id>/``."""
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    """Unset: boto3's own credential chain (instance role, ``~/.aws``)."""

    @model_validator(mode="after")
    def _bucket_for_s3(self) -> FileSettings:
        if self.backend == "s3" and not self.s3_bucket:
            raise ValueError("files.backend = 's3' needs files.s3_bucket")
        return self


class SecretSettings(_Section):
    master_key: SecretStr | None = None
    """Base64 of 32 random bytes wrapping every tenant's data key (``TENANTRY_SECRETS__MASTER_KEY``);
    default: ``<data_dir>/keys/master.key``, created 0600 on first use."""


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
    start_before: Literal["effects", "tool"] = "effects"
    """When a call's start record must be durable: before the call's first effect through
    Tenantry (its data handles, its messages to the client, an upstream, a worker) and before
    its result (``effects``: the flush overlaps the tool's own computation), or before the tool
    runs at all (``tool``: for tools with effects outside Tenantry's handles)."""
    writer: Literal["thread", "process"] = "thread"
    """Where a serving process makes records durable: ``thread`` (a writer thread inside the
    server) or ``process`` (a writer process of its own: encoding and committing never compete
    with the server for its interpreter, which cuts the server's own CPU per call by about a
    fifth, but on a 2-core machine the extra process costs more wall time than it saves)."""
    group_window: float = Field(default=0.0, ge=0, le=0.01)
    """Seconds a record that must be durable may wait for others to share its commit, while
    other calls are in flight (a lone call never waits; ``0``: never wait)."""
    refused_records_per_source: str = "30/minute"
    """Records that refused requests may write per client address (or refused tenant); beyond
    it they are counted and summarised in one record per stream."""
    refused_records_total: str = "600/minute"
    """The same, for all sources together."""

    @field_validator("refused_records_per_source", "refused_records_total")
    @classmethod
    def _check_budget(cls, value: str) -> str:
        if not _RATE.fullmatch(value.strip()):
            raise ValueError("must look like 30/minute (per second, minute or hour)")
        return value.strip()

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
    """``/metrics`` always requires ``Authorization: Bearer <token>``: this token, or when unset the
    one generated at first start in ``<data_dir>/keys/metrics.token`` (0600)."""
    max_tenant_labels: int = Field(default=100, gt=0)
    """Tenants beyond this many share the label ``_other`` (bounded cardinality)."""


ResponseAction = Literal["none", "revoke_token", "halt_tenant"]


class ResponseSettings(_Section):
    """What the server does by itself when the anomaly detector flags a tenant.

    ``revoke_token`` revokes the credential that triggered the alert (the token's ``jti``, or
    the API key used directly); ``halt_tenant`` switches the tenant's kill switch on. Both are
    audited with the alert as the reason; a human resumes a halted tenant.
    """

    denial_burst: ResponseAction = "none"
    rate_spike: ResponseAction = "none"
    new_address: ResponseAction = "none"
    cross_tenant_attempt: ResponseAction = "none"


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
    limits: LimitSettings = LimitSettings()
    controlplane: ControlPlaneSettings = ControlPlaneSettings()
    sql: SqlSettings = SqlSettings()
    vectors: VectorSettings = VectorSettings()
    files: FileSettings = FileSettings()
    secrets: SecretSettings = SecretSettings()
    audit: AuditSettings = AuditSettings()
    alerts: AlertSettings = AlertSettings()
    metrics: MetricsSettings = MetricsSettings()
    logging: LoggingSettings = LoggingSettings()
    identity_providers: tuple[IdentityProviderSettings, ...] = ()
    response: ResponseSettings = ResponseSettings()
    worker: WorkerSettings = WorkerSettings()
    gateway: GatewaySettings = GatewaySettings()

    def tenant_limits(self) -> TenantLimits:
        """The limits of a tenant without overrides."""
        configured = self.limits.model_dump(
            exclude={
                "storage",
                "on_storage_error",
                "key_prefix",
                "blocking_threads_total",
                "refusal_hold",
                "refusals_held_per_tenant",
                "refusals_held_total",
                "fair_share_capacity",
                "fair_share_quantum",
            }
        )
        return TenantLimits(
            **configured, tool_timeout=float(self.tools.timeout), session_idle=float(self.server.session_idle_timeout)
        )

    @field_validator("identity_providers")
    @classmethod
    def _unique_providers(cls, value: tuple[IdentityProviderSettings, ...]) -> tuple[IdentityProviderSettings, ...]:
        for attribute in ("name", "issuer"):
            seen = [getattr(p, attribute) for p in value]
            if len(seen) != len(set(seen)):
                raise ValueError(f"two identity providers have the same {attribute}")
        return value

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
