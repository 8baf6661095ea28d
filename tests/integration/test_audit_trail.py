"""The audit trail of a running server: complete, per tenant, durable, fail-closed, crash-safe."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import threading
import time
from pathlib import Path

import anyio
import httpx2
import psycopg
import pytest
import rfc8785

from tests.support.rpc import modern_call
from tests.support.server import RunningServer, run_cli, start_server
from tests.support.store import init_store

pytestmark = pytest.mark.anyio


def args_hash(arguments: dict) -> str:
    return "sha256:" + hashlib.sha256(rfc8785.dumps(arguments)).hexdigest()


def call(server: RunningServer, token: str, tool: str, arguments: dict) -> httpx2.Response:
    return modern_call(server.mcp_url, token, "tools/call", {"name": tool, "arguments": arguments})


@pytest.fixture(scope="module")
def trail_server(tmp_path_factory: pytest.TempPathFactory):
    data = init_store(tmp_path_factory.mktemp("trail") / "data")
    run_cli("tenant", "create", "initech", "--tools", "whoami,query_crm,list_files,read_file", data_dir=data)
    server = start_server(data)
    yield server
    server.stop()


# The test's own tasks wait behind 100 client threads for the GIL: its loop, not the server's, is slow.
@pytest.mark.allow_slow_callbacks
async def test_hundred_calls_across_three_tenants_land_in_their_own_streams(trail_server: RunningServer) -> None:
    tokens = {t: trail_server.token(t, f"{t}-bot") for t in ("acme", "globex", "initech")}
    expected: dict[str, list[str]] = {t: [] for t in tokens}
    raw_values = []

    async def one(i: int) -> None:
        tenant = list(tokens)[i % 3]
        value = f"raw-arg-{i}-{os.urandom(4).hex()}"
        raw_values.append(value)
        arguments = {"filter": value, "limit": 5}
        response = await anyio.to_thread.run_sync(call, trail_server, tokens[tenant], "query_crm", arguments)
        assert response.status_code == 200 and "result" in response.json()
        expected[tenant].append(args_hash(arguments))

    async with anyio.create_task_group() as tasks:
        for i in range(100):
            tasks.start_soon(one, i)
    assert sum(len(v) for v in expected.values()) == 100
    all_records = trail_server.audit_records()
    for tenant, hashes in expected.items():
        stream = [r for r in trail_server.audit_records(tenant) if r["event_type"] == "tool_call"]
        found = {r["args_hash"] for r in stream}
        assert set(hashes) <= found, f"{tenant}: missing records"
        for other in tokens:
            if other != tenant:
                other_hashes = {r["args_hash"] for r in all_records if r["tenant_id"] == other}
                assert not set(hashes) & other_hashes, f"{tenant}'s calls leaked into {other}'s stream"
        assert all(r["args_hash"].startswith("sha256:") and r["tenant_id"] == tenant for r in stream)
    export = trail_server.data_dir.parent / "acme-export.jsonl"
    trail_server.cli("audit", "export", "--tenant", "acme", "--out", str(export))
    store = b"".join(p.read_bytes() for p in trail_server.data_dir.glob("audit.sqlite3*")).decode("latin-1")
    haystacks = [trail_server.logs(), json.dumps(all_records), export.read_text(), store]
    for value in raw_values:
        assert not any(value in hay for hay in haystacks)
    result = trail_server.cli("audit", "verify", check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    offline = trail_server.cli("audit", "verify", "--file", str(export), check=False)
    assert offline.returncode == 0 and "acme: ok" in offline.stdout


def test_verify_names_the_first_bad_record_and_exits_1(trail_server: RunningServer) -> None:
    token = trail_server.token("globex", "tamper-test")
    for _ in range(3):
        assert call(trail_server, token, "whoami", {}).status_code == 200
    seq = trail_server.audit_records("globex")[-2]["seq"]
    db = sqlite3.connect(trail_server.data_dir / "audit.sqlite3")
    db.execute("DROP TRIGGER audit_records_append_only_update")
    db.execute(
        "UPDATE audit_records SET record = replace(record, 'whoami', 'WHOAMI') WHERE tenant_id = 'globex' AND seq = ?",
        (seq,),
    )
    db.commit()
    db.close()
    result = trail_server.cli("audit", "verify", check=False)
    assert result.returncode == 1
    assert f"tenant globex, seq {seq}:" in result.stderr and "does not match the chain" in result.stderr
    assert "acme: ok" in result.stdout


def test_purge_is_explicit_respects_retention_and_is_audited(tmp_path: Path) -> None:
    data = init_store(tmp_path / "data")
    run_cli("tenant", "create", "acme", data_dir=data)
    too_recent = run_cli("audit", "purge", "--before", time.strftime("%Y-%m-%d"), "--yes", data_dir=data, check=False)
    assert too_recent.returncode == 2 and "retention is 365 days" in too_recent.stderr
    unconfirmed = run_cli("audit", "purge", "--before", "2020-01-01", data_dir=data, check=False)
    assert unconfirmed.returncode == 2 and "--yes" in unconfirmed.stderr
    old = run_cli("audit", "purge", "--before", "2020-01-01", "--yes", data_dir=data)
    assert "nothing to purge" in old.stdout


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_calls_fail_closed_while_the_audit_store_is_unavailable_and_recover(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    data = tmp_path / "data"
    env = {"TENANTRY_AUDIT__BUSY_TIMEOUT": "0.5"}
    if backend == "postgres":
        url = request.getfixturevalue("postgres_url")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DROP SCHEMA IF EXISTS tenantry_audit CASCADE")
        env["TENANTRY_AUDIT__URL"] = url
    server = start_server(data, env=env)
    blocker_done = threading.Event()
    try:
        token = server.token("acme", "alice")
        assert call(server, token, "whoami", {}).status_code == 200
        files = data / "tenants" / "acme" / "files"
        held = threading.Event()

        def hold_the_store() -> None:
            if backend == "sqlite":
                blocker = sqlite3.connect(data / "audit.sqlite3", isolation_level=None)
                blocker.execute("BEGIN EXCLUSIVE")
                held.set()
                blocker_done.wait(30)
                blocker.execute("ROLLBACK")
                blocker.close()
            else:
                with psycopg.connect(env["TENANTRY_AUDIT__URL"]) as blocker:
                    blocker.execute("LOCK TABLE tenantry_audit.heads IN ACCESS EXCLUSIVE MODE")
                    held.set()
                    blocker_done.wait(30)

        thread = threading.Thread(target=hold_the_store)
        thread.start()
        assert held.wait(10)
        first = call(server, token, "write_file", {"path": "during-outage-1.txt", "content": "x"})
        assert first.json()["error"]["data"]["code"] == "audit_unavailable"
        second = call(server, token, "write_file", {"path": "during-outage-2.txt", "content": "x"})
        assert second.json()["error"]["data"]["code"] == "audit_unavailable"
        assert "The audit store is unavailable" in second.json()["error"]["message"]
        assert not (files / "during-outage-2.txt").exists()  # refused before the tool ran
        blocker_done.set()
        thread.join()
        deadline = time.monotonic() + 10
        while (
            call(server, token, "whoami", {}).status_code != 200 or "error" in call(server, token, "whoami", {}).json()
        ):
            assert time.monotonic() < deadline, "the server did not recover by itself"
            time.sleep(0.2)
        records = server.audit_records("acme")
        first_hash = args_hash({"path": "during-outage-1.txt", "content": "x"})
        if (files / "during-outage-1.txt").exists():  # it ran before the failure was seen: its record is kept
            held_record = [r for r in records if r["args_hash"] == first_hash and r["event_type"] == "tool_call"]
            assert held_record and "result withheld" in held_record[0]["reason"]
        assert server.cli("audit", "verify", check=False).returncode == 0
    finally:
        blocker_done.set()
        server.stop()


def test_sigkill_mid_load_loses_no_returned_call(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = start_server(data)
    token = server.token("acme", "crash-test")
    returned: list[str] = []
    stop = threading.Event()

    def hammer(worker: int) -> None:
        n = 0
        while not stop.is_set():
            arguments = {"filter": f"crash-{worker}-{n}", "limit": 1}
            n += 1
            try:
                response = call(server, token, "query_crm", arguments)
            except httpx2.TransportError:
                return
            if response.status_code == 200 and "result" in response.json():
                returned.append(args_hash(arguments))

    workers = [threading.Thread(target=hammer, args=(w,)) for w in range(8)]
    for worker in workers:
        worker.start()
    deadline = time.monotonic() + 60
    while len(returned) < 100:  # kill mid-load, once plenty of calls have returned
        assert time.monotonic() < deadline, "the load never got going"
        time.sleep(0.05)
    server.process.send_signal(signal.SIGKILL)
    server.process.wait()
    stop.set()
    for worker in workers:
        worker.join()
    assert len(returned) >= 100
    restarted = start_server(data)
    try:
        verify = restarted.cli("audit", "verify", check=False)
        assert verify.returncode == 0, verify.stdout + verify.stderr
        recorded = {r["args_hash"] for r in restarted.audit_records("acme") if r["event_type"] == "tool_call"}
        missing = [h for h in returned if h not in recorded]
        assert not missing, f"{len(missing)} calls returned a result but have no audit record"
    finally:
        restarted.stop()


def test_export_can_be_verified_with_nothing_but_rfc8785_and_sha256(trail_server: RunningServer) -> None:
    export = trail_server.data_dir.parent / "initech-export.jsonl"
    trail_server.cli("audit", "export", "--tenant", "initech", "--out", str(export))
    lines = [json.loads(line) for line in export.read_text().splitlines()]
    assert lines
    previous = hashlib.sha256(b"tenantry-audit-genesis:initech").digest()
    for line in lines:
        claimed, prev = line.pop("hash"), line.pop("prev_hash")
        assert bytes.fromhex(prev.removeprefix("sha256:")) == previous
        digest = hashlib.sha256(previous + rfc8785.dumps(line)).digest()
        assert "sha256:" + digest.hex() == claimed
        previous = digest
    sidecar = json.loads(Path(str(export) + ".checkpoints.json").read_text())
    assert sidecar["jwks"]["keys"] and sidecar["head"] == "sha256:" + previous.hex()


def test_there_is_no_setting_that_turns_audit_off(tmp_path: Path) -> None:
    result = run_cli(
        "serve", "--port", "1", data_dir=tmp_path / "d", env={"TENANTRY_AUDIT__URL": "none://"}, check=False
    )
    assert result.returncode == 2 and "audit.url must be" in result.stderr


def test_cli_purge_of_old_records_leaves_a_verifiable_stream(tmp_path: Path) -> None:
    from tenantry.audit.events import AuditEvent
    from tenantry.audit.store.factory import open_audit_store

    data = init_store(tmp_path / "data")
    run_cli("tenant", "create", "acme", data_dir=data)
    store = open_audit_store(None, data)
    two_years_ago = time.time() - 2 * 365 * 86400
    store.append(
        [
            AuditEvent(
                event_type="tool_call",
                tenant_id="globex",
                result_status="ok",
                tool_name="whoami",
                created=two_years_ago + n,
            )
            for n in range(5)
        ]
    )  # globex 1-5: old
    store.append([AuditEvent(event_type="tool_call", tenant_id="globex", result_status="ok", tool_name="whoami")])
    store.append(
        [
            AuditEvent(
                event_type="tool_call",
                tenant_id="globex",
                result_status="ok",
                tool_name="whoami",
                created=two_years_ago,
            )
        ]
    )  # globex 7: old timestamp after a young record
    store.close()
    cutoff = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 400 * 86400))
    purged = run_cli("audit", "purge", "--before", cutoff, "--yes", data_dir=data)
    assert "globex: purged 5 records (through seq 5)" in purged.stdout
    assert "acme" not in purged.stdout  # acme's only record is young
    verify = run_cli("audit", "verify", data_dir=data, check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    events = [
        json.loads(line)
        for line in run_cli("audit", "tail", "--json", "--tenant", "globex", data_dir=data).stdout.splitlines()
    ]
    assert [e["seq"] for e in events] == [6, 7, 8]  # 7 kept: it follows a record young enough to keep
    assert events[-1]["event_type"] == "audit_purged" and events[-1]["detail"]["through_seq"] == 5
    assert events[-1]["actor"].startswith("cli:")
