"""``python -m tenantry.cli.worker --fd N``: one dedicated tenant's worker process.

Started by the server (see :mod:`tenantry.server.workers`), never by hand. It reads its first
message from the socket ``N`` (which tenant, which app, its data-plane settings and limits),
applies its resource limits before it loads any tool code, builds the scoped handles of that
one tenant, tells the server it is ready and runs calls until the server closes the socket.
Its secrets come from its environment (``TENANTRY_SECRET_<name>``), which holds nothing else
of the tenant's or the server's. The tenant's command (stdio) upstreams named in the first
message are started by this process, as its children, at their first call.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import socket
import sys
from pathlib import Path
from typing import Any

from tenantry.cli.serve import load_app
from tenantry.core.errors import TenantryError
from tenantry.core.ids import validate_tenant_id
from tenantry.core.limits import TenantLimits
from tenantry.core.settings import (
    FileSettings,
    GatewaySettings,
    LoggingSettings,
    Settings,
    SqlSettings,
    ToolSettings,
    VectorSettings,
    WorkerSettings,
)
from tenantry.framework.frames import FrameTooLarge, encode_frame, read_frame
from tenantry.framework.redaction import RedactingLogFilter
from tenantry.framework.worker_host import WorkerHost
from tenantry.gateway.worker_upstreams import WorkerUpstreams, upstream_specs_from_init
from tenantry.logs import configure_logging
from tenantry.runtime import open_data_scopes
from tenantry.scoping.secrets.pinned import PinnedSecretScopes, secrets_from_environ
from tenantry.scoping.threads import ThreadBulkheads

__all__ = ["main", "apply_limits"]

_INIT_BYTES = 1024 * 1024
_UPSTREAM_ENVELOPE = 64 * 1024
"""Room for the JSON-RPC envelope around an upstream result of the largest allowed size (as the server's gateway)."""


def apply_limits(limits: WorkerSettings) -> None:
    """Lower this process's resource limits (soft and hard: the worker cannot raise them again)."""
    wanted = {
        resource.RLIMIT_AS: (limits.address_space_mb * 1024 * 1024,) * 2,
        # The soft limit sends SIGXCPU, the hard one SIGKILL a little later.
        resource.RLIMIT_CPU: (limits.cpu_seconds, limits.cpu_seconds + 5),
        resource.RLIMIT_NOFILE: (limits.open_files,) * 2,
        resource.RLIMIT_NPROC: (limits.processes,) * 2,
    }
    for which, (soft, hard) in wanted.items():
        _, current_hard = resource.getrlimit(which)
        if current_hard != resource.RLIM_INFINITY:
            soft, hard = min(soft, current_hard), min(hard, current_hard)
        resource.setrlimit(which, (soft, hard))


def _settings(init: dict[str, Any]) -> Settings:
    # Built from the server's message, never from this process's environment (which holds secrets).
    config = init["settings"]
    return Settings.model_construct(
        data_dir=Path(config["data_dir"]),
        sql=SqlSettings.model_validate(config["sql"]),
        files=FileSettings.model_validate(config["files"]),
        vectors=VectorSettings.model_validate(config["vectors"]),
        tools=ToolSettings.model_validate(config["tools"]),
        logging=LoggingSettings.model_validate(config["logging"]),
        worker=WorkerSettings.model_validate(config["worker"]),
        gateway=GatewaySettings.model_validate(config.get("gateway") or {}),
    )


async def _serve(sock: socket.socket) -> None:
    reader, writer = await asyncio.open_unix_connection(sock=sock, limit=2**16)
    init = await read_frame(reader, _INIT_BYTES)
    if init is None or init.get("t") != "init":
        raise TenantryError("a worker's first message must be its init")
    tenant_id = validate_tenant_id(str(init["tenant_id"]))
    settings = _settings(init)
    apply_limits(settings.worker)
    configure_logging(settings.logging.level, settings.logging.format, [RedactingLogFilter()])
    secrets = secrets_from_environ(os.environ)  # noqa: TID251 - the tenant's secrets, not configuration
    limits = TenantLimits(**init["limits"])
    bulkheads = ThreadBulkheads(lambda _: limits, tenant_threads=limits.blocking_threads)
    scopes = open_data_scopes(settings, settings.data_dir, bulkheads, PinnedSecretScopes(tenant_id, secrets))
    try:
        source = init["app"]
        app = load_app(source.get("spec"), demo=bool(source.get("demo")), search_path=Path(source["path"]))
        upstreams = WorkerUpstreams(
            tenant_id,
            upstream_specs_from_init(init.get("upstreams") or {}),
            app=app,
            data_dir=settings.data_dir,
            secrets=secrets,
            settings=settings.gateway,
            max_message=settings.tools.max_result_bytes + _UPSTREAM_ENVELOPE,
            bulkheads=bulkheads,
        )
        host = WorkerHost(
            app,
            tenant_id,
            scopes,
            list(secrets.values()),
            max_frame_bytes=settings.worker.max_frame_bytes,
            upstreams=upstreams,
        )
        broken: Exception | None = None
        async with upstreams.running():
            writer.write(encode_frame({"t": "ready", "pid": os.getpid()}, _INIT_BYTES))
            await writer.drain()
            try:
                await host.serve(reader, writer)
            except Exception as exc:  # raised outside the upstreams' task group, not as a group
                broken = exc
        if broken is not None:
            raise broken
    finally:
        writer.close()
        scopes.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tenantry-worker", description="A dedicated tenant's worker (internal).")
    parser.add_argument("--fd", type=int, required=True, help="the socket the server passed")
    args = parser.parse_args(argv)
    try:
        asyncio.run(_serve(socket.socket(fileno=args.fd)))
    except TenantryError as exc:
        sys.stderr.write(f"tenantry worker: {exc.message}\n")
        return 1
    except (FrameTooLarge, ValueError, KeyError, asyncio.IncompleteReadError) as exc:
        sys.stderr.write(f"tenantry worker: the server broke the protocol ({type(exc).__name__}); stopping\n")
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
