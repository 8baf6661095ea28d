"""Starting a real Tenantry server in a subprocess, through its CLI only.

Imports nothing from ``tenantry`` so the black-box attack suite can use it too.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx2

from tests.support import web
from tests.support.cli_forkserver import ForkedProcess, fork_server

TENANTRY = str(Path(sys.executable).parent / "tenantry")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_cli(
    *args: str,
    data_dir: Path | None = None,
    input: str | None = None,
    env: dict[str, str] | None = None,
    check: bool = True,
    timeout: float = 60,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    cmd = [TENANTRY, *args]
    if data_dir is not None:
        cmd += ["--data-dir", str(data_dir)]
    full_env = {**os.environ, **(env or {})}
    forks = fork_server(TENANTRY)
    if forks is not None:
        result = forks.run(cmd[1:], env=full_env, cwd=cwd, input=input, timeout=timeout)
    else:
        result = subprocess.run(
            cmd, capture_output=True, text=True, input=input, timeout=timeout, env=full_env, cwd=cwd
        )
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}): {result.stderr}")
    return result


CONTROL_PLANE_POLL = 0.35
"""The server's control-plane poll interval (0.25 s) and a margin."""

_READ_ONLY = (
    ("token", "issue"),
    ("audit",),
    ("tenant", "show"),
    ("tenant", "list"),
    ("upstream", "list"),
    ("secret", "list"),
    ("compliance",),
    ("probe",),
    ("--help",),
    ("--version",),
)


def _reads_only(args: tuple[str, ...]) -> bool:
    return any(args[: len(prefix)] == prefix for prefix in _READ_ONLY)


@dataclass
class RunningServer:
    base_url: str
    data_dir: Path
    process: subprocess.Popen[bytes] | ForkedProcess
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def mcp_url(self) -> str:
        return self.base_url + "/mcp"

    def cli(self, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``tenantry ARGS`` against this server's data dir; after a command that may change the
        control plane, wait out the server's poll of it (250 ms), as a person at a terminal does."""
        result = run_cli(*args, data_dir=self.data_dir, check=check, input=input, env=self.env)
        if not _reads_only(args):
            time.sleep(CONTROL_PLANE_POLL)
        return result

    def token(
        self,
        tenant: str,
        sub: str = "agent",
        *,
        tools: str | None = None,
        prefix: str | None = None,
        ttl: str | None = None,
    ) -> str:
        args = ["token", "issue", "--tenant", tenant, "--sub", sub]
        if tools is not None:
            args += ["--tools", tools]
        if prefix is not None:
            args += ["--prefix", prefix]
        if ttl is not None:
            args += ["--ttl", ttl]
        return self.cli(*args).stdout.strip()

    def audit_records(self, tenant: str | None = None, limit: int = 100_000) -> list[dict]:
        """The audit records (newest ``limit``), through ``tenantry audit tail --json``."""
        args = ["audit", "tail", "--json", "--limit", str(limit)]
        if tenant is not None:
            args += ["--tenant", tenant]
        return [json.loads(line) for line in self.cli(*args).stdout.splitlines() if line.strip()]

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_server(
    data_dir: Path,
    *,
    demo: bool = True,
    app: str | None = None,
    config: Path | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 30,
    port: int | None = None,
) -> RunningServer:
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    port = port or free_port()
    args = [TENANTRY, "serve", "--data-dir", str(data_dir), "--port", str(port)]
    if demo:
        args.append("--demo")
    if app:
        args += ["--app", app]
    if config:
        args += ["--config", str(config)]
    log_path = data_dir.parent / f"server-{port}.log"
    full_env = {**os.environ, **(env or {})}
    forks = fork_server(TENANTRY)
    process: subprocess.Popen[bytes] | ForkedProcess
    if forks is not None:
        log_path.write_bytes(b"")
        process = forks.spawn(
            args[1:], env=full_env, cwd=cwd, stdin=os.devnull, stdout=str(log_path), stderr=str(log_path)
        )
    else:
        with log_path.open("wb") as log:  # the child holds its own copy of the descriptor
            process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=full_env, cwd=cwd)
    server = RunningServer(f"http://127.0.0.1:{port}", data_dir, process, log_path, env or {})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited early ({process.returncode}):\n{server.logs()}")
        try:
            if web.get(server.base_url + "/readyz", timeout=1).status_code == 200:
                return server
        except httpx2.TransportError:
            pass
        time.sleep(0.1)
    server.stop()
    raise AssertionError(f"server not ready within {timeout}s:\n{server.logs()}")
