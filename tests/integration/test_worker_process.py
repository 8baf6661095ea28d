"""A dedicated worker process on its own, spoken to over its socket as the server does: it is
started for one tenant and refuses a call for any other (of its tools or its command upstreams'),
and it refuses oversized frames."""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from textwrap import dedent
from typing import Any

import pytest

from tenantry.core.upstreams import UpstreamSpec
from tenantry.framework.frames import encode_frame

UPSTREAM = Path(__file__).parent.parent / "support" / "stdio_upstream.py"

MAX_FRAME = 64 * 1024
APP = dedent(
    """
    import tenantry

    app = tenantry.App("worker-process-tests")

    @app.tool()
    async def add_row(ctx: tenantry.ToolContext, text: str) -> str:
        await ctx.sql.execute("CREATE TABLE IF NOT EXISTS rows_ (text TEXT)")
        await ctx.sql.execute("INSERT INTO rows_ VALUES (?)", text)
        return ctx.tenant_id
    """
)


class Worker:
    def __init__(self, root: Path, tenant: str, upstreams: dict[str, str] | None = None) -> None:
        ours, theirs = socket.socketpair()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tenantry.cli.worker", "--fd", str(theirs.fileno())],
            pass_fds=[theirs.fileno()],
            env={"PATH": "/usr/bin:/bin", "TENANTRY_SECRET_TOKEN": "worker-secret-value"},
            cwd=root,
            stderr=subprocess.PIPE,
        )
        theirs.close()
        self.sock = ours
        self.sock.settimeout(60)
        defaults: dict[str, Any] = {}
        self.send(
            {
                "t": "init",
                "tenant_id": tenant,
                "app": {"spec": "worker_tools:app", "demo": False, "path": str(root)},
                "settings": {
                    "data_dir": str(root / "data"),
                    **{name: defaults for name in ("sql", "files", "vectors", "tools", "logging")},
                    "worker": {"max_frame_bytes": MAX_FRAME},
                    # Its upstream reports its parent from inside, which its sandbox would hide.
                    "gateway": {"command_sandbox": "off"},
                },
                "limits": {},
                "upstreams": upstreams or {},
            }
        )
        assert self.receive()["t"] == "ready"

    def send(self, message: dict[str, Any]) -> None:
        self.sock.sendall(encode_frame(message, MAX_FRAME))

    def receive(self) -> dict[str, Any]:
        import json

        header = self._exactly(4)
        return json.loads(self._exactly(struct.unpack(">I", header)[0]))

    def _exactly(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            assert chunk, "the worker closed the connection"
            data += chunk
        return data

    def call(self, call_id: int, tenant: str, text: str) -> dict[str, Any]:
        self.send(
            {
                "t": "call",
                "id": call_id,
                "kind": "tool",
                "name": "add_row",
                "arguments": {"text": text},
                "timeout": 10,
                "tenant_id": tenant,
                "subject": "agent",
                "session_id": None,
                "request_id": f"r{call_id}",
                "allowed_tools": ["add_row"],
                "resource_prefix": None,
            }
        )
        return self.receive()

    def call_upstream(self, call_id: int, tenant: str, upstream: str, tool: str) -> dict[str, Any]:
        self.send(
            {
                "t": "call",
                "id": call_id,
                "kind": "tool",
                "name": f"{upstream}__{tool}",
                "upstream": upstream,
                "upstream_tool": tool,
                "arguments": {},
                "timeout": 30,
                "tenant_id": tenant,
                "subject": "agent",
                "session_id": None,
                "request_id": f"r{call_id}",
                "allowed_tools": [f"{upstream}__{tool}"],
                "resource_prefix": None,
            }
        )
        return self.receive()

    def close(self) -> int:
        self.sock.close()
        try:
            return self.process.wait(timeout=20)
        finally:
            assert self.process.stderr is not None
            self.process.stderr.close()


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[Worker]:
    (tmp_path / "worker_tools.py").write_text(APP)
    running = Worker(tmp_path, "acme")
    yield running
    running.close()


def test_a_worker_refuses_a_call_for_another_tenant(worker: Worker, tmp_path: Path) -> None:
    refused = worker.call(1, "globex", "written by globex?")
    assert refused["t"] == "error" and refused["error"]["code"] == "scope_violation"
    assert not (tmp_path / "data" / "tenants" / "globex").exists()  # nothing ran, nothing was opened
    # Positive control: its own tenant's call runs, in that tenant's database.
    done = worker.call(2, "acme", "written by acme")
    assert done == {"t": "result", "id": 2, "value": {"model": "CallToolResult", "data": done["value"]["data"]}}
    assert done["value"]["data"]["structuredContent"] == {"result": "acme"}
    assert (tmp_path / "data" / "tenants" / "acme" / "data.sqlite3").is_file()


def test_a_worker_stops_at_an_oversized_frame(worker: Worker) -> None:
    assert worker.call(1, "acme", "fine")["t"] == "result"  # positive control
    worker.sock.sendall(struct.pack(">I", MAX_FRAME + 1))  # the body is never sent, nor read
    assert worker.process.wait(timeout=20) == 1
    assert worker.process.stderr is not None
    assert b"broke the protocol (FrameTooLarge)" in worker.process.stderr.read()


def test_a_worker_exits_cleanly_when_the_server_closes_its_socket(worker: Worker) -> None:
    assert worker.call(1, "acme", "fine")["t"] == "result"
    assert worker.close() == 0


def test_a_worker_runs_only_its_own_tenants_calls_of_its_own_command_upstreams(tmp_path: Path) -> None:
    (tmp_path / "worker_tools.py").write_text(APP)
    spec = UpstreamSpec(name="probe", transport="stdio", command=(sys.executable, str(UPSTREAM)))
    worker = Worker(tmp_path, "acme", {"probe": spec.to_json()})
    try:
        refused = worker.call_upstream(1, "globex", "probe", "whereami")
        assert refused["t"] == "error" and refused["error"]["code"] == "scope_violation"
        unknown = worker.call_upstream(2, "acme", "other", "whereami")
        assert unknown["t"] == "error" and unknown["error"]["code"] == "upstream_unavailable"
        assert not (tmp_path / "data" / "tenants" / "globex").exists()
        # Positive control: its own tenant's call runs in an upstream process that is its child.
        done = worker.call_upstream(3, "acme", "probe", "whereami")
        assert done["t"] == "result", done
        assert done["value"]["data"]["structuredContent"]["ppid"] == worker.process.pid
    finally:
        assert worker.close() == 0
