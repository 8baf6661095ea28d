"""The inside of a dedicated worker: runs one tenant's calls sent by the server over a socket.

The server has already admitted each call (tenant, grants, token, schema, limits, audit of its
start); the worker only runs it, with handles it builds itself for the one tenant it was
started for, and answers with the value or the error. A call naming any other tenant is
refused before anything runs: the scoping is enforced here too, not only in the server.

Several calls run at once (one task each). ``ctx.client`` is relayed to the server, which
owns the client connection. A call of a command (stdio) upstream's tool (the frame names its
``upstream``) goes to the worker's :class:`UpstreamCalls`, which runs the upstream processes as
the worker's own children.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import traceback
from collections.abc import Mapping
from typing import Any, Protocol

from mcp.shared.exceptions import MCPError
from mcp_types import (
    ClientCapabilities,
    CreateMessageResult,
    ElicitResult,
    ListRootsResult,
    SamplingMessage,
)
from pydantic_core import to_jsonable_python

from tenantry.core.errors import ResultTooLarge, ScopeViolation, TenantryError, ToolUnavailable
from tenantry.framework.app import App, PromptDefinition, ResourceDefinition, ToolDefinition
from tenantry.framework.context import ScopedHandles, ToolContext
from tenantry.framework.frames import FrameTooLarge, decode_error, encode_error, encode_frame, encode_value, read_frame
from tenantry.framework.invoker import CallCancelled, InProcessInvoker, Invocation
from tenantry.framework.redaction import SecretRedactor
from tenantry.scoping.handles import DataScopes

__all__ = ["WorkerHost", "RelayedChannel", "UpstreamCalls"]

logger = logging.getLogger(__name__)

_Target = ToolDefinition | ResourceDefinition | PromptDefinition


class RelayedChannel:
    """``ctx.client`` inside a worker: each request travels to the server, which sends it on
    the caller's own connection (redacted there, as for a call in the server's process)."""

    def __init__(self, host: WorkerHost, call_id: int, frame: Mapping[str, Any]) -> None:
        self._host = host
        self._call_id = call_id
        caps = frame.get("capabilities")
        self.capabilities = ClientCapabilities.model_validate(caps) if caps is not None else None
        self.input_responses: Mapping[str, Any] | None = frame.get("input_responses")
        self.request_state: str | None = frame.get("request_state")

    async def report_progress(self, progress: float, total: float | None = None, message: str | None = None) -> None:
        await self._host.notify(self._call_id, "progress", {"progress": progress, "total": total, "message": message})

    async def log(self, level: str, data: Any) -> None:
        await self._host.notify(self._call_id, "log", {"level": level, "data": to_jsonable_python(data)})

    async def elicit(self, message: str, schema: dict[str, Any]) -> ElicitResult:
        answer = await self._host.ask(self._call_id, "elicit", {"message": message, "schema": schema})
        return ElicitResult.model_validate(answer)

    async def sample(self, messages: list[SamplingMessage], *, max_tokens: int) -> CreateMessageResult:
        dumped = [m.model_dump(mode="json", by_alias=True, exclude_none=True) for m in messages]
        answer = await self._host.ask(self._call_id, "sample", {"messages": dumped, "max_tokens": max_tokens})
        return CreateMessageResult.model_validate(answer)

    async def list_roots(self) -> ListRootsResult:
        return ListRootsResult.model_validate(await self._host.ask(self._call_id, "list_roots", {}))


class UpstreamCalls(Protocol):
    """The worker's tenant's command upstreams (:class:`~tenantry.gateway.worker_upstreams.WorkerUpstreams`)."""

    async def call(self, upstream: str, tool: str, arguments: dict[str, Any], *, seconds: float, name: str) -> Any:
        """The upstream's ``CallToolResult``; raises what an :class:`~tenantry.framework.invoker.Invoker` raises."""
        ...

    def cancel_all(self) -> int:
        """Cancel every upstream call in flight (the kill switch)."""
        ...


class WorkerHost:
    """Serves the calls of ``tenant_id`` that arrive on one connection until it closes.

    :param upstreams: where calls of the tenant's command upstreams run (none: they are refused).
    """

    def __init__(
        self,
        app: App,
        tenant_id: str,
        scopes: DataScopes,
        secret_values: list[str],
        *,
        max_frame_bytes: int,
        upstreams: UpstreamCalls | None = None,
    ) -> None:
        self._app = app
        self._tenant_id = tenant_id
        self._scopes = scopes
        self._redactor = SecretRedactor(secret_values)
        self._max = max_frame_bytes
        self._invoker = InProcessInvoker()
        self._upstreams = upstreams
        self._calls: dict[int, asyncio.Task[None]] = {}
        self._halted: set[int] = set()
        """Calls received before a halt whose task had not started yet (nothing to interrupt)."""
        self._questions: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._question_ids = itertools.count(1)
        self._writer: asyncio.StreamWriter | None = None
        self._write_lock = asyncio.Lock()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Run calls until the server closes the connection; then cancel what still runs.

        :raises FrameTooLarge, ValueError: the server sent something outside the protocol.
        """
        self._writer = writer
        try:
            while (frame := await read_frame(reader, self._max)) is not None:
                self._on_frame(frame)
        finally:
            for task in list(self._calls.values()):
                task.cancel()
            await asyncio.gather(*self._calls.values(), return_exceptions=True)

    def _on_frame(self, frame: dict[str, Any]) -> None:
        kind = frame.get("t")
        if kind == "call":
            call_id = int(frame["id"])
            task = asyncio.create_task(self._run(call_id, frame))
            self._calls[call_id] = task
            task.add_done_callback(lambda _: self._forget(call_id))
        elif kind == "cancel":
            running = self._calls.get(int(frame["id"]))
            if running is not None:
                running.cancel()
        elif kind == "halt":
            # A call task registers for cancellation in its first step; one created from a frame
            # read in the same turn as the halt has not run yet, and is marked instead.
            self._halted.update(self._calls)
            self._invoker.cancel_tenant(self._tenant_id)
            if self._upstreams is not None:
                self._upstreams.cancel_all()
        elif kind == "answer":
            waiting = self._questions.pop(int(frame["qid"]), None)
            if waiting is not None and not waiting.done():
                waiting.set_result(frame)

    def _forget(self, call_id: int) -> None:
        self._calls.pop(call_id, None)
        self._halted.discard(call_id)

    async def _send(self, message: dict[str, Any]) -> None:
        data = encode_frame(message, self._max)
        assert self._writer is not None
        async with self._write_lock:
            self._writer.write(data)
            await self._writer.drain()

    async def notify(self, call_id: int, op: str, args: dict[str, Any]) -> None:
        await self._send({"t": "client", "id": call_id, "op": op, "args": args})

    async def ask(self, call_id: int, op: str, args: dict[str, Any]) -> Any:
        """A client request through the server; raises what the server's channel raised."""
        question = next(self._question_ids)
        answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._questions[question] = answer
        try:
            await self._send({"t": "client", "id": call_id, "qid": question, "op": op, "args": args})
            reply = await answer
        finally:
            self._questions.pop(question, None)
        if "error" in reply:
            raise decode_error(reply["error"], crash_message="the client request failed")
        return reply.get("result")

    def _target(self, kind: str, name: str) -> _Target:
        target: _Target | None
        if kind == "tool":
            target = self._app.tools.get(name)
        elif kind == "resource":
            target = self._app.resources.get(name)
        else:
            target = self._app.prompts.get(name)
        if target is None or not target.available_to(self._tenant_id):
            raise ToolUnavailable(f"{name} is not served by this worker")
        return target

    def _context(self, call_id: int, frame: Mapping[str, Any], name: str) -> ToolContext:
        tenant_id, prefix = self._tenant_id, frame.get("resource_prefix")
        scopes = self._scopes
        return ToolContext(
            tenant_id=tenant_id,
            subject=str(frame["subject"]),
            session_id=frame.get("session_id"),
            request_id=str(frame["request_id"]),
            tool_name=name,
            allowed_tools=frozenset(frame.get("allowed_tools", ())),
            resource_prefix=prefix,
            handles=ScopedHandles(
                sql=lambda: scopes.sql.for_tenant(tenant_id),
                files=lambda: scopes.files.for_tenant(tenant_id, prefix=prefix),
                vectors=lambda: scopes.vectors.for_tenant(tenant_id),
                secrets=lambda: scopes.secrets.for_tenant(tenant_id),
            ),
            client=RelayedChannel(self, call_id, frame),
        )

    def _invocation(self, call_id: int, frame: Mapping[str, Any]) -> Invocation:
        if frame.get("tenant_id") != self._tenant_id:
            logger.warning("refused a call for another tenant", extra={"tenant_id": self._tenant_id})
            raise ScopeViolation("this worker serves one tenant only")
        kind, name = str(frame.get("kind")), str(frame.get("name"))
        target = self._target(kind, name)
        arguments = dict(frame.get("arguments") or {})
        if not isinstance(target, ResourceDefinition):  # JSON back to the parameters' own types
            arguments = target.metadata.validate_arguments(arguments)
        redactor = self._redactor
        context = self._context(call_id, frame, name)
        return Invocation(target, arguments, context, float(frame["timeout"]), lambda: redactor)

    async def _upstream_call(self, frame: Mapping[str, Any]) -> Any:
        """A tool of a command upstream: admitted and validated against the upstream's own schema
        by the server; its result is the upstream's (redacted and size-checked by the server)."""
        if frame.get("tenant_id") != self._tenant_id:
            logger.warning("refused a call for another tenant", extra={"tenant_id": self._tenant_id})
            raise ScopeViolation("this worker serves one tenant only")
        name = str(frame.get("name"))
        if self._upstreams is None or frame.get("kind") != "tool":
            raise ToolUnavailable(f"{name} is not served by this worker")
        return await self._upstreams.call(
            str(frame["upstream"]),
            str(frame.get("upstream_tool")),
            dict(frame.get("arguments") or {}),
            seconds=float(frame["timeout"]),
            name=name,
        )

    async def _run(self, call_id: int, frame: Mapping[str, Any]) -> None:
        reply: dict[str, Any]
        try:
            if call_id in self._halted:
                raise CallCancelled()
            if frame.get("upstream") is not None:
                value = await self._upstream_call(frame)
            else:
                call = self._invocation(call_id, frame)
                value = await self._invoker.invoke(call)
                if isinstance(call.target, ToolDefinition):
                    value = call.target.metadata.convert_result(value)
            reply = {"t": "result", "id": call_id, "value": encode_value(value)}
        except (TenantryError, MCPError) as exc:
            reply = {"t": "error", "id": call_id, "error": encode_error(exc)}
        except Exception as exc:
            # The traceback may quote a secret the code read: redact it (the server never sees it).
            trace = self._redactor.text("".join(traceback.format_exception(exc)))
            logger.error("tool raised\n%s", trace, extra={"tenant_id": self._tenant_id, "tool": frame.get("name")})
            reply = {"t": "error", "id": call_id, "error": encode_error(exc)}
        try:
            await self._send(reply)
        except FrameTooLarge:
            too_large = ResultTooLarge(f"the result is larger than the {self._max} byte limit of a dedicated worker")
            await self._send({"t": "error", "id": call_id, "error": encode_error(too_large)})
