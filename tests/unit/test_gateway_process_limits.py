"""Command-upstream processes are capped, in all and per tenant: one more is refused with
``upstream_unavailable`` naming the limit, the running ones carry on, and an idle one reaped
makes room. The upstream is a real process (``tests/support/misbehaving_upstream.py``)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp_types import TextContent

from tenantry.core.errors import NotFound
from tenantry.core.upstreams import UpstreamSpec
from tenantry.framework.app import App
from tenantry.gateway.errors import UpstreamUnavailable
from tenantry.gateway.gateway import Gateway

pytestmark = pytest.mark.anyio

SCRIPT = Path(__file__).parent.parent / "support" / "misbehaving_upstream.py"
TENANTS = ("acme", "globex", "initech")


def upstream(name: str) -> UpstreamSpec:
    return UpstreamSpec(name=name, transport="stdio", command=(sys.executable, str(SCRIPT)), call_timeout=10)


async def no_secret(tenant_id: str, name: str) -> str:
    raise NotFound(name)


@asynccontextmanager
async def gateway(tmp_path: Path, **options: Any) -> AsyncIterator[Gateway]:
    # sandbox off: the upstream names its process by its own pid, which a sandbox makes 1.
    running = Gateway(
        App("limits"), data_dir=tmp_path, read_secret=no_secret, tenants=lambda: TENANTS, sandbox="off", **options
    )
    async with running.running():
        yield running


async def pid_of(gateway: Gateway, spec: UpstreamSpec, tenant: str) -> int:
    result = await gateway.call_tool(spec, tenant, "fine", {})
    content = result.content[0]
    assert isinstance(content, TextContent) and content.text.startswith("fine from pid "), result
    return int(content.text.removeprefix("fine from pid "))


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_a_process_beyond_the_servers_cap_is_refused_and_the_running_ones_carry_on(tmp_path: Path) -> None:
    spec = upstream("bad")
    async with gateway(tmp_path, max_processes=2, max_processes_per_tenant=5) as gw:
        acme, globex = await pid_of(gw, spec, "acme"), await pid_of(gw, spec, "globex")
        with pytest.raises(UpstreamUnavailable, match="limit of 2 upstream processes is reached") as refused:
            await pid_of(gw, spec, "initech")
        assert "gateway.max_stdio_processes" in refused.value.message
        assert "acme" not in refused.value.message and "globex" not in refused.value.message
        # Positive control: the first two tenants keep their own processes, untouched.
        assert (await pid_of(gw, spec, "acme"), await pid_of(gw, spec, "globex")) == (acme, globex)
        assert alive(acme) and alive(globex)
        with pytest.raises(UpstreamUnavailable, match="limit of 2"):  # still refused: nothing was made room for
            await pid_of(gw, spec, "initech")


async def test_a_tenant_beyond_its_own_cap_is_refused_and_others_still_start(tmp_path: Path) -> None:
    one, two = upstream("one"), upstream("two")
    async with gateway(tmp_path, max_processes=10, max_processes_per_tenant=1) as gw:
        first = await pid_of(gw, one, "acme")
        with pytest.raises(UpstreamUnavailable, match="limit of 1 upstream processes per tenant is reached"):
            await pid_of(gw, two, "acme")
        assert await pid_of(gw, two, "globex") > 0  # another tenant's first process still starts
        assert await pid_of(gw, one, "acme") == first


async def test_an_idle_process_is_reaped_and_makes_room_for_a_new_one(tmp_path: Path) -> None:
    spec = upstream("bad")
    async with gateway(tmp_path, max_processes=1, idle_timeout=1.5, health_interval=0.1) as gw:
        acme = await pid_of(gw, spec, "acme")
        with pytest.raises(UpstreamUnavailable, match="limit of 1 upstream processes is reached"):
            await pid_of(gw, spec, "globex")
        deadline = time.monotonic() + 15
        while True:
            try:
                globex = await pid_of(gw, spec, "globex")
                break
            except UpstreamUnavailable as exc:
                assert "limit" in exc.message, exc.message
                assert time.monotonic() < deadline, "the idle process was never reaped"
                await anyio.sleep(0.1)
        assert globex != acme
        assert not alive(acme)  # the idle process was stopped, not just forgotten
        assert alive(globex)
