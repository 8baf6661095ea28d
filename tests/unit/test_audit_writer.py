"""The durable sink: group commit off the event loop, fail-closed and recovery."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import anyio
import pydantic_core
import pytest

from tenantry.audit.chain import StoredRecord
from tenantry.audit.events import AuditEvent
from tenantry.audit.store.base import ServerInstance
from tenantry.audit.store.sqlite import SqliteAuditStore
from tenantry.audit.verify import verify_stream
from tenantry.audit.writer import DurableAuditSink
from tenantry.core.errors import AuditUnavailable

pytestmark = pytest.mark.anyio


def event(tenant: str = "acme", n: int = 0) -> AuditEvent:
    return AuditEvent(
        event_type="tool_call", tenant_id=tenant, result_status="ok", tool_name="echo", args_hash=f"sha256:{n:064x}"
    )


async def test_concurrent_records_share_transactions(tmp_path: Path) -> None:
    sink = DurableAuditSink(lambda: SqliteAuditStore(tmp_path / "a.sqlite3"))
    async with anyio.create_task_group() as tasks:
        for n in range(60):
            tasks.start_soon(sink.record, event(("acme", "globex", "initech")[n % 3], n))
    await sink.aclose()
    assert sink.committed == 60 and sink.batches < 60
    store = SqliteAuditStore(tmp_path / "a.sqlite3")
    assert {t: store.heads()[t][0] for t in ("acme", "globex", "initech")} == {"acme": 20, "globex": 20, "initech": 20}
    store.close()


class FlakyStore(SqliteAuditStore):
    """A real store that can be told to fail, for driving the sink's failure handling."""

    failing = threading.Event()

    def append(self, events: Sequence[AuditEvent]) -> list[StoredRecord]:
        if FlakyStore.failing.is_set():
            raise AuditUnavailable("disk full")
        return super().append(events)

    def ping(self) -> None:
        if FlakyStore.failing.is_set():
            raise AuditUnavailable("disk full")
        super().ping()


async def test_failure_fails_closed_keeps_the_records_and_recovers(tmp_path: Path) -> None:
    FlakyStore.failing.clear()
    sink = DurableAuditSink(lambda: FlakyStore(tmp_path / "a.sqlite3"), probe_interval=0.05)
    await sink.record(event(n=1))
    FlakyStore.failing.set()
    with pytest.raises(AuditUnavailable):
        await sink.record(event(n=2))  # a call that ran while the store failed: its result is withheld
    assert not sink.available
    with pytest.raises(AuditUnavailable):
        sink.ensure_writable()  # no new tool starts
    with pytest.raises(AuditUnavailable):
        await sink.record(event(n=3))  # a refusal while the store is known down: kept all the same
    FlakyStore.failing.clear()
    with anyio.fail_after(5):
        while not sink.available:  # noqa: ASYNC110 - polling a flag set by another thread
            await anyio.sleep(0.05)
    await sink.record(event(n=4))
    await sink.aclose()
    store = SqliteAuditStore(tmp_path / "a.sqlite3")
    records = list(store.read("acme"))
    assert [r.seq for r in records] == [1, 2, 3, 4]  # 1, the held records of 2 and 3, then 4
    assert b"%064x" % 2 in records[1].record  # what happened while the store was down is not lost
    assert b"%064x" % 3 in records[2].record
    from tenantry.audit.checkpoints import CheckpointSigner
    from tenantry.auth.keys import KeyRing

    keys = KeyRing(tmp_path / "keys", file_name="audit-signing-keys.json")
    keys.ensure()
    assert verify_stream(store, CheckpointSigner(keys, issuer="x"), "acme").ok
    store.close()


def start(tenant: str, request_id: str, tool: str = "write_file") -> AuditEvent:
    return AuditEvent(
        event_type="call_started",
        tenant_id=tenant,
        result_status="started",
        tool_name=tool,
        request_id=request_id,
        subject="alice",
        detail={"method": "tools/call"},
    )


def outcome(tenant: str, request_id: str) -> AuditEvent:
    return AuditEvent(
        event_type="tool_call", tenant_id=tenant, result_status="ok", tool_name="write_file", request_id=request_id
    )


async def test_a_submitted_outcome_rides_the_next_start_in_one_transaction(tmp_path: Path) -> None:
    # A long linger: the outcome may only be written together with the next durable record.
    sink = DurableAuditSink(lambda: SqliteAuditStore(tmp_path / "a.sqlite3"), linger=30)
    await anyio.sleep(0.1)
    await sink.record(start("acme", "r1"))
    sink.submit(outcome("acme", "r1"))
    await anyio.sleep(0.2)
    assert sink.committed == 1  # not flushed on its own (it lingers)...
    await sink.record(start("acme", "r2"))
    assert sink.committed == 3 and sink.batches == 2  # ...but with the next start, in the same commit
    await sink.aclose()


async def test_a_submitted_outcome_is_flushed_within_the_linger_when_nothing_else_comes(tmp_path: Path) -> None:
    sink = DurableAuditSink(lambda: SqliteAuditStore(tmp_path / "a.sqlite3"), linger=0.01)
    await anyio.sleep(0.1)
    sink.submit(outcome("acme", "r1"))
    with anyio.fail_after(2):
        while sink.committed < 1:  # noqa: ASYNC110 - polling a counter set by another thread
            await anyio.sleep(0.01)
    await sink.aclose()


async def test_a_lone_call_never_waits_for_the_group_window(tmp_path: Path) -> None:
    sink = DurableAuditSink(lambda: SqliteAuditStore(tmp_path / "a.sqlite3"), group_window=5.0)
    await anyio.sleep(0.1)
    with anyio.fail_after(2):  # far below the window: nobody else is in flight
        await sink.record(start("acme", "r1"))
    sink.submit(outcome("acme", "r1"))
    with anyio.fail_after(2):
        await sink.record(start("acme", "r2"))
    await sink.aclose()


async def test_with_calls_in_flight_starts_wait_for_company_then_commit_together(tmp_path: Path) -> None:
    sink = DurableAuditSink(lambda: SqliteAuditStore(tmp_path / "a.sqlite3"), group_window=0.3)
    await anyio.sleep(0.1)
    await sink.record(start("acme", "running"))  # a call in flight (no outcome yet)
    before = sink.batches
    began = time.monotonic()
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(sink.record, start("acme", "r1"))
        await anyio.sleep(0.05)  # within the window: the second start shares the first's commit
        tasks.start_soon(sink.record, start("globex", "r2"))
    waited = time.monotonic() - began
    assert sink.batches == before + 1 and sink.committed == 3
    assert 0.25 <= waited < 2.0  # held for the window, not longer
    await sink.aclose()


async def test_without_a_group_window_a_start_with_calls_in_flight_commits_at_once(tmp_path: Path) -> None:
    # The control: the same calls with the window off take a commit each, without waiting.
    sink = DurableAuditSink(lambda: SqliteAuditStore(tmp_path / "a.sqlite3"), group_window=0.0)
    await anyio.sleep(0.1)
    await sink.record(start("acme", "running"))
    began = time.monotonic()
    await sink.record(start("acme", "r1"))
    assert time.monotonic() - began < 0.25
    await sink.aclose()


async def test_records_kept_during_an_outage_survive_a_restart(tmp_path: Path) -> None:
    FlakyStore.failing.clear()
    spill = tmp_path / "spill.jsonl"
    sink = DurableAuditSink(lambda: FlakyStore(tmp_path / "a.sqlite3"), probe_interval=0.05, spill_path=spill)
    await sink.record(start("acme", "r1"))
    FlakyStore.failing.set()
    sink.submit(outcome("acme", "r1"))  # the tool ran; the store is down
    with anyio.fail_after(5):
        while sink.available:  # noqa: ASYNC110 - polling a flag set by another thread
            await anyio.sleep(0.01)
    assert spill.stat().st_size > 0  # on disk, not only in memory
    # The process dies during the outage (the thread is left behind; nothing else is written).
    sink._closing = True
    FlakyStore.failing.clear()
    restarted = DurableAuditSink(lambda: SqliteAuditStore(tmp_path / "a.sqlite3"), spill_path=spill)
    await restarted.aclose()
    store = SqliteAuditStore(tmp_path / "a.sqlite3")
    types = [(r.seq, pydantic_core.from_json(r.record)["event_type"]) for r in store.read("acme")]
    store.close()
    assert types == [(1, "call_started"), (2, "tool_call")]
    assert spill.stat().st_size == 0


async def test_a_call_left_open_by_a_dead_process_is_recorded_as_interrupted(tmp_path: Path) -> None:
    path = tmp_path / "a.sqlite3"
    crashed = SqliteAuditStore(path)
    beyond_pid_max = 2**22 + 17  # no process can have it: the instance is gone
    crashed.register_instance(ServerInstance("dead0instance", socket.gethostname(), beyond_pid_max, 0.0, 0.0))
    open_start, done_start = start("acme", "r-open"), start("globex", "r-done")
    for started in (open_start, done_start):
        started.detail["instance"] = "dead0instance"
    crashed.append([open_start, done_start])
    crashed.append([outcome("globex", "r-done")])  # this one finished before the crash
    crashed.close()
    sink = DurableAuditSink(lambda: SqliteAuditStore(path))
    await sink.aclose()
    assert sink.recovered_calls == 1
    store = SqliteAuditStore(path)
    last = pydantic_core.from_json(list(store.read("acme"))[-1].record)
    assert last["event_type"] == "tool_call" and last["result_status"] == "interrupted"
    assert last["request_id"] == "r-open" and last["tool_name"] == "write_file" and last["subject"] == "alice"
    assert [pydantic_core.from_json(r.record)["event_type"] for r in store.read("globex")] == [
        "call_started",
        "tool_call",
    ]  # positive control: a closed call gets no extra record
    assert all(i.instance != "dead0instance" for i in store.instances())
    store.close()


async def test_a_live_process_calls_are_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "a.sqlite3"
    live = SqliteAuditStore(path)
    live.register_instance(ServerInstance("live0instance", socket.gethostname(), os.getpid(), time.time(), time.time()))
    running = start("acme", "r-running")
    running.detail["instance"] = "live0instance"
    live.append([running])
    sink = DurableAuditSink(lambda: SqliteAuditStore(path))
    await sink.aclose()
    assert sink.recovered_calls == 0
    assert [pydantic_core.from_json(r.record)["event_type"] for r in live.read("acme")] == ["call_started"]
    live.close()


async def test_starts_carry_the_instance_and_the_low_water_mark_follows_open_calls(tmp_path: Path) -> None:
    sink = DurableAuditSink(lambda: SqliteAuditStore(tmp_path / "a.sqlite3"))
    first = start("acme", "r1")
    await sink.record(first)
    assert first.detail["instance"] == sink.instance.instance
    assert sink._low_water() == first.created  # the oldest call still open
    sink.submit(outcome("acme", "r1"))
    assert sink._low_water() > first.created  # nothing open: now
    await sink.aclose()


@pytest.mark.parametrize("recorded", [True, False], ids=["control-recorded-start", "start-not-recorded"])
async def test_a_start_that_was_not_recorded_does_not_hold_back_the_low_water_mark(
    tmp_path: Path, recorded: bool
) -> None:
    # The writer process's entry (enqueue with a token): a start that fails must not stay
    # among the open calls, or every later heartbeat stores its time as the low-water mark and
    # whoever closes this instance's calls rereads every record since.
    answers: list[tuple[list[int], list[int]]] = []
    sink = DurableAuditSink(
        lambda: FlakyStore(tmp_path / "a.sqlite3"),
        probe_interval=0.05,
        acknowledge=lambda ok, failed: answers.append((ok, failed)),
    )
    try:
        start = AuditEvent(
            event_type="call_started",
            tenant_id="acme",
            result_status="started",
            request_id="r1",
            detail={"method": "tools/call"},
        )
        if not recorded:
            FlakyStore.failing.set()
        sink.enqueue(start, 1, wait=True)
        with anyio.fail_after(5):
            while not answers:  # noqa: ASYNC110 - answered by the writer thread
                await anyio.sleep(0.01)
        FlakyStore.failing.clear()
        assert answers == ([([1], [])] if recorded else [([], [1])])
        later = time.time()
        if recorded:  # an open call holds the mark at its start
            assert sink._low_water() == start.created
        else:
            assert sink._low_water() >= later
    finally:
        FlakyStore.failing.clear()
        await sink.aclose()
