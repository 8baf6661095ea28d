"""A dedicated tenant's command (stdio) upstreams run under its worker, over real HTTP: the upstream
process (``tests/support/stdio_upstream.py``) is the worker's child, with the worker's resource
limits and none of the server's or other tenants' secrets; admission, redaction, audit, halts and
crashes behave as on the logical tier, whose calls still go through the server's gateway."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_dedicated_tier import error_code, wait_for
from tests.support.rpc import modern_call
from tests.support.server import RunningServer, free_port, start_server

REPO = Path(__file__).parent.parent.parent

SCRIPT = Path(__file__).parent.parent / "support" / "stdio_upstream.py"
ACME_CREDENTIAL = "acme-stdio-credential-5d1c"
GLOBEX_CREDENTIAL = "globex-stdio-credential-e80a"
TOOLS = [
    "probe__whereami",
    "probe__env_holds",
    "probe__credential",
    "probe__nap",
    "probe__cancellations",
    "probe__napping",
    "probe__big",
    "probe__linger",
]
WORKER_ENV = {
    # These tests read the upstream's process tree, limits and environment from inside it, which
    # its sandbox hides (it sees itself as PID 1): tests/integration/test_upstream_sandbox.py
    # proves the sandbox, on both tiers.
    "TENANTRY_GATEWAY__COMMAND_SANDBOX": "off",
    "TENANTRY_WORKER__OPEN_FILES": "200",
    "TENANTRY_WORKER__ADDRESS_SPACE_MB": "3072",
    "TENANTRY_WORKER__PROCESSES": "60000",
    "TENANTRY_LIMITS__CALLS_PER_SECOND": "1000",
    "TENANTRY_LIMITS__BURST": "2000",
    "TENANTRY_LIMITS__REQUESTS_PER_SECOND": "10000",
    "TENANTRY_TOOLS__MAX_RESULT_BYTES": "100000",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(tmp_path_factory.mktemp("dedicated-upstreams") / "data", env=WORKER_ENV)
    running.cli("secret", "set", "--tenant", "acme", "upstream_key", input=ACME_CREDENTIAL)
    running.cli("secret", "set", "--tenant", "globex", "upstream_key", input=GLOBEX_CREDENTIAL)
    added = running.cli(
        "upstream",
        "add",
        "probe",
        "--command",
        f"{sys.executable} {SCRIPT}",
        "--env",
        "UPSTREAM_KEY={secret:upstream_key}",
    )
    assert "probe__whereami" in added.stdout, added.stdout
    for tenant in ("acme", "globex"):
        running.cli("tenant", "grant", tenant, *TOOLS)
    running.cli("tenant", "move", "acme", "--tier", "dedicated")
    wait_for(lambda: where(running, "acme")["ppid"] != running.process.pid)
    yield running
    running.stop()


_TOKENS: dict[tuple[Path, str], str] = {}


def agent_token(server: RunningServer, tenant: str, name: str) -> str:
    """A token of ``tenant``'s agent able to call ``name``.

    A token carries the grants of its tenant when it was issued; all of ``TOOLS`` are granted by
    the module's server fixture, so one token per tenant serves every call of them (a halt, a tier
    move or a limit change does not touch it). A tool granted later by its test gets a fresh token.
    """
    if name not in TOOLS:
        return server.token(tenant, f"{tenant}-agent")
    key = (server.data_dir, tenant)
    if key not in _TOKENS:
        _TOKENS[key] = server.token(tenant, f"{tenant}-agent")
    return _TOKENS[key]


def call(server: RunningServer, tenant: str, name: str, /, **arguments: Any) -> dict[str, Any]:
    response = modern_call(
        server.mcp_url, agent_token(server, tenant, name), "tools/call", {"name": name, "arguments": arguments}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert "result" in body, body
    return body["result"]


def value(server: RunningServer, tenant: str, name: str, /, **arguments: Any) -> Any:
    result = call(server, tenant, name, **arguments)
    assert not result.get("isError"), result
    text = "".join(c.get("text", "") for c in result["content"])
    structured = result.get("structuredContent")
    if structured is not None:
        return structured.get("result", structured)
    return text


def where(server: RunningServer, tenant: str) -> dict[str, Any]:
    found = value(server, tenant, "probe__whereami")
    assert isinstance(found, dict), found
    return found


def is_worker_of(pid: int, server: RunningServer, tenant: str) -> bool:
    """Whether ``pid`` is ``tenant``'s dedicated worker (its command and working directory say so)."""
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
    return b"tenantry.cli.worker" in cmdline and cwd == server.data_dir.resolve() / "tenants" / tenant / "worker"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]


def upstream_processes(server: RunningServer, tenant: str) -> dict[int, int]:
    """The test upstream's processes running for ``tenant`` (in its directory): pid -> parent pid."""
    where = server.data_dir.resolve() / "tenants" / tenant / "upstreams" / "probe"
    found: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ours = str(SCRIPT).encode() in (entry / "cmdline").read_bytes().split(b"\0")
            if ours and Path(os.readlink(entry / "cwd")) == where and alive(int(entry.name)):
                found[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
    return found


def test_a_dedicated_tenants_stdio_upstream_is_a_child_of_its_worker(server: RunningServer) -> None:
    acme = where(server, "acme")
    assert acme["ppid"] != server.process.pid
    assert is_worker_of(acme["ppid"], server, "acme")
    # The gateway's own process for acme (it listed the upstream's tools through acme) stopped at the move.
    assert wait_for(lambda: set(upstream_processes(server, "acme").values()) == {acme["ppid"]})
    # It inherits the worker's resource limits.
    assert acme["nofile"] == [200, 200]
    assert acme["address_space"] == [3072 * 1024 * 1024] * 2
    # Its working directory is the tenant's own, the same on both tiers.
    assert Path(acme["cwd"]) == server.data_dir.resolve() / "tenants" / "acme" / "upstreams" / "probe"
    # Positive control: a logical tenant's process of the same upstream is the server's child, unlimited.
    globex = where(server, "globex")
    assert globex["ppid"] == server.process.pid
    assert globex["nofile"] != [200, 200] and globex["address_space"] != acme["address_space"]


def test_the_upstreams_environment_holds_its_own_credential_and_nothing_else(server: RunningServer) -> None:
    env = where(server, "acme")["env"]
    assert "UPSTREAM_KEY" in env
    assert not [name for name in env if name.startswith("TENANTRY_")]  # not even the worker's own secrets
    assert value(server, "acme", "probe__env_holds", needle=ACME_CREDENTIAL) is True
    assert value(server, "acme", "probe__env_holds", needle=GLOBEX_CREDENTIAL) is False
    # Positive control: the logical tenant's process holds its own credential, not acme's.
    assert value(server, "globex", "probe__env_holds", needle=GLOBEX_CREDENTIAL) is True
    assert value(server, "globex", "probe__env_holds", needle=ACME_CREDENTIAL) is False


def test_each_tenants_upstream_process_has_a_home_of_its_own_on_both_tiers(server: RunningServer) -> None:
    # Many servers keep login caches under ~: one tenant's must never be another's.
    for tenant in ("acme", "globex"):
        found = where(server, tenant)
        own = server.data_dir.resolve() / "tenants" / tenant / "upstreams" / "probe"
        assert Path(found["home"]) == own and Path(found["tmpdir"]) == own / ".tmp"
        assert Path(found["tmpdir"]).is_dir()
    assert where(server, "acme")["home"] != where(server, "globex")["home"] != os.environ.get("HOME")


def test_a_crashing_upstreams_stderr_reaches_the_log_redacted_on_both_tiers(server: RunningServer) -> None:
    server.cli("tenant", "grant", "acme", "probe__crash")
    server.cli("tenant", "grant", "globex", "probe__crash")
    for tenant in ("acme", "globex"):
        wait_for(lambda t=tenant: crashed(crash(server, t)))
    assert wait_for(lambda: server.log_path.read_text().count("cannot log in with [redacted]") >= 2)
    log = server.log_path.read_text()
    assert ACME_CREDENTIAL not in log and GLOBEX_CREDENTIAL not in log
    # Positive control: both processes are started again and serve their tenants.
    assert wait_for(lambda: value(server, "globex", "probe__credential") == "my key is [redacted]")
    assert wait_for(lambda: value(server, "acme", "probe__credential") == "my key is [redacted]")


def crashed(answer: dict[str, Any]) -> bool:
    return bool(answer.get("result", {}).get("isError")) and "upstream" in json.dumps(answer)


def crash(server: RunningServer, tenant: str) -> dict[str, Any]:
    response = modern_call(
        server.mcp_url, server.token(tenant, f"{tenant}-agent"), "tools/call", {"name": "probe__crash", "arguments": {}}
    )
    body: dict[str, Any] = response.json()
    return body


def test_an_upstream_result_echoing_the_credential_is_redacted_on_both_tiers(server: RunningServer) -> None:
    dedicated = value(server, "acme", "probe__credential")
    logical = value(server, "globex", "probe__credential")
    assert dedicated == logical == "my key is [redacted]"
    assert ACME_CREDENTIAL not in json.dumps(call(server, "acme", "probe__credential"))


def test_admission_applies_before_the_worker_is_asked(server: RunningServer) -> None:
    invalid = modern_call(
        server.mcp_url, server.token("acme"), "tools/call", {"name": "probe__nap", "arguments": {"seconds": "long"}}
    )
    assert invalid.json()["error"]["data"]["code"] == "invalid_arguments"  # the upstream's own schema, in the server
    token = server.token("acme", "narrow-agent", tools="probe__whereami")
    narrow = modern_call(server.mcp_url, token, "tools/call", {"name": "probe__credential", "arguments": {}})
    assert narrow.json()["error"]["data"]["code"] == "tool_unavailable"
    allowed = modern_call(server.mcp_url, token, "tools/call", {"name": "probe__whereami", "arguments": {}})
    assert not allowed.json()["result"].get("isError")  # positive control: the same token, its tool


def test_an_oversized_dedicated_upstream_result_is_refused_and_the_session_survives(server: RunningServer) -> None:
    process = where(server, "acme")["pid"]
    # Over tools.max_result_bytes (text and structured copy: ~120 kB), under the message bound.
    assert error_code(call(server, "acme", "probe__big", size=60_000)) == "result_too_large"
    assert error_code(call(server, "globex", "probe__big", size=60_000)) == "result_too_large"  # as on the logical tier
    assert value(server, "acme", "probe__big", size=10) == "x" * 10  # positive control
    assert where(server, "acme")["pid"] == process  # the same upstream process answered


def test_an_upstream_message_over_the_bound_fails_only_that_process_as_on_the_logical_tier(
    server: RunningServer,
) -> None:
    before = where(server, "acme")
    dedicated = error_code(call(server, "acme", "probe__big", size=2_000_000))
    logical = error_code(call(server, "globex", "probe__big", size=2_000_000))
    assert dedicated == logical == "upstream_unavailable"
    # The worker lives on; its next call starts a new upstream process under it.
    after = wait_for(lambda: (w := where(server, "acme")) and w["pid"] != before["pid"] and w)
    assert after["ppid"] == before["ppid"]


def test_a_dedicated_tenant_without_the_upstreams_secret_gets_upstream_unavailable(server: RunningServer) -> None:
    server.cli("secret", "set", "--tenant", "globex", "only_globex", input="globex-only-value")
    server.cli(
        "upstream", "add", "needs", "--command", f"{sys.executable} {SCRIPT}", "--env", "KEY={secret:only_globex}"
    )
    try:
        server.cli("tenant", "grant", "acme", "needs__whereami")
        server.cli("tenant", "grant", "globex", "needs__whereami")
        refused = wait_for(
            lambda: (r := call(server, "acme", "needs__whereami")) and error_code(r) == "upstream_unavailable" and r
        )
        assert "needs this tenant's secret 'only_globex', which is not set" in refused["content"][0]["text"]
        assert "globex-only-value" not in json.dumps(refused)
        # Positive control: the tenant that has the secret reaches the same upstream.
        assert value(server, "globex", "needs__whereami")["ppid"] == server.process.pid
    finally:
        server.cli("upstream", "remove", "needs")


def test_a_dedicated_upstream_call_is_audited_with_the_upstream_named(server: RunningServer) -> None:
    value(server, "acme", "probe__env_holds", needle="audit-me-canary")
    records = [r for r in server.audit_records("acme") if r["event_type"] == "tool_call"]
    done = [r for r in records if r["tool_name"] == "probe__env_holds"]
    assert done[-1]["detail"]["upstream"] == "probe" and done[-1]["detail"]["upstream_tool"] == "env_holds"
    assert "audit-me-canary" not in json.dumps(records)


def test_a_halt_cancels_a_dedicated_upstream_call_and_tells_the_upstream(server: RunningServer) -> None:
    process = where(server, "acme")["pid"]
    label = f"halt-{time.time_ns()}"
    answers: list[dict[str, Any]] = []
    caller = threading.Thread(
        target=lambda: answers.append(call(server, "acme", "probe__nap", seconds=30, label=label))
    )
    caller.start()
    # Halt only once the nap runs in the upstream (a halt before it would refuse the call instead).
    wait_for(lambda: value(server, "acme", "probe__napping") == f"{process} {label}" or None, timeout=30)
    server.cli("tenant", "halt", "acme", "--reason", "dedicated upstream halt test")
    try:
        caller.join(15)
        assert answers, "the call was not answered after the halt"
    finally:
        server.cli("tenant", "resume", "acme")
    assert error_code(answers[0]) == "call_cancelled"
    # The upstream got notifications/cancelled and stopped the nap.
    wait_for(lambda: label in value(server, "acme", "probe__cancellations"), timeout=15)


def test_a_dedicated_upstream_call_past_its_timeout_is_answered_tool_timeout(server: RunningServer) -> None:
    server.cli("tenant", "limits", "acme", "tool_timeout=1")
    try:
        result = wait_for(
            lambda: (r := call(server, "acme", "probe__nap", seconds=5)) and error_code(r) == "tool_timeout" and r
        )
        assert "did not finish within 1s" in result["content"][0]["text"]
    finally:
        server.cli("tenant", "limits", "acme", "--clear", "tool_timeout")
    assert wait_for(lambda: value(server, "acme", "probe__nap", seconds=1.5) == "rested")  # positive control


def test_kill_9_of_the_worker_mid_upstream_call_is_a_clear_error_and_others_carry_on(server: RunningServer) -> None:
    before = where(server, "acme")
    globex_before = where(server, "globex")
    answers: list[dict[str, Any]] = []
    label = f"kill9-{time.time_ns()}"
    caller = threading.Thread(
        target=lambda: answers.append(call(server, "acme", "probe__nap", seconds=30, label=label))
    )
    caller.start()
    # Kill only once the nap runs in this worker's upstream (a loaded machine may be slow to get there).
    wait_for(lambda: value(server, "acme", "probe__napping") == f"{before['pid']} {label}" or None, timeout=30)
    os.kill(before["ppid"], signal.SIGKILL)
    caller.join(15)
    assert answers and error_code(answers[0]) == "worker_crashed"
    # The upstream process, its stdin closed with the worker gone, ends too.
    wait_for(lambda: not alive(before["pid"]), timeout=15)
    # The next call gets a fresh worker and a fresh upstream process under it.
    after = wait_for(lambda: where(server, "acme"))
    assert after["ppid"] != before["ppid"] and is_worker_of(after["ppid"], server, "acme")
    # The logical tenant's process of the same upstream was not touched.
    assert where(server, "globex")["pid"] == globex_before["pid"]
    crashes = [r for r in server.audit_records("acme") if r["event_type"] == "worker_crashed"]
    assert crashes and crashes[-1]["detail"]["pid"] == before["ppid"]


def test_tenant_move_sends_upstream_calls_to_the_gateway_and_back(server: RunningServer) -> None:
    in_worker = where(server, "acme")
    server.cli("tenant", "move", "acme", "--tier", "logical")
    try:
        moved = wait_for(lambda: (w := where(server, "acme")) and w["ppid"] == server.process.pid and w)
        assert moved["nofile"] != [200, 200]
    finally:
        server.cli("tenant", "move", "acme", "--tier", "dedicated")
    back = wait_for(lambda: (w := where(server, "acme")) and w["ppid"] != server.process.pid and w)
    assert is_worker_of(back["ppid"], server, "acme") and back["pid"] != in_worker["pid"]


def test_a_dedicated_tenants_url_upstream_is_still_called_through_the_gateway(server: RunningServer) -> None:
    port = free_port()
    upstream = subprocess.Popen(
        [sys.executable, "-m", "tests.support.upstream_server", str(port)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def listening() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    return True
            except OSError:
                return False

        wait_for(listening, timeout=30)
        url = f"http://127.0.0.1:{port}/mcp"
        server.cli("upstream", "add", "web", "--url", url, "--allow-private")
        server.cli("tenant", "grant", "acme", "web__echo")
        # The worker is not given URL upstreams: the server's gateway calls it (else upstream_unavailable).
        assert wait_for(lambda: value(server, "acme", "web__echo", text="over http") == "over http")
        assert is_worker_of(where(server, "acme")["ppid"], server, "acme")  # still a dedicated tenant
    finally:
        upstream.terminate()
        upstream.wait(10)
        server.cli("upstream", "remove", "web", check=False)


def test_an_upstream_that_ignores_the_end_of_its_stdin_dies_with_its_killed_worker(server: RunningServer) -> None:
    # Positive control: run on its own, it does outlive the end of its stdin.
    alone = subprocess.Popen(
        [sys.executable, str(SCRIPT)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    try:
        assert alone.stdin is not None and alone.stdout is not None
        hello = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}
        for message in (
            {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": hello},
            {"jsonrpc": "2.0", "method": "notifications/initialized"},
            {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "linger", "arguments": {}}},
        ):
            alone.stdin.write(json.dumps(message).encode() + b"\n")
        alone.stdin.flush()
        while json.loads(alone.stdout.readline()).get("id") != 1:
            pass
        alone.stdin.close()
        time.sleep(2)
        assert alone.poll() is None
    finally:
        alone.kill()
        alone.wait()
    worker = where(server, "acme")["ppid"]
    stubborn = value(server, "acme", "probe__linger")
    os.kill(worker, signal.SIGKILL)
    wait_for(lambda: not alive(stubborn), timeout=10)
    restarted = wait_for(lambda: where(server, "acme"))
    assert restarted["ppid"] != worker and is_worker_of(restarted["ppid"], server, "acme")


def test_a_lowered_file_quota_reaches_a_running_upstream_process_of_the_logical_tier(server: RunningServer) -> None:
    """Its process started under ``RLIMIT_FSIZE`` = the old ``file_bytes``: the next call is served
    by one under the new limit. Raising the quota keeps the (stricter) running process."""
    before = where(server, "globex")
    lowered = before["file_size"][0] // 2
    try:
        server.cli("tenant", "limits", "globex", f"file_bytes={lowered}")
        after = wait_for(lambda: (found := where(server, "globex"))["file_size"][0] == lowered and found)
        assert after["pid"] != before["pid"]
        server.cli("tenant", "limits", "globex", f"file_bytes={lowered * 2}")
        assert where(server, "globex")["pid"] == after["pid"]  # the control: no restart for a raise
    finally:
        server.cli("tenant", "limits", "globex", "--clear", "file_bytes")


def test_a_lowered_file_quota_reaches_an_upstream_process_that_always_has_a_call_in_flight(
    server: RunningServer,
) -> None:
    """An agent keeping one call going at every moment does not keep the old ``RLIMIT_FSIZE``: the
    next call goes to a process under the new limit, and the calls in flight finish on the old one."""
    before = where(server, "globex")
    lowered = before["file_size"][0] // 2
    naps: list[dict[str, Any]] = []
    stop = threading.Event()

    def overlapping_naps() -> None:
        threads: list[threading.Thread] = []
        while not stop.is_set():
            thread = threading.Thread(target=lambda: naps.append(call(server, "globex", "probe__nap", seconds=1.5)))
            thread.start()
            threads.append(thread)
            time.sleep(0.5)
        for thread in threads:
            thread.join()

    napper = threading.Thread(target=overlapping_naps)
    napper.start()
    try:
        time.sleep(1)
        server.cli("tenant", "limits", "globex", f"file_bytes={lowered}")
        after = wait_for(lambda: (found := where(server, "globex"))["file_size"][0] == lowered and found, timeout=10)
        assert after["pid"] != before["pid"]
    finally:
        stop.set()
        napper.join()
        server.cli("tenant", "limits", "globex", "--clear", "file_bytes")
    assert naps and not any(result.get("isError") for result in naps)  # the control: none was cut off
    wait_for(lambda: not alive(before["pid"]), timeout=10)  # the old process closed once idle
