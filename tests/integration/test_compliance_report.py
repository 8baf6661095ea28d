"""``tenantry compliance report``: every control with its evidence; gaps stated as gaps."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.support.ci import require_executable
from tests.support.rpc import modern_call
from tests.support.server import RunningServer, run_cli, start_server

CONTROLS = {
    "SOC 2": ["CC6.1", "CC6.3", "CC6.6", "CC6.7", "CC7.2", "CC7.3"],
    "GDPR": ["Art. 15", "Art. 17", "Art. 20", "Art. 25", "Art. 30", "Art. 32"],
    "EU AI Act": ["Art. 12", "Art. 14", "Art. 15"],
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(tmp_path_factory.mktemp("compliance") / "data")
    acme, globex = running.token("acme", "alice"), running.token("globex", "bob")
    for _ in range(4):  # refusals for the trend
        modern_call(running.mcp_url, acme, "tools/call", {"name": "globex_forecast", "arguments": {"quarter": "Q1"}})
    modern_call(
        running.mcp_url, globex, "tools/call", {"name": "write_file", "arguments": {"path": "x", "content": "y"}}
    )
    modern_call(running.mcp_url, acme, "tools/call", {"name": "whoami", "arguments": {}})
    running.cli("tenant", "halt", "globex", "--reason", "oversight drill")
    running.cli("tenant", "resume", "globex")
    yield running
    running.stop()


def report(server: RunningServer, *args: str) -> dict:
    result = server.cli("compliance", "report", "--format", "json", *args)
    return json.loads(result.stdout)


def control(body: dict, framework: str, control_id: str) -> dict:
    return next(c for c in body["controls"] if (c["framework"], c["id"]) == (framework, control_id))


def finding(item: dict, source_prefix: str) -> dict:
    return next(e for e in item["evidence"] if e["source"].startswith(source_prefix))


def evidence(server: RunningServer) -> Path:
    return server.data_dir / "evidence"


@pytest.fixture
def clean_evidence(server: RunningServer) -> Iterator[Path]:
    folder = evidence(server)
    folder.mkdir(exist_ok=True)
    shutil.rmtree(folder)
    folder.mkdir()
    yield folder
    shutil.rmtree(folder)


def test_json_report_covers_every_control_with_a_status(server: RunningServer, clean_evidence: Path) -> None:
    body = report(server)
    assert body["format"] == "tenantry-compliance/1"
    found = {(c["framework"], c["id"]) for c in body["controls"]}
    assert found == {(f, i) for f, ids in CONTROLS.items() for i in ids}
    assert {c["status"] for c in body["controls"]} <= {"met", "partial", "gap", "not_evidenced"}
    assert sum(body["summary"].values()) == len(found)
    for item in body["controls"]:
        assert item["evidence"], item["id"]
        for entry in item["evidence"]:
            assert entry["holds"] in (True, False, None) and entry["text"] and entry["source"]


def test_the_audit_is_verified_now_and_its_events_are_evidence(server: RunningServer, clean_evidence: Path) -> None:
    body = report(server)
    verify = body["evidence"]["audit_verify"]
    assert verify["intact"] is True and verify["streams"] >= 2 and verify["records"] > 0
    assert finding(control(body, "SOC 2", "CC7.2"), "audit verify")["holds"] is True
    halts = body["evidence"]["halts"]
    assert [(h["tenant"], h["reason"]) for h in halts] == [("globex", "oversight drill")]
    oversight = finding(control(body, "EU AI Act", "Art. 14"), "audit streams")
    assert oversight["holds"] is True and "1 halts" in oversight["text"]
    assert sum(body["trend"]["denials"]["acme"]) >= 4 and len(body["trend"]["days"]) == 30
    signing = [k for k in body["evidence"]["keys"] if k["purpose"] == "token signing"]
    assert signing and signing[0]["status"] == "current"


def test_no_probe_run_is_a_gap_in_the_evidence_never_a_pass(server: RunningServer, clean_evidence: Path) -> None:
    body = report(server)
    item = control(body, "SOC 2", "CC6.1")
    probe = finding(item, "evidence/probe")
    assert probe["holds"] is None and "no probe run stored" in probe["text"]
    assert item["status"] != "met"
    assert body["evidence"]["probe"] is None
    # Nothing erased or exported yet: said, not passed.
    assert control(body, "GDPR", "Art. 17")["status"] == "not_evidenced"
    assert control(body, "GDPR", "Art. 20")["status"] == "not_evidenced"


def test_a_stored_probe_run_becomes_the_evidence(server: RunningServer, clean_evidence: Path) -> None:
    acme, globex = server.token("acme", "alice"), server.token("globex", "alice")
    probe = server.cli("probe", server.mcp_url, "--token-a", acme, "--token-b", globex, "--json", check=False)
    assert probe.returncode == 0, probe.stdout[-2000:]
    stored = list(clean_evidence.glob("probe-*.json"))
    assert len(stored) == 1
    body = report(server)
    item = control(body, "SOC 2", "CC6.1")
    entry = finding(item, "evidence/probe")
    assert entry["holds"] is True and entry["source"] == f"evidence/{stored[0].name}"
    assert entry["age_days"] == 0
    assert item["status"] == "met"
    assert body["evidence"]["probe"]["result"] == "pass"


def _write_probe(folder: Path, *, finished: datetime, result: str = "pass", status: str = "pass") -> Path:
    body = {
        "format": "tenantry-probe/1",
        "url": "http://127.0.0.1:1/mcp",
        "started": finished.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "finished": finished.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "tenants": {"a": "acme", "b": "globex"},
        "exchanges": 1,
        "summary": {"pass": 1, "fail": 0, "not_checked": 0},
        "strict": False,
        "result": result,
        "checks": [
            {"id": "token_alg_none", "group": "tokens", "title": "t", "status": status, "detail": "", "control": ""}
        ],
    }
    body["sha256"] = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    path = folder / f"probe-{finished:%Y%m%dT%H%M%SZ}-abcdef.json"
    path.write_text(json.dumps(body))
    return path


def test_a_stale_probe_run_no_longer_counts(server: RunningServer, clean_evidence: Path) -> None:
    _write_probe(clean_evidence, finished=datetime.now(UTC) - timedelta(days=45))
    item = control(report(server), "SOC 2", "CC6.1")
    entry = finding(item, "evidence/probe")
    assert entry["holds"] is None and entry["stale"] is True and "STALE: 45 days old" in entry["text"]
    assert item["status"] == "partial"
    # Within a longer window the same run counts again.
    assert control(report(server, "--max-age", "60"), "SOC 2", "CC6.1")["status"] == "met"


def test_a_failed_or_edited_probe_run_is_a_gap(server: RunningServer, clean_evidence: Path) -> None:
    path = _write_probe(clean_evidence, finished=datetime.now(UTC), result="fail", status="fail")
    entry = finding(control(report(server), "SOC 2", "CC6.1"), "evidence/probe")
    assert entry["holds"] is False and "token_alg_none" in entry["text"]
    assert control(report(server), "SOC 2", "CC6.1")["status"] == "gap"
    # The open item names what contradicts the control, before what is merely missing.
    summary = server.cli("compliance", "report").stdout
    assert (
        "- **GDPR Art. 32** (gap): probe of http://127.0.0.1:1/mcp (every group): 1 failed: token_alg_none" in summary
    )
    edited = json.loads(path.read_text())
    edited["result"], edited["checks"][0]["status"] = "pass", "pass"  # sha256 left as it was
    path.write_text(json.dumps(edited))
    entry = finding(control(report(server), "SOC 2", "CC6.1"), "evidence/probe")
    assert entry["holds"] is False and "does not match its sha256" in entry["text"]


def _log(folder: Path, entries: list[dict], tail: str = "") -> None:
    (folder / "lifecycle.jsonl").write_text("".join(json.dumps(entry) + "\n" for entry in entries) + tail)


def test_exports_and_deletions_from_the_lifecycle_log(server: RunningServer, clean_evidence: Path) -> None:
    at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    (clean_evidence / "deletions").mkdir()
    (clean_evidence / "deletions" / "gone.json").write_text("{}")
    export = {
        "kind": "export",
        "tenant": "acme",
        "at": at,
        "by": "cli:dpo",
        "stores": ["sql"],
        "certificate": "sha256:ab",
    }
    deletion = {**export, "kind": "deletion", "tenant": "gone", "certificate": "evidence/deletions/gone.json"}
    # A last line cut short by a crash mid-append is no evidence, and no gap either.
    _log(clean_evidence, [export, deletion], tail='{"kind": "del')
    body = report(server)
    assert finding(control(body, "GDPR", "Art. 15"), "evidence/lifecycle")["holds"] is True
    assert control(body, "GDPR", "Art. 17")["status"] == "met"
    assert control(body, "GDPR", "Art. 20")["status"] == "met"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"tenant": "other", "certificate": None}, "deletion without a certificate: other"),
        ({"tenant": "lost", "certificate": "evidence/deletions/lost.json"}, "deletion certificate file missing: lost"),
        ({"tenant": "out", "certificate": "../../etc/passwd"}, "deletion certificate file missing: out"),
    ],
)
def test_a_deletion_without_its_certificate_is_a_gap(
    server: RunningServer, clean_evidence: Path, change: dict, reason: str
) -> None:
    at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    _log(clean_evidence, [{"kind": "deletion", "at": at, "by": "cli:dpo", "stores": ["sql"], **change}])
    erasure = control(report(server), "GDPR", "Art. 17")
    assert erasure["status"] == "gap" and reason in erasure["evidence"][0]["text"]


def test_an_unreadable_line_of_the_lifecycle_log_is_a_gap(server: RunningServer, clean_evidence: Path) -> None:
    (clean_evidence / "lifecycle.jsonl").write_text("not json\n")
    erasure = control(report(server), "GDPR", "Art. 17")
    assert erasure["status"] == "gap" and "1 unreadable lines" in erasure["evidence"][0]["text"]


def test_markdown_report_states_gaps_in_words(server: RunningServer, clean_evidence: Path) -> None:
    text = server.cli("compliance", "report").stdout
    assert text.startswith("# Compliance report")
    for framework, ids in CONTROLS.items():
        assert f"## {framework}" in text
        for control_id in ids:
            assert f"### {control_id} " in text
    assert "## Open items" in text and "no probe run stored" in text
    assert "| not evidenced |" in text


def test_report_to_a_file_and_usage_errors(server: RunningServer, tmp_path: Path) -> None:
    out = tmp_path / "report.md"
    done = server.cli("compliance", "report", "--out", str(out))
    assert out.read_text().startswith("# Compliance report") and "report written" in done.stderr
    bad = server.cli("compliance", "report", "--format", "pdf", check=False)
    assert bad.returncode == 2 and bad.stderr == "error: --format must be md, json or html\n"
    missing = run_cli("compliance", "report", data_dir=tmp_path / "nowhere", check=False)
    assert missing.returncode == 1 and missing.stderr.startswith("error: no Tenantry data dir")


def _html(server: RunningServer, folder: Path) -> Path:
    out = folder / "report.html"
    server.cli("compliance", "report", "--format", "html", "--out", str(out))
    return out


def test_html_report_is_self_contained(server: RunningServer, tmp_path: Path, clean_evidence: Path) -> None:
    page = _html(server, tmp_path).read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert not re.search(r"""(src|href)\s*=|<script|<link|@import|url\(""", page)
    assert '<section id="summary">' in page and page.index('id="summary"') < page.index("<h2>SOC 2</h2>")
    assert "<svg" in page and "<polyline" in page and "acme (" in page
    assert "not evidenced" in page and "no probe run stored" in page


def test_html_report_renders_in_headless_chromium(server: RunningServer, tmp_path: Path) -> None:
    chromium = require_executable("chromium", "the HTML report's browser test")
    page = _html(server, tmp_path)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--user-data-dir={tmp_path / 'p'}"]
    dom = subprocess.run(
        [chromium, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    assert "Tenantry compliance report" in dom and "<polyline" in dom
    for framework in CONTROLS:
        assert f"<h2>{framework}</h2>" in dom
    shot = tmp_path / "report.png"
    subprocess.run(
        [chromium, *flags, "--window-size=1200,1600", f"--screenshot={shot}", page.as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
