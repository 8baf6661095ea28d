"""``tenantry audit export|verify|tail`` as an operator runs them: exports that prove where they
end, tenants that must exist, tail output that cannot fake a line, and --follow without gaps."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from tenantry.audit.events import SYSTEM_STREAM, AuditEvent
from tenantry.audit.store.factory import open_audit_store
from tenantry.controlplane.factory import open_tenant_store
from tests.support.server import TENANTRY, run_cli
from tests.support.store import init_store


def event(
    tenant: str,
    n: int = 0,
    created: float | None = None,
    *,
    tool_name: str = "echo",
    subject: str | None = None,
    reason: str | None = None,
) -> AuditEvent:
    return AuditEvent(
        event_type="tool_call",
        tenant_id=tenant,
        result_status="ok",
        args_hash=f"sha256:{n:064x}",
        tool_name=tool_name,
        subject=subject,
        reason=reason,
        created=time.time() if created is None else created,
    )


def append(data: Path, events: list[AuditEvent], url: str | None = None) -> None:
    store = open_audit_store(url, data)
    try:
        store.append(events)
    finally:
        store.close()


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = init_store(tmp_path_factory.mktemp("audit-cli") / "data")
    run_cli("tenant", "create", "acme", data_dir=data)
    run_cli("tenant", "create", "globex", data_dir=data)
    append(data, [event("acme", n) for n in range(8)])
    return data


# -- export and verify --file ------------------------------------------------------------------


def test_cut_off_export_fails_verify_naming_tenant_and_seq(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "acme.jsonl"
    run_cli("audit", "export", "--tenant", "acme", "--out", str(out), data_dir=data)
    intact = run_cli("audit", "verify", "--file", str(out), check=False)
    assert intact.returncode == 0 and "acme: ok" in intact.stdout, intact.stderr
    lines = out.read_text().splitlines(keepends=True)
    last_seq = json.loads(lines[-1])["seq"]
    out.write_text("".join(lines[:-2]))
    cut = run_cli("audit", "verify", "--file", str(out), check=False)
    assert cut.returncode == 1
    assert f"error: audit verify failed: tenant acme, seq {last_seq - 1}: export truncated" in cut.stderr
    assert len(cut.stderr.strip().splitlines()) == 1


def test_verify_file_requires_the_sidecar_and_finds_it_with_checkpoints(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "acme.jsonl"
    run_cli("audit", "export", "--tenant", "acme", "--out", str(out), data_dir=data)
    kept = tmp_path / "kept.json"
    Path(str(out) + ".checkpoints.json").rename(kept)
    missing = run_cli("audit", "verify", "--file", str(out), check=False)
    assert missing.returncode == 1
    assert "tenant acme: no export statement" in missing.stderr and "--checkpoints" in missing.stderr
    found = run_cli("audit", "verify", "--file", str(out), "--checkpoints", str(kept), check=False)
    assert found.returncode == 0, found.stderr


def test_verify_file_pins_the_key_by_id_jwks_or_data_dir(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "acme.jsonl"
    run_cli("audit", "export", "--tenant", "acme", "--out", str(out), data_dir=data)
    keys = json.loads(run_cli("keys", "list", "--audit", "--json", data_dir=data).stdout)
    kid = next(k["kid"] for k in keys if k["state"] == "current")
    sidecar = Path(str(out) + ".checkpoints.json")
    trusted = tmp_path / "trusted-jwks.json"
    trusted.write_text(json.dumps(json.loads(sidecar.read_text())["jwks"]))
    for pin in (["--kid", kid], ["--jwks", str(trusted)], ["--data-dir", str(data)]):
        result = run_cli("audit", "verify", "--file", str(out), *pin, check=False)
        assert result.returncode == 0 and "not pinned" not in result.stdout, (pin, result.stderr)
    wrong = run_cli("audit", "verify", "--file", str(out), "--kid", "not-the-audit-key", check=False)
    assert wrong.returncode == 1 and "tenant acme: the export statement does not verify" in wrong.stderr
    unpinned = run_cli("audit", "verify", "--file", str(out), check=False)
    assert unpinned.returncode == 0 and "not pinned" in unpinned.stdout
    assert run_cli("audit", "verify", "--kid", kid, data_dir=data, check=False).returncode == 2  # needs --file


# -- tenants that do not exist ---------------------------------------------------------------------


def test_audit_commands_refuse_a_tenant_that_does_not_exist(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "nope.jsonl"
    for args in (
        ["export", "--tenant", "nope", "--out", str(out)],
        ["verify", "--tenant", "nope"],
        ["tail", "--tenant", "nope"],
    ):
        result = run_cli("audit", *args, data_dir=data, check=False)
        assert result.returncode == 1, (args, result.stdout)
        assert result.stderr == "error: no tenant 'nope': not in the control plane and no audit stream\n"
    assert not out.exists() and not Path(str(out) + ".checkpoints.json").exists()
    assert run_cli("audit", "verify", "--tenant", "acme", data_dir=data, check=False).returncode == 0  # control


def test_a_stream_without_a_control_plane_tenant_and_a_tenant_without_a_stream_exist(
    data: Path, tmp_path: Path
) -> None:
    append(data, [event(SYSTEM_STREAM), event("departed")])
    control = open_tenant_store(None, data)
    try:
        control.create_tenant("quiet", name="quiet", tools=[])  # seeded without any audit record
    finally:
        control.close()
    for tenant in (SYSTEM_STREAM, "departed", "quiet"):
        out = tmp_path / f"{tenant}.jsonl"
        run_cli("audit", "export", "--tenant", tenant, "--out", str(out), data_dir=data)
        result = run_cli("audit", "verify", "--file", str(out), check=False)
        assert result.returncode == 0 and f"{tenant}: ok" in result.stdout, (tenant, result.stderr)
        assert run_cli("audit", "tail", "--tenant", tenant, data_dir=data, check=False).returncode == 0


# -- tail ------------------------------------------------------------------------------------------

FAKE_LINE = "2026-01-01T00:00:00.000000Z  globex#7  tool_call  ok  transfer_funds"


def test_tail_escapes_control_characters_so_a_record_cannot_fake_another_line(data: Path) -> None:
    hostile = {
        "tool_name": f"evil\n{FAKE_LINE}\x1b[2J\x1b]0;owned\x07",
        "subject": "a\rb\x85c\u2028d\u2029e",
        "reason": "x\x7fy\x9b31m\u202egnp.exe\u2066z\\n",
    }
    # Records are bounded and escaped when they are made; a store written by an older version
    # (or edited) may still hold raw control characters, so tail must escape on its own too.
    raw_record = event("acme", 100)
    for field, value in hostile.items():
        setattr(raw_record, field, value)
    append(data, [raw_record])
    human = run_cli("audit", "tail", "--tenant", "acme", "--limit", "1", data_dir=data).stdout
    assert human.count("\n") == 1 and human.endswith("\n")
    assert FAKE_LINE not in human.split("\n")
    for raw in ("\x1b", "\r", "\x85", "\u2028", "\u2029", "\x7f", "\x9b", "\u202e", "\u2066", "\x07"):
        assert raw not in human
    assert "evil\\n2026-01-01" in human and "\\x1b[2J" in human and "\\u202e" in human
    assert "\\x9b31m" in human and "z\\\\n" in human  # a literal backslash cannot pose as an escape
    machine = run_cli("audit", "tail", "--tenant", "acme", "--limit", "1", "--json", data_dir=data).stdout
    assert machine.count("\n") == 1
    record = json.loads(machine)
    assert {k: record[k] for k in hostile} == hostile  # --json stays exact (canonical JSON escapes)


@pytest.mark.parametrize("limit", ["0", "-1", "100001"])
def test_tail_refuses_a_limit_out_of_range(data: Path, limit: str) -> None:
    result = run_cli("audit", "tail", "--limit", limit, data_dir=data, check=False)
    assert result.returncode == 2 and result.stderr == "error: --limit must be between 1 and 100000\n"


def test_tail_prints_full_timestamps(data: Path) -> None:
    line = run_cli("audit", "tail", "--tenant", "globex", "--limit", "1", data_dir=data).stdout
    stamp = line.split("  ")[0]
    assert len(stamp) == len("2026-01-01T00:00:00.000000Z") and stamp.endswith("Z")


class Follower:
    """``tenantry audit tail --follow --json`` in the background, collecting its lines."""

    def __init__(self, data: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            [TENANTRY, "audit", "tail", "--follow", "--json", *args, "--data-dir", str(data)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        self.lines: list[dict] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(json.loads(line))

    def wait_for(self, count: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while len(self.lines) < count and time.monotonic() < deadline and self.process.poll() is None:
            time.sleep(0.05)

    def stop(self) -> str:
        self.process.send_signal(signal.SIGINT)
        self.process.wait(timeout=10)
        self._reader.join(timeout=5)
        assert self.process.stdout is not None and self.process.stderr is not None
        errors = self.process.stderr.read()
        self.process.stdout.close()
        self.process.stderr.close()
        return errors


@dataclass
class Fresh:
    data: Path
    url: str | None
    env: dict[str, str]

    def append(self, events: list[AuditEvent]) -> None:
        append(self.data, events, self.url)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def fresh(request: pytest.FixtureRequest, tmp_path: Path) -> Fresh:
    url: str | None = None
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DROP SCHEMA IF EXISTS tenantry_audit CASCADE")
    env = {"TENANTRY_AUDIT__URL": url} if url else {}
    data = init_store(tmp_path / "data")
    run_cli("tenant", "create", "acme", data_dir=data, env=env)
    run_cli("tenant", "create", "globex", data_dir=data, env=env)
    return Fresh(data, url, env)


def test_follow_prints_every_new_record_once_in_stream_order(fresh: Fresh) -> None:
    follower = Follower(fresh.data, "--limit", "5", env=fresh.env)
    try:
        follower.wait_for(2)
        assert [(r["tenant_id"], r["seq"]) for r in follower.lines] == [("acme", 1), ("globex", 1)]
        now = time.time()
        # Same timestamp everywhere, more records than one poll used to fetch.
        fresh.append([event(t, n, created=now) for n in range(700) for t in ("acme", "globex")])
        # Committed out of time order: each later seq was created earlier (concurrent writers).
        fresh.append([event("acme", n, created=now - n * 0.3) for n in range(20)])
        # A slow writer commits a record created well before what was already printed.
        fresh.append([event("globex", 1, created=now - 30)])
        fresh.append([event(SYSTEM_STREAM, 1)])  # a stream that began after tail started
        expected = {"acme": 1 + 700 + 20, "globex": 1 + 700 + 1, SYSTEM_STREAM: 1}
        follower.wait_for(sum(expected.values()))
    finally:
        errors = follower.stop()
    assert not errors
    seen = [(r["tenant_id"], r["seq"]) for r in follower.lines]
    assert len(seen) == len(set(seen)), "a record was printed twice"
    for tenant, head in expected.items():
        seqs = [seq for t, seq in seen if t == tenant]
        assert seqs == list(range(1, head + 1)), f"{tenant}: gaps or out of order"


def test_follow_of_one_tenant_continues_after_its_window(fresh: Fresh) -> None:
    fresh.append([event("acme", n) for n in range(10)])
    follower = Follower(fresh.data, "--tenant", "acme", "--limit", "3", env=fresh.env)
    try:
        follower.wait_for(3)
        fresh.append([event("acme", n, created=time.time() - 60) for n in range(5)] + [event("globex")])
        follower.wait_for(8)
        time.sleep(1.2)  # two more polls: nothing else may appear
    finally:
        follower.stop()
    assert [(r["tenant_id"], r["seq"]) for r in follower.lines] == [("acme", s) for s in range(9, 17)]


def test_the_first_window_shows_the_end_of_each_stream_without_holes(fresh: Fresh) -> None:
    now = time.time()
    fresh.append([event("acme", n, created=now - 100 - n) for n in range(5)])  # acme 2-6, each older
    fresh.append([event("globex", 1, created=now)])
    shown = [
        (r["tenant_id"], r["seq"])
        for r in map(
            json.loads,
            run_cli("audit", "tail", "--json", "--limit", "3", data_dir=fresh.data, env=fresh.env).stdout.splitlines(),
        )
    ]
    assert len(shown) == 3
    heads = {"acme": 6, "globex": 2}
    for tenant in {t for t, _ in shown}:
        seqs = [seq for t, seq in shown if t == tenant]
        assert seqs == list(range(heads[tenant] - len(seqs) + 1, heads[tenant] + 1)), shown
