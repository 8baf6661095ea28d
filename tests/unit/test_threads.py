"""Per-tenant bulkheads for blocking work: one tenant's slow work never takes another's threads."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import anyio
import pytest

from tenantry.core.limits import TenantLimits
from tenantry.scoping.threads import Interrupt, ThreadBulkheads

pytestmark = pytest.mark.anyio

SLOW = "acme"
QUIET = "globex"


def bulkheads(**kwargs: int) -> ThreadBulkheads:
    limits = replace(TenantLimits(), blocking_threads=2)
    return ThreadBulkheads(lambda _tenant_id: limits, **kwargs)


async def until_idle(heads: ThreadBulkheads, tenant_id: str | None) -> None:
    deadline = time.monotonic() + 2.0
    while heads.busy_threads(tenant_id):
        assert time.monotonic() < deadline, "threads still busy"
        await anyio.sleep(0.01)


async def test_a_tenant_saturating_its_threads_does_not_delay_another() -> None:
    heads = bulkheads()
    release = threading.Event()
    async with anyio.create_task_group() as tg:
        for _ in range(10):  # five times the slow tenant's capacity
            tg.start_soon(lambda: heads.run(lambda: release.wait(10), tenant_id=SLOW))
        await anyio.sleep(0.1)
        assert heads.busy_threads(SLOW) == 2  # the rest of its calls wait for its own threads

        started = time.monotonic()
        assert await heads.run(lambda: "served", tenant_id=QUIET) == "served"
        assert time.monotonic() - started < 2.0  # waiting for the taken threads would be 10 s

        # Positive control: the slow tenant's own next call does wait.
        with anyio.move_on_after(0.2) as scope:
            await heads.run(lambda: None, tenant_id=SLOW)
        assert scope.cancelled_caught
        release.set()
    assert heads.busy_threads() == 0


async def test_system_work_runs_while_every_tenant_thread_is_taken() -> None:
    heads = bulkheads(tenant_threads=4)
    release = threading.Event()
    async with anyio.create_task_group() as tg:
        for index in range(8):
            tg.start_soon(lambda tenant=f"t{index}": heads.run(lambda: release.wait(10), tenant_id=tenant))
        await anyio.sleep(0.1)
        assert heads.busy_threads() == 4
        started = time.monotonic()
        assert await heads.run_system(lambda: "polled") == "polled"
        assert time.monotonic() - started < 2.0  # waiting for the taken threads would be 10 s
        # Positive control: a fifth tenant waits for the shared tenant ceiling.
        with anyio.move_on_after(0.2) as scope:
            await heads.run(lambda: None, tenant_id="t-late")
        assert scope.cancelled_caught
        release.set()


async def test_a_cancelled_call_keeps_its_thread_counted_until_the_thread_ends() -> None:
    heads = bulkheads()
    release = threading.Event()
    interrupt = Interrupt()
    started = time.monotonic()
    with anyio.move_on_after(0.1):
        await heads.run(lambda: release.wait(10), tenant_id=SLOW, interrupt=interrupt)
    assert time.monotonic() - started < 0.5  # the caller is released at once
    assert interrupt.is_set()
    assert heads.busy_threads(SLOW) == 1  # but the thread still counts against the tenant
    release.set()
    await until_idle(heads, SLOW)


async def test_a_call_cancelled_before_its_thread_starts_gives_its_tokens_back() -> None:
    heads = bulkheads()
    for _ in range(50):
        with anyio.CancelScope() as scope:
            scope.cancel()
            await heads.run(lambda: time.sleep(0.01), tenant_id=SLOW)
    await until_idle(heads, None)
    assert await heads.run(lambda: "still served", tenant_id=SLOW) == "still served"


async def test_errors_of_the_work_propagate_and_free_the_thread() -> None:
    heads = bulkheads()

    def fail() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await heads.run(fail, tenant_id=SLOW)
    assert heads.busy_threads(SLOW) == 0


async def test_the_limiter_registry_does_not_grow_with_the_tenant_count() -> None:
    heads = bulkheads(max_idle_tenants=10)
    for index in range(200):
        await heads.run(lambda: None, tenant_id=f"t{index}")
    assert heads.tracked_tenants() <= 11


async def test_a_changed_limit_applies_to_the_next_call() -> None:
    threads = {"n": 1}
    heads = ThreadBulkheads(lambda _t: replace(TenantLimits(), blocking_threads=threads["n"]))
    release = threading.Event()
    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(lambda: heads.run(lambda: release.wait(10), tenant_id=SLOW))
        await anyio.sleep(0.1)
        assert heads.busy_threads(SLOW) == 1
        threads["n"] = 3
        tg.start_soon(lambda: heads.run(lambda: release.wait(10), tenant_id=SLOW))
        await anyio.sleep(0.1)
        assert heads.busy_threads(SLOW) == 3
        release.set()
