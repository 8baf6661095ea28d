"""Helpers for the gateway attack scripts.

Each script can run against a server it starts itself (``Lab``: its own data dir under /tmp,
127.0.0.1 only, everything killed at the end), or against a running one when ATTACK_PORT and
TENANTRY_DATA_DIR are set (``Lab(reuse=True)``).
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx2

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
PY = str(ROOT / ".venv" / "bin" / "python")
CLI = str(ROOT / ".venv" / "bin" / "tenantry")
H = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json",
     "MCP-Protocol-Version": "2025-11-25"}

HTTP_TOOLS = "all_seen big cred cred_blob cred_error flood hang headers sample".split()
STDIO_TOOLS = ("big crash env fail flood hang ls proc_environ read rpc_error secret_blob secret_encoded spin where "
               "whoami_tenant write").split()
SECRETS = {"acme": "acme-CRM-tok-AAAA1111", "globex": "globex-CRM-tok-BBBB2222", "initech": "initech-CRM-tok-CCCC3333"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 60) -> None:
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"nothing listens on {port}")


class Lab:
    """A Tenantry server (acme, globex logical; initech dedicated) with the hostile upstreams
    ``web`` (HTTP) and ``hs`` (stdio) added and granted to all three."""

    def __init__(self, *, http_args: tuple[str, ...] = (), upstreams: bool = True, config: str = "") -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.tmp = Path(tempfile.mkdtemp(prefix="atk-gw-"))
        self.data = self.tmp / "data"
        self.home = self.tmp / "home"  # the server user's HOME, for this lab only
        self.home.mkdir()
        self.env = {**os.environ, "TENANTRY_DATA_DIR": str(self.data), "HOME": str(self.home)}
        self.config = config
        self.http_port = free_port()
        self.port = free_port()
        self.mcp = f"http://127.0.0.1:{self.port}/mcp"
        self.http_args = http_args
        self.upstreams = upstreams

    def __enter__(self) -> Lab:
        try:
            self._start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def spawn(self, *argv: str, log: str) -> subprocess.Popen[bytes]:
        p = subprocess.Popen(list(argv), stdout=open(self.tmp / log, "wb"), stderr=subprocess.STDOUT,
                             env=self.env, cwd=str(ROOT), start_new_session=True)
        self.procs.append(p)
        return p

    def _start(self) -> None:
        extra = ["--config", self._config_file()] if self.config else []
        self.server = self.spawn(CLI, *extra, "serve", "--demo", "--port", str(self.port), log="server.log")
        wait_port(self.port)
        self.cli("tenant", "create", "initech", "--name", "Initech", "--tools", "whoami", "--tier", "dedicated")
        for t, v in SECRETS.items():
            self.cli("secret", "set", "--tenant", t, "crm_token", stdin=v)
        if not self.upstreams:
            return
        self.http = self.spawn(PY, str(HERE / "hostile_http.py"), str(self.http_port), *self.http_args, log="http.log")
        wait_port(self.http_port)
        self.cli("upstream", "add", "web", "--url", f"http://127.0.0.1:{self.http_port}/mcp",
                 "--header", "Authorization=Bearer {secret:crm_token}", "--allow-private")
        self.cli("upstream", "add", "hs", "--command", f"{PY} {HERE / 'hostile_stdio.py'}",
                 "--env", "CRM_TOKEN={secret:crm_token}", "--env", "TENANT_ID={tenant}", "--timeout", "20s")
        names = [f"web__{t}" for t in HTTP_TOOLS] + [f"hs__{t}" for t in STDIO_TOOLS]
        for t in SECRETS:
            self.cli("tenant", "grant", t, *names)
        time.sleep(1.5)  # the control-plane poll

    def _config_file(self) -> str:
        path = self.tmp / "tenantry.toml"
        path.write_text(self.config)
        return str(path)

    def cli(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        extra = ["--config", str(self.tmp / "tenantry.toml")] if self.config else []
        r = subprocess.run([CLI, *extra, *args], input=stdin, capture_output=True, text=True, env=self.env)
        if check and r.returncode != 0:
            raise RuntimeError(f"{args}: {r.stderr}")
        return (r.stdout + r.stderr).strip()

    def client(self, tenant: str, sub: str = "x") -> Client:
        return Client(self.mcp, self.cli("token", "issue", "--tenant", tenant, "--sub", sub))

    def log(self) -> str:
        return (self.tmp / "server.log").read_text(errors="replace")

    def __exit__(self, *exc: object) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        # Leftover upstream/worker processes of this data dir (they carry its path).
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    cmd = open(f"/proc/{pid}/cmdline", "rb").read()
                    cwd = os.readlink(f"/proc/{pid}/cwd")
                except OSError:
                    continue
                if str(self.tmp).encode() in cmd or cwd.startswith(str(self.tmp)):
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        if not os.environ.get("ATTACK_KEEP"):
            shutil.rmtree(self.tmp, ignore_errors=True)
        else:
            print(f"(kept {self.tmp})", file=sys.stderr)


class Client:
    def __init__(self, url: str, tok: str) -> None:
        self.url = url
        self.tok = tok
        self.h = {**H, "Authorization": f"Bearer {tok}"}
        # One kept-alive client: a new one per call loads the system's CAs each time (tens of
        # milliseconds of the caller's own CPU, which a latency figure would count).
        self.http = httpx2.Client(timeout=120)
        r = self.http.post(url, headers=self.h, json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {"sampling": {}, "roots": {}, "elicitation": {}},
            "clientInfo": {"name": "a", "version": "0"}}})
        assert r.status_code == 200, r.text
        self.h["Mcp-Session-Id"] = r.headers["mcp-session-id"]
        self.http.post(url, headers=self.h, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
        # Each request its own id, as JSON-RPC asks: until finding 6 was fixed, two requests in
        # flight with one id made the server lose one answer; it now refuses the second at once.
        self.ids = itertools.count(2)

    def rpc(self, method: str, params: dict[str, Any], timeout: float = 120,
            headers: dict[str, str] | None = None, request_id: int | None = None) -> tuple[Any, list[Any]]:
        """(the response message, every other message on the stream)."""
        rid = next(self.ids) if request_id is None else request_id
        r = self.http.post(self.url, headers={**self.h, **(headers or {})}, timeout=timeout,
                        json={"jsonrpc": "2.0", "id": rid, "method": method, "params": params})
        if r.status_code != 200:
            return {"http": r.status_code, "body": r.text[:500]}, []
        if r.headers.get("content-type", "").startswith("text/event-stream"):
            msgs = [json.loads(line[5:]) for line in r.text.splitlines() if line.startswith("data:") and line[5:].strip()]
        else:
            msgs = [json.loads(r.text)]
        final = next((m for m in msgs if m.get("id") == rid), None)
        return final, [m for m in msgs if m is not final]

    def call(self, name: str, args: dict[str, Any] | None = None, timeout: float = 120,
             headers: dict[str, str] | None = None, request_id: int | None = None) -> tuple[bool, Any]:
        msg, _ = self.rpc("tools/call", {"name": name, "arguments": args or {}}, timeout, headers, request_id)
        if "http" in msg:
            return False, msg
        if "error" in msg:
            return False, msg["error"]
        res = msg["result"]
        if res.get("structuredContent") is not None:
            content: Any = res["structuredContent"]
        else:
            content = [c.get("text", c) for c in res.get("content", [])]
            if len(content) == 1:
                content = content[0]
        return not res.get("isError", False), content


def show(label: str, value: Any) -> None:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    print(f"{label}: {text[:1500]}")
