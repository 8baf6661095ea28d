"""The gateway's side of resource subscriptions, against a real MCP server over streamable HTTP
(``tests/support/upstream_server.py``): counted per tenant and URI, updates told per tenant, and
a session with subscriptions kept past its idle timeout."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from tenantry.core.errors import NotFound
from tenantry.core.upstreams import UpstreamSpec
from tenantry.framework.app import App
from tenantry.gateway.gateway import Gateway
from tests.integration.test_gateway_http import start_upstream

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    process, address = start_upstream()
    yield address
    process.terminate()
    process.wait(10)


async def no_secret(tenant_id: str, name: str) -> str:
    raise NotFound(name)


def spec_of(url: str, *, tenant_agnostic: bool = False) -> UpstreamSpec:
    headers = () if tenant_agnostic else (("Authorization", "Bearer {tenant}"),)
    return UpstreamSpec(
        name="live", transport="http", url=url, headers=headers, allow_private=True, tenant_agnostic=tenant_agnostic
    )


async def log_of(gateway: Gateway, spec: UpstreamSpec, tenant: str) -> list[list[str]]:
    result = await gateway.call_tool(spec, tenant, "subscriptions", {})
    assert result.structured_content is not None
    entries: list[list[str]] = result.structured_content["result"]
    return entries


async def wait_until(condition: Any) -> None:
    with anyio.fail_after(5):
        while not condition():  # noqa: ASYNC110 - the listener is a plain callback
            await anyio.sleep(0.02)


async def test_each_tenant_subscribes_once_on_its_own_session_and_hears_its_own_updates(
    tmp_path: Path, url: str
) -> None:
    heard: list[tuple[str, str]] = []
    gateway = Gateway(App("subs"), data_dir=tmp_path, read_secret=no_secret, tenants=lambda: ["acme", "globex"])
    gateway.on_resource_updated(lambda tenant, uri: heard.append((tenant, uri)))
    spec = spec_of(url)
    async with gateway.running():
        await gateway.check(spec)
        await gateway.subscribe_resource("live", "acme", "notes://u1")
        await gateway.subscribe_resource("live", "acme", "notes://u1")  # a second session of acme
        await gateway.subscribe_resource("live", "globex", "notes://u1")
        log = [e for e in await log_of(gateway, spec, "acme") if e[1] == "notes://u1"]
        assert log == [["subscribe", "notes://u1", "Bearer acme"], ["subscribe", "notes://u1", "Bearer globex"]]
        await gateway.call_tool(spec, "acme", "touch", {"uri": "notes://u1"})
        await wait_until(lambda: heard)
        await gateway.call_tool(spec, "acme", "touch", {"uri": "notes://nobody"})  # not subscribed: dropped
        await anyio.sleep(0.3)
        assert heard == [("acme", "upstream://live/notes://u1")]
        await gateway.unsubscribe_resource("live", "acme", "notes://u1")
        assert ["unsubscribe", "notes://u1", "Bearer acme"] not in await log_of(gateway, spec, "acme")
        await gateway.unsubscribe_resource("live", "acme", "notes://u1")
        assert ["unsubscribe", "notes://u1", "Bearer acme"] in await log_of(gateway, spec, "acme")
        await gateway.call_tool(spec, "acme", "touch", {"uri": "notes://u1"})
        await gateway.call_tool(spec, "globex", "touch", {"uri": "notes://u1"})  # positive control
        await wait_until(lambda: len(heard) == 2)
        await anyio.sleep(0.3)
        assert heard[1:] == [("globex", "upstream://live/notes://u1")]


async def test_a_shared_sessions_update_is_told_to_each_tenant_subscribed(tmp_path: Path, url: str) -> None:
    heard: list[tuple[str, str]] = []
    tenants = ["acme", "globex", "initech"]
    gateway = Gateway(App("subs"), data_dir=tmp_path, read_secret=no_secret, tenants=lambda: tenants)
    gateway.on_resource_updated(lambda tenant, uri: heard.append((tenant, uri)))
    spec = spec_of(url, tenant_agnostic=True)
    async with gateway.running():
        await gateway.check(spec)
        await gateway.subscribe_resource("live", "acme", "notes://u2")
        await gateway.subscribe_resource("live", "globex", "notes://u2")
        await gateway.call_tool(spec, "initech", "touch", {"uri": "notes://u2"})
        await wait_until(lambda: len(heard) == 2)
        await anyio.sleep(0.3)
        assert sorted(heard) == [("acme", "upstream://live/notes://u2"), ("globex", "upstream://live/notes://u2")]


async def test_a_session_with_subscriptions_is_not_closed_as_idle(tmp_path: Path, url: str) -> None:
    """Closed and started again, it would subscribe a second time (see the upstream's log)."""
    gateway = Gateway(
        App("subs"),
        data_dir=tmp_path,
        read_secret=no_secret,
        tenants=lambda: ["acme"],
        health_interval=0.1,
        idle_timeout=0.3,
    )
    spec = spec_of(url)
    async with gateway.running():
        await gateway.check(spec)
        await gateway.subscribe_resource("live", "acme", "notes://u3")
        await anyio.sleep(1.0)
        await log_of(gateway, spec, "acme")  # a closed session would be started again here...
        await anyio.sleep(0.5)  # ... and subscribe again meanwhile
        log = await log_of(gateway, spec, "acme")
        assert [e for e in log if e[1] == "notes://u3"] == [["subscribe", "notes://u3", "Bearer acme"]]
