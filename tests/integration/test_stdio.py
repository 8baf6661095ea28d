"""``tenantry stdio``: one tenant per process, identity fixed by the start-up token."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp.shared.exceptions import MCPError

from tests.support.server import TENANTRY, run_cli
from tests.support.store import init_store

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = init_store(tmp_path_factory.mktemp("stdio") / "data")
    run_cli("tenant", "create", "acme", "--tools", "whoami,query_crm,read_file,list_files", data_dir=data)
    run_cli("tenant", "create", "globex", "--tools", "whoami,globex_forecast", data_dir=data)
    return data


def params(data_dir: Path, token: str) -> StdioServerParameters:
    return StdioServerParameters(
        command=TENANTRY,
        args=["stdio", "--demo", "--token", token, "--data-dir", str(data_dir)],
        env={**os.environ, "TENANTRY_LOGGING__LEVEL": "WARNING"},
    )


async def test_stdio_serves_the_tokens_tenant_only(data_dir: Path) -> None:
    token = run_cli("token", "issue", "--tenant", "acme", "--sub", "cli-agent", data_dir=data_dir).stdout.strip()
    async with Client(params(data_dir, token), mode="legacy") as client:
        tools = sorted(t.name for t in (await client.list_tools()).tools)
        assert tools == ["list_files", "query_crm", "read_file", "whoami"]
        who = await client.call_tool("whoami", {})
        assert who.structured_content["tenant_id"] == "acme"
        assert who.structured_content["session_id"].startswith("stdio-")
        with pytest.raises(MCPError) as refused:
            await client.call_tool("globex_forecast", {"quarter": "Q1"})
        assert refused.value.data["code"] == "tool_unavailable"
        with pytest.raises(MCPError):
            await client.call_tool("whoami", {"tenant_id": "globex"})


@pytest.mark.parametrize("token", ["garbage", "a.b.c"])
def test_stdio_refuses_to_start_with_a_bad_token(data_dir: Path, token: str) -> None:
    result = run_cli("stdio", "--demo", "--token", token, data_dir=data_dir, check=False, input="")
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr


async def test_stdio_reads_the_token_from_a_file(data_dir: Path, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(run_cli("token", "issue", "--tenant", "globex", "--sub", "g", data_dir=data_dir).stdout)
    parameters = StdioServerParameters(
        command=TENANTRY,
        args=["stdio", "--demo", "--token-file", str(token_file), "--data-dir", str(data_dir)],
        env={**os.environ, "TENANTRY_LOGGING__LEVEL": "WARNING"},
    )
    async with Client(parameters, mode="legacy") as client:
        assert (await client.call_tool("whoami", {})).structured_content["tenant_id"] == "globex"


def test_stdio_needs_exactly_one_token_source(data_dir: Path) -> None:
    result = run_cli("stdio", "--demo", data_dir=data_dir, check=False, input="")
    assert result.returncode == 2 and "exactly one of --token or --token-file" in result.stderr


async def _refused_within(client: Client, seconds: float) -> MCPError:
    deadline = anyio.current_time() + seconds
    while anyio.current_time() < deadline:
        try:
            await client.call_tool("whoami", {})
        except MCPError as exc:
            return exc
        await anyio.sleep(0.05)
    raise AssertionError(f"still served after {seconds}s")


async def test_stdio_obeys_a_revocation_at_the_next_request(data_dir: Path) -> None:
    token = run_cli("token", "issue", "--tenant", "acme", "--sub", "stdio-revoked", data_dir=data_dir).stdout.strip()
    async with Client(params(data_dir, token), mode="legacy") as client:
        assert (await client.call_tool("whoami", {})).structured_content["subject"] == "stdio-revoked"
        run_cli("token", "revoke", "--tenant", "acme", "--sub", "stdio-revoked", data_dir=data_dir)
        refused = await _refused_within(client, 2.0)
    assert refused.data["code"] == "invalid_credential" and "revoked" in refused.message


async def test_stdio_obeys_a_halt_and_a_resume(data_dir: Path) -> None:
    run_cli("tenant", "create", "stdio-halt", "--tools", "whoami", data_dir=data_dir)
    token = run_cli("token", "issue", "--tenant", "stdio-halt", "--sub", "s", data_dir=data_dir).stdout.strip()
    async with Client(params(data_dir, token), mode="legacy") as client:
        assert (await client.call_tool("whoami", {})).structured_content["tenant_id"] == "stdio-halt"
        run_cli("tenant", "halt", "stdio-halt", "--reason", "drill", data_dir=data_dir)
        refused = await _refused_within(client, 2.0)
        assert refused.data["code"] == "tenant_halted"
        run_cli("tenant", "resume", "stdio-halt", data_dir=data_dir)
        await anyio.sleep(0.6)
        assert (await client.call_tool("whoami", {})).structured_content["tenant_id"] == "stdio-halt"


async def test_stdio_accepts_an_api_key_and_obeys_its_revocation(data_dir: Path) -> None:
    key = run_cli("apikey", "create", "--tenant", "acme", "--tools", "whoami", data_dir=data_dir).stdout.strip()
    async with Client(params(data_dir, key), mode="legacy") as client:
        who = (await client.call_tool("whoami", {})).structured_content
        assert who["tenant_id"] == "acme" and who["subject"].startswith("api-key:")
        run_cli("apikey", "revoke", key.split("_")[2], data_dir=data_dir)
        refused = await _refused_within(client, 2.0)
    assert refused.data["code"] == "invalid_credential"


def test_stdio_refuses_to_start_with_a_revoked_token(data_dir: Path) -> None:
    token = run_cli("token", "issue", "--tenant", "acme", "--sub", "pre-revoked", data_dir=data_dir).stdout.strip()
    run_cli("token", "revoke", "--tenant", "acme", "--sub", "pre-revoked", data_dir=data_dir)
    result = run_cli("stdio", "--demo", "--token", token, data_dir=data_dir, check=False, input="")
    assert result.returncode == 1 and "revoked" in result.stderr
