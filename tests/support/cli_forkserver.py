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

import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

__all__ = ["ForkServer", "fork_server"]

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


def _serve(path: str) -> None:
    import tenantry.cli.main as cli  # the imports every command would otherwise pay for

    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
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
                _run_command(conn, cli.main)
            conn.close()


def _run_command(conn: socket.socket, main: Any) -> None:
    """In the forked child: become the command the request describes, run it, report its status."""
    code = 1
    try:
        request = json.loads(_read_line(conn))
        conn.sendall(f"{os.getpid()}\n".encode())
        for fd, name, flags in ((0, "stdin", os.O_RDONLY), (1, "stdout", os.O_WRONLY), (2, "stderr", os.O_WRONLY)):
            opened = os.open(request[name], flags)
            os.dup2(opened, fd)
            os.close(opened)
        os.environ.clear()
        os.environ.update(request["env"])
        import time

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
        except BaseException:
            import traceback

            traceback.print_exc()
            code = 1
        threading._shutdown()  # type: ignore[attr-defined]  # as the interpreter does at exit
        import atexit

        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        try:
            conn.sendall(f"{code}\n".encode())
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

    def run(
        self, args: list[str], *, env: dict[str, str], cwd: Path | None, input: str | None, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        with tempfile.TemporaryDirectory(dir=self._dir) as streams:
            paths = {name: os.path.join(streams, name) for name in ("stdin", "stdout", "stderr")}
            Path(paths["stdin"]).write_text(input or "")
            Path(paths["stdout"]).touch()
            Path(paths["stderr"]).touch()
            request = {
                "program": self._program,
                "args": args,
                "env": env,
                "cwd": None if cwd is None else str(cwd),
                **paths,
            }
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
                conn.connect(self._started())
                conn.settimeout(timeout)
                conn.sendall(json.dumps(request).encode() + b"\n")
                pid = int(_read_line(conn))
                try:
                    code = int(_read_line(conn))
                except TimeoutError:
                    os.kill(pid, signal.SIGKILL)
                    raise subprocess.TimeoutExpired([self._program, *args], timeout) from None
                except EOFError:
                    code = -signal.SIGKILL  # killed before it could say
            return subprocess.CompletedProcess(
                [self._program, *args],
                code,
                Path(paths["stdout"]).read_text(errors="replace"),
                Path(paths["stderr"]).read_text(errors="replace"),
            )


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
