"""The audit writer process: durable before the answer, fail closed when it dies, nothing lost."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import anyio
import pydantic_core
import pytest

from tenantry.audit.checkpoints import CheckpointSigner
from tenantry.audit.events import AuditEvent
from tenantry.audit.process_sink import ProcessAuditSink, WriterCommand
from tenantry.audit.store.sqlite import SqliteAuditStore
from tenantry.audit.verify import verify_stream
from tenantry.auth.keys import KeyRing
from tenantry.core.errors import AuditUnavailable

pytestmark = pytest.mark.anyio


def start(request_id: str) -> AuditEvent:
    return AuditEvent(
        event_type="call_started",
        tenant_id="acme",
        result_status="started",
        tool_name="write_file",
        request_id=request_id,
        subject="alice",
        detail={"method": "tools/call"},
    )


def outcome(request_id: str) -> AuditEvent:
    return AuditEvent(
        event_type="tool_call", tenant_id="acme", result_status="ok", tool_name="write_file", request_id=request_id
    )


def refusal(n: int) -> AuditEvent:
    return AuditEvent(
        event_type="tool_denied", tenant_id="acme", result_status="denied", tool_name="secret", reason=f"r{n}"
    )


def sink_for(data: Path, **kwargs: float) -> ProcessAuditSink:
    return ProcessAuditSink(WriterCommand(None, data, data / "audit-spill.jsonl", probe_interval=0.05), **kwargs)


def stream(data: Path) -> list[dict[str, object]]:
    store = SqliteAuditStore(data / "audit.sqlite3")
    try:
        return [pydantic_core.from_json(r.record) for r in store.read("acme")]
    finally:
        store.close()


async def wait_until(condition: object, seconds: float = 10.0) -> None:
    with anyio.fail_after(seconds):
        while not condition():  # type: ignore[operator]  # noqa: ASYNC110 - a flag set by another process
            await anyio.sleep(0.02)


async def test_records_are_durable_when_record_returns_and_concurrent_ones_share_commits(tmp_path: Path) -> None:
    sink = sink_for(tmp_path)
    try:
        async with anyio.create_task_group() as tasks:
            for n in range(40):
                tasks.start_soon(sink.record, start(f"r{n}"))
        # durable already: another connection reads all of them before the sink closes
        assert sorted(str(r["request_id"]) for r in stream(tmp_path)) == sorted(f"r{n}" for n in range(40))
        assert sink.committed == 40 and sink.batches < 40
        assert sink._process.pid != os.getpid()  # the commits ran in the writer process
    finally:
        await sink.aclose()
    assert sink._process.poll() == 0


async def test_a_submitted_outcome_rides_the_next_start(tmp_path: Path) -> None:
    sink = sink_for(tmp_path, linger=30.0)
    try:
        await sink.record(start("r1"))
        sink.submit(outcome("r1"))
        await anyio.sleep(0.2)
        assert [r["event_type"] for r in stream(tmp_path)] == ["call_started"]  # it lingers...
        await sink.record(start("r2"))
        assert [r["event_type"] for r in stream(tmp_path)] == ["call_started", "tool_call", "call_started"]
    finally:
        await sink.aclose()


async def test_a_killed_writer_fails_closed_loses_no_outcome_and_is_replaced(tmp_path: Path) -> None:
    sink = sink_for(tmp_path, linger=30.0)
    try:
        await sink.record(start("r1"))
        sink.submit(outcome("r1"))  # lingering in this process when the writer dies
        sink._flush()  # ...or already written to the pipe: either way it must not be lost
        first = sink._process
        first.send_signal(signal.SIGKILL)
        with pytest.raises(AuditUnavailable):
            await sink.record(start("r2"))  # its call is refused, not run unaudited
        assert not sink.available
        with pytest.raises(AuditUnavailable):
            sink.ensure_writable()
        await wait_until(lambda: sink.available and sink._process is not first)
        await sink.record(start("r3"))  # positive control: the new writer records
    finally:
        await sink.aclose()
    records = stream(tmp_path)
    outcomes = [r for r in records if r["event_type"] == "tool_call"]
    assert [o["request_id"] for o in outcomes if o["result_status"] == "ok"] == ["r1"]  # kept, then written
    assert [str(r["request_id"]) for r in records if r["event_type"] == "call_started"][-1] == "r3"
    # r2's start was never confirmed: it is closed as refused, whether or not it reached the disk
    assert [o["result_status"] for o in outcomes if o["request_id"] == "r2"] == ["error"]
    keys = KeyRing(tmp_path / "keys", file_name="audit-signing-keys.json")
    keys.ensure()
    store = SqliteAuditStore(tmp_path / "audit.sqlite3")
    try:
        assert verify_stream(store, CheckpointSigner(keys, issuer="x"), "acme").ok  # the chain is intact
    finally:
        store.close()


async def test_a_refusal_during_an_outage_is_kept_and_written_when_the_store_is_back(tmp_path: Path) -> None:
    sink = ProcessAuditSink(
        WriterCommand(None, tmp_path, tmp_path / "audit-spill.jsonl", busy_timeout=0.2, probe_interval=0.05)
    )
    try:
        await sink.record(refusal(0))
        blocker = sqlite3.connect(tmp_path / "audit.sqlite3", isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            with pytest.raises(AuditUnavailable):
                await sink.record(refusal(1))
            with pytest.raises(AuditUnavailable):
                await sink.record(refusal(2))  # the store is known to be down now
            with pytest.raises(AuditUnavailable):
                await sink.record(start("r9"))  # no call starts
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        await wait_until(lambda: sink.available)
        await sink.record(refusal(3))
    finally:
        await sink.aclose()
    records = stream(tmp_path)
    assert [r["reason"] for r in records] == ["r0", "r1", "r2", "r3"]
    assert all(r["event_type"] != "call_started" for r in records)


PARENT = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    from pathlib import Path
    from tenantry.audit.events import AuditEvent
    from tenantry.audit.process_sink import ProcessAuditSink, WriterCommand

    async def main():
        data = Path(sys.argv[1])
        sink = ProcessAuditSink(WriterCommand(None, data, data / "audit-spill.jsonl"))
        await sink.record(AuditEvent(event_type="call_started", tenant_id="acme", result_status="started",
                                     tool_name="write_file", request_id="open", detail={"method": "tools/call"}))
        print(sink._process.pid, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)  # the server dies while the call runs

    asyncio.run(main())
    """
)


def run_server_that_dies(script: str, data: Path) -> None:
    """Run ``script`` (a stand-in server that SIGKILLs itself after printing its writer's pid)
    and wait until that writer has exited too."""
    server = subprocess.run(
        [sys.executable, "-c", script, str(data)], capture_output=True, text=True, timeout=60, check=False
    )
    assert server.returncode == -signal.SIGKILL, server.stderr
    writer_pid = int(server.stdout.split()[0])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(writer_pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    pytest.fail("the writer outlived its server")


def test_when_the_server_dies_the_writer_closes_its_open_calls_at_once_and_exits(tmp_path: Path) -> None:
    run_server_that_dies(PARENT, tmp_path)
    records = stream(tmp_path)
    assert [(r["event_type"], r["result_status"]) for r in records] == [
        ("call_started", "started"),
        ("tool_call", "interrupted"),
    ]
    assert records[1]["request_id"] == "open"


RESTARTED_PARENT = textwrap.dedent(
    """
    import asyncio, os, signal, sys, time
    from pathlib import Path
    from tenantry.audit.events import AuditEvent
    from tenantry.audit.process_sink import ProcessAuditSink, WriterCommand

    def start(request_id):
        return AuditEvent(event_type="call_started", tenant_id="acme", result_status="started",
                          tool_name="write_file", request_id=request_id, detail={"method": "tools/call"})

    async def main():
        data = Path(sys.argv[1])
        sink = ProcessAuditSink(WriterCommand(None, data, data / "audit-spill.jsonl", probe_interval=0.05))
        await sink.record(start("before"))  # a call starts, and runs on...
        first = sink._process
        first.kill()  # ...while the audit writer dies and is replaced
        first.wait()
        while not (sink.available and sink._process is not first):
            await asyncio.sleep(0.02)
        await sink.record(start("after"))  # a call started through the new writer
        print(sink._process.pid, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)  # the server dies while both calls run

    asyncio.run(main())
    """
)


def test_calls_left_open_by_a_replaced_writer_are_still_closed_when_the_server_dies(tmp_path: Path) -> None:
    run_server_that_dies(RESTARTED_PARENT, tmp_path)
    closed = {str(r["request_id"]): r["result_status"] for r in stream(tmp_path) if r["event_type"] == "tool_call"}
    assert closed.get("after") == "interrupted"  # positive control: the new writer's own call
    # the call journaled by the writer that died: the new one took it over, and closed it too
    assert closed.get("before") == "interrupted", closed
    store = SqliteAuditStore(tmp_path / "audit.sqlite3")
    try:
        assert store.instances() == []  # nothing is left for a later server to find
    finally:
        store.close()


async def test_the_writer_ignores_the_interrupts_that_reach_a_whole_process_group(tmp_path: Path) -> None:
    sink = sink_for(tmp_path)
    try:
        await sink.record(start("r1"))
        sink._process.send_signal(signal.SIGINT)  # Ctrl-C in the server's terminal
        sink._process.send_signal(signal.SIGTERM)  # a service manager stopping the server's group
        await anyio.sleep(0.2)
        assert sink._process.poll() is None
        sink.submit(outcome("r1"))  # the server's last outcome, sent while it shuts down
    finally:
        await sink.aclose()
    assert [r["event_type"] for r in stream(tmp_path)] == ["call_started", "tool_call"]


def command_line(pid: int) -> bytes:
    return Path(f"/proc/{pid}/cmdline").read_bytes()


async def test_the_store_url_reaches_the_writer_but_never_its_command_line(tmp_path: Path) -> None:
    # A PostgreSQL URL carries a password, and any local user can read a process's command line.
    secret_path = tmp_path / "s3cret-password-in-url.sqlite3"
    sink = ProcessAuditSink(WriterCommand(f"sqlite:///{secret_path}", tmp_path, tmp_path / "audit-spill.jsonl"))
    try:
        await sink.record(start("r1"))
        assert b"s3cret" not in command_line(sink._process.pid)
    finally:
        await sink.aclose()
    store = SqliteAuditStore(secret_path)  # positive control: the writer used the configured store
    try:
        assert pydantic_core.from_json(next(iter(store.read("acme"))).record)["request_id"] == "r1"
    finally:
        store.close()
    assert not (tmp_path / "audit.sqlite3").exists()


def test_closing_without_an_event_loop_still_commits_and_stops_the_writer(tmp_path: Path) -> None:
    sink = sink_for(tmp_path)
    sink.submit(outcome("r0"))  # no running loop: written at once
    sink.close()
    assert sink._process.poll() == 0
    assert [r["request_id"] for r in stream(tmp_path)] == ["r0"]


async def test_a_stopped_writer_is_replaced_after_the_stall_timeout_without_a_failing_watchdog(tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    errors: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    sink = sink_for(tmp_path, stall_timeout=0.5)
    try:
        await sink.record(start("r1"))
        first = sink._process
        first.send_signal(signal.SIGSTOP)  # alive, but it answers nothing
        with pytest.raises(AuditUnavailable):
            await sink.record(start("r2"))  # refused once the stall timeout has passed
        assert first.wait(5) == -signal.SIGKILL  # reaped by the sink without blocking its loop
        await wait_until(lambda: sink.available and sink._process is not first)
        await sink.record(start("r3"))  # positive control: the new writer records
    finally:
        await sink.aclose()
        loop.set_exception_handler(None)
    assert errors == []  # the watchdog of the writer it killed did not fail
    assert "r3" in [r["request_id"] for r in stream(tmp_path) if r["event_type"] == "call_started"]
