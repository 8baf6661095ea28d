"""The dedicated tier over real HTTP: a dedicated tenant's tools run in a supervised process of
its own (own PID, working directory, environment with only its secrets, resource limits), a
``kill -9`` of it mid-call is a clear error, an audit record and a restart while other tenants
carry on, and ``tenant move`` switches tiers both ways under load without losing a row."""

from __future__ import annotations

import json
import os
import resource
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from textwrap import dedent
from typing import Any

import pytest

from tests.support.rpc import modern_call
from tests.support.server import RunningServer, start_server

APP = dedent(
    """
    import os
    import resource

    import anyio
    import tenantry

    app = tenantry.App("dedicated-tests")

    LIMITS = {"as": resource.RLIMIT_AS, "cpu": resource.RLIMIT_CPU,
              "nofile": resource.RLIMIT_NOFILE, "nproc": resource.RLIMIT_NPROC}

    @app.tool()
    async def whereami(ctx: tenantry.ToolContext) -> dict:
        return {
            "pid": os.getpid(),
            "tenant": ctx.tenant_id,
            "cwd": os.getcwd(),
            "cwd_mode": oct(os.stat(os.getcwd()).st_mode & 0o777),
            "env": sorted(os.environ),
            "limits": {name: list(resource.getrlimit(which)) for name, which in LIMITS.items()},
        }

    @app.tool()
    async def env_holds(ctx: tenantry.ToolContext, needle: str) -> bool:
        return any(needle in value for value in os.environ.values())

    @app.tool()
    async def secret_length(ctx: tenantry.ToolContext, name: str) -> int:
        return len(await ctx.secrets.get(name))

    @app.tool()
    async def ask_user(ctx: tenantry.ToolContext) -> str:
        answer = await ctx.client.elicit("Proceed?", {"type": "object", "properties": {"ok": {"type": "boolean"}}})
        return answer.action

    @app.tool()
    async def leak_secret(ctx: tenantry.ToolContext) -> str:
        return "the key is " + await ctx.secrets.get("API_KEY")

    @app.tool()
    async def add_row(ctx: tenantry.ToolContext, text: str) -> int:
        await ctx.sql.execute("CREATE TABLE IF NOT EXISTS rows_ (text TEXT)")
        await ctx.sql.execute("INSERT INTO rows_ VALUES (?)", text)
        return os.getpid()

    @app.tool()
    async def all_rows(ctx: tenantry.ToolContext) -> list[str]:
        await ctx.sql.execute("CREATE TABLE IF NOT EXISTS rows_ (text TEXT)")
        return [row["text"] for row in await ctx.sql.fetch("SELECT text FROM rows_")]

    @app.tool()
    async def attach(ctx: tenantry.ToolContext, path: str) -> str:
        await ctx.sql.execute(f"ATTACH DATABASE '{path}' AS other")
        return "attached"

    @app.tool()
    async def write_file(ctx: tenantry.ToolContext, path: str, text: str) -> str:
        await ctx.files.write_text(path, text)
        return "written"

    @app.tool()
    async def read_file(ctx: tenantry.ToolContext, path: str) -> str:
        return await ctx.files.read_text(path)

    @app.tool()
    async def nap(ctx: tenantry.ToolContext, seconds: float) -> int:
        await anyio.sleep(seconds)
        return os.getpid()
    """
)
TOOLS = "whereami,env_holds,secret_length,leak_secret,ask_user,add_row,all_rows,attach,write_file,read_file,nap"
ACME_SECRET = "acme-canary-secret-4f1e9a"
GLOBEX_SECRET = "globex-canary-secret-77b2c0"
WORKER_LIMITS = {
    "TENANTRY_WORKER__ADDRESS_SPACE_MB": "3072",
    "TENANTRY_WORKER__CPU_SECONDS": "900",
    "TENANTRY_WORKER__OPEN_FILES": "200",
    "TENANTRY_WORKER__PROCESSES": "60000",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("dedicated")
    (root / "dedicated_tools.py").write_text(APP)
    env = {
        **WORKER_LIMITS,
        "TENANTRY_LIMITS__CALLS_PER_SECOND": "1000",
        "TENANTRY_LIMITS__BURST": "2000",
        "TENANTRY_LIMITS__REQUESTS_PER_SECOND": "10000",
    }
    running = start_server(root / "data", demo=False, app="dedicated_tools:app", cwd=root, env=env)
    running.cli("tenant", "create", "acme", "--tools", TOOLS, "--tier", "dedicated")
    running.cli("tenant", "create", "globex", "--tools", TOOLS)
    running.cli("tenant", "create", "initech", "--tools", TOOLS, "--tier", "dedicated")
    running.cli("secret", "set", "--tenant", "acme", "API_KEY", input=ACME_SECRET)
    running.cli("secret", "set", "--tenant", "globex", "API_KEY", input=GLOBEX_SECRET)
    yield running
    running.stop()


_TOKENS: dict[tuple[Path, str], str] = {}


class Caller:
    """Calls tools as ``tenant``'s agent.

    Every Caller of a tenant of one server shares one token: the tenants here get their grants
    when they are created, and a halt, a tier move or a secret or limit change leaves a token as
    it was (a token carries the grants at its issue, so a test that changed a tenant's grants
    would need a token of its own).
    """

    def __init__(self, server: RunningServer, tenant: str) -> None:
        self.url = server.mcp_url
        key = (server.data_dir, tenant)
        if key not in _TOKENS:
            _TOKENS[key] = server.token(tenant, f"{tenant}-agent")
        self.token = _TOKENS[key]

    def call(self, name: str, /, **arguments: Any) -> dict[str, Any]:
        response = modern_call(self.url, self.token, "tools/call", {"name": name, "arguments": arguments})
        assert response.status_code == 200, response.text
        body = response.json()
        assert "result" in body, body
        return body["result"]

    def value(self, name: str, /, **arguments: Any) -> Any:
        result = self.call(name, **arguments)
        assert not result.get("isError"), result
        structured = result["structuredContent"]
        return structured.get("result", structured)


def error_code(result: dict[str, Any]) -> str | None:
    return result.get("_meta", {}).get("io.tenantry/error", {}).get("code") if result.get("isError") else None


def wait_for(check: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            found = None
        if found:
            return found
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def server_pid(server: RunningServer) -> int:
    return server.process.pid


def test_a_dedicated_tenants_tools_run_in_their_own_process(server: RunningServer) -> None:
    acme, initech, globex = Caller(server, "acme"), Caller(server, "initech"), Caller(server, "globex")
    here = acme.value("whereami")
    assert here["tenant"] == "acme"
    assert here["pid"] != server_pid(server)
    assert initech.value("whereami")["pid"] not in (here["pid"], server_pid(server))  # one worker per tenant
    # Positive control: a logical tenant's tool runs in the server itself.
    assert globex.value("whereami")["pid"] == server_pid(server)
    assert Path(here["cwd"]) == server.data_dir.resolve() / "tenants" / "acme" / "worker"
    assert here["cwd_mode"] == "0o700"


def test_a_workers_environment_holds_only_its_tenants_secrets(server: RunningServer) -> None:
    acme, globex = Caller(server, "acme"), Caller(server, "globex")
    env = acme.value("whereami")["env"]
    assert "TENANTRY_SECRET_API_KEY" in env
    assert not [name for name in env if name.startswith("TENANTRY_") and name != "TENANTRY_SECRET_API_KEY"]
    assert set(env) <= {"PATH", "PYTHONPATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "HOME", "TMPDIR"} | {
        "MALLOC_ARENA_MAX",
        "TENANTRY_SECRET_API_KEY",
    }
    assert acme.value("env_holds", needle=GLOBEX_SECRET) is False
    assert acme.value("env_holds", needle="TENANTRY_WORKER") is False  # nothing of the server's settings
    # Positive controls: its own secret is there, and ctx.secrets reads it.
    assert acme.value("env_holds", needle=ACME_SECRET) is True
    assert acme.value("secret_length", name="API_KEY") == len(ACME_SECRET)
    # What the worker returns is redacted by the server like any result.
    leaked = acme.value("leak_secret")
    assert leaked.startswith("the key is ") and ACME_SECRET not in leaked
    # The logical tier's process (the server) holds neither in its environment.
    assert globex.value("env_holds", needle=ACME_SECRET) is False


def test_a_changed_secret_reaches_the_worker_by_replacing_it(server: RunningServer) -> None:
    initech = Caller(server, "initech")
    server.cli("secret", "set", "--tenant", "initech", "ROTATED", input="initech-old-value-1234")
    assert wait_for(lambda: initech.value("env_holds", needle="initech-old-value-1234"))
    before = initech.value("whereami")["pid"]
    server.cli("secret", "set", "--tenant", "initech", "ROTATED", input="initech-new-value-5678")
    assert wait_for(lambda: initech.value("env_holds", needle="initech-new-value-5678"))
    assert initech.value("env_holds", needle="initech-old-value-1234") is False
    assert initech.value("whereami")["pid"] != before
    server.cli("secret", "delete", "--tenant", "initech", "ROTATED")
    assert wait_for(lambda: initech.value("env_holds", needle="initech-new-value-5678") is False)


def test_a_workers_client_requests_travel_through_the_servers_channel(server: RunningServer) -> None:
    # These JSON-response connections cannot carry a request to the client: the server's channel
    # refuses, and the refusal travels back to the tool in the worker and out as its error.
    logical = Caller(server, "globex").call("ask_user")
    dedicated = Caller(server, "acme").call("ask_user")
    assert error_code(logical) == "usage_error"  # positive control: the same answer in the server's process
    assert error_code(dedicated) == "usage_error"
    assert dedicated["content"][0]["text"] == logical["content"][0]["text"]
    assert "cannot carry requests to the client" in dedicated["content"][0]["text"]


def test_the_configured_resource_limits_apply_in_the_worker(server: RunningServer) -> None:
    limits = Caller(server, "acme").value("whereami")["limits"]
    assert limits["as"] == [3072 * 1024 * 1024] * 2
    assert limits["cpu"] == [900, 905]
    assert limits["nofile"] == [200, 200]
    hard = resource.getrlimit(resource.RLIMIT_NPROC)[1]  # the server's (this test's user's) ceiling
    assert limits["nproc"] == [60000 if hard == resource.RLIM_INFINITY else min(60000, hard)] * 2
    # Positive control: the server's own process has none of these.
    own = Caller(server, "globex").value("whereami")["limits"]
    assert own["as"] != limits["as"] and own["cpu"] != limits["cpu"]


def test_kill_9_mid_call_is_a_clear_error_an_audit_record_and_a_restart(server: RunningServer) -> None:
    acme, globex, initech = Caller(server, "acme"), Caller(server, "globex"), Caller(server, "initech")
    victim = acme.value("whereami")["pid"]
    initech_pid = initech.value("whereami")["pid"]
    others: list[tuple[str, dict[str, Any]]] = []
    stop = threading.Event()

    def keep_calling(caller: Caller, tenant: str) -> None:
        while not stop.is_set():
            others.append((tenant, caller.call("whereami")))

    with ThreadPoolExecutor(4) as pool:
        busy = [pool.submit(keep_calling, globex, "globex"), pool.submit(keep_calling, initech, "initech")]
        mid_call = pool.submit(acme.call, "nap", seconds=20)
        time.sleep(1.0)
        os.kill(victim, signal.SIGKILL)
        result = mid_call.result(timeout=15)
        assert error_code(result) == "worker_crashed"
        assert "worker process stopped" in result["content"][0]["text"]
        # The tenant's next call gets a fresh worker.
        restarted = wait_for(lambda: acme.value("whereami")["pid"])
        time.sleep(0.5)
        stop.set()
        for future in busy:
            future.result(timeout=30)
    assert restarted != victim
    assert initech.value("whereami")["pid"] == initech_pid  # another dedicated tenant's worker lived on
    assert len(others) > 5
    assert all(not outcome.get("isError") for _, outcome in others), [o for o in others if o[1].get("isError")][:3]
    crashes = [r for r in server.audit_records("acme") if r["event_type"] == "worker_crashed"]
    assert crashes and crashes[-1]["detail"]["pid"] == victim
    assert crashes[-1]["detail"]["signal"] == "SIGKILL" and crashes[-1]["reason"] == "killed by SIGKILL"
    outcomes = [r for r in server.audit_records("acme") if r["event_type"] == "tool_call" and r["tool_name"] == "nap"]
    assert outcomes[-1]["reason"] == "worker_crashed"
    assert not [r for r in server.audit_records("globex") if r["event_type"] == "worker_crashed"]


def test_a_halt_cancels_the_calls_in_flight_in_the_worker(server: RunningServer) -> None:
    initech = Caller(server, "initech")
    initech.value("whereami")
    with ThreadPoolExecutor(1) as pool:
        started = time.monotonic()
        napping = pool.submit(initech.call, "nap", seconds=30)
        time.sleep(1.0)
        server.cli("tenant", "halt", "initech", "--reason", "dedicated halt test")
        try:
            result = napping.result(timeout=15)
        finally:
            server.cli("tenant", "resume", "initech")
    assert error_code(result) == "call_cancelled"
    assert time.monotonic() - started < 10
    wait_for(lambda: initech.value("nap", seconds=0))  # positive control: it works again after resume


def test_a_call_past_its_timeout_is_answered_tool_timeout(server: RunningServer) -> None:
    server.cli("tenant", "limits", "initech", "tool_timeout=1")
    try:
        initech = Caller(server, "initech")
        result = wait_for(lambda: (r := initech.call("nap", seconds=5)) and error_code(r) == "tool_timeout" and r)
        assert error_code(result) == "tool_timeout"
    finally:
        server.cli("tenant", "limits", "initech", "--clear", "tool_timeout")
    assert wait_for(lambda: Caller(server, "initech").value("nap", seconds=1.5))  # positive control


def test_a_worker_cannot_read_another_tenants_rows_or_files(server: RunningServer) -> None:
    acme, globex = Caller(server, "acme"), Caller(server, "globex")
    globex.value("add_row", text="globex-row-canary")
    globex.value("write_file", path="private/note.txt", text="globex-file-canary")
    acme.value("add_row", text="acme-row")
    acme.value("write_file", path="own.txt", text="acme-file")
    # Positive controls: each tenant reads its own.
    assert "globex-row-canary" in globex.value("all_rows")
    assert acme.value("read_file", path="own.txt") == "acme-file"
    rows = acme.value("all_rows")
    assert "acme-row" in rows and "globex-row-canary" not in rows
    for path in ("../globex/private/note.txt", "/../../globex/private/note.txt", "../../tenants/globex/files/x"):
        refused = acme.call("read_file", path=path)
        assert error_code(refused) == "scope_violation", refused
        assert "globex-file-canary" not in json.dumps(refused)
    globex_db = server.data_dir.resolve() / "tenants" / "globex" / "data.sqlite3"
    attached = acme.call("attach", path=str(globex_db))
    assert error_code(attached) == "scope_violation", attached


def test_tenant_move_both_ways_under_load_loses_no_rows(server: RunningServer) -> None:
    tenant = "move-me"
    server.cli("tenant", "create", tenant, "--tools", TOOLS, "--tier", "dedicated")
    caller = Caller(server, tenant)
    written: list[str] = []
    pids: set[int] = set()
    failures: list[dict[str, Any]] = []
    stop = threading.Event()
    lock = threading.Lock()

    def writer(n: int) -> None:
        i = 0
        while not stop.is_set():
            text = f"row-{n}-{i}"
            result = caller.call("add_row", text=text)
            with lock:
                if result.get("isError"):
                    failures.append(result)
                else:
                    written.append(text)
                    pids.add(result["structuredContent"]["result"])
            i += 1

    with ThreadPoolExecutor(3) as pool:
        writers = [pool.submit(writer, n) for n in range(3)]
        wait_for(lambda: pids, timeout=30)  # the first worker (started on the first call) serves them
        time.sleep(1.0)
        server.cli("tenant", "move", tenant, "--tier", "logical")
        wait_for(lambda: caller.value("whereami")["pid"] == server_pid(server))
        time.sleep(1.0)
        moved = server.cli("tenant", "move", tenant, "--tier", "dedicated")
        assert "from the logical to the dedicated tier" in moved.stdout
        wait_for(lambda: caller.value("whereami")["pid"] != server_pid(server))
        time.sleep(1.0)
        stop.set()
        for future in writers:
            future.result(timeout=60)
    assert failures == []
    assert server_pid(server) in pids and len(pids) >= 3  # the first worker, the server, a new worker
    rows = caller.value("all_rows")
    assert sorted(rows) == sorted(written)
    moves = [r for r in server.audit_records(tenant) if r["event_type"] == "tenant_moved"]
    assert [(m["detail"]["from"], m["detail"]["to"]) for m in moves] == [
        ("dedicated", "logical"),
        ("logical", "dedicated"),
    ]


def test_move_refuses_an_unknown_tier_or_tenant(server: RunningServer) -> None:
    bad_tier = server.cli("tenant", "move", "acme", "--tier", "premium", check=False)
    assert bad_tier.returncode == 2 and "--tier must be logical or dedicated" in bad_tier.stderr
    unknown = server.cli("tenant", "move", "nobody", "--tier", "dedicated", check=False)
    assert unknown.returncode == 1 and "no tenant 'nobody'" in unknown.stderr
    same = server.cli("tenant", "move", "acme", "--tier", "dedicated")  # positive control
    assert "already on the dedicated tier" in same.stdout


def test_over_stdio_a_dedicated_tenants_tools_run_in_a_worker_and_stdout_stays_protocol(
    server: RunningServer,
) -> None:
    import subprocess

    from tests.support.server import TENANTRY

    token = server.token("acme", "stdio-agent")
    lines = [
        {
            "jsonrpc": "2.0",
            "id": 0,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "t", "version": "0"},
            },
        },
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "whereami", "arguments": {}}},
    ]
    process = subprocess.Popen(
        [TENANTRY, "stdio", "--token", token, "--data-dir", str(server.data_dir), "--app", "dedicated_tools:app"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=server.data_dir.parent,
        env={**os.environ, **server.env},
    )
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write("".join(json.dumps(line) + "\n" for line in lines).encode())
    process.stdin.flush()
    replies = [json.loads(process.stdout.readline()) for _ in range(2)]  # every stdout line is JSON-RPC
    process.stdin.close()
    process.wait(timeout=30)
    here = replies[1]["result"]["structuredContent"]
    assert here["tenant"] == "acme" and here["pid"] != process.pid
    assert Path(here["cwd"]).parts[-3:] == ("tenants", "acme", "worker")


def test_an_idle_worker_is_stopped_and_the_next_call_starts_another(tmp_path: Path) -> None:
    (tmp_path / "dedicated_tools.py").write_text(APP)
    env = {"TENANTRY_WORKER__IDLE_TIMEOUT": "1"}
    idle = start_server(tmp_path / "data", demo=False, app="dedicated_tools:app", cwd=tmp_path, env=env)
    try:
        idle.cli("tenant", "create", "acme", "--tools", TOOLS, "--tier", "dedicated")
        acme = Caller(idle, "acme")
        first = wait_for(lambda: acme.value("add_row", text="before idle"))
        assert acme.value("nap", seconds=2) == first  # positive control: busy for longer than the timeout, kept

        def gone() -> bool:
            try:
                os.kill(first, 0)
            except ProcessLookupError:
                return True
            return False

        wait_for(gone, timeout=15)
        second = acme.value("add_row", text="after idle")
        assert second != first
        assert sorted(acme.value("all_rows")) == ["after idle", "before idle"]
        assert not [r for r in idle.audit_records("acme") if r["event_type"] == "worker_crashed"]  # not a crash
    finally:
        idle.stop()
