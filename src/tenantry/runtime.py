"""The composition root: one deployment's stores, keys and services, built from settings.

Both the server and every CLI command open a :class:`Runtime` on the same data dir, which
is how a CLI change (a grant, a key rotation) reaches a running server.
"""

from __future__ import annotations

import base64
import binascii
import getpass
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tenantry.audit.checkpoints import AUDIT_KEY_FILE, Checkpointer, CheckpointSigner
from tenantry.audit.events import AuditEvent
from tenantry.audit.process_sink import ProcessAuditSink, WriterCommand
from tenantry.audit.sink import AuditSink
from tenantry.audit.store.base import AuditStore
from tenantry.audit.store.factory import open_audit_store
from tenantry.audit.writer import DurableAuditSink
from tenantry.auth.apikeys import ApiKeyVerifier
from tenantry.auth.keys import KeyRing, load_or_create_secret, load_or_create_token
from tenantry.auth.tokens import JwtVerifier, TokenIssuer
from tenantry.auth.verifiers import CredentialRouter
from tenantry.controlplane.directory import TenantDirectory
from tenantry.controlplane.factory import open_tenant_store
from tenantry.core.errors import NotFound, StorageError, UsageError
from tenantry.core.settings import DEFAULT_PORT, Settings
from tenantry.scoping.files.factory import open_file_scopes
from tenantry.scoping.handles import DataScopes
from tenantry.scoping.secrets.base import SecretScopes
from tenantry.scoping.secrets.store import StoredSecretScopes, open_secret_scopes
from tenantry.scoping.sql.base import SqlScopes
from tenantry.scoping.sql.sqlite import SqliteSqlScopes
from tenantry.scoping.threads import ThreadBulkheads
from tenantry.scoping.vectors.factory import open_vector_scopes

if TYPE_CHECKING:
    from tenantry.auth.replay import AssertionLedger
    from tenantry.ratelimit.tenant_limits import TenantLimiter

__all__ = [
    "Runtime",
    "open_data_scopes",
    "open_sql_scopes",
    "Endpoints",
    "MCP_PATH",
    "sql_tenant_key",
    "SQL_TENANT_KEY_FILE",
    "METRICS_TOKEN_FILE",
]

logger = logging.getLogger(__name__)

MCP_PATH = "/mcp"
_WILDCARD_HOSTS = {"0.0.0.0", "::", ""}  # noqa: S104 - recognising, not binding
_ADMIN_AUDIT_WAIT = 15.0  # seconds


@dataclass(frozen=True)
class Endpoints:
    """Where this deployment is reached, which fixes token ``iss`` and ``aud``."""

    public_url: str

    @property
    def issuer(self) -> str:
        return self.public_url

    @property
    def resource(self) -> str:
        """The protected resource identifier (RFC 8707/9728): tokens must name it in ``aud``."""
        return self.public_url + MCP_PATH

    @property
    def resource_metadata(self) -> str:
        return f"{self.public_url}/.well-known/oauth-protected-resource{MCP_PATH}"

    @property
    def jwks_uri(self) -> str:
        return f"{self.public_url}/.well-known/jwks.json"

    @property
    def token_endpoint(self) -> str:
        return f"{self.public_url}/oauth/token"


def bound_url(host: str, port: int) -> str:
    if host in _WILDCARD_HOSTS:
        host = "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


SQL_TENANT_KEY_FILE = "sql-tenant.key"
METRICS_TOKEN_FILE = "metrics.token"  # noqa: S105 - a file name, not a secret
CONTROL_STORE_FILE = "control.sqlite3"


def sql_tenant_key(settings: Settings, *, create: bool = False) -> bytes:
    """The key proving a transaction's tenant to PostgreSQL: ``sql.tenant_key`` (base64) if set,
    else ``<data_dir>/keys/sql-tenant.key`` (written by ``tenantry db init``).

    :raises UsageError: for an invalid configured key, or a missing file when not ``create``.
    """
    configured = settings.sql.tenant_key
    if configured is not None:
        try:
            key = base64.b64decode(configured.get_secret_value(), validate=True)
        except (binascii.Error, ValueError):
            raise UsageError("sql.tenant_key must be base64") from None
        if len(key) < 32:
            raise UsageError("sql.tenant_key must decode to at least 32 bytes")
        return key
    path = settings.data_dir.resolve() / "keys" / SQL_TENANT_KEY_FILE
    if not create and not path.is_file():
        raise UsageError(
            f"no SQL tenant key at {path}: run `tenantry db init` with this data dir, or set sql.tenant_key"
        )
    return load_or_create_secret(path)


def open_data_scopes(
    settings: Settings, data_dir: Path, bulkheads: ThreadBulkheads, secrets: SecretScopes
) -> DataScopes:
    """The tenant-scoped handles' factories configured by ``settings`` (the server's, and a
    dedicated worker's, which brings its own ``secrets``)."""
    return DataScopes(
        sql=open_sql_scopes(settings, data_dir, bulkheads),
        files=open_file_scopes(
            settings.files, data_dir, max_file_bytes=settings.tools.max_file_bytes, bulkheads=bulkheads
        ),
        vectors=open_vector_scopes(settings.vectors, data_dir, bulkheads=bulkheads),
        secrets=secrets,
        bulkheads=bulkheads,
    )


def open_sql_scopes(settings: Settings, data_dir: Path, bulkheads: ThreadBulkheads) -> SqlScopes:
    from tenantry.scoping.sql.postgres import PostgresSqlScopes  # psycopg: only when configured

    sql = settings.sql
    row_limit = settings.tools.sql_row_limit
    if sql.url is None:
        return SqliteSqlScopes(data_dir, row_limit=row_limit, bulkheads=bulkheads)
    return PostgresSqlScopes(
        sql.url,
        tenant_key=sql_tenant_key(settings),
        isolation=sql.isolation,
        schema_name=sql.schema_name,
        pool_min=sql.pool_min,
        pool_max=sql.pool_max,
        pool_timeout=sql.pool_timeout,
        statement_timeout=sql.statement_timeout,
        row_limit=row_limit,
        bulkheads=bulkheads,
    )


class Runtime:
    """Everything one deployment needs; cheap to open, close it when done."""

    def __init__(self, settings: Settings, *, serving: bool = False, create: bool = False) -> None:
        """:param create: make the data dir and the embedded stores if missing (``serve`` only);
        every other command refuses a missing store rather than silently starting an empty one.

        :raises NotFound: no store at the data dir (and ``create`` is false).
        """
        self.settings = settings
        self.data_dir = settings.data_dir.resolve()
        if not create:
            self._require_existing_store()
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            if self.data_dir.stat().st_mode & 0o077:
                logger.warning("data dir %s is readable by group or others; chmod 700 it", self.data_dir)
        except OSError as exc:
            raise StorageError(f"cannot use data dir {self.data_dir}: {exc.strerror}") from None
        self.store = open_tenant_store(settings.controlplane.url, self.data_dir)
        self.keys = KeyRing(self.data_dir / "keys", alg=settings.auth.signing_alg)
        self.endpoints = self._resolve_endpoints(serving)
        # Each tenant's blocking work runs in its own bounded thread capacity; the control plane
        # and the audit checkpointer have a reserve of their own (see tenantry.scoping.threads).
        self.bulkheads = ThreadBulkheads(
            lambda tenant_id: self.directory.limits(tenant_id), tenant_threads=settings.limits.blocking_threads_total
        )
        self.directory = TenantDirectory(
            self.store, default_limits=settings.tenant_limits(), offload=self.bulkheads.run_system
        )
        self.audit_keys = KeyRing(self.data_dir / "keys", alg="EdDSA", file_name=AUDIT_KEY_FILE)
        self._audit: AuditSink | None = None
        self._scopes: DataScopes | None = None
        self._secrets: StoredSecretScopes | None = None

    def _require_existing_store(self) -> None:
        hint = "start `tenantry serve` there first, or pass the right --data-dir (or TENANTRY_DATA_DIR)"
        if not self.data_dir.is_dir():
            raise NotFound(f"no Tenantry data dir at {self.data_dir}: {hint}")
        if self.settings.controlplane.url is None and not (self.data_dir / CONTROL_STORE_FILE).is_file():
            raise NotFound(f"no Tenantry store in {self.data_dir} (no {CONTROL_STORE_FILE}): {hint}")

    @property
    def scopes(self) -> DataScopes:
        """The tenant-scoped data handles' factories, opened on first use (a CLI command that
        manages tenants never opens the vector store a running server may hold)."""
        if self._scopes is None:
            self._scopes = open_data_scopes(self.settings, self.data_dir, self.bulkheads, self.secrets)
        return self._scopes

    async def check_data_plane(self) -> None:
        """Prove at start-up that the configured data stores are reachable and enforce isolation.

        :raises StorageError: naming the store and what is wrong.
        """
        scopes = self.scopes
        await self.bulkheads.run_system(scopes.sql.check)
        check_files = getattr(scopes.files, "check", None)
        if check_files is not None:
            await check_files()

    @property
    def secrets(self) -> StoredSecretScopes:
        """Tenants' secrets: read side for tools and redaction, write side for the admin actions."""
        if self._secrets is None:
            self._secrets = open_secret_scopes(
                self.settings.secrets, self.data_dir, self.store, bulkheads=self.bulkheads
            )
        return self._secrets

    def _resolve_endpoints(self, serving: bool) -> Endpoints:
        """``public_url`` from the configuration; else the URL recorded when the deployment first
        served, then fixed: tokens must not stop verifying because another server on the same
        store started on another address."""
        configured = self.settings.public_url
        recorded = self.store.get_meta("public_url")
        if configured:
            url = configured
            if serving and recorded != configured:
                self.store.set_meta("public_url", configured)
        elif recorded:
            url = recorded
            bound = bound_url(self.settings.server.host, self.settings.server.port)
            if serving and bound != recorded:
                logger.warning(
                    "serving on %s, but this deployment's public URL (token issuer and audience) is %s,"
                    " fixed at its first start; set public_url to change it",
                    bound,
                    recorded,
                )
        elif serving:
            url = bound_url(self.settings.server.host, self.settings.server.port)
            self.store.set_meta("public_url", url)
        else:
            url = bound_url("127.0.0.1", DEFAULT_PORT)
        return Endpoints(public_url=url)

    def prepare_keys(self) -> None:
        self.keys.ensure()

    def token_issuer(self) -> TokenIssuer:
        self.keys.ensure()
        return TokenIssuer(
            self.keys,
            issuer=self.endpoints.issuer,
            audience=self.endpoints.resource,
            default_ttl=self.settings.auth.default_token_ttl,
            max_lifetime=self.settings.auth.max_token_lifetime,
        )

    def token_verifier(self) -> JwtVerifier:
        self.keys.ensure()
        return JwtVerifier(
            self.keys,
            issuer=self.endpoints.issuer,
            audience=self.endpoints.resource,
            max_lifetime=self.settings.auth.max_token_lifetime,
            leeway=self.settings.auth.clock_leeway,
            max_token_bytes=self.settings.auth.max_token_bytes,
        )

    def credential_verifier(self) -> CredentialRouter:
        """Every credential this deployment accepts: its own tokens, API keys, configured providers."""
        from tenantry.auth.idp import IdentityProviderVerifier

        auth = self.settings.auth
        providers = [
            IdentityProviderVerifier(
                config,
                default_audience=self.endpoints.resource,
                leeway=auth.clock_leeway,
                max_token_bytes=auth.max_token_bytes,
            )
            for config in self.settings.identity_providers
        ]
        try:
            return CredentialRouter(
                self.token_verifier(),
                api_keys=ApiKeyVerifier(self.directory.api_key, self.store.get_api_key),
                providers=providers,
            )
        except ValueError as exc:
            raise UsageError(str(exc)) from None

    def longest_token_lifetime(self) -> int:
        """Seconds after which every token any accepted issuer could have signed has expired."""
        lifetimes = [self.settings.auth.max_token_lifetime]
        lifetimes += [p.max_token_lifetime for p in self.settings.identity_providers]
        return max(lifetimes) + self.settings.auth.clock_leeway

    # -- audit ------------------------------------------------------------------------------

    def audit_store(self, *, busy_timeout: float | None = None) -> AuditStore:
        """A fresh connection to the audit store (the caller closes it); ``busy_timeout``
        defaults to ``audit.busy_timeout``."""
        audit = self.settings.audit
        return open_audit_store(audit.url, self.data_dir, busy_timeout=busy_timeout or audit.busy_timeout)

    def checkpoint_signer(self) -> CheckpointSigner:
        self.audit_keys.ensure()
        return CheckpointSigner(self.audit_keys, issuer=self.endpoints.issuer)

    def checkpointer(self) -> Checkpointer:
        return Checkpointer(
            self.checkpoint_signer(),
            interval=self.settings.audit.checkpoint_interval,
            offload=self.bulkheads.run_system,
        )

    @property
    def audit(self) -> AuditSink:
        """The durable audit sink of a serving process (group commit in a writer process, or
        thread: ``audit.writer``)."""
        if self._audit is None:
            self.audit_store().close()  # fail fast, with a clear error, if the store cannot be opened
            spill = self.data_dir / "audit-spill.jsonl"
            audit = self.settings.audit
            if audit.writer == "thread":
                self._audit = DurableAuditSink(self.audit_store, spill_path=spill, group_window=audit.group_window)
            else:
                command = WriterCommand(
                    audit.url,
                    self.data_dir,
                    spill,
                    busy_timeout=audit.busy_timeout,
                    group_window=audit.group_window,
                    log_level=self.settings.logging.level,
                    log_format=self.settings.logging.format,
                )
                self._audit = ProcessAuditSink(command)
        return self._audit

    @audit.setter
    def audit(self, sink: AuditSink) -> None:
        self._audit = sink

    def record_admin(self, event: AuditEvent) -> None:
        """Durably record an administrative event from a CLI process (synchronous).

        :raises AuditUnavailable: the action's caller should treat it as not done.
        """
        if event.actor is None:
            event.actor = f"cli:{getpass.getuser()}"
        # An operator's command may wait out a busy server longer than a call may.
        store = self.audit_store(busy_timeout=max(self.settings.audit.busy_timeout, _ADMIN_AUDIT_WAIT))
        try:
            store.append([event])
        finally:
            store.close()

    def tenant_limiter(self) -> TenantLimiter:
        """Admission by per-tenant rate, quota and concurrency, counted in ``limits.storage``."""
        from tenantry.ratelimit.tenant_limits import TenantLimiter, open_limit_storage

        limits = self.settings.limits
        return TenantLimiter(
            open_limit_storage(limits.storage, key_prefix=limits.key_prefix),
            fail_closed=limits.on_storage_error == "fail_closed",
        )

    def assertion_ledger(self) -> AssertionLedger:
        """Where used identity assertions are remembered: the shared limits storage when it is
        Redis (one use per deployment), else this process."""
        from tenantry.auth.replay import SeenAssertions

        lifetimes = [p.max_assertion_lifetime for p in self.settings.identity_providers if p.identity_assertions]
        window = max(lifetimes, default=0) + self.settings.auth.clock_leeway
        limits = self.settings.limits
        if not limits.storage.startswith(("async+redis://", "async+rediss://", "redis://", "rediss://")):
            return SeenAssertions(leeway=self.settings.auth.clock_leeway)
        from tenantry.ratelimit.assertions import SharedSeenAssertions
        from tenantry.ratelimit.tenant_limits import open_limit_storage

        return SharedSeenAssertions(open_limit_storage(limits.storage, key_prefix=limits.key_prefix), window=window)

    def metrics_token(self) -> str:
        """The bearer token ``/metrics`` requires: ``metrics.token``, else the one generated in
        ``<data_dir>/keys/metrics.token`` (0600) at first use."""
        configured = self.settings.metrics.token
        if configured is not None:
            return configured.get_secret_value()
        return load_or_create_token(self.data_dir / "keys" / METRICS_TOKEN_FILE)

    def request_state_key(self) -> bytes:
        """The key sealing 2026-07-28 ``requestState`` tokens, shared by all replicas on this data dir."""
        return load_or_create_secret(self.data_dir / "keys" / "request-state.key")

    def tenant_root(self, tenant_id: str) -> Path:
        return self.data_dir / "tenants" / tenant_id

    def close(self) -> None:
        if isinstance(self._audit, ProcessAuditSink):
            self._audit.close()  # a no-op after the server's own aclose
        if self._scopes is not None:
            self._scopes.close()
        self.store.close()
