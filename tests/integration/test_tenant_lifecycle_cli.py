"""``tenant export`` and ``tenant delete`` over a running server: a demo tenant that used every
store is exported whole, then deleted while its sessions are live; afterwards no byte of it is
left under the data dir, its audit stream (retained) and the other tenant's still verify, and the
signed deletion certificate checks out. A deletion interrupted in one store finishes when run again."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from tenantry.core.errors import StorageError
from tenantry.core.settings import load_settings
from tenantry.lifecycle.files import LocalFilesData, TenantDirectoryData
from tests.support import web
from tests.support.leftovers import files_containing
from tests.support.rpc import LegacySession
from tests.support.server import RunningServer, start_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(tmp_path_factory.mktemp("lifecycle") / "data")
    yield running
    running.stop()


def call(session: LegacySession, tool: str, **arguments: object) -> httpx2.Response:
    return session.call("tools/call", {"name": tool, "arguments": arguments})


def refused_within(session: LegacySession, seconds: float) -> httpx2.Response | None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        response = call(session, "whoami")
        if response.status_code != 200 or '"isError":true' in response.text:
            return response
        time.sleep(0.05)
    return None


def test_export_then_delete_leaves_nothing_and_keeps_the_other_tenant_whole(
    server: RunningServer, tmp_path: Path
) -> None:
    canary = f"acme-canary-{secrets.token_hex(6)}"
    acme = LegacySession(server.mcp_url, server.token("acme", "alice"))
    globex = LegacySession(server.mcp_url, server.token("globex", "bob"))
    assert call(acme, "write_file", path=f"notes/{canary}.txt", content=f"note {canary}").status_code == 200
    assert call(acme, "send_email", to="x@y.example", subject="s", body=f"mail {canary}").status_code == 200
    assert call(acme, "search_docs", query="leave").status_code == 200
    server.cli("secret", "set", "--tenant", "acme", "crm_token", input=f"{canary}-secret-value\n")
    key = server.cli("apikey", "create", "--tenant", "acme").stdout.strip()

    bundle = tmp_path / "acme-export"
    exported = server.cli("tenant", "export", "acme", "--out", str(bundle))
    assert "exported tenant acme" in exported.stdout
    held = b"".join(p.read_bytes() for p in bundle.rglob("*") if p.is_file())
    assert held.count(canary.encode()) >= 3  # the file, its name, the outbox row
    assert b"acme-canary Carol" in held and b"Marker: acme-canary" in held  # seeded rows, documents, files
    assert b"crm_token" in held and b"secret-value" not in held and b"globex" not in held
    offline = server.cli("audit", "verify", "--file", str(bundle / "audit" / "stream.jsonl"))
    assert offline.stdout.startswith("acme: ok")
    again = server.cli("tenant", "export", "acme", "--out", str(bundle), check=False)
    assert again.returncode == 2 and "already exists; refusing to overwrite" in again.stderr
    # Never into the data directory: under globex's file root globex's tools could read it.
    (server.data_dir / "tenants" / "globex" / "files").mkdir(parents=True, exist_ok=True)
    inside = server.data_dir / "tenants" / "globex" / "files" / "leak"
    planted = server.cli("tenant", "export", "acme", "--out", str(inside), check=False)
    assert planted.returncode == 2 and "inside the data directory" in planted.stderr and not inside.exists()

    assert files_containing(server.data_dir, canary)  # positive control of the scan
    deleted = server.cli("tenant", "delete", "acme", "--yes")
    assert "deleted tenant acme" in deleted.stdout and "retained: audit:sqlite" in deleted.stdout

    refusal = refused_within(acme, 1.5)
    assert refusal is not None and refusal.status_code in (401, 403), "the live session was still served"
    exchange = web.post(server.base_url + "/oauth/token", data={"grant_type": "client_credentials"},
                           auth=(key.split("_")[2], key))  # fmt: skip
    assert exchange.status_code in (400, 401)
    assert call(globex, "whoami").status_code == 200  # the other tenant's live session goes on
    assert "globex-canary" in call(globex, "query_crm", filter="canary").text

    time.sleep(1.2)  # the server closes the handles it kept on the tenant's stores
    assert files_containing(server.data_dir, canary) == []
    assert files_containing(server.data_dir, "acme-canary") == []
    assert files_containing(server.data_dir, "globex-canary")  # positive control: the scan finds the other

    verified = server.cli("audit", "verify")
    assert "acme: ok" in verified.stdout and "globex: ok" in verified.stdout
    events = [r["event_type"] for r in server.audit_records("acme")]
    assert {"tenant_exported", "tenant_deletion_started", "tenant_deleted"} <= set(events)

    certificate = next((server.data_dir / "evidence" / "deletions").glob("acme-*.json"))
    checked = server.cli("audit", "verify", "--certificate", str(certificate))
    assert "deletion certificate ok" in checked.stdout and "acme: ok" in checked.stdout
    log = server.data_dir / "evidence" / "lifecycle.jsonl"
    evidence = [json.loads(line) for line in log.read_text().splitlines()]
    kinds = [(e["kind"], e["tenant"]) for e in evidence]
    assert ("export", "acme") in kinds and ("deletion", "acme") in kinds
    deletion = next(e for e in evidence if e["kind"] == "deletion" and e["tenant"] == "acme")
    assert deletion["certificate"] == str(certificate.relative_to(server.data_dir))
    assert "sql:sqlite" in deletion["stores"] and deletion["by"].startswith("cli:")


@pytest.mark.parametrize("tamper", ["payload", "tenant"])
def test_a_tampered_deletion_certificate_is_refused(server: RunningServer, tmp_path: Path, tamper: str) -> None:
    tenant = f"cert-{tamper}"
    server.cli("tenant", "create", tenant, "--tools", "whoami")
    server.cli("tenant", "delete", tenant, "--yes")
    original = next((server.data_dir / "evidence" / "deletions").glob(f"{tenant}-*.json"))
    assert "deletion certificate ok" in server.cli("audit", "verify", "--certificate", str(original)).stdout
    document = json.loads(original.read_text())
    if tamper == "payload":
        header, payload, signature = document["certificate"].split(".")
        flipped = payload[:-2] + ("A" if payload[-2] != "A" else "B") + payload[-1]
        document["certificate"] = ".".join([header, flipped, signature])
    else:
        document["tenant_id"] = "globex"
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(document))
    result = server.cli("audit", "verify", "--certificate", str(forged), check=False)
    assert result.returncode == 1 and "FAILED" in result.stdout


def test_delete_needs_yes_and_an_existing_tenant(server: RunningServer) -> None:
    unconfirmed = server.cli("tenant", "delete", "globex", check=False)
    assert unconfirmed.returncode == 2 and "--yes" in unconfirmed.stderr
    missing = server.cli("tenant", "delete", "nobody-here", "--yes", check=False)
    assert missing.returncode == 1 and "no tenant 'nobody-here'" in missing.stderr
    unknown = server.cli("tenant", "export", "nobody-here", "--out", str(server.data_dir.parent / "x"), check=False)
    assert unknown.returncode == 1 and "no tenant 'nobody-here'" in unknown.stderr and "Traceback" not in unknown.stderr
    assert not (server.data_dir.parent / "x").exists()
    assert server.cli("tenant", "show", "globex").returncode == 0  # untouched


@pytest.mark.parametrize("broken_store", ["files:local", "data-dir:tenant"])
def test_an_interrupted_deletion_finishes_when_run_again(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch, broken_store: str
) -> None:
    from tenantry.lifecycle.delete import delete_tenant
    from tenantry.runtime import Runtime

    tenant, canary = f"doomed-{broken_store.split(':')[0]}", f"doomed-canary-{secrets.token_hex(6)}"
    server.cli("tenant", "create", tenant, "--tools", "whoami,write_file,list_files")
    session = LegacySession(server.mcp_url, server.token(tenant))
    assert call(session, "write_file", path="keep.txt", content=canary).status_code == 200

    def broken(self: object, tenant_id: str) -> None:
        raise StorageError("the disk went away")

    entry = LocalFilesData if broken_store == "files:local" else TenantDirectoryData
    monkeypatch.setattr(entry, "erase", broken)
    runtime = Runtime(load_settings(data_dir=server.data_dir))
    try:
        with pytest.raises(StorageError, match="the disk went away"):
            delete_tenant(runtime, tenant, actor="test")
        state = json.loads(runtime.store.get_meta(f"lifecycle:deleting:{tenant}") or "{}")
    finally:
        runtime.close()
    monkeypatch.undo()
    assert "sql:sqlite" in state["erased"] and broken_store not in state["erased"]
    assert refused_within(session, 1.5) is not None  # credentials were revoked before any erasure
    if broken_store == "files:local":
        assert files_containing(server.data_dir, canary)  # the file is still there: not finished
    else:
        # The control plane is erased already: a newcomer under the same id would be erased by the resumption.
        assert server.cli("tenant", "show", tenant, check=False).returncode == 1
        recreate = server.cli("tenant", "create", tenant, check=False)
        assert recreate.returncode == 2 and "is being deleted; finish that first" in recreate.stderr

    finished = server.cli("tenant", "delete", tenant, "--yes")
    assert "resumed an interrupted deletion" in finished.stdout
    assert files_containing(server.data_dir, canary) == []
    assert not (server.data_dir / "tenants" / tenant).exists()
    certificate = next((server.data_dir / "evidence" / "deletions").glob(f"{tenant}-*.json"))
    assert "deletion certificate ok" in server.cli("audit", "verify", "--certificate", str(certificate)).stdout
    events = [r["event_type"] for r in server.audit_records(tenant)]
    assert events.count("tenant_deletion_started") == 1 and events.count("tenant_deleted") == 1
    gone = server.cli("tenant", "delete", tenant, "--yes", check=False)
    assert gone.returncode == 1 and "was deleted at" in gone.stderr
    assert server.cli("tenant", "create", tenant).returncode == 0  # once finished, the id is free again
