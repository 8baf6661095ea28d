"""Wiring gateway mode into a serving process: the gateway, its invoker, its control-plane listener."""

from __future__ import annotations

from tenantry.admin.upstreams import publish_upstream_report
from tenantry.controlplane.directory import ChangeListener, ControlSnapshot
from tenantry.framework.app import App
from tenantry.gateway.gateway import Gateway, UpstreamReport
from tenantry.gateway.storage import UpstreamStorage
from tenantry.runtime import Runtime

__all__ = ["build_gateway", "follow_upstreams", "hand_over_to_workers"]

_ENVELOPE = 64 * 1024
"""Room for the JSON-RPC envelope around a result of the largest allowed size."""


def build_gateway(runtime: Runtime, app: App) -> Gateway:
    directory = runtime.directory

    async def read_secret(tenant_id: str, name: str) -> str:
        return await runtime.secrets.for_tenant(tenant_id).get(name)

    async def publish(report: UpstreamReport) -> None:
        spec = directory.snapshot.upstreams.get(report.name)
        tenants = None if spec is None else spec.tenants
        await runtime.bulkheads.run_system(lambda: publish_upstream_report(runtime.store, report.to_dict(), tenants))

    return Gateway(
        app,
        data_dir=runtime.data_dir,
        read_secret=read_secret,
        tenants=lambda: [t.id for t in directory.snapshot.tenants.values() if not t.halted],
        max_message=runtime.settings.tools.max_result_bytes + _ENVELOPE,
        publish=publish,
        health_interval=runtime.settings.gateway.health_interval,
        idle_timeout=runtime.settings.gateway.idle_timeout,
        max_processes=runtime.settings.gateway.max_stdio_processes,
        max_processes_per_tenant=runtime.settings.gateway.max_stdio_processes_per_tenant,
        storage=UpstreamStorage(runtime.data_dir, runtime.bulkheads),
        sandbox=runtime.settings.gateway.command_sandbox,
    )


def follow_upstreams(gateway: Gateway) -> ChangeListener:
    """Upstreams added, removed or changed in the control plane; tenants that appeared (an
    upstream nobody could use yet is listed again)."""

    async def on_change(before: ControlSnapshot, after: ControlSnapshot) -> None:
        if before.revision is None or before.upstreams != after.upstreams:
            await gateway.apply(after.upstreams)
        if before.tenants.keys() != after.tenants.keys():
            await gateway.forget_tenants(after.tenants.keys())
        if _listable(before) != _listable(after):
            for name in after.upstreams:
                report = gateway.report(name)
                if report is not None and report.state != "ready":
                    await gateway.rediscover_soon(name)

    return on_change


def _listable(snapshot: ControlSnapshot) -> set[str]:
    """The tenants an upstream may be listed through: a halted one's name starts nothing."""
    return {t.id for t in snapshot.tenants.values() if not t.halted}


def hand_over_to_workers(gateway: Gateway) -> ChangeListener:
    """A tenant moved to the dedicated tier has its command upstreams run by its worker from its
    next call: the gateway's idle processes of that tenant stop now (not after their idle timeout),
    so two processes of one single-user server do not run side by side for long."""

    async def on_change(before: ControlSnapshot, after: ControlSnapshot) -> None:
        for tenant_id, now in after.tenants.items():
            was = before.tenants.get(tenant_id)
            if now.tier == "dedicated" and was is not None and was.tier != "dedicated":
                gateway.close_idle_processes_of(tenant_id)

    return on_change
