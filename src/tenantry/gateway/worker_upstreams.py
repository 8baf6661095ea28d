"""A dedicated tenant's command (stdio) upstreams, run inside its worker process.

On the dedicated tier the worker, not the server, starts the tenant's stdio upstream processes:
they are the worker's children, so they inherit its resource limits and run as part of its
process tree, and their credentials come from the tenant's secrets the worker already holds
(rendered from the same templates as the gateway's). The session code is the gateway's own
(:class:`~tenantry.gateway.gateway.Gateway` for the one tenant: backoff after a crash, health
pings, idle close, the per-tenant process cap, the message bound); only where it runs differs.

Admission and outcome (grants, the token, the upstream's schema, limits, audit, redaction,
the size limit) stay in the server, which sends each admitted call over the worker's frames.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from tenantry.core.errors import NotFound
from tenantry.core.settings import GatewaySettings
from tenantry.core.upstreams import UpstreamSpec
from tenantry.framework.app import App
from tenantry.framework.deadline import DeadlineExceeded, DeadlineWatch, Interrupted
from tenantry.framework.invoker import CallCancelled, ToolTimedOut
from tenantry.gateway.errors import UpstreamUnavailable
from tenantry.gateway.gateway import Gateway
from tenantry.gateway.storage import UpstreamStorage
from tenantry.scoping.threads import ThreadBulkheads

__all__ = ["WorkerUpstreams", "upstream_specs_from_init", "upstream_specs_to_init"]


def upstream_specs_to_init(specs: Mapping[str, UpstreamSpec]) -> dict[str, str]:
    """The stdio upstreams of a worker's first message (name -> the stored JSON of its spec)."""
    return {name: spec.to_json() for name, spec in sorted(specs.items()) if spec.transport == "stdio"}


def upstream_specs_from_init(encoded: Mapping[str, str]) -> dict[str, UpstreamSpec]:
    """:raises UsageError: a spec the server sent is not valid (the worker does not start)."""
    specs = {name: UpstreamSpec.from_json(name, text, 0).validated() for name, text in encoded.items()}
    return {name: spec for name, spec in specs.items() if spec.transport == "stdio"}


class WorkerUpstreams:
    """The stdio upstreams of ``tenant_id``, called from its worker.

    :param specs: the upstreams the tenant may use (sent by the server in the worker's first message).
    :param secrets: the tenant's secret values by name (the worker's environment).
    :param max_message: the largest single message accepted from an upstream (bytes).
    :param bulkheads: the worker's thread capacity and the tenant's limits: what its upstreams
        write in its directory counts against its file quota, as on the shared tier.
    """

    def __init__(
        self,
        tenant_id: str,
        specs: Mapping[str, UpstreamSpec],
        *,
        app: App,
        data_dir: Path,
        secrets: Mapping[str, str],
        settings: GatewaySettings,
        max_message: int,
        bulkheads: ThreadBulkheads,
    ) -> None:
        self._tenant_id = tenant_id
        self._specs = dict(specs)
        self._deadlines = DeadlineWatch()

        async def read_secret(tenant: str, name: str) -> str:
            if tenant != tenant_id or name not in secrets:
                raise NotFound(f"no secret named {name!r}")
            return secrets[name]

        self._gateway = Gateway(
            app,
            data_dir=data_dir,
            read_secret=read_secret,
            tenants=lambda: [tenant_id],
            max_message=max_message,
            health_interval=settings.health_interval,
            idle_timeout=settings.idle_timeout,
            max_processes=settings.max_stdio_processes_per_tenant,
            max_processes_per_tenant=settings.max_stdio_processes_per_tenant,
            storage=UpstreamStorage(data_dir, bulkheads),
            sandbox=settings.command_sandbox,
            # A kill -9 of the worker then kills its upstream processes too, instead of orphaning them.
            die_with_parent=True,
        )

    @asynccontextmanager
    async def running(self) -> AsyncIterator[WorkerUpstreams]:
        """Upstream processes live while this is entered; leaving it stops every one."""
        async with self._gateway.running():
            yield self

    async def call(self, upstream: str, tool: str, arguments: dict[str, Any], *, seconds: float, name: str) -> Any:
        """Call ``tool`` of ``upstream`` for this worker's tenant (its process started if needed).

        :param name: the tool's exposed name (for messages). :raises UpstreamUnavailable,
            UpstreamError, ResultTooLarge: as the gateway's calls. :raises ToolTimedOut: past
            ``seconds`` or the upstream's own call timeout. :raises CallCancelled: halted.
        """
        spec = self._specs.get(upstream)
        if spec is None:
            raise UpstreamUnavailable(
                f"upstream {upstream!r} is not configured in this tenant's worker (its worker follows upstream"
                " changes within about a second); try again"
            )
        timeout = min(seconds, spec.call_timeout)
        try:
            return await self._deadlines.run(
                self._gateway.call_tool(spec, self._tenant_id, tool, arguments), timeout, tag=self._tenant_id
            )
        except DeadlineExceeded:
            raise ToolTimedOut(f"{name} did not finish within {timeout:g}s") from None
        except Interrupted:
            raise CallCancelled() from None

    def cancel_all(self) -> int:
        """Cancel every upstream call in flight (the tenant's kill switch); the MCP client session
        sends ``notifications/cancelled`` for each to its upstream."""
        return self._deadlines.interrupt(self._tenant_id)
