"""``python -I -S sandbox.py MODE HIDE TMP [--keep DIR]... -- CMD ARGS...``: run ``CMD`` apart.

A tenant's command upstream runs as the server's own OS user, so without this it could read
what that user can: ``/proc/<pid>/environ`` of every other tenant's upstream process and of the
dedicated workers (their credentials), and the data dir (every tenant's files and databases,
the keys). The gateway starts each command upstream through this launcher, which puts it in
namespaces of its own before it becomes ``CMD``:

* a user namespace (the server's user, mapped to a non-zero id inside, so ``CMD`` holds no
  capabilities once it executes and cannot undo what follows; no new privileges either);
* a PID namespace with its own ``/proc``: the process sees only itself and its children;
* a mount namespace in which ``HIDE`` (the data dir) is an empty, read-only tmpfs except for
  each ``--keep DIR`` under it (the upstream's working directory, the tenant's files), bound
  back in at the same path, and ``/tmp`` is ``TMP`` (the upstream's own temporary directory),
  but for the entries of ``/tmp`` that hold the command itself (a checkout or virtualenv there).

``MODE`` ``required``: if the kernel refuses the namespaces, exit 126 with the reason on
stderr. ``auto``: run ``CMD`` without them instead, after one line on stderr saying so.
Standard library only (it runs before any of the package can be imported), Linux only.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import sys
from pathlib import Path

__all__ = ["main"]

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38
_INNER_ID = 1000
"""The id the server's user has inside (never 0: a process executed as 0 there keeps capabilities)."""


class Refused(Exception):
    """The kernel would not set up the sandbox."""


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        error = ctypes.get_errno()
        raise Refused(f"{what}: {os.strerror(error)}")


def _mount(libc: ctypes.CDLL, source: str | None, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    _check(
        libc.mount(
            source.encode() if source is not None else None,
            target.encode(),
            fstype.encode() if fstype is not None else None,
            ctypes.c_ulong(flags),
            data.encode() if data else None,
        ),
        f"mount {target}",
    )


def _write(path: str, text: str) -> None:
    with open(path, "w") as file:  # noqa: PTH123 - standard library only, before the package
        file.write(text)


def _enter_namespaces(libc: ctypes.CDLL) -> None:
    uid, gid = os.getuid(), os.getgid()
    _check(libc.unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID), "unshare")
    try:
        _write("/proc/self/setgroups", "deny")
        _write("/proc/self/uid_map", f"{_INNER_ID} {uid} 1")
        _write("/proc/self/gid_map", f"{_INNER_ID} {gid} 1")
    except OSError as exc:
        raise Refused(f"user namespace map: {exc.strerror}") from None


def _under_tmp(paths: list[str]) -> list[str]:
    """The entries of ``/tmp`` that hold any of ``paths`` (a checkout or a virtualenv the command
    runs from): they stay visible in the upstream's own ``/tmp``."""
    tops = set()
    for path in paths:
        if path.startswith("/tmp/"):  # noqa: S108 - the path being replaced
            top = "/tmp/" + path[len("/tmp/") :].split("/", 1)[0]  # noqa: S108
            if Path(top).exists():
                tops.add(top)
    return sorted(tops)


def _hide(libc: ctypes.CDLL, hide: str, keep: list[str], tmp: str, needed: list[str]) -> None:
    """In the new mount namespace (this process is PID 1 of the new PID namespace)."""
    here = Path.cwd()
    _mount(libc, None, "/", None, MS_REC | MS_PRIVATE)
    _mount(libc, "proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    # Descriptors of what stays reachable, taken before anything covers it.
    kept = [(path, os.open(path, os.O_PATH | os.O_DIRECTORY)) for path in keep]
    tmp_fd = os.open(tmp, os.O_PATH | os.O_DIRECTORY)
    carried = [(path, os.open(path, os.O_PATH)) for path in _under_tmp(needed)]
    _mount(libc, f"/proc/self/fd/{tmp_fd}", "/tmp", None, MS_BIND)  # noqa: S108 - the path being replaced
    os.close(tmp_fd)
    for path, fd in carried:
        if Path(f"/proc/self/fd/{fd}").is_dir():
            Path(path).mkdir(exist_ok=True)
        else:
            Path(path).touch(exist_ok=True)
        _mount(libc, f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
        os.close(fd)
    # A data dir under /tmp is gone with the old /tmp; its path is made again to cover it.
    Path(hide).mkdir(parents=True, exist_ok=True)
    _mount(libc, "tmpfs", hide, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=1m,mode=0755")
    for path, fd in kept:
        Path(path).mkdir(parents=True, exist_ok=True)
        _mount(libc, f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
        os.close(fd)
    _mount(libc, None, hide, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
    # The working directory was taken before the tmpfs covered it: from there ``..`` would still
    # climb the covered tree. Entered again by its path, it is the bind mount (or the tmpfs).
    os.chdir(here)


def _exec(command: list[str]) -> int:
    try:
        os.execvp(command[0], command)  # noqa: S606 - the operator's configured upstream command
    except OSError as exc:
        sys.stderr.write(f"the upstream command could not be started: {exc.strerror or exc}\n")
    return 127


def _relay(child: int) -> int:
    """Wait for the sandboxed child (PID 1 inside) and end as it ended."""
    for stream in (0, 1, 2):  # the child alone holds the upstream's pipes
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, stream)
        os.close(null)
    for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(number, lambda received, _frame: os.kill(child, received))
    while True:
        try:
            _, status = os.waitpid(child, 0)
            break
        except ChildProcessError:
            return 0
        except InterruptedError:
            continue
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def main(argv: list[str]) -> int:
    if "--" not in argv or len(argv) < 4 or argv[0] not in ("required", "auto"):
        sys.stderr.write("usage: sandbox.py required|auto HIDE TMP [--keep DIR]... -- CMD [ARGS...]\n")
        return 2
    split = argv.index("--")
    mode, hide, tmp, options, command = argv[0], argv[1], argv[2], argv[3:split], argv[split + 1 :]
    keep = [str(Path(options[i + 1]).resolve()) for i in range(0, len(options) - 1, 2) if options[i] == "--keep"]
    hide, tmp = str(Path(hide).resolve()), str(Path(tmp).resolve())
    if not command:
        sys.stderr.write("sandbox.py: no command\n")
        return 2
    libc = _libc()
    try:
        _enter_namespaces(libc)
    except Refused as exc:
        if mode == "required":
            sys.stderr.write(f"the upstream's sandbox cannot be set up ({exc}); it is required\n")
            return 126
        sys.stderr.write(f"the upstream runs without its sandbox: {exc}\n")
        return _exec(command)
    child = os.fork()
    if child:
        return _relay(child)
    try:
        _check(libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl")
        needed = [sys.executable, str(Path(__file__).resolve()), *command]
        found = shutil.which(command[0])
        if found is not None:
            needed.append(str(Path(found).resolve()))
        _hide(libc, hide, keep, tmp, needed)
        _check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl")
    except (Refused, OSError) as exc:
        sys.stderr.write(f"the upstream's sandbox cannot be set up ({exc})\n")
        os._exit(126)
    os._exit(_exec(command))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
