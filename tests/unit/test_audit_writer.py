"""The durable sink: group commit, inline commits for lone calls, fail-closed and recovery."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

import anyio
import pytest

from tenantry.audit.chain import StoredRecord
from tenantry.audit.events import AuditEvent
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


async def test_a_lone_record_commits_inline_and_a_busy_store_falls_back_to_the_writer(tmp_path: Path) -> None:
    path = tmp_path / "a.sqlite3"
    sink = DurableAuditSink(lambda: SqliteAuditStore(path, busy_timeout=5))
    await anyio.sleep(0.1)  # let the writer open the store
    await sink.record(event(n=1), alone=True)
    assert sink.inline_commits == 1
    blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")
    threading.Timer(0.3, lambda: blocker.execute("ROLLBACK")).start()
    with anyio.fail_after(5):
        await sink.record(event(n=2), alone=True)  # does not block the loop on the lock: goes to the writer
    assert sink.inline_commits == 1 and sink.committed == 2
    await sink.aclose()
    blocker.close()


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
        await sink.record(event(n=3))
    FlakyStore.failing.clear()
    with anyio.fail_after(5):
        while not sink.available:  # noqa: ASYNC110 - polling a flag set by another thread
            await anyio.sleep(0.05)
    await sink.record(event(n=4))
    await sink.aclose()
    store = SqliteAuditStore(tmp_path / "a.sqlite3")
    records = list(store.read("acme"))
    assert [r.seq for r in records] == [1, 2, 3]  # 1, the held record of call 2, then 4
    assert b"result withheld" in records[1].record and b"%064x" % 2 in records[1].record
    from tenantry.audit.checkpoints import CheckpointSigner
    from tenantry.auth.keys import KeyRing

    keys = KeyRing(tmp_path / "keys", file_name="audit-signing-keys.json")
    keys.ensure()
    assert verify_stream(store, CheckpointSigner(keys, issuer="x"), "acme").ok
    store.close()
