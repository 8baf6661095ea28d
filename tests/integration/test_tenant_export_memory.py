"""``tenant export`` of a large tenant streams: its peak memory stays far below the data it writes."""

from __future__ import annotations

import os
import sqlite3
import tracemalloc
from pathlib import Path

import pytest

from tenantry.core.settings import load_settings
from tenantry.lifecycle.export import export_tenant
from tenantry.lifecycle.registry import tenant_data_of
from tenantry.runtime import Runtime
from tenantry.scoping.files.local import tenant_files_root
from tenantry.scoping.sql.sqlite import tenant_database_path

ROWS = 120_000
FILE_BYTES = 24 * 1024 * 1024
PEAK_BOUND = 8 * 1024 * 1024


def _large_tenant(runtime: Runtime, tenant: str) -> int:
    """A tenant with ~36 MB of SQL rows and a 24 MB file, written behind the handles' back (fast)."""
    runtime.store.create_tenant(tenant)
    path = tenant_database_path(runtime.data_dir, tenant)
    path.parent.mkdir(parents=True)
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
        conn.executemany("INSERT INTO events (body) VALUES (?)", ((f"{i:08d}-" + "x" * 280,) for i in range(ROWS)))
    root = tenant_files_root(runtime.data_dir, tenant)
    root.mkdir(parents=True)
    with (root / "big.bin").open("wb") as handle:
        for _ in range(FILE_BYTES // (1 << 20)):
            handle.write(os.urandom(1 << 20))
    return ROWS * 290 + FILE_BYTES


@pytest.mark.allow_slow_callbacks
def test_exporting_a_large_tenant_holds_a_bounded_amount_of_memory(tmp_path: Path) -> None:
    runtime = Runtime(load_settings(data_dir=tmp_path / "data"), create=True)
    try:
        held = _large_tenant(runtime, "bulky")
        tenant_data_of(runtime)  # imports and opened stores are not the export's own memory
        tracemalloc.start()
        try:
            outcome = export_tenant(runtime, "bulky", tmp_path / "bundle", actor="test")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    finally:
        runtime.close()
    assert outcome.bytes > held  # positive control: the export really wrote it all
    assert sum(1 for _ in (tmp_path / "bundle" / "sql" / "events.jsonl").open("rb")) == ROWS
    assert (tmp_path / "bundle" / "files" / "big.bin").stat().st_size == FILE_BYTES
    assert peak < PEAK_BOUND, f"peak {peak / 2**20:.1f} MiB for {outcome.bytes / 2**20:.0f} MiB exported"
