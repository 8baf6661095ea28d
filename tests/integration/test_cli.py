"""The admin CLI: exit codes, one-line errors, JSON output, and a running server obeying it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.support.rpc import modern_call
from tests.support.server import RunningServer, run_cli
from tests.support.store import init_store


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return init_store(tmp_path / "data")


def cli(data_dir: Path, *args: str) -> tuple[int, str, str]:
    result = run_cli(*args, data_dir=data_dir, check=False)
    return result.returncode, result.stdout, result.stderr


def test_tenant_lifecycle(data_dir: Path) -> None:
    assert cli(data_dir, "tenant", "create", "initech", "--name", "Initech", "--tools", "whoami,query_crm")[0] == 0
    code, out, _ = cli(data_dir, "tenant", "show", "initech", "--json")
    assert code == 0
    shown = json.loads(out)
    assert (shown["name"], shown["tier"], shown["status"], shown["grants"]) == (
        "Initech",
        "logical",
        "active",
        ["query_crm", "whoami"],
    )
    assert cli(data_dir, "tenant", "grant", "initech", "read_file", "list_files")[0] == 0
    assert cli(data_dir, "tenant", "ungrant", "initech", "query_crm")[0] == 0
    listed = json.loads(cli(data_dir, "tenant", "list", "--json")[1])
    assert [t["id"] for t in listed] == ["initech"]
    assert listed[0]["grants"] == ["list_files", "read_file", "whoami"]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("tenant", "show", "ghost"), 1, "no tenant 'ghost'"),
        (("tenant", "grant", "ghost", "whoami"), 1, "no tenant 'ghost'"),
        (("tenant", "create", "Bad_Id"), 2, "tenant id must be"),
        (("tenant", "create", "ok", "--tools", "bad tool"), 2, "tool name must be"),
        (("tenant", "create", "ok", "--tier", "gold"), 2, "--tier"),
        (("token", "issue", "--tenant", "ghost", "--sub", "a"), 1, "no tenant 'ghost'"),
        (("tenant", "frobnicate"), 2, "No such command"),
        (("serve", "--config", "/nonexistent.toml"), 2, "config file not found"),
    ],
)
def test_errors_are_one_line_on_stderr_with_the_right_exit_code(
    data_dir: Path, args: tuple[str, ...], code: int, message: str
) -> None:
    returncode, out, err = cli(data_dir, *args)
    assert returncode == code
    assert message in err
    assert "Traceback" not in err and out == ""


def test_duplicate_tenant_is_an_error(data_dir: Path) -> None:
    assert cli(data_dir, "tenant", "create", "dup")[0] == 0
    code, _, err = cli(data_dir, "tenant", "create", "dup")
    assert code == 1 and "already exists" in err


def test_token_issue_prints_only_the_jwt_and_refuses_ungranted_tools(data_dir: Path) -> None:
    cli(data_dir, "tenant", "create", "initech", "--tools", "whoami")
    code, out, err = cli(data_dir, "token", "issue", "--tenant", "initech", "--sub", "a")
    assert code == 0 and out.count(".") == 2 and len(out.strip().splitlines()) == 1 and err == ""
    code, out, err = cli(data_dir, "token", "issue", "--tenant", "initech", "--sub", "a", "--tools", "whoami,query_crm")
    assert code == 2 and "not granted to tenant 'initech': query_crm" in err and out == ""
    for bad_ttl in ("15", "1w", "0m"):
        code, _, err = cli(data_dir, "token", "issue", "--tenant", "initech", "--sub", "a", "--ttl", bad_ttl)
        assert code == 2 and "duration" in err
    code, _, err = cli(data_dir, "token", "issue", "--tenant", "initech", "--sub", "a", "--prefix", "../x")
    assert code == 2 and "resource prefix" in err


def test_running_server_obeys_grant_changes_within_a_second(server: RunningServer) -> None:
    server.cli("tenant", "create", "hooli", "--tools", "whoami,query_crm")
    token = server.token("hooli", "gavin")

    def visible() -> set[str]:
        response = modern_call(server.mcp_url, token, "tools/list", {})
        return {t["name"] for t in response.json()["result"]["tools"]}

    assert visible() == {"whoami", "query_crm"}
    server.cli("tenant", "ungrant", "hooli", "query_crm")
    changed_at = time.monotonic()
    while visible() != {"whoami"}:
        assert time.monotonic() - changed_at < 1.0, "the ungrant did not reach the server within 1 second"
        time.sleep(0.05)
    response = modern_call(server.mcp_url, token, "tools/call", {"name": "query_crm", "arguments": {}})
    assert response.json()["error"]["data"]["code"] == "tool_unavailable"


def test_token_for_a_tenant_created_while_running_works(server: RunningServer) -> None:
    server.cli("tenant", "create", "piedpiper", "--tools", "whoami")
    token = server.token("piedpiper", "richard")
    deadline = time.monotonic() + 1.0
    while True:
        response = modern_call(server.mcp_url, token, "tools/call", {"name": "whoami", "arguments": {}})
        if response.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert response.json()["result"]["structuredContent"]["tenant_id"] == "piedpiper"
