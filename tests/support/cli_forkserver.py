"""Running ``tenantry`` commands as forked children of one process that has already imported the CLI.

Each command the tests run is still a process of its own, with its own arguments, environment,
working directory, standard streams and exit status, and it ends as the console script does
(non-daemon threads joined, ``atexit`` handlers run). Only the interpreter's start and the
imports (about 0.9 s of CPU per command, over a thousand commands in the suite) are paid once per
test worker instead of once per command. ``TENANTRY_TEST_CLI=exec`` runs every command as a
fresh ``tenantry`` process instead (the console script itself is exercised by the README and
packaging tests either way).

The server is ``python tests/support/cli_forkserver.py SOCKET``; it imports nothing from the
tests. It exits when its standard input closes (the test worker that started it is gone).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

__all__ = ["ForkServer", "ForkedProcess", "fork_server"]

_REQUEST_LIMIT = 16 * 1024 * 1024


def _read_line(conn: socket.socket) -> bytes:
    data = bytearray()
    while not data.endswith(b"\n"):
        chunk = conn.recv(65536)
        if not chunk:
            raise EOFError("the other end closed the connection")
        data += chunk
        if len(data) > _REQUEST_LIMIT:
            raise ValueError("request too large")
    return bytes(data)


# -- the server (its own process) ---------------------------------------------------------------


# Imported once by the fork server: the CLI, and what ``tenantry serve`` imports as it starts (the
# server, the embedded stores, the demo, uvicorn's protocols), about 1.3 s of CPU per server start.
_PRELOAD = (
    "tenantry.cli.main",
    "tenantry.cli.serve",
    "tenantry.server.app",
    "tenantry.server.connections",
    "tenantry.server.workers",
    "tenantry.server.stdio",
    "tenantry.controlplane.sqlite",
    "tenantry.audit.store.sqlite",
    "tenantry.scoping.vectors.sqlite",
    "tenantry.scoping.sql.postgres",
    "tenantry.auth.idp",
    "tenantry.demo.tools",
    "tenantry.demo.seed",
    "uvicorn.loops.asyncio",
    "uvicorn.protocols.http.h11_impl",
    "uvicorn.protocols.http.httptools_impl",
    "uvicorn.protocols.websockets.websockets_impl",
    "uvicorn.protocols.websockets.wsproto_impl",
    "uvicorn.lifespan.on",
)


def _preload() -> Any:
    import importlib

    for name in _PRELOAD:
        with contextlib.suppress(ImportError):  # an optional protocol implementation not installed
            importlib.import_module(name)
    if threading.active_count() != 1:
        raise RuntimeError("an import started a thread; forking this process would be unsafe")
    return sys.modules["tenantry.cli.main"]


def _serve(path: str) -> None:
    cli = _preload()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # supervisors are reaped by the kernel
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    while True:
        ready, _, _ = select.select([listener, sys.stdin], [], [])
        if sys.stdin in ready and not os.read(sys.stdin.fileno(), 1024):
            return  # the test worker is gone
        if listener in ready:
            conn, _ = listener.accept()
            if os.fork() == 0:
                listener.close()
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                _supervise(conn, cli.main)
            conn.close()


def _supervise(conn: socket.socket, main: Any) -> None:
    """In a child of the server: fork the command, report its pid, wait for it, report its status
    as ``subprocess`` does (the exit code, or minus the signal that ended it)."""
    status = 1
    try:
        request = json.loads(_read_line(conn))
        pid = os.fork()
        if pid == 0:
            conn.close()
            _run_command(request, main)
        conn.sendall(f"{pid}\n".encode())
        status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    finally:
        try:
            conn.sendall(f"{status}\n".encode())
        finally:
            os._exit(0)


def _run_command(request: dict[str, Any], main: Any) -> None:
    """In the forked grandchild: become the command the request describes, run it, exit with its status."""
    code = 1
    try:
        for fd, name, flags in ((0, "stdin", os.O_RDONLY), (1, "stdout", os.O_WRONLY), (2, "stderr", os.O_WRONLY)):
            if name == "stderr" and request["stderr"] == request["stdout"]:
                os.dup2(1, 2)
                continue
            opened = os.open(request[name], flags)
            os.dup2(opened, fd)
            os.close(opened)
        os.environ.clear()
        os.environ.update(request["env"])
        time.tzset()
        tempfile.tempdir = None
        if request["cwd"] is not None:
            os.chdir(request["cwd"])
        sys.argv = [request["program"], *request["args"]]
        # The path a console script starts with: its own directory, then PYTHONPATH, then the
        # installation's (this server's own script directory is not on it).
        extra = [entry for entry in request["env"].get("PYTHONPATH", "").split(os.pathsep) if entry]
        sys.path[:] = [os.path.dirname(request["program"]), *extra, *sys.path[1:]]
        try:
            main(request["args"])
            code = 0
        except SystemExit as exc:
            if exc.code is None or isinstance(exc.code, int):
                code = exc.code or 0
            else:
                sys.stderr.write(f"{exc.code}\n")
                code = 1
        except KeyboardInterrupt:
            traceback.print_exc()
            sys.stderr.flush()
            signal.signal(signal.SIGINT, signal.SIG_DFL)  # as the interpreter ends on an unhandled ^C
            os.kill(os.getpid(), signal.SIGINT)
        except BaseException:
            traceback.print_exc()
            code = 1
        threading._shutdown()  # type: ignore[attr-defined]  # as the interpreter does at exit
        import atexit

        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


# -- the client (in the test process) ----------------------------------------------------------


class ForkServer:
    def __init__(self, program: str) -> None:
        self._program = program
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._dir = tempfile.mkdtemp(prefix="tenantry-cli-")
        self._socket = os.path.join(self._dir, "fork.sock")

    def _started(self) -> str:
        with self._lock:
            if self._process is None or self._process.poll() is not None:
                if os.path.exists(self._socket):
                    os.unlink(self._socket)
                self._process = subprocess.Popen(
                    [sys.executable, __file__, self._socket], stdin=subprocess.PIPE, stdout=subprocess.PIPE
                )
                assert self._process.stdout is not None
                if self._process.stdout.readline() != b"ready\n":
                    raise RuntimeError("the CLI fork server did not start")
            return self._socket

    def spawn(
        self, args: list[str], *, env: dict[str, str], cwd: Path | None, stdin: str, stdout: str, stderr: str
    ) -> ForkedProcess:
        """Start ``tenantry ARGS`` with its standard streams on the files named; returns at once."""
        request = {
            "program": self._program,
            "args": args,
            "env": env,
            "cwd": None if cwd is None else str(cwd),
            "stdin": stdin,
            "stdout": stdout,
            "stderr": stderr,
        }
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.connect(self._started())
            conn.sendall(json.dumps(request).encode() + b"\n")
            return ForkedProcess([self._program, *args], conn)
        except BaseException:
            conn.close()
            raise

    def run(
        self, args: list[str], *, env: dict[str, str], cwd: Path | None, input: str | None, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        with tempfile.TemporaryDirectory(dir=self._dir) as streams:
            paths = {name: os.path.join(streams, name) for name in ("stdin", "stdout", "stderr")}
            Path(paths["stdin"]).write_text(input or "")
            Path(paths["stdout"]).touch()
            Path(paths["stderr"]).touch()
            process = self.spawn(args, env=env, cwd=cwd, **paths)
            try:
                code = process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                raise
            return subprocess.CompletedProcess(
                process.args,
                code,
                Path(paths["stdout"]).read_text(errors="replace"),
                Path(paths["stderr"]).read_text(errors="replace"),
            )


class ForkedProcess:
    """The part of ``subprocess.Popen`` the tests use, for a command the fork server started: its
    supervisor reports the pid, then the status once the command has ended."""

    def __init__(self, args: list[str], conn: socket.socket) -> None:
        self.args = args
        self.returncode: int | None = None
        self._conn = conn
        self._buffer = bytearray()
        self.pid = int(self._line(timeout=60))

    def _line(self, timeout: float | None) -> bytes:
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self._buffer:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not select.select([self._conn], [], [], remaining)[0]:
                raise TimeoutError
            chunk = self._conn.recv(4096)
            if not chunk:
                raise EOFError("the supervisor is gone")
            self._buffer += chunk
        line, _, rest = bytes(self._buffer).partition(b"\n")
        self._buffer[:] = rest
        return line

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            try:
                self.returncode = int(self._line(timeout))
            except TimeoutError:
                raise subprocess.TimeoutExpired(self.args, timeout or 0) from None
            except EOFError:
                self.returncode = -signal.SIGKILL  # the supervisor was killed with its command
            self._conn.close()
        return self.returncode

    def poll(self) -> int | None:
        try:
            return self.wait(0)
        except subprocess.TimeoutExpired:
            return None

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):  # ended since: its status is on its way
                os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


_servers: dict[str, ForkServer] = {}


def fork_server(program: str) -> ForkServer | None:
    """The fork server of this test process, or ``None`` when commands run as fresh processes."""
    if os.environ.get("TENANTRY_TEST_CLI") == "exec":
        return None
    server = _servers.get(program)
    if server is None:
        server = _servers[program] = ForkServer(program)
    return server


if __name__ == "__main__":
    _serve(sys.argv[1])
