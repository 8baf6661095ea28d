"""A halt reaches every dedicated call in flight: those waiting for the tenant's worker to start
(seconds on a busy host) are answered ``call_cancelled`` at once, not once the worker is up, by
which time the halt may have closed their sessions (attack review 2026-12-02, finding 6); and in
the worker, a call whose frame was read in the same turn as the halt is cancelled too."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, cast

import pytest

import tenantry
from tenantry.audit.events import AuditEvent
from tenantry.core.settings import WorkerSettings
from tenantry.framework.frames import read_frame
from tenantry.framework.invoker import CallCancelled, Invocation
from tenantry.framework.redaction import SecretRedactor
from tenantry.framework.worker import WorkerInvoker, WorkerLaunch
from tenantry.framework.worker_host import WorkerHost
from tenantry.framework.worker_process import WorkerProcess

pytestmark = pytest.mark.anyio


class NoAudit:
    def submit(self, event: AuditEvent) -> None:
        pass


def waiting_call(tenant_id: str) -> Invocation:
    context = cast(Any, SimpleNamespace(tenant_id=tenant_id, request_id="r1"))
    target = cast(Any, SimpleNamespace(name="nap"))
    return Invocation(target, {}, context, 30.0, lambda: SecretRedactor([]))


async def test_a_halt_answers_the_calls_waiting_for_their_worker_to_start_and_only_those() -> None:
    never = asyncio.Event()

    async def slow_launch(tenant_id: str) -> WorkerLaunch:
        await never.wait()  # a worker that takes longer to start than anyone waits here
        raise AssertionError("not reached")

    invoker = WorkerInvoker(slow_launch, WorkerSettings(), cast(Any, NoAudit()))
    halted = [asyncio.create_task(invoker.invoke(waiting_call("initech"))) for _ in range(2)]
    bystander = asyncio.create_task(invoker.invoke(waiting_call("hooli")))
    await asyncio.sleep(0.05)
    assert not any(task.done() for task in (*halted, bystander))

    assert invoker.cancel_tenant("initech") == 2
    for task in halted:
        with pytest.raises(CallCancelled):
            await asyncio.wait_for(task, 1.0)
    await asyncio.sleep(0.05)
    assert not bystander.done()  # positive control: another tenant's call still waits for its worker
    bystander.cancel()
    with pytest.raises(asyncio.CancelledError):
        await bystander
    for state in invoker._tenants.values():
        if state.starting is not None:
            state.starting.cancel()


class FrameSink:
    """The worker's end of the connection: what it wrote, decoded."""

    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> None:
        self.data += data

    async def drain(self) -> None:
        pass

    async def frames(self) -> list[dict[str, Any]]:
        reader = asyncio.StreamReader()
        reader.feed_data(bytes(self.data))
        reader.feed_eof()
        found = []
        while (frame := await read_frame(reader, 1 << 20)) is not None:
            found.append(frame)
        return found


def call_frame(call_id: int, seconds: float) -> dict[str, Any]:
    return {
        "t": "call",
        "id": call_id,
        "kind": "tool",
        "name": "nap",
        "arguments": {"seconds": seconds},
        "timeout": 30.0,
        "tenant_id": "initech",
        "subject": "agent",
        "request_id": f"r{call_id}",
    }


async def test_a_halt_read_in_the_same_turn_as_a_call_cancels_it_in_the_worker() -> None:
    app = tenantry.App("worker-halt")

    @app.tool()
    async def nap(ctx: tenantry.ToolContext, seconds: float) -> str:
        await asyncio.sleep(seconds)
        return "rested"

    host = WorkerHost(app, "initech", cast(Any, None), [], max_frame_bytes=1 << 20)
    sink = FrameSink()
    host._writer = cast(Any, sink)
    host._on_frame(call_frame(1, 30))  # both frames read before the call's task first runs
    host._on_frame({"t": "halt"})
    host._on_frame(call_frame(2, 0))  # positive control: a call after the halt runs
    await asyncio.wait_for(asyncio.gather(*host._calls.values()), 2.0)
    replies = {frame["id"]: frame for frame in await sink.frames()}
    assert replies[1]["t"] == "error" and replies[1]["error"]["code"] == "call_cancelled"
    assert replies[2]["t"] == "result"


class HeldConnection(FrameSink):
    """A connection to the worker whose writes wait (a busy socket) until released."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = asyncio.Event()
        self.release = asyncio.Event()

    async def drain(self) -> None:
        self.waiting.set()
        await self.release.wait()

    def is_closing(self) -> bool:
        return False


def framed_call(standing: Callable[[], bool]) -> Invocation:
    client = SimpleNamespace(capabilities=None, input_responses=None, request_state=None)
    context = SimpleNamespace(
        tenant_id="initech",
        subject="agent",
        session_id=None,
        request_id="r1",
        allowed_tools=set(),
        resource_prefix="",
        client=client,
    )
    target = cast(Any, SimpleNamespace(name="nap"))
    return Invocation(target, {}, cast(Any, context), 30.0, lambda: SecretRedactor([]), standing)


async def no_exit(worker: WorkerProcess, status: int, expected: bool) -> None:
    raise AssertionError("not reached")


def held_worker(connection: HeldConnection) -> WorkerProcess:
    process = cast(Any, SimpleNamespace(pid=1))
    return WorkerProcess(
        "initech",
        process,
        asyncio.StreamReader(),
        cast(Any, connection),
        fingerprint="test",
        max_frame_bytes=1 << 20,
        on_exit=no_exit,
    )


@pytest.mark.parametrize("halted", [True, False], ids=["halted", "control"])
async def test_a_halt_while_a_calls_frame_waits_for_the_connection_cancels_it_in_the_worker(halted: bool) -> None:
    connection = HeldConnection()
    worker = held_worker(connection)
    state = {"halted": False}
    task = asyncio.create_task(worker.call(framed_call(lambda: not state["halted"])))
    await asyncio.wait_for(connection.waiting.wait(), 2.0)
    if halted:  # what the kill switch does meanwhile: the halt frame goes out at once
        state["halted"] = True
        assert worker.halt() == 1
    connection.release.set()
    if halted:
        with pytest.raises(CallCancelled):
            await asyncio.wait_for(task, 2.0)
        # The halt may have reached the worker before the call: the call is cancelled after it.
        written = [(f["t"], f.get("id")) for f in await connection.frames()]
        assert written == [("call", 1), ("halt", None), ("cancel", 1)]
    else:  # positive control: a call nobody halted waits for its answer, and nothing cancels it
        await asyncio.sleep(0.1)
        assert not task.done()
        assert [f["t"] for f in await connection.frames()] == ["call"]
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
