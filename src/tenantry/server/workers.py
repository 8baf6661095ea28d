"""Starting dedicated workers for this server: what each one gets, and following tier moves.

A worker gets:

- its own working directory, ``<data_dir>/tenants/<tenant>/worker/`` (mode 0700; ``HOME`` and
  ``TMPDIR`` point into it);
- an environment holding that tenant's secrets (``TENANTRY_SECRET_<name>``) and, of the
  server's, only what Python and the tools' subprocesses need to run: the variables named in
  ``worker.inherit_env`` (``PATH``, ``PYTHONPATH``, locale and ``TZ`` by default), plus
  ``MALLOC_ARENA_MAX=2`` so threads do not eat its address-space limit;
- as its first message: the tenant id, the app to load (the same ``--app``/``--demo`` as the
  server, imported from the server's directory), the data-plane settings (SQL, files, vectors:
  never the control plane, the audit store, signing keys or the secrets master key) and the
  tenant's limits; and the command (stdio) upstreams the tenant may use, whose processes the
  worker starts as its own children (their credentials rendered there from the tenant's secrets).

Secrets, limit overrides and those upstreams are fingerprinted: a worker started before a change is replaced
(within about a second; calls in flight finish in the old one).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets as random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr

from tenantry.controlplane.directory import ChangeListener, ControlSnapshot
from tenantry.core.errors import StorageError
from tenantry.core.ids import validate_tenant_id
from tenantry.core.upstreams import UpstreamSpec
from tenantry.framework.worker import WorkerInvoker, WorkerLaunch
from tenantry.gateway.worker_upstreams import upstream_specs_to_init
from tenantry.runtime import Runtime, sql_tenant_key
from tenantry.scoping.secrets.pinned import SECRET_ENV_PREFIX

__all__ = ["WorkerSource", "worker_invoker", "follow_tier_moves"]


@dataclass(frozen=True)
class WorkerSource:
    """How this server's workers start, and what they serve: the same app as the server."""

    command: tuple[str, ...]
    """The worker entry point (``python -m tenantry.cli.worker``)."""
    app_spec: str | None
    demo: bool
    app_path: Path
    """The directory ``app_spec`` is imported from (the server's working directory)."""


def worker_invoker(runtime: Runtime, source: WorkerSource) -> WorkerInvoker:
    key = random.token_bytes(32)  # fingerprints are keyed: they never expose a hash of a secret

    async def launch(tenant_id: str) -> WorkerLaunch:
        return await runtime.bulkheads.run_system(lambda: _launch(runtime, source, tenant_id, key))

    async def fingerprint(tenant_id: str) -> str:
        return await runtime.bulkheads.run_system(lambda: _fingerprint(runtime, tenant_id, key)[0])

    return WorkerInvoker(launch, runtime.settings.worker, runtime.audit, fingerprint=fingerprint)


def follow_tier_moves(invoker: WorkerInvoker) -> ChangeListener:
    """A tenant moved off the dedicated tier (or deleted) has its worker retired: calls in flight
    finish there, new ones run in the shared process (the dispatcher reads the tier per call)."""

    async def listener(before: ControlSnapshot, after: ControlSnapshot) -> None:
        for tenant_id, was in before.tenants.items():
            now = after.tenants.get(tenant_id)
            if was.tier == "dedicated" and (now is None or now.tier != "dedicated"):
                invoker.retire(tenant_id)

    return listener


def _stdio_upstreams(runtime: Runtime, tenant_id: str) -> dict[str, UpstreamSpec]:
    """The command upstreams ``tenant_id`` may use: its worker runs their processes."""
    upstreams = runtime.directory.snapshot.upstreams
    return {n: u for n, u in upstreams.items() if u.transport == "stdio" and u.available_to(tenant_id)}


def _fingerprint(runtime: Runtime, tenant_id: str, key: bytes) -> tuple[str, dict[str, str]]:
    """The tenant's secret values by name, and a keyed fingerprint of them, its limits and its
    command upstreams."""
    store = runtime.secrets
    values = {name: store.read_secret(tenant_id, name) for name in store.list_names(tenant_id)}
    tenant = runtime.directory.get(tenant_id)
    digest = hmac.new(key, digestmod=hashlib.sha256)
    for name, value in sorted(values.items()):
        digest.update(f"{len(name)}:{name}{len(value)}:{value}".encode())
    digest.update(repr(tenant.limit_overrides if tenant is not None else ()).encode())
    digest.update(repr(sorted(upstream_specs_to_init(_stdio_upstreams(runtime, tenant_id)).items())).encode())
    return digest.hexdigest(), values


def _launch(runtime: Runtime, source: WorkerSource, tenant_id: str, key: bytes) -> WorkerLaunch:
    fingerprint, values = _fingerprint(runtime, tenant_id, key)
    # Inside the tenant's directory, so that erasing the tenant removes whatever its tools left here.
    workdir = runtime.data_dir / "tenants" / validate_tenant_id(tenant_id) / "worker"
    scratch = workdir / "tmp"
    try:
        scratch.mkdir(parents=True, exist_ok=True, mode=0o700)
        workdir.chmod(0o700)
        scratch.chmod(0o700)
    except OSError as exc:
        raise StorageError(f"cannot make the worker directory of tenant {tenant_id!r}: {exc.strerror}") from None
    settings = runtime.settings
    # Not configuration: the few variables a child process needs to run, passed on by name.
    inherited = os.environ  # noqa: TID251
    env = {name: inherited[name] for name in settings.worker.inherit_env if name in inherited}
    env |= {"HOME": str(workdir), "TMPDIR": str(scratch), "MALLOC_ARENA_MAX": "2"}
    env |= {SECRET_ENV_PREFIX + name: value for name, value in values.items()}
    init = {
        "tenant_id": tenant_id,
        "app": {"spec": source.app_spec, "demo": source.demo, "path": str(source.app_path)},
        "settings": _data_plane(runtime),
        "limits": runtime.directory.limits(tenant_id).as_dict(),
        "upstreams": upstream_specs_to_init(_stdio_upstreams(runtime, tenant_id)),
    }
    return WorkerLaunch(argv=source.command, env=env, cwd=workdir, init=init, fingerprint=fingerprint)


def _data_plane(runtime: Runtime) -> dict[str, Any]:
    settings = runtime.settings
    sections: dict[str, BaseModel] = {
        "sql": settings.sql,
        "files": settings.files,
        "vectors": settings.vectors,
        "tools": settings.tools,
        "logging": settings.logging,
        "worker": settings.worker,
        "gateway": settings.gateway,
    }
    plane: dict[str, Any] = {name: _revealed(section.model_dump()) for name, section in sections.items()}
    plane["data_dir"] = str(runtime.data_dir)
    if settings.sql.url is not None:
        # The worker proves its transactions' tenant like the server does (docs/dedicated-tier.md).
        plane["sql"]["tenant_key"] = base64.b64encode(sql_tenant_key(settings)).decode()
    return plane


def _revealed(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, dict):
        return {key: _revealed(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_revealed(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    return value
