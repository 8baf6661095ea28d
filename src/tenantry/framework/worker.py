"""The dedicated tier: each dedicated tenant's calls run in a supervised OS process of its own.

:class:`WorkerInvoker` is an :class:`~tenantry.framework.invoker.Invoker`: admission and outcome
stay in the server, only the invocation moves. It starts a tenant's worker on the tenant's
first call (the server's :data:`Launcher` says how: command, environment, working directory,
first message), sends it each call over a socket pair in the framed protocol of
:mod:`tenantry.framework.frames`, many calls at once, and supervises it:

- a worker that dies (``kill -9``, an rlimit, a crash in native code) fails its calls in
  flight with :class:`WorkerCrashed`, is audited (``worker_crashed``, with its exit status) and
  may start again after a backoff that doubles per crash in a row; other tenants never notice;
- a halt cancels the calls in flight inside the worker; a call past its timeout is cancelled
  in the worker and answered ``tool_timeout``, even when the worker no longer answers;
- :meth:`WorkerInvoker.retire` (the tenant moved to the logical tier, or what the worker was
  started with changed) lets the calls in flight finish there and sends new calls to a new
  worker; an idle worker is stopped after ``idle_timeout``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import signal
import time
from dataclasses import dataclass, field
from typing import Any

from tenantry.audit.events import AuditEvent
from tenantry.audit.sink import AuditSink
from tenantry.core.errors import TenantryError
from tenantry.core.settings import WorkerSettings
from tenantry.framework.deadline import DeadlineWatch, Interrupted
from tenantry.framework.invoker import CallCancelled, Invocation
from tenantry.framework.worker_process import (
    Fingerprint,
    Launcher,
    WorkerCrashed,
    WorkerLaunch,
    WorkerProcess,
    WorkerUnavailable,
)

__all__ = ["WorkerInvoker", "WorkerLaunch", "Launcher", "WorkerCrashed", "WorkerUnavailable", "WorkerProcess"]

logger = logging.getLogger(__name__)

_BACKOFF_WAIT = 2.0
"""A call arriving while its tenant's worker waits this long or less to restart waits too."""
_STABLE_AFTER = 60.0
"""A worker that ran this long before it crashed restarts at the first backoff again."""


@dataclass
class _Backoff:
    crashes: int = 0
    not_before: float = 0.0


@dataclass
class _Tenant:
    current: WorkerProcess | None = None
    starting: asyncio.Task[WorkerProcess] | None = None
    retiring: set[WorkerProcess] = field(default_factory=set)
    retire_started: bool = False
    backoff: _Backoff = field(default_factory=_Backoff)


class WorkerInvoker:
    """Runs each dedicated tenant's calls in its own worker process, started on first use.

    :param launcher: how to start a tenant's worker. :param fingerprint: the tenant's current
        fingerprint (see :attr:`WorkerLaunch.fingerprint`), checked by :meth:`run`.
    :param audit: where crashes are recorded.
    """

    def __init__(
        self, launcher: Launcher, settings: WorkerSettings, audit: AuditSink, *, fingerprint: Fingerprint | None = None
    ) -> None:
        self._launcher = launcher
        self._fingerprint = fingerprint
        self._settings = settings
        self._audit = audit
        self._tenants: dict[str, _Tenant] = {}
        self._closed = False
        self._starting_calls = DeadlineWatch()
        """Calls waiting for their tenant's worker to start (or restart): a halt ends the wait."""

    def worker_of(self, tenant_id: str) -> WorkerProcess | None:
        """The tenant's current worker, if one runs."""
        state = self._tenants.get(tenant_id)
        return state.current if state is not None else None

    async def invoke(self, call: Invocation) -> Any:
        tenant_id = call.context.tenant_id
        # Starting a worker takes seconds: a halt meanwhile answers the call at once, rather than
        # once the worker is up (by then the halt may have closed the call's session).
        try:
            worker = await self._starting_calls.run(self._worker(tenant_id), math.inf, tag=tenant_id)
        except Interrupted:
            raise CallCancelled() from None
        if not call.standing():  # halted just as its worker started: the halt did not see this call
            raise CallCancelled()
        return await worker.call(call)

    def cancel_tenant(self, tenant_id: str) -> int:
        waiting = self._starting_calls.interrupt(tenant_id)
        state = self._tenants.get(tenant_id)
        if state is None:
            return waiting
        workers = [*state.retiring, *([state.current] if state.current is not None else [])]
        return waiting + sum(worker.halt() for worker in workers)

    def retire(self, tenant_id: str) -> None:
        """New calls of the tenant go to a new worker (or, moved to the logical tier, nowhere
        here); the calls in flight finish in the old one, which then stops."""
        state = self._tenants.get(tenant_id)
        if state is not None and state.starting is not None:
            state.retire_started = True  # the calls waiting for it run there; nothing after them
        if state is None or state.current is None:
            return
        worker, state.current = state.current, None
        state.retiring.add(worker)
        worker.retire()
        logger.info("dedicated worker retiring", extra={"tenant_id": tenant_id, "pid": worker.pid})

    async def _worker(self, tenant_id: str) -> WorkerProcess:
        if self._closed:
            raise WorkerUnavailable("the server is stopping")
        state = self._tenants.setdefault(tenant_id, _Tenant())
        if state.current is not None and state.current.alive:
            return state.current
        wait = state.backoff.not_before - time.monotonic()
        if state.starting is None and wait > 0:
            if wait > _BACKOFF_WAIT:
                raise WorkerUnavailable(
                    f"the tenant's worker is restarting after a crash; retry in {wait:.1f}s",
                    data={"retry_after": round(wait, 1)},
                )
            await asyncio.sleep(wait)  # a short backoff is waited out rather than refused
            return await self._worker(tenant_id)
        if state.starting is None:
            state.starting = asyncio.create_task(self._start(tenant_id, state))
        return await asyncio.shield(state.starting)

    async def _start(self, tenant_id: str, state: _Tenant) -> WorkerProcess:
        try:
            launch = await self._launcher(tenant_id)
            worker = await WorkerProcess.spawn(tenant_id, launch, self._settings, self._exited)
        except TenantryError:
            self._back_off(state, ran_for=0.0)
            raise
        finally:
            state.starting = None
        if state.retire_started:
            state.retire_started = False
            worker.retiring = True  # stops when the calls that waited for it are done
            state.retiring.add(worker)
            return worker
        state.current = worker
        logger.info("dedicated worker started", extra={"tenant_id": tenant_id, "pid": worker.pid})
        return worker

    def _back_off(self, state: _Tenant, *, ran_for: float) -> float:
        backoff = state.backoff
        if ran_for >= _STABLE_AFTER:
            backoff.crashes = 0
        delay = min(
            self._settings.restart_backoff * 2.0 ** min(backoff.crashes, 30), self._settings.restart_backoff_max
        )
        backoff.crashes += 1
        backoff.not_before = time.monotonic() + delay
        return delay

    async def _exited(self, worker: WorkerProcess, status: int, crashed: bool) -> None:
        state = self._tenants.get(worker.tenant_id)
        if state is not None:
            state.retiring.discard(worker)
            if state.current is worker:
                state.current = None
        if not crashed or self._closed:
            logger.info("dedicated worker stopped", extra={"tenant_id": worker.tenant_id, "pid": worker.pid})
            return
        delay = self._back_off(state, ran_for=time.monotonic() - worker.started) if state is not None else 0.0
        exit_status = f"killed by {_signal_name(-status)}" if status < 0 else f"exit status {status}"
        logger.error(
            "dedicated worker crashed",
            extra={"tenant_id": worker.tenant_id, "pid": worker.pid, "exit_status": status, "code": "worker_crashed"},
        )
        event = AuditEvent(
            event_type="worker_crashed",
            tenant_id=worker.tenant_id,
            result_status="error",
            reason=exit_status,
            detail={
                "pid": worker.pid,
                "exit_status": status,
                "signal": _signal_name(-status) if status < 0 else None,
                "in_flight": worker.in_flight,
                "restart_after_s": round(delay, 3),
            },
        )
        try:
            self._audit.submit(event)
        except TenantryError:
            logger.error("could not audit a worker crash", extra={"tenant_id": worker.tenant_id})

    async def run(self) -> None:
        """Stop idle workers and replace those whose fingerprint changed, until cancelled."""
        while True:
            await asyncio.sleep(min(1.0, self._settings.idle_timeout))
            now = time.monotonic()
            for tenant_id, state in list(self._tenants.items()):
                worker = state.current
                if worker is None or not worker.alive:
                    continue
                if not worker.in_flight and now - worker.last_used > self._settings.idle_timeout:
                    self.retire(tenant_id)
                elif self._fingerprint is not None:
                    try:
                        changed = await self._fingerprint(tenant_id) != worker.fingerprint
                    except TenantryError:
                        continue
                    if changed and state.current is worker:
                        self.retire(tenant_id)

    async def aclose(self) -> None:
        """Stop every worker (calls in flight end with :class:`WorkerCrashed`)."""
        self._closed = True
        workers = [w for s in self._tenants.values() for w in (*s.retiring, *([s.current] if s.current else []))]
        await asyncio.gather(*(w.stop() for w in workers), return_exceptions=True)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
