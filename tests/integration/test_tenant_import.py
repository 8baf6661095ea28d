"""Creating many tenants at once: ``tenantry tenant import FILE`` is fast, checked and all-or-nothing."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.support.server import run_cli
from tests.support.store import init_store


def write_specs(path: Path, count: int, **extra: object) -> Path:
    with path.open("w") as out:
        for n in range(count):
            out.write(json.dumps({"id": f"bulk-{n:05d}", "tools": ["whoami", "query_crm"], **extra}) + "\n")
    return path


def test_ten_thousand_tenants_are_created_in_seconds_and_audited(tmp_path: Path) -> None:
    data = init_store(tmp_path / "data")
    specs = write_specs(tmp_path / "tenants.jsonl", 10_000)
    started = time.monotonic()
    result = run_cli("tenant", "import", str(specs), data_dir=data, timeout=120)
    elapsed = time.monotonic() - started
    assert "created 10000 tenants" in result.stdout
    assert elapsed < 60, elapsed  # seconds, not hours (0.7 s each would be two hours)
    listed = json.loads(run_cli("tenant", "list", "--json", data_dir=data).stdout)
    assert len(listed) == 10_000 and listed[-1]["grants"] == ["query_crm", "whoami"]
    created = json.loads(run_cli("audit", "tail", "--tenant", "bulk-09999", "--json", data_dir=data).stdout)
    assert created["event_type"] == "tenant_created" and created["detail"]["bulk"] is True


def test_an_import_with_one_bad_entry_creates_nothing(tmp_path: Path) -> None:
    data = init_store(tmp_path / "data")
    specs = write_specs(tmp_path / "tenants.jsonl", 50)
    with specs.open("a") as out:
        out.write(json.dumps({"id": "bulk-evil", "tools": ["globex_forecast"]}) + "\n")  # private to globex
    refused = run_cli("tenant", "import", str(specs), data_dir=data, check=False)
    assert refused.returncode == 1 and "registered for other tenants only" in refused.stderr
    assert json.loads(run_cli("tenant", "list", "--json", data_dir=data).stdout) == []
    for bad, message in (
        ('{"id": "Not Valid"}', "line 1"),
        ("not json", "line 1"),
        ('{"id": "a"}\n{"id": "a"}', "appears twice"),
        ("# only a comment", "holds no tenants"),
    ):
        (tmp_path / "bad.jsonl").write_text(bad + "\n")
        result = run_cli("tenant", "import", str(tmp_path / "bad.jsonl"), data_dir=data, check=False)
        assert result.returncode == 2 and message in result.stderr, (bad, result.stderr)
        assert "Traceback" not in result.stderr
    positive = write_specs(tmp_path / "ok.jsonl", 3)
    assert "created 3 tenants" in run_cli("tenant", "import", str(positive), data_dir=data).stdout
    again = run_cli("tenant", "import", str(positive), data_dir=data, check=False)
    assert again.returncode == 1 and "already exists" in again.stderr
