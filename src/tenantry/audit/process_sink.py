"""The serving process's audit sink: records are made durable by a writer process of its own.

:class:`ProcessAuditSink` has the same contract as
:class:`~tenantry.audit.writer.DurableAuditSink` (which runs inside the writer process, see
:mod:`tenantry.audit.writer_process`): ``record`` returns once the event is durable, ``submit``
queues an outcome for the next group commit, and while the store cannot record, calls fail
closed and what already happened goes to the spill file. The event loop only writes a line to a
pipe and reads the answer: encoding, hashing and committing records run in another interpreter,
so they neither wait for this one's GIL nor make it wait.

If the writer process dies, the sink fails closed at once: a waiting start fails (its call is
refused), every other event not yet confirmed goes to the spill file, and the writer is started
again with backoff; the new one writes the spill file first. A writer that stops answering for
``stall_timeout`` seconds is killed and handled the same way.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tenantry.audit.events import CALL_OUTCOMES, AuditEvent
from tenantry.audit.sink import AuditObserver
from tenantry.audit.spill import SpillFile
from tenantry.audit.store.base import ServerInstance
from tenantry.audit.wire import MAX_LINE, STORE_URL_VARIABLE, decode_reply, encode_event
from tenantry.core.errors import AuditUnavailable

__all__ = ["ProcessAuditSink", "WriterCommand"]

logger = logging.getLogger(__name__)

_MAX_BACKOFF = 10.0
_MAX_OUTPUT = 64 << 20
"""Bytes queued for a writer that does not read them before it is taken as wedged."""


@dataclass(frozen=True, slots=True)
class WriterCommand:
    """What the writer process is started with."""

    store_url: str | None
    data_dir: Path
    spill_path: Path
    busy_timeout: float = 2.0
    group_window: float = 0.0
    probe_interval: float = 0.5
    log_level: str = "INFO"
    log_format: str = "json"

    def argv(self, instance: ServerInstance) -> list[str]:
        return [
            sys.executable,
            "-m",
            "tenantry.audit.writer_process",
            "--data-dir",
            str(self.data_dir),
            "--busy-timeout",
            str(self.busy_timeout),
            "--spill",
            str(self.spill_path),
            "--instance",
            instance.instance,
            "--host",
            instance.host,
            "--pid",
            str(instance.pid),
            "--started",
            repr(instance.started),
            "--probe-interval",
            str(self.probe_interval),
            "--group-window",
            repr(self.group_window),
            "--log-level",
            self.log_level,
            "--log-format",
            self.log_format,
        ]


@dataclass(slots=True)
class _Sent:
    event: AuditEvent
    done: asyncio.Future[None] | None
    sent: float


class ProcessAuditSink:
    """An :class:`~tenantry.audit.sink.AuditSink` whose writer is a child process.

    :param linger: seconds a submitted event may wait to ride along with a waited one.
    :param stall_timeout: seconds without an answer to a waited event before the writer is
        taken as wedged and replaced.
    """

    def __init__(
        self,
        command: WriterCommand,
        *,
        observers: Sequence[AuditObserver] = (),
        linger: float = 0.005,
        stall_timeout: float = 30.0,
    ) -> None:
        self._command = command
        self._observers = list(observers)
        self._linger = linger
        self._stall_timeout = stall_timeout
        self._spill = SpillFile(command.spill_path)
        self._spiller = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="tenantry-audit-spill")
        self._spilling: list[concurrent.futures.Future[None]] = []
        self.instance = ServerInstance(os.urandom(8).hex(), socket.gethostname(), os.getpid(), time.time(), 0.0)
        self._available = True
        self._running = False
        """A writer process runs and takes events (its store may still be unavailable)."""
        self._closing = False
        self._next_token = 0
        self._unconfirmed: dict[int, _Sent] = {}
        self._lingering = bytearray()
        """Submitted events not yet written to the pipe (they ride with the next waited one)."""
        self._output = bytearray()
        """Bytes the pipe did not take yet."""
        self._input = b""
        self._drained = asyncio.Event()
        """Set when the pipe has taken everything (waited for at shutdown)."""
        self._ended = asyncio.Event()
        """Set when the writer has closed its answers (it is stopping)."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._flush_armed = False
        self._tick: asyncio.Handle | None = None
        self._writer_armed = False
        self._restarts = 0
        self._watchdog: asyncio.TimerHandle | None = None
        self.committed = 0
        self.batches = 0
        self._process = self._spawn()

    # -- the AuditSink contract ---------------------------------------------------------------

    @property
    def available(self) -> bool:
        return self._available

    def add_observer(self, observer: AuditObserver) -> None:
        self._observers.append(observer)

    def ensure_writable(self) -> None:
        if not self._available:
            raise AuditUnavailable()

    async def record(self, event: AuditEvent) -> None:
        """Durably record ``event`` (and every event submitted before it).

        :raises AuditUnavailable: the event is not recorded.
        """
        await self.begin(event)

    def begin(self, event: AuditEvent) -> asyncio.Future[None]:
        """Send ``event`` to the writer now; the future completes once it is durable.

        :raises AuditUnavailable: the event will not be recorded (raised at once).
        """
        if not self._available or self._closing or not self._running:
            # A start is refused here (its call never runs); anything else happened and is kept:
            # by the writer (with its spill file) while it runs, else by this process.
            if event.event_type == "call_started" or self._closing:
                raise AuditUnavailable()
            if not self._running:
                self._keep([event])
                raise AuditUnavailable()
        loop = self._attached()
        done: asyncio.Future[None] = loop.create_future()
        token = self._token()
        self._unconfirmed[token] = _Sent(event, done, time.monotonic())
        self._lingering += encode_event(token, True, event)
        if self._tick is None:
            # The first waited event of a loop iteration goes at once (a lone call's start is
            # flushed while its tool runs); the others of the same iteration join it in one write.
            self._flush()
            self._tick = loop.call_soon(self._end_tick)
        return done

    def _end_tick(self) -> None:
        self._tick = None
        if self._lingering:
            self._flush()

    def submit(self, event: AuditEvent) -> None:
        """Record ``event`` with the next transaction, without waiting. Never raises: while the
        store is unavailable the event goes to the spill file instead."""
        self._observe(event)
        if self._closing or not self._running:
            self._keep([event])
            return
        token = self._token()
        self._unconfirmed[token] = _Sent(event, None, time.monotonic())
        self._lingering += encode_event(token, False, event)
        if not self._flush_armed:
            self._flush_armed = True
            try:
                self._attached().call_later(self._linger, self._flush_lingering)
            except RuntimeError:  # no running loop (a synchronous caller): write it now
                self._flush_armed = False
                self._flush()

    async def aclose(self) -> None:
        """Send what is queued, let the writer commit it and close its journal, then stop."""
        if self._closing:
            return
        self._closing = True
        self._flush()
        loop = asyncio.get_running_loop()
        if self._output and self._loop is loop:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), 10.0)
        self._close_pipe_in()
        if self._loop is loop:  # its answers arrive until it closes its end
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ended.wait(), 10.0)
        try:
            await asyncio.wait_for(loop.run_in_executor(None, self._process.wait), 10.0)
        except TimeoutError:
            logger.error("the audit writer did not stop in time; it is killed")
            self._process.kill()
            await loop.run_in_executor(None, self._process.wait)
        self._read_available()
        self._detach()
        if self._unconfirmed:
            self._writer_lost("the audit writer stopped before confirming every record")
        await loop.run_in_executor(None, self._spiller.shutdown)  # what was kept is on disk

    def close(self) -> None:
        """Without an event loop (a runtime closed without :meth:`aclose`): let the writer commit
        what it has and stop; what it never confirmed goes to the spill file."""
        if self._closing:
            return
        self._closing = True
        self._flush()
        self._close_pipe_in()
        try:
            self._process.wait(timeout=10.0)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._read_available()
        if self._unconfirmed:
            self._writer_lost("the audit writer stopped before confirming every record")
        self._spiller.shutdown()

    # -- the writer process -------------------------------------------------------------------

    def _spawn(self) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            self._command.argv(self.instance),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            close_fds=True,
            # Not on the command line, which every local user can read: a PostgreSQL URL holds a password.
            env={**os.environ, STORE_URL_VARIABLE: self._command.store_url or ""},  # noqa: TID251 - handed on, not read
        )
        assert process.stdin is not None and process.stdout is not None
        os.set_blocking(process.stdin.fileno(), False)
        os.set_blocking(process.stdout.fileno(), False)
        self._input = b""
        self._output.clear()
        if self._loop is not None:
            self._loop.add_reader(process.stdout.fileno(), self._on_readable)
        self._running = True
        return process

    def _attached(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._detach()
            self._loop = loop
            assert self._process.stdout is not None
            if self._process.poll() is None or not self._process.stdout.closed:
                loop.add_reader(self._process.stdout.fileno(), self._on_readable)
            self._watchdog = loop.call_later(1.0, self._check_stall)
        return loop

    def _detach(self) -> None:
        loop, self._loop = self._loop, None
        if loop is None or loop.is_closed():
            return
        for pipe in (self._process.stdout, self._process.stdin):
            if pipe is not None and not pipe.closed:
                loop.remove_reader(pipe.fileno())
                loop.remove_writer(pipe.fileno())
        self._writer_armed = False
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    def _token(self) -> int:
        self._next_token += 1
        return self._next_token

    def _flush_lingering(self) -> None:
        self._flush_armed = False
        self._flush()

    def _flush(self) -> None:
        if self._lingering:
            self._output += self._lingering
            self._lingering.clear()
        self._write_out()

    def _write_out(self) -> None:
        stdin = self._process.stdin
        if not self._output or stdin is None or stdin.closed:
            return
        try:
            written = os.write(stdin.fileno(), self._output)
        except BlockingIOError:
            written = 0
        except (BrokenPipeError, OSError):
            self._writer_lost("the audit writer process stopped")
            return
        del self._output[:written]
        if not self._output:
            self._drained.set()
        if self._output:
            if len(self._output) > _MAX_OUTPUT:
                self._kill("the audit writer does not read its input")
                return
            if self._loop is not None and not self._writer_armed:
                self._loop.add_writer(stdin.fileno(), self._on_writable)
                self._writer_armed = True
        elif self._writer_armed and self._loop is not None:
            self._loop.remove_writer(stdin.fileno())
            self._writer_armed = False

    def _on_writable(self) -> None:
        self._write_out()

    def _on_readable(self) -> None:
        stdout = self._process.stdout
        if stdout is None or stdout.closed:
            return
        try:
            chunk = os.read(stdout.fileno(), 1 << 16)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            if self._closing:
                if self._loop is not None:
                    self._loop.remove_reader(stdout.fileno())
                self._ended.set()
            else:
                self._writer_lost("the audit writer process stopped")
            return
        self._handle(chunk)

    def _read_available(self) -> None:
        """Read what a writer that has exited left in the pipe."""
        stdout = self._process.stdout
        while stdout is not None and not stdout.closed:
            try:
                chunk = os.read(stdout.fileno(), 1 << 16)
            except (BlockingIOError, OSError):
                return
            if not chunk:
                return
            self._handle(chunk)

    def _handle(self, chunk: bytes) -> None:
        lines = (self._input + chunk).split(b"\n")
        self._input = lines.pop()
        if len(self._input) > MAX_LINE:
            self._kill("the audit writer sent an unreadable answer")
            return
        for line in lines:
            try:
                reply = decode_reply(line)
            except ValueError:
                self._kill("the audit writer sent an unreadable answer")
                return
            if "available" in reply:
                self._on_availability(bool(reply["available"]))
                continue
            self.batches += 1
            for token in reply.get("ok", ()):
                self._confirmed(token, durable=True)
            for token in reply.get("failed", ()):
                self._confirmed(token, durable=False)

    def _confirmed(self, token: int, *, durable: bool) -> None:
        sent = self._unconfirmed.pop(token, None)
        if sent is None:
            return
        if durable:
            self.committed += 1
            self._restarts = 0
        done = sent.done
        if done is None:
            return  # a submitted event: durable, or kept in the spill file by the writer
        if durable:
            self._observe(sent.event)  # even if its caller stopped waiting: it is durable
            if not done.done():
                done.set_result(None)
        else:
            self._available = False  # the writer says so too; until then nobody starts a call
            if not done.done():
                done.set_exception(AuditUnavailable())

    def _on_availability(self, available: bool) -> None:
        if available and not self._available:
            logger.warning("audit store available again")
        self._available = available

    def _check_stall(self) -> None:
        self._watchdog = None
        if self._loop is None or self._closing:
            return
        now = time.monotonic()
        oldest = min((s.sent for s in self._unconfirmed.values() if s.done is not None), default=now)
        if now - oldest > self._stall_timeout:
            self._kill(f"the audit writer has not answered for {self._stall_timeout:.0f} s")
            return  # the writer that replaces it gets a watchdog of its own
        self._watchdog = self._loop.call_later(1.0, self._check_stall)

    def _kill(self, why: str) -> None:
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGKILL)
        self._writer_lost(why)

    def _writer_lost(self, why: str) -> None:
        """The writer is gone: fail closed, keep what happened, start another one."""
        if self._available:
            logger.error("%s; tool calls fail closed until a new writer runs", why)
        self._available = False
        self._running = False
        loop = self._loop
        self._detach()
        self._close_pipe_in()
        process = self._process
        if process.poll() is None:
            process.kill()
        # Reaped without waiting: a writer stuck in the kernel (a hung fsync) must not freeze the loop.
        self._reap(process, loop)
        if process.stdout is not None and not process.stdout.closed:
            process.stdout.close()
        unconfirmed, self._unconfirmed = self._unconfirmed, {}
        self._lingering.clear()
        self._output.clear()
        # A start that was not confirmed belongs to a call that is refused; everything else
        # describes what happened. It may already be durable (the writer died between its commit
        # and its answer); it is written again then, never lost.
        kept = [s.event for s in unconfirmed.values() if s.event.event_type != "call_started"]
        kept += [_unconfirmed_start(s.event) for s in unconfirmed.values() if s.event.event_type == "call_started"]
        self._keep(kept)
        for sent in unconfirmed.values():
            if sent.done is not None and not sent.done.done():
                sent.done.set_exception(AuditUnavailable())
        if self._closing:
            return
        self._restarts += 1
        delay = min(0.1 * 2 ** min(self._restarts, 8), _MAX_BACKOFF)
        if loop is not None and not loop.is_closed():
            loop.call_later(delay, self._restart, loop)

    def _reap(self, process: subprocess.Popen[bytes], loop: asyncio.AbstractEventLoop | None) -> None:
        status = process.poll()
        if status is not None:
            logger.warning("the audit writer process (pid %d) ended with status %d", process.pid, status)
        elif loop is not None and not loop.is_closed():
            loop.call_later(0.2, self._reap, process, loop)

    def _restart(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._closing:
            return
        if self._spill_pending():  # the new writer reads the spill file first: let it be complete
            loop.call_later(0.05, self._restart, loop)
            return
        try:
            self._process = self._spawn()
        except OSError:
            logger.exception("cannot start the audit writer; retrying")
            loop.call_later(_MAX_BACKOFF, self._restart, loop)
            return
        self._loop = loop
        assert self._process.stdout is not None
        loop.add_reader(self._process.stdout.fileno(), self._on_readable)
        self._watchdog = loop.call_later(1.0, self._check_stall)
        # It reports "available" once its store is open and the spill file written.

    def _close_pipe_in(self) -> None:
        stdin = self._process.stdin
        if stdin is not None and not stdin.closed:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_writer(stdin.fileno())
            self._writer_armed = False
            with contextlib.suppress(OSError):
                stdin.close()

    def _observe(self, event: AuditEvent) -> None:
        for observer in self._observers:
            observer.observe(event)

    def _keep(self, events: list[AuditEvent]) -> None:
        if not events:
            return
        for event in events:
            logger.error("audit record held until the store recovers", extra={"audit": event.present_fields()})
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            self._append_to_spill(events)
            return
        # The spill file is fsync'd: off the event loop, in order (one thread), and awaited
        # before a new writer starts (it writes the file first).
        self._spilling.append(self._spiller.submit(self._append_to_spill, events))

    def _append_to_spill(self, events: list[AuditEvent]) -> None:
        try:
            self._spill.append(events)
        except OSError:
            logger.exception("cannot write the audit spill file; the records are only in the log")

    def _spill_pending(self) -> bool:
        self._spilling = [future for future in self._spilling if not future.done()]
        return bool(self._spilling)


def _unconfirmed_start(start: AuditEvent) -> AuditEvent:
    """The outcome kept for a call whose start the writer never confirmed: the call was refused.
    (Its start may have been committed just before the writer died; this closes it.)"""
    method = start.detail.get("method") if isinstance(start.detail, dict) else None
    outcome = CALL_OUTCOMES.get(method) if isinstance(method, str) else None
    return AuditEvent(
        event_type=outcome or "tool_call",
        tenant_id=start.tenant_id,
        result_status="error",
        session_id=start.session_id,
        subject=start.subject,
        tool_name=start.tool_name,
        args_hash=start.args_hash,
        ip_address=start.ip_address,
        request_id=start.request_id,
        reason="audit_unavailable: the audit writer stopped before confirming the call's start; the call was refused",
    )
