"""``python -m tenantry.audit.writer_process ...``: a server's audit writer, in a process of its own.

It reads events from its stdin (see :mod:`tenantry.audit.wire`), makes them durable with a
:class:`~tenantry.audit.writer.DurableAuditSink` (group commit, spill file, recovery, the call
journal: the same code as in-process) and answers on its stdout. Its own interpreter means
encoding, hashing and committing records never wait for the server's GIL, nor the server for
theirs; the server's event loop only writes a line and reads the answer.

It stops when its stdin ends: after a clean shutdown of the server, or when the server died.
Either way it first commits what it has read and records the calls still open as
``interrupted`` (at once, not when the next server finds them). It ignores SIGINT and SIGTERM,
which reach a whole process group (Ctrl-C, a service manager stopping the server): the
server's last outcomes must still be written after it has sent them.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from tenantry.audit.store.base import ServerInstance
from tenantry.audit.store.factory import open_audit_store
from tenantry.audit.wire import MAX_LINE, STORE_URL_VARIABLE, decode_event, encode_reply
from tenantry.audit.writer import DurableAuditSink
from tenantry.logs import configure_logging

__all__ = ["main"]

logger = logging.getLogger(__name__)


class _Replies:
    """Writes replies to stdout (from the writer thread and the reader alike)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._lock = threading.Lock()

    def send(self, reply: dict[str, object]) -> None:
        data = memoryview(encode_reply(reply))
        with self._lock:
            while data:
                try:
                    written = os.write(self._fd, data)
                except BrokenPipeError:
                    return  # the server is gone; the records are durable all the same
                data = data[written:]


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tenantry-audit-writer")
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--busy-timeout", type=float, default=2.0)
    parser.add_argument("--spill", type=Path, required=True)
    parser.add_argument("--instance", required=True)
    parser.add_argument("--host", required=True)
    parser.add_argument("--pid", type=int, required=True, help="the server's pid (whose death leaves calls open)")
    parser.add_argument("--started", type=float, required=True)
    parser.add_argument("--probe-interval", type=float, default=0.5)
    parser.add_argument("--group-window", type=float, default=0.0)
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--log-format", default="json")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _arguments(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    configure_logging(args.log_level, args.log_format)
    replies = _Replies(sys.stdout.fileno())
    store_url = os.environ.pop(STORE_URL_VARIABLE, "") or None  # noqa: TID251 - set by the server
    sink = DurableAuditSink(
        lambda: open_audit_store(store_url, args.data_dir, busy_timeout=args.busy_timeout),
        probe_interval=args.probe_interval,
        group_window=args.group_window,
        spill_path=args.spill,
        instance=ServerInstance(args.instance, args.host, args.pid, args.started, 0.0),
        acknowledge=lambda ok, failed: replies.send({"ok": ok, "failed": failed}),
        on_availability=lambda available: replies.send({"available": available}),
        threaded=False,
    )
    buffered = b""

    def take(chunk: bytes) -> None:
        nonlocal buffered
        lines = (buffered + chunk).split(b"\n")
        buffered = lines.pop()
        if len(buffered) > MAX_LINE:
            logger.error("the server sent an audit line longer than %d bytes; it is dropped", MAX_LINE)
            buffered = b""
        for line in lines:
            try:
                token, wait, event = decode_event(line)
            except ValueError:
                logger.error("the server sent a line that is not an audit event; it is dropped")
                continue
            sink.enqueue(event, token, wait=wait)

    sink.drive(sys.stdin.fileno(), take)
    return 0


if __name__ == "__main__":
    sys.exit(main())
