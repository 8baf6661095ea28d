"""``tenantry secret``: values go in on stdin, are encrypted at rest, and never come out of the
CLI, the audit trail or any file in the data dir; only names and dates are shown."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
from pathlib import Path

import pytest
from pydantic import SecretStr

from tenantry.controlplane.factory import open_tenant_store
from tenantry.core.settings import SecretSettings
from tenantry.scoping.secrets.store import open_secret_scopes
from tests.support.server import TENANTRY, run_cli
from tests.support.store import copy_store, init_store

VALUE = "acme-canary-secret-7f3a9c"


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = init_store(tmp_path_factory.mktemp("secret-template") / "data")
    run_cli("tenant", "create", "acme", data_dir=data)
    run_cli("tenant", "create", "globex", data_dir=data)
    return data


@pytest.fixture
def data_dir(template: Path, tmp_path: Path) -> Path:
    return copy_store(template, tmp_path / "data")


def read_back(data_dir: Path, tenant: str, name: str, settings: SecretSettings | None = None) -> str:
    store = open_tenant_store(None, data_dir)
    try:
        return open_secret_scopes(settings or SecretSettings(), data_dir, store).read_secret(tenant, name)
    finally:
        store.close()


def every_byte_under(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file())


def test_set_list_delete(data_dir: Path) -> None:
    out = run_cli("secret", "set", "--tenant", "acme", "mail_api_key", data_dir=data_dir, input=VALUE + "\n").stdout
    assert out == "created secret mail_api_key of tenant acme\n"
    assert read_back(data_dir, "acme", "mail_api_key") == VALUE  # the trailing newline was dropped
    replaced = run_cli("secret", "set", "--tenant", "acme", "mail_api_key", data_dir=data_dir, input="second-value")
    assert replaced.stdout.startswith("replaced")
    run_cli("secret", "set", "--tenant", "acme", "stripe_key", data_dir=data_dir, input=VALUE)

    listed = run_cli("secret", "list", "--tenant", "acme", data_dir=data_dir).stdout
    assert "mail_api_key" in listed and "stripe_key" in listed
    as_json = json.loads(run_cli("secret", "list", "--tenant", "acme", "--json", data_dir=data_dir).stdout)
    assert [row["name"] for row in as_json] == ["mail_api_key", "stripe_key"]
    assert set(as_json[0]) == {"name", "created_at", "updated_at"}
    assert json.loads(run_cli("secret", "list", "--tenant", "globex", "--json", data_dir=data_dir).stdout) == []
    for shown in (listed, json.dumps(as_json)):
        assert VALUE not in shown and "second-value" not in shown

    deleted = run_cli("secret", "delete", "--tenant", "acme", "mail_api_key", data_dir=data_dir)
    assert deleted.stdout == "deleted secret mail_api_key of tenant acme\n"
    names = [
        r["name"] for r in json.loads(run_cli("secret", "list", "--tenant", "acme", "--json", data_dir=data_dir).stdout)
    ]
    assert names == ["stripe_key"]


def test_only_one_trailing_newline_is_dropped(data_dir: Path) -> None:
    run_cli("secret", "set", "--tenant", "acme", "multi_line", data_dir=data_dir, input="line one\nline two\n\n")
    assert read_back(data_dir, "acme", "multi_line") == "line one\nline two\n"
    run_cli("secret", "set", "--tenant", "acme", "crlf", data_dir=data_dir, input="windows-value\r\n")
    assert read_back(data_dir, "acme", "crlf") == "windows-value"


@pytest.mark.parametrize(
    ("args", "stdin", "code", "message"),
    [
        (("set", "--tenant", "ghost", "api_key"), VALUE, 1, "no tenant 'ghost'"),
        (("list", "--tenant", "ghost"), None, 1, "no tenant 'ghost'"),
        (("delete", "--tenant", "acme", "never_set"), None, 1, "no secret named 'never_set'"),
        (("delete", "--tenant", "ghost", "api_key"), None, 1, "no tenant 'ghost'"),
        (("set", "--tenant", "acme", "9lives"), VALUE, 2, "secret name must be"),
        (("set", "--tenant", "acme", "api_key"), "zq9\n", 2, "at least 4 characters"),
        (("set", "--tenant", "acme", "api_key"), "", 2, "empty"),
        (("set", "--tenant", "acme", "api_key"), "x" * (64 * 1024 + 10), 2, "64 KiB"),
        (("set", "--tenant", "acme"), VALUE, 2, "Missing argument"),
    ],
)
def test_errors_are_one_line_with_the_right_exit_code(
    data_dir: Path, args: tuple[str, ...], stdin: str | None, code: int, message: str
) -> None:
    result = run_cli("secret", *args, data_dir=data_dir, input=stdin, check=False)
    assert result.returncode == code, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    if stdin:
        assert stdin.strip() not in result.stderr + result.stdout


def test_a_non_utf8_value_is_refused(data_dir: Path) -> None:
    result = subprocess.run(
        [TENANTRY, "secret", "set", "--tenant", "acme", "api_key", "--data-dir", str(data_dir)],
        input=b"\xff\xfe-not-utf8",
        capture_output=True,
        check=False,
    )
    assert result.returncode == 2 and b"not valid UTF-8" in result.stderr


def test_the_value_never_reaches_the_audit_trail_or_any_file(data_dir: Path, tmp_path: Path) -> None:
    run_cli("secret", "set", "--tenant", "acme", "mail_api_key", data_dir=data_dir, input=VALUE)
    run_cli("secret", "set", "--tenant", "acme", "mail_api_key", data_dir=data_dir, input=VALUE + "-v2")
    run_cli("secret", "delete", "--tenant", "acme", "mail_api_key", data_dir=data_dir)
    run_cli("secret", "set", "--tenant", "acme", "stripe_key", data_dir=data_dir, input=VALUE)

    records = [
        json.loads(line)
        for line in run_cli("audit", "tail", "--json", "--tenant", "acme", data_dir=data_dir).stdout.splitlines()
    ]
    secret_events = [(r["event_type"], r["detail"]) for r in records if r["event_type"].startswith("secret_")]
    assert secret_events == [
        ("secret_set", {"name": "mail_api_key", "created": True}),
        ("secret_set", {"name": "mail_api_key", "created": False}),
        ("secret_deleted", {"name": "mail_api_key"}),
        ("secret_set", {"name": "stripe_key", "created": True}),
    ]
    assert all(r["actor"].startswith("cli:") for r in records if r["event_type"].startswith("secret_"))

    export = tmp_path / "acme.jsonl"
    run_cli("audit", "export", "--tenant", "acme", "--out", str(export), data_dir=data_dir)
    assert b"secret_set" in export.read_bytes()
    everything = every_byte_under(data_dir) + export.read_bytes()
    assert b"stripe_key" in everything  # positive control: the search does see names
    for leaked in (VALUE, base64.b64encode(VALUE.encode()).decode(), VALUE.encode().hex()):
        assert leaked.encode() not in everything
    assert read_back(data_dir, "acme", "stripe_key") == VALUE


def test_the_master_key_file_is_private(data_dir: Path) -> None:
    run_cli("secret", "set", "--tenant", "acme", "mail_api_key", data_dir=data_dir, input=VALUE)
    key_file = data_dir / "keys" / "master.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700
    assert len(key_file.read_bytes()) == 32


def test_a_configured_master_key_is_used_and_a_different_one_is_refused(data_dir: Path) -> None:
    key = base64.b64encode(os.urandom(32)).decode()
    env = {"TENANTRY_SECRETS__MASTER_KEY": key}
    run_cli("secret", "set", "--tenant", "acme", "mail_api_key", data_dir=data_dir, input=VALUE, env=env)
    assert not (data_dir / "keys" / "master.key").exists()
    assert read_back(data_dir, "acme", "mail_api_key", SecretSettings(master_key=SecretStr(key))) == VALUE

    other = {"TENANTRY_SECRETS__MASTER_KEY": base64.b64encode(os.urandom(32)).decode()}
    refused = run_cli(
        "secret", "set", "--tenant", "acme", "other_key", data_dir=data_dir, input=VALUE, env=other, check=False
    )
    assert refused.returncode == 1 and "master key does not match" in refused.stderr
    malformed = {"TENANTRY_SECRETS__MASTER_KEY": "not-a-key"}
    refused = run_cli(
        "secret", "set", "--tenant", "acme", "k_1", data_dir=data_dir, input=VALUE, env=malformed, check=False
    )
    assert refused.returncode == 2 and "base64 of 32" in refused.stderr and "not-a-key" not in refused.stderr
