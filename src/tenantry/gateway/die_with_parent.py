"""``python -I -S die_with_parent.py PARENT_PID CMD ARGS...``: become ``CMD``, killed when its parent dies.

A dedicated worker starts its tenant's command upstreams through this: each upstream runs in a
session of its own (so stopping it stops its children), which a ``kill -9`` of the worker would
otherwise leave running, orphaned, for as long as the upstream ignores the end of its stdin.
Linux's parent-death signal survives the ``exec``. Standard library only: it runs before any
of the package can be imported, in the upstream's own environment.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

__all__ = ["main"]

_PR_SET_PDEATHSIG = 1


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        sys.stderr.write("usage: die_with_parent.py PARENT_PID CMD [ARGS...]\n")
        return 2
    parent, command = int(argv[0]), argv[1:]
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        sys.stderr.write(f"cannot set the parent-death signal: {os.strerror(ctypes.get_errno())}\n")
        return 126
    if os.getppid() != parent:  # the parent died before the signal was armed
        return 125
    try:
        os.execvp(command[0], command)  # noqa: S606 - the operator's configured upstream command, as in the gateway
    except OSError as exc:
        sys.stderr.write(f"the upstream command could not be started: {exc.strerror or exc}\n")
    return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
