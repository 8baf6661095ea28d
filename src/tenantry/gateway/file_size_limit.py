"""``python -I -S file_size_limit.py BYTES CMD ARGS...``: become ``CMD`` with ``RLIMIT_FSIZE`` at ``BYTES``.

The gateway starts a tenant's command upstreams through this, with ``BYTES`` the tenant's
``file_bytes`` quota: no file the process (or its children) writes, anywhere, can grow past the
tenant's whole quota, even within one call (a write past it fails with ``EFBIG``; a program that
does not ignore ``SIGXFSZ``, as Python does, is killed by it). The limit is never raised above
what this process already has. Standard library only: it runs before any of the package can be
imported, in the upstream's own environment.
"""

from __future__ import annotations

import os
import resource
import sys

__all__ = ["main"]


def main(argv: list[str]) -> int:
    if len(argv) < 2 or not argv[0].isdigit():
        sys.stderr.write("usage: file_size_limit.py BYTES CMD [ARGS...]\n")
        return 2
    wanted, command = int(argv[0]), argv[1:]
    _soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    if hard != resource.RLIM_INFINITY:
        wanted = min(wanted, hard)
    try:
        resource.setrlimit(resource.RLIMIT_FSIZE, (wanted, wanted))
    except (ValueError, OSError) as exc:
        sys.stderr.write(f"cannot set the file size limit: {exc}\n")
        return 126
    try:
        os.execvp(command[0], command)  # noqa: S606 - the operator's configured upstream command, as in the gateway
    except OSError as exc:
        sys.stderr.write(f"the upstream command could not be started: {exc.strerror or exc}\n")
    return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
