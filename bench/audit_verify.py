"""How fast ``tenantry audit verify`` proves a store intact (target: at least 200,000 records/s).

Fills a fresh SQLite audit store with N records over a few tenants (signed checkpoints
included), then times, alternately over a few rounds in the same process, (a) reading every
row back (the floor: what the storage alone costs) and (b) a full verification through the
same code ``tenantry audit verify`` runs; prints the medians in records per second and the
ratio b/a.

    .venv/bin/python bench/audit_verify.py [--records 500000] [--tenants 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from rich.progress import Progress

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from tenantry.audit.checkpoints import Checkpointer, CheckpointSigner
from tenantry.audit.events import AuditEvent
from tenantry.audit.store.sqlite import SqliteAuditStore
from tenantry.audit.verify import verify_stream
from tenantry.auth.keys import KeyRing


def fill(store: SqliteAuditStore, signer: CheckpointSigner, records: int, tenants: list[str]) -> None:
    batch = 10_000
    checkpointer = Checkpointer(signer, interval=60)
    with Progress(transient=True) as bar:
        task = bar.add_task("writing records", total=records)
        written = 0
        while written < records:
            size = min(batch, records - written)
            store.append(
                [
                    AuditEvent(
                        event_type="tool_call",
                        tenant_id=tenants[(written + i) % len(tenants)],
                        result_status="ok",
                        session_id="3f2a9c0e8b7d4e1f9a6b5c4d3e2f1a0b",
                        subject="agent-7",
                        tool_name="query_crm",
                        args_hash=f"sha256:{written + i:064x}",
                        latency_ms=1.234,
                        ip_address="10.1.2.3",
                        request_id=f"{written + i:032x}",
                    )
                    for i in range(size)
                ]
            )
            written += size
            if written % 100_000 == 0:
                checkpointer.checkpoint_now(store)
            bar.advance(task, size)
    checkpointer.checkpoint_now(store)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=500_000)
    parser.add_argument("--tenants", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    tenants = [f"tenant-{i}" for i in range(args.tenants)]
    with tempfile.TemporaryDirectory(prefix="tenantry-verify-") as tmp:
        keys = KeyRing(Path(tmp) / "keys", file_name="audit-signing-keys.json")
        keys.ensure()
        signer = CheckpointSigner(keys, issuer="http://bench")
        store = SqliteAuditStore(Path(tmp) / "audit.sqlite3")
        fill(store, signer, args.records, tenants)

        read_rates, verify_rates = [], []
        for _ in range(args.rounds):  # alternate a, b, a, b: machine noise hits both
            started = time.perf_counter()
            read = sum(1 for tenant in tenants for _ in store.chain(tenant))
            read_rates.append(read / (time.perf_counter() - started))

            started = time.perf_counter()
            with Progress(transient=True) as bar:
                task = bar.add_task("verifying", total=args.records)
                reports = [
                    verify_stream(store, signer, t, progress=lambda n, task=task: bar.advance(task, n)) for t in tenants
                ]
            verified = sum(r.records for r in reports)
            verify_rates.append(verified / (time.perf_counter() - started))
            assert all(r.ok for r in reports), [r.line() for r in reports if not r.ok]
            assert read == verified == args.records
        store.close()

    read_rate, verify_rate = statistics.median(read_rates), statistics.median(verify_rates)
    print(f"records: {verified} in {len(tenants)} streams, {sum(r.checkpoints for r in reports)} signed checkpoints")
    print(f"(a) read the rows only: {read_rate:>10,.0f} records/s (median of {args.rounds})")
    print(f"(b) full verify:        {verify_rate:>10,.0f} records/s (median; target >= 200,000)")
    print(f"    verify rounds: {', '.join(f'{r:,.0f}' for r in verify_rates)}")
    print(f"ratio b/a: {verify_rate / read_rate:.3f}")


if __name__ == "__main__":
    main()
