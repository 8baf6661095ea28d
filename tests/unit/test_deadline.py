from __future__ import annotations

import asyncio

import anyio
import pytest

from tenantry.framework.deadline import DeadlineExceeded, DeadlineWatch, Interrupted

pytestmark = pytest.mark.anyio


async def test_finishes_in_time() -> None:
    async def quick() -> int:
        await asyncio.sleep(0)
        return 7

    assert await DeadlineWatch().run(quick(), 1.0) == 7


async def test_slow_work_is_cancelled_and_reported() -> None:
    cleaned = []

    async def slow() -> None:
        try:
            await asyncio.sleep(10)
        finally:
            cleaned.append(True)

    started = asyncio.get_running_loop().time()
    with pytest.raises(DeadlineExceeded):
        await DeadlineWatch(granularity=0.02).run(slow(), 0.05)
    assert asyncio.get_running_loop().time() - started < 1.0
    assert cleaned == [True]
    assert asyncio.current_task().cancelling() == 0  # the cancellation was undone exactly once


async def test_outer_cancellation_is_not_swallowed() -> None:
    finished = False
    with anyio.move_on_after(0.05) as outer:
        await DeadlineWatch().run(asyncio.sleep(10), 5.0)
        finished = True
    assert outer.cancelled_caught and not finished


async def test_many_calls_only_the_slow_ones_expire() -> None:
    watch = DeadlineWatch(granularity=0.02)
    outcomes: list[str] = []

    async def call(delay: float) -> None:
        try:
            await watch.run(asyncio.sleep(delay), 0.1)
            outcomes.append("done")
        except DeadlineExceeded:
            outcomes.append("timeout")

    async with anyio.create_task_group() as tasks:
        for delay in (0.0, 0.01, 5.0, 0.02, 5.0):
            tasks.start_soon(call, delay)
    assert sorted(outcomes) == ["done", "done", "done", "timeout", "timeout"]


async def test_timeout_inside_an_anyio_task_group_leaves_the_group_healthy() -> None:
    results = []

    async def timed() -> None:
        try:
            await DeadlineWatch(granularity=0.02).run(asyncio.sleep(10), 0.05)
        except DeadlineExceeded:
            results.append("timeout")
        await asyncio.sleep(0.01)
        results.append("still running")

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(timed)
    assert results == ["timeout", "still running"]


async def test_interrupt_cancels_only_the_tagged_work() -> None:
    watch = DeadlineWatch(granularity=0.02)
    outcomes: dict[str, str] = {}

    async def sleeper(name: str, tag: str) -> None:
        try:
            await watch.run(asyncio.sleep(0.3), 5.0, tag=tag)
            outcomes[name] = "finished"
        except Interrupted:
            outcomes[name] = "interrupted"

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(sleeper, "a1", "acme")
        tasks.start_soon(sleeper, "a2", "acme")
        tasks.start_soon(sleeper, "g1", "globex")
        await asyncio.sleep(0.05)
        assert watch.interrupt("acme") == 2
    assert outcomes == {"a1": "interrupted", "a2": "interrupted", "g1": "finished"}
    assert asyncio.current_task().cancelling() == 0
