"""One running dedicated worker: the socket to it, its calls in flight, and how it stops.

:class:`WorkerProcess` spawns ``WorkerLaunch.argv`` with one end of a socket pair, sends its
first message, waits for ``ready``, then carries calls as frames (see
:mod:`tenantry.framework.frames`), many at once; when the process ends, the calls still in
flight end with :class:`WorkerCrashed`. Supervision (restarts, backoff, audit) is
:class:`~tenantry.framework.worker.WorkerInvoker`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mcp_types import SamplingMessage
from pydantic_core import to_jsonable_python

from tenantry.core.errors import PayloadTooLarge, TenantryError
from tenantry.core.settings import WorkerSettings
from tenantry.framework.app import ResourceDefinition, ToolDefinition
from tenantry.framework.channel import ClientChannel
from tenantry.framework.frames import FrameTooLarge, decode_error, decode_value, encode_error, encode_frame, read_frame
from tenantry.framework.invoker import CallCancelled, Invocation, ToolTimedOut

__all__ = ["WorkerProcess", "WorkerLaunch", "Launcher", "Fingerprint", "WorkerCrashed", "WorkerUnavailable"]

logger = logging.getLogger(__name__)

_ANSWER_GRACE = 2.0
"""Seconds past a call's timeout the server waits for the worker's own ``tool_timeout``."""
_STOP_GRACE = 5.0


class WorkerCrashed(TenantryError):
    code = "worker_crashed"
    http_status = 503
    jsonrpc_code = -32017
    default_message = "The tenant's worker process stopped while the call ran; the call did not complete"


class WorkerUnavailable(TenantryError):
    code = "worker_unavailable"
    http_status = 503
    jsonrpc_code = -32018
    default_message = "The tenant's worker process is not available"


@dataclass(frozen=True)
class WorkerLaunch:
    """How to start one tenant's worker."""

    argv: tuple[str, ...]
    """The worker's command; ``--fd N`` (its end of the socket pair) is appended."""
    env: dict[str, str]
    cwd: Path
    init: dict[str, Any]
    """The first message the worker reads (what to load, its data-plane settings, its limits)."""
    fingerprint: str
    """Of what the worker was started with that can change (its secrets, its limits): when the
    launcher's current fingerprint differs, the worker is replaced."""


Launcher = Callable[[str], Awaitable[WorkerLaunch]]
"""``tenant_id`` -> how to start its worker now. :raises TenantryError: it cannot be started."""
Fingerprint = Callable[[str], Awaitable[str]]


@dataclass
class _Pending:
    call: Invocation
    answer: asyncio.Future[dict[str, Any]]


class WorkerProcess:
    """One running worker of one tenant, and the calls it has in flight."""

    def __init__(
        self,
        tenant_id: str,
        process: asyncio.subprocess.Process,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        fingerprint: str,
        max_frame_bytes: int,
        on_exit: Callable[[WorkerProcess, int, bool], Awaitable[None]],
    ) -> None:
        self.tenant_id = tenant_id
        self.pid = process.pid
        self.fingerprint = fingerprint
        self.started = time.monotonic()
        self.last_used = self.started
        self.retiring = False
        self._process = process
        self._reader = reader
        self._writer = writer
        self._max = max_frame_bytes
        self._on_exit = on_exit
        self._pending: dict[int, _Pending] = {}
        self._ids = itertools.count(1)
        self._write_lock = asyncio.Lock()
        self._stopping = False
        self._alive = True
        self._background: set[asyncio.Task[None]] = set()
        self._exited = asyncio.Event()
        self._reading: asyncio.Task[None] | None = None

    @classmethod
    async def spawn(
        cls,
        tenant_id: str,
        launch: WorkerLaunch,
        settings: WorkerSettings,
        on_exit: Callable[[WorkerProcess, int, bool], Awaitable[None]],
    ) -> WorkerProcess:
        """Start the worker and wait until it says it is ready.

        :raises WorkerUnavailable: it could not be started, or exited or stayed silent instead.
        """
        ours, theirs = socket.socketpair()
        try:
            process = await asyncio.create_subprocess_exec(
                *launch.argv,
                "--fd",
                str(theirs.fileno()),
                pass_fds=(theirs.fileno(),),
                env=launch.env,
                cwd=launch.cwd,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=2,  # a tool's print() must never reach stdout (the stdio transport's protocol)
                start_new_session=True,  # the terminal's Ctrl-C goes to the server, which stops its workers
            )
        except OSError as exc:
            ours.close()
            raise WorkerUnavailable(f"the tenant's worker could not be started: {exc.strerror}") from None
        finally:
            theirs.close()
        reader, writer = await asyncio.open_unix_connection(sock=ours, limit=2**16)
        try:
            writer.write(encode_frame({"t": "init", **launch.init}, settings.max_frame_bytes))
            await writer.drain()
            ready = await asyncio.wait_for(read_frame(reader, settings.max_frame_bytes), settings.start_timeout)
        except (TimeoutError, OSError, FrameTooLarge, ValueError, asyncio.IncompleteReadError):
            ready = None
        if ready is None or ready.get("t") != "ready":
            writer.close()
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            status = await process.wait()
            raise WorkerUnavailable(
                f"the tenant's worker did not start (exit status {status}); the server log says why"
            ) from None
        worker = cls(
            tenant_id,
            process,
            reader,
            writer,
            fingerprint=launch.fingerprint,
            max_frame_bytes=settings.max_frame_bytes,
            on_exit=on_exit,
        )
        worker._reading = asyncio.create_task(worker._read_loop())
        return worker

    @property
    def alive(self) -> bool:
        return self._alive and not self.retiring

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    # -- calls ------------------------------------------------------------------------------

    async def call(self, call: Invocation) -> Any:
        """Run ``call`` in the worker (see :class:`~tenantry.framework.invoker.Invoker`).

        :raises WorkerCrashed: the worker died before it answered.
        :raises ToolTimedOut: no answer within the call's timeout (the worker is told to cancel it).
        """
        if not self._alive:
            raise WorkerCrashed()
        call_id = next(self._ids)
        answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[call_id] = _Pending(call, answer)
        self.last_used = time.monotonic()
        try:
            try:
                frame = encode_frame(_call_frame(call_id, call), self._max)
            except FrameTooLarge:
                raise PayloadTooLarge("the call's arguments are too large for a dedicated worker") from None
            await self._write(frame)
            if not call.standing():
                # Halted while the frame waited for the connection: the halt (written at once)
                # may have reached the worker before this call did, and cancelled nothing there.
                self._write_nowait({"t": "cancel", "id": call_id})
                raise CallCancelled()
            try:
                reply = await asyncio.wait_for(answer, call.timeout + _ANSWER_GRACE)
            except TimeoutError:
                self._write_nowait({"t": "cancel", "id": call_id})
                raise ToolTimedOut(f"{call.target.name} did not finish within {call.timeout:g}s") from None
            except asyncio.CancelledError:
                self._write_nowait({"t": "cancel", "id": call_id})
                raise
        finally:
            self._pending.pop(call_id, None)
            self.last_used = time.monotonic()
            if self.retiring and not self._pending:
                self._stop_soon()
        if reply.get("t") == "result":
            return decode_value(reply["value"])
        crash = f"The tool failed (reference {call.context.request_id})"
        raise decode_error(reply.get("error") or {}, crash_message=crash)

    def halt(self) -> int:
        """Cancel every call in flight inside the worker (the tenant's kill switch)."""
        if self._pending:
            self._write_nowait({"t": "halt"})
        return len(self._pending)

    # -- the connection ---------------------------------------------------------------------

    async def _write(self, frame: bytes) -> None:
        async with self._write_lock:
            if not self._alive:
                raise WorkerCrashed()
            try:
                self._writer.write(frame)
                await self._writer.drain()
            except OSError:  # the worker died under us; its reader reports the exit
                raise WorkerCrashed() from None

    def _write_nowait(self, message: dict[str, Any]) -> None:
        if self._alive and not self._writer.is_closing():
            self._writer.write(encode_frame(message, self._max))

    async def _read_loop(self) -> None:
        try:
            while (frame := await read_frame(self._reader, self._max)) is not None:
                self._on_frame(frame)
        except (FrameTooLarge, ValueError, OSError, asyncio.IncompleteReadError) as exc:
            if not self._stopping:
                logger.error(
                    "a dedicated worker broke the protocol; stopping it",
                    extra={"tenant_id": self.tenant_id, "code": type(exc).__name__},
                )
        finally:
            crashed = not self._stopping
            self._alive = False
            self._writer.close()
            status = await self._wait_exit()
            for pending in self._pending.values():
                if not pending.answer.done():
                    pending.answer.set_exception(WorkerCrashed())
            self._exited.set()
            await self._on_exit(self, status, crashed)

    async def _wait_exit(self) -> int:
        try:
            return await asyncio.wait_for(self._process.wait(), _STOP_GRACE)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()
            return await self._process.wait()

    def _on_frame(self, frame: dict[str, Any]) -> None:
        kind = frame.get("t")
        pending = self._pending.get(int(frame.get("id", 0)))
        if kind in ("result", "error"):
            if pending is not None and not pending.answer.done():
                pending.answer.set_result(frame)
        elif kind == "client":
            channel = pending.call.context.client if pending is not None else None
            task = asyncio.create_task(self._relay(channel, frame))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _relay(self, channel: ClientChannel | None, frame: dict[str, Any]) -> None:
        """A ``ctx.client`` request of a call in the worker, on that call's own channel."""
        question = frame.get("qid")
        reply: dict[str, Any] = {"t": "answer", "qid": question}
        try:
            if channel is None:
                raise WorkerUnavailable("the call this request belongs to has ended")
            reply["result"] = await _client_request(channel, str(frame.get("op")), frame.get("args") or {})
        except Exception as exc:
            reply["error"] = encode_error(exc)
        if question is not None:
            with contextlib.suppress(FrameTooLarge):
                self._write_nowait(reply)

    # -- stopping ---------------------------------------------------------------------------

    def retire(self) -> None:
        """Take no new calls; stop once the calls in flight have finished."""
        self.retiring = True
        if not self._pending:
            self._stop_soon()

    def _stop_soon(self) -> None:
        if not self._stopping:
            self._stopping = True
            self._writer.close()  # the worker reads the end of its stream and exits

    async def stop(self) -> None:
        """Stop now: calls in flight end with :class:`WorkerCrashed`."""
        self.retiring = True
        self._stop_soon()
        await self._exited.wait()

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self._process.send_signal(signal.SIGKILL)


def _call_frame(call_id: int, call: Invocation) -> dict[str, Any]:
    context = call.context
    client = context.client
    capabilities = client.capabilities
    target = call.target
    kind = "tool" if isinstance(target, ToolDefinition) else "prompt"
    if isinstance(target, ResourceDefinition):
        kind = "resource"
    frame: dict[str, Any] = {
        "t": "call",
        "id": call_id,
        "kind": kind,
        "name": target.name,
        "arguments": to_jsonable_python(call.arguments, by_alias=True),
        "timeout": call.timeout,
        "tenant_id": context.tenant_id,
        "subject": context.subject,
        "session_id": context.session_id,
        "request_id": context.request_id,
        "allowed_tools": sorted(context.allowed_tools),
        "resource_prefix": context.resource_prefix,
        "capabilities": None if capabilities is None else capabilities.model_dump(mode="json", exclude_none=True),
        "input_responses": to_jsonable_python(client.input_responses),
        "request_state": client.request_state,
    }
    if isinstance(target, ToolDefinition) and target.upstream is not None:
        # A command upstream's tool: the worker calls it on the tenant's upstream process.
        frame["upstream"], frame["upstream_tool"] = target.upstream, target.upstream_name
    return frame


async def _client_request(channel: ClientChannel, op: str, args: dict[str, Any]) -> Any:
    if op == "progress":
        await channel.report_progress(float(args["progress"]), args.get("total"), args.get("message"))
        return None
    if op == "log":
        await channel.log(str(args.get("level", "info")), args.get("data"))
        return None
    if op == "elicit":
        elicited = await channel.elicit(str(args["message"]), dict(args["schema"]))
        return elicited.model_dump(mode="json", by_alias=True, exclude_none=True)
    if op == "sample":
        messages = [SamplingMessage.model_validate(m) for m in args["messages"]]
        sampled = await channel.sample(messages, max_tokens=int(args["max_tokens"]))
        return sampled.model_dump(mode="json", by_alias=True, exclude_none=True)
    if op == "list_roots":
        return (await channel.list_roots()).model_dump(mode="json", by_alias=True, exclude_none=True)
    raise WorkerUnavailable("unknown client request from a worker")
