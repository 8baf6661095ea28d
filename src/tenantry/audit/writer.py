"""Durable audit with group commit: many concurrent calls share one transaction and one fsync.

Two ways in:

* :meth:`DurableAuditSink.record` hands the event to a writer thread and waits until the
  transaction holding it is durable (a call's start, a refusal, a connection event);
* :meth:`DurableAuditSink.submit` queues it without waiting (a call's outcome): it rides the
  next transaction, which the next ``record`` forces at once, or at the latest after
  ``linger`` seconds. A call thus costs one synchronous flush, not two.

The event loop never waits on the disk (a slow fsync must not stall every tenant's calls).
While one batch commits, the next accumulates, so under load the cost of the flush is shared.
With other calls in flight, a waited event also waits up to ``group_window`` for company: a
commit costs about the same for one record as for ten, and the batches that form while a commit
runs are small under concurrent load (one or two calls each), so a short wait buys fewer
commits for the same calls. A lone call never waits for it.

When the store cannot record (lost connection, full disk, lock held too long) waiting
callers fail with :class:`~tenantry.core.errors.AuditUnavailable`, the sink turns
unavailable, and the thread probes the store until it recovers. Events describing what
already happened (refusals, outcomes of calls that ran) are not lost meanwhile: they go to
a local fsync'd spill file and are written first once the store is back (by this process
or, after a restart, the next one). A start that could not be recorded is dropped: its call
is refused and never runs.

Calls are journaled in the store between start and outcome; a process that dies with calls
in flight leaves them open, and the next writer on the store records each as
``interrupted`` (the tool may have run) once that process is known to be gone.
"""

from __future__ import annotations

import asyncio
import logging
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tenantry.audit.events import CALL_OUTCOMES, AuditEvent
from tenantry.audit.sink import AuditObserver
from tenantry.audit.spill import SpillFile
from tenantry.audit.store.base import AuditStore, CallJournal, ServerInstance
from tenantry.audit.store.journal import interrupted_calls, open_calls
from tenantry.core.errors import AuditUnavailable

__all__ = ["DurableAuditSink"]

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class _Pending:
    event: AuditEvent
    done: asyncio.Future[None] | None
    """``None`` for a submitted event nobody waits for (or one enqueued with a token)."""
    loop: asyncio.AbstractEventLoop | None
    queued: float
    """When it was queued (``time.monotonic``)."""
    waited: bool
    """Someone waits for it: its transaction is committed at once."""
    token: int = -1
    """Given by :meth:`DurableAuditSink.enqueue`'s caller, handed back to ``acknowledge``."""


Acknowledge = Callable[[list[int], list[int]], None]
"""Called in the writer thread with the tokens of enqueued events now durable, and of those that
are not (refused, or kept in the spill file until the store is back)."""


_OUTCOME_TYPES = frozenset(CALL_OUTCOMES.values())
_HEARTBEAT_INTERVAL = 10.0
_RECONCILE_INTERVAL = 30.0
_STALE_AFTER = 60.0
"""Seconds without a heartbeat after which an instance on another host is taken as gone."""


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class DurableAuditSink:
    """An :class:`~tenantry.audit.sink.AuditSink` over an :class:`AuditStore`.

    :param store_factory: opens the store inside the writer thread (and again after a failure).
    :param max_batch: events per transaction at most.
    :param probe_interval: seconds between recovery probes while the store is unavailable.
    :param spill_path: the local file keeping events during an outage (``None``: memory only).
    :param linger: seconds a submitted event may wait for a transaction to ride along with.
    :param group_window: seconds a waited event may wait for others while other calls are in
        flight (``0``: never).
    """

    def __init__(
        self,
        store_factory: Callable[[], AuditStore],
        *,
        max_batch: int = 1000,
        probe_interval: float = 0.5,
        observers: Sequence[AuditObserver] = (),
        spill_path: os.PathLike[str] | None = None,
        linger: float = 0.005,
        group_window: float = 0.0,
        instance: ServerInstance | None = None,
        acknowledge: Acknowledge | None = None,
        on_availability: Callable[[bool], None] | None = None,
        threaded: bool = True,
    ) -> None:
        self._factory = store_factory
        self._max_batch = max_batch
        self._probe_interval = probe_interval
        self._linger = linger
        self._group_window = group_window
        self._observers = list(observers)
        self._spill = SpillFile(spill_path) if spill_path is not None else None  # type: ignore[arg-type]
        self._held: list[AuditEvent] = []
        """Events kept in memory during an outage when there is no spill file (or it failed)."""
        self._pending: list[_Pending] = []
        self._urgent = 0
        self._committing = False
        self._condition = threading.Condition()
        self._available = True
        self._closing = False
        self._store: AuditStore | None = None
        self.instance = instance or ServerInstance(
            os.urandom(8).hex(), socket.gethostname(), os.getpid(), time.time(), 0.0
        )
        self._acknowledge = acknowledge
        self._on_availability = on_availability
        self._last_heartbeat = 0.0
        self._last_reconcile = 0.0
        self._open_starts: dict[tuple[str, str], float] = {}
        """Calls of this process started and not yet given an outcome (for the low-water mark)."""
        self._adopted = False
        """The calls an earlier writer of the same instance left open have been taken over."""
        self._flush_armed = False
        self.committed = 0
        self.batches = 0
        self.recovered_calls = 0
        self._threaded = threaded
        self._thread = threading.Thread(target=self._run, name="tenantry-audit-writer", daemon=True)
        if threaded:
            self._thread.start()

    @property
    def available(self) -> bool:
        return self._available

    def add_observer(self, observer: AuditObserver) -> None:
        self._observers.append(observer)

    def ensure_writable(self) -> None:
        if not self._available:
            raise AuditUnavailable()

    def _observe(self, event: AuditEvent) -> None:
        for observer in self._observers:
            observer.observe(event)

    async def record(self, event: AuditEvent) -> None:
        """Durably record ``event`` (and everything submitted before it). The writer thread
        commits it; the event loop serves other calls meanwhile.

        :raises AuditUnavailable: the event is not recorded.
        """
        await self.begin(event)

    def begin(self, event: AuditEvent) -> asyncio.Future[None]:
        """Queue ``event`` now; the future completes once it is durable (see :meth:`record`).

        :raises AuditUnavailable: the event will not be recorded (raised at once).
        """
        if not self._available or self._closing:
            if event.event_type != "call_started":
                self._keep([event])  # it happened (a refusal): kept until the store is back
            raise AuditUnavailable()
        start_key = self._track_start(event)
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        with self._condition:
            self._pending.append(_Pending(event, done, loop, time.monotonic(), True))
            self._urgent += 1
            self._condition.notify()
        if start_key is not None:
            done.add_done_callback(lambda future: self._forget_unrecorded_start(future, start_key))
        return done

    def _forget_unrecorded_start(self, future: asyncio.Future[None], key: tuple[str, str]) -> None:
        if future.cancelled() or future.exception() is not None:  # not recorded: its call never runs
            with self._condition:
                self._open_starts.pop(key, None)

    def _track_start(self, event: AuditEvent) -> tuple[str, str] | None:
        if event.event_type != "call_started" or event.request_id is None:
            return None
        event.detail["instance"] = self.instance.instance  # whose crash would leave it open
        key = (event.tenant_id, event.request_id)
        with self._condition:
            self._open_starts[key] = event.created
        return key

    def submit(self, event: AuditEvent) -> None:
        """Record ``event`` with the next transaction, without waiting for it. Never raises: while
        the store is unavailable the event goes to the spill file (or memory) instead."""
        self._observe(event)
        if event.request_id is not None and event.event_type in _OUTCOME_TYPES:
            with self._condition:
                self._open_starts.pop((event.tenant_id, event.request_id), None)
        if not self._available or self._closing:
            self._keep([event])
            return
        with self._condition:
            self._pending.append(_Pending(event, None, None, time.monotonic(), False))
            arm = not self._flush_armed
            self._flush_armed = True
        if arm:
            # No thread wake-up per call: the next start takes the outcome along (in the writer's
            # next batch); only if none comes within ``linger`` is the writer woken.
            try:
                asyncio.get_running_loop().call_later(self._linger, self._flush_if_waiting)
            except RuntimeError:
                self._flush_if_waiting()

    def enqueue(self, event: AuditEvent, token: int, *, wait: bool) -> None:
        """Queue ``event`` for the writer thread without an event loop (the audit writer process's
        entry): ``acknowledge`` later receives ``token``. A waited event is committed at once, like
        :meth:`record`; any other rides the next transaction, like :meth:`submit`."""
        if wait:
            if not self._available or self._closing:
                if event.event_type != "call_started":
                    self._keep([event])  # it happened (a refusal): kept until the store is back
                self._acknowledged([], [token])
                return
            self._track_start(event)
        elif event.request_id is not None and event.event_type in _OUTCOME_TYPES:
            with self._condition:
                self._open_starts.pop((event.tenant_id, event.request_id), None)
        if not wait and (not self._available or self._closing):
            self._keep([event])
            self._acknowledged([], [token])
            return
        with self._condition:
            self._pending.append(_Pending(event, None, None, time.monotonic(), wait, token))
            if wait:
                self._urgent += 1
            self._condition.notify()

    def _acknowledged(self, durable: list[int], not_durable: list[int]) -> None:
        if self._acknowledge is not None and (durable or not_durable):
            self._acknowledge(durable, not_durable)

    def _set_available(self, available: bool) -> None:
        changed = available != self._available
        self._available = available
        if changed and self._on_availability is not None:
            self._on_availability(available)

    def drive(self, fd: int, take: Callable[[bytes], None]) -> None:
        r"""Be the writer in this thread (``threaded=False``: the writer process), reading events
        from ``fd`` until it ends; ``take`` gets each chunk read and :meth:`enqueue`\ s its events.
        While one batch commits, the next accumulates in the pipe; the commit after it takes
        everything that arrived, so under load the flush is shared as with the thread."""
        self._start_or_fail()
        next_probe = time.monotonic() + self._probe_interval
        while True:
            now = time.monotonic()
            timeout = self._last_heartbeat + _HEARTBEAT_INTERVAL - now
            if self._pending:
                timeout = self._commit_due(now)
            if not self._available:
                timeout = min(timeout, next_probe - now)
            if not self._closing:
                readable, _, _ = select.select([fd], [], [], max(timeout, 0.0))
                if readable:
                    chunk = os.read(fd, 1 << 20)
                    if chunk:
                        take(chunk)
                        continue  # read what else is there before committing: one batch
                    self._closing = True
            if not self._available and time.monotonic() >= next_probe:
                self._probe_once()
                next_probe = time.monotonic() + self._probe_interval
            with self._condition:
                action, batch = self._next_action(block=False)
            if action == "stop":
                break
            try:
                if action == "commit":
                    self._commit(batch)
                elif action == "housekeeping":
                    self._housekeeping()
            finally:
                with self._condition:
                    self._committing = False
        self._shutdown()

    def _flush_if_waiting(self) -> None:
        with self._condition:
            self._flush_armed = False
            if self._pending:
                self._condition.notify()

    def _low_water(self) -> float:
        with self._condition:
            return min(self._open_starts.values(), default=time.time())

    async def aclose(self) -> None:
        with self._condition:
            self._closing = True
            self._condition.notify()
        await asyncio.get_running_loop().run_in_executor(None, self._thread.join, 10.0)
        if self._held:
            logger.error("%d audit records could not be written before shutdown; they are in the log", len(self._held))

    # -- writer thread ----------------------------------------------------------------------

    def _next_action(self, *, block: bool = True) -> tuple[str, list[_Pending]]:
        """Wait (holding the condition) for the next thing the thread must do (``block=False``:
        ``idle`` when there is nothing to do now)."""
        while True:
            now = time.monotonic()
            due = self._commit_due(now) if self._pending and not self._committing else None
            if due is not None and due <= 0:
                batch, self._pending = self._pending[: self._max_batch], self._pending[self._max_batch :]
                self._urgent -= sum(1 for p in batch if p.waited)
                self._committing = True
                return "commit", batch
            if self._closing and not self._pending and not self._committing:
                return "stop", []
            housekeeping_due = self._last_heartbeat + _HEARTBEAT_INTERVAL - now
            if housekeeping_due <= 0 and not self._committing:
                self._committing = True
                return "housekeeping", []
            if not block:
                return "idle", []
            timeout = housekeeping_due if due is None else min(housekeeping_due, due)
            self._condition.wait(max(timeout, 0.0001 if due is not None else 0.0005))

    def _commit_due(self, now: float) -> float:
        """Seconds until the pending events must be committed (``<= 0``: now); holding the condition."""
        if self._closing:
            return 0.0
        if not self._urgent:
            return self._pending[0].queued + self._linger - now
        if self._group_window <= 0 or len(self._open_starts) <= self._urgent:
            return 0.0  # no other call in flight: nothing to wait for
        first = next((p.queued for p in self._pending if p.waited), now)
        return first + self._group_window - now

    def _start_or_fail(self) -> None:
        try:
            self._start()
        except Exception:
            logger.warning("audit store not available at start; calls fail closed until it is", exc_info=True)
            self._store = None
            self._set_available(False)
        else:
            if self._on_availability is not None:
                self._on_availability(True)

    def _run(self) -> None:
        self._start_or_fail()
        if not self._available:
            self._recover()
        while True:
            with self._condition:
                action, batch = self._next_action()
            if action == "stop":
                break
            try:
                if action == "commit":
                    self._commit(batch)
                else:
                    self._housekeeping()
            finally:
                with self._condition:
                    self._committing = False
        self._shutdown()

    def _start(self) -> None:
        store = self._open()
        if isinstance(store, CallJournal):
            store.register_instance(self.instance)
        self._last_heartbeat = time.monotonic()
        self._drain_spill(store)
        self._reconcile(store)

    def _commit(self, batch: list[_Pending]) -> None:
        try:
            store = self._open()
            store.append([p.event for p in batch])
        except Exception as exc:
            if not isinstance(exc, AuditUnavailable):  # a bug must not lose the writer thread or hang callers
                logger.exception("audit writer failed")
            self._fail(batch)
            if self._threaded:  # a driven writer probes between reads instead
                self._recover()
            return
        self.committed += len(batch)
        self.batches += 1
        _resolve(batch, None, self._observe)
        self._acknowledged([p.token for p in batch if p.token >= 0], [])

    def _open(self) -> AuditStore:
        if self._store is None:
            store = self._factory()
            try:
                if isinstance(store, CallJournal):
                    if not self._adopted:
                        self._adopt_open_calls(store)
                    store.register_instance(self.instance)
            except BaseException:
                store.close()
                raise
            # A runtime Protocol check costs tens of microseconds: made once per store, not per call.
            self._store = store
        return self._store

    def _adopt_open_calls(self, store: CallJournal) -> None:
        """Take over the calls this instance's previous writer journaled and left open.

        The writer process of a server is started again when it died; the server goes on, with
        the same instance, and so do its calls that were running then. They are this writer's to
        close: tracked like its own starts (the low-water mark stays below them, and if the server
        dies, they are recorded as ``interrupted`` at once); otherwise the first heartbeat would
        move the mark past them, and the clean end of this writer would retire the instance with
        them still open, for good.
        """
        previous = next((i for i in store.instances() if i.instance == self.instance.instance), None)
        if previous is not None:
            since = previous.low_water or previous.started
            left_open = open_calls(store.records_since(since), self.instance.instance)
            with self._condition:
                for key, created in left_open.items():
                    self._open_starts.setdefault(key, created)
            if left_open:
                logger.warning("took over %d calls the previous audit writer left open", len(left_open))
        self._adopted = True

    def _fail(self, batch: list[_Pending]) -> None:
        with self._condition:
            queued, self._pending = self._pending, []
            self._urgent = 0
        everything = [*batch, *queued]
        with self._condition:  # starts not recorded: their calls never run, nor stay open
            for pending in everything:
                event = pending.event
                if event.event_type == "call_started" and event.request_id is not None:
                    self._open_starts.pop((event.tenant_id, event.request_id), None)
        self._fail_events([p.event for p in everything])
        _resolve(everything, AuditUnavailable(), self._observe)
        self._acknowledged([], [p.token for p in everything if p.token >= 0])

    def _fail_events(self, events: list[AuditEvent]) -> None:
        if self._available:
            logger.error("audit store unavailable; tool calls fail closed until it recovers")
        self._set_available(False)
        # A start that was not recorded belongs to a call that is refused and never runs; every
        # other event describes something that happened and is kept until it can be written.
        kept = [event for event in events if event.event_type != "call_started"]
        self._keep(kept)
        if self._store is not None:
            try:
                self._store.close()
            except Exception:
                logger.debug("closing the failed audit store raised", exc_info=True)
            self._store = None

    def _keep(self, events: list[AuditEvent]) -> None:
        if not events:
            return
        for event in events:
            logger.error("audit record held until the store recovers", extra={"audit": event.present_fields()})
        if self._spill is not None:
            try:
                self._spill.append(events)
                return
            except OSError:
                logger.exception("cannot write the audit spill file; records are held in memory only")
        with self._condition:
            self._held.extend(events)

    def _closed(self, events: list[AuditEvent]) -> None:
        with self._condition:
            for event in events:
                if event.request_id is not None and event.event_type in _OUTCOME_TYPES:
                    self._open_starts.pop((event.tenant_id, event.request_id), None)

    def _drain_spill(self, store: AuditStore) -> None:
        if self._held:
            held, self._held = self._held, []
            try:
                store.append(held)
            except BaseException:
                self._held[:0] = held
                raise
            logger.warning("wrote %d held audit records", len(held))
        if self._spill is not None:

            def write(events: list[AuditEvent]) -> None:
                store.append(events)
                self._closed(events)  # outcomes the server kept while its writer was gone

            count = self._spill.drain(write)
            if count:
                logger.warning("wrote %d audit records kept in %s during an outage", count, self._spill.path)

    def _recover(self) -> None:
        while not self._closing:
            time.sleep(self._probe_interval)
            if self._probe_once():
                return

    def _probe_once(self) -> bool:
        try:
            store = self._open()
            store.ping()
            self._drain_spill(store)
        except Exception:
            self._store = None
            return False
        logger.warning("audit store available again")
        self._set_available(True)
        return True

    # -- housekeeping: heartbeat, and closing calls that a dead process left open -----------

    def _housekeeping(self) -> None:
        now = time.monotonic()
        self._last_heartbeat = now
        store = self._store
        if store is None or not isinstance(store, CallJournal):
            return
        try:
            store.heartbeat(self.instance.instance, time.time(), self._low_water())
            if now - self._last_reconcile >= _RECONCILE_INTERVAL:
                self._reconcile(store)
        except Exception:
            logger.warning("audit housekeeping failed; will retry", exc_info=True)

    def _reconcile(self, store: AuditStore) -> None:
        self._last_reconcile = time.monotonic()
        if not isinstance(store, CallJournal):
            return
        now = time.time()
        for other in store.instances():
            if other.instance == self.instance.instance:
                continue
            same_host = other.host == self.instance.host
            stale = _STALE_AFTER if not same_host else _STALE_AFTER * 10
            gone = (same_host and not _process_alive(other.pid)) or now - max(other.heartbeat, other.started) > stale
            if not gone:
                continue
            outcomes = interrupted_calls(store.records_since(other.low_water or other.started), other.instance)
            if outcomes:
                store.append(outcomes)
                self.recovered_calls += len(outcomes)
                logger.warning(
                    "recorded %d calls left open by a server process that stopped",
                    len(outcomes),
                    extra={"instance": other.instance},
                )
            store.retire_instance(other.instance)

    def _shutdown(self) -> None:
        store = self._store
        if store is None:
            return
        try:
            if isinstance(store, CallJournal):
                # Calls still without an outcome at a clean shutdown (e.g. a cancelled task that
                # never reported) are closed here rather than left for the next process.
                if self._open_starts:
                    outcomes = interrupted_calls(store.records_since(self._low_water()), self.instance.instance)
                    if outcomes:
                        store.append(outcomes)
                store.retire_instance(self.instance.instance)
        except Exception:
            logger.warning("could not close the audit journal at shutdown", exc_info=True)
        finally:
            store.close()


def _resolve(batch: list[_Pending], error: AuditUnavailable | None, observe: Callable[[AuditEvent], None]) -> None:
    """Tell the waiting callers, on their own loops, how the batch went; observers see each
    durable event there too (metrics and anomaly detection run on the event loop)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Pending]] = {}
    for pending in batch:
        if pending.done is not None and pending.loop is not None:
            by_loop.setdefault(pending.loop, []).append(pending)
    for loop, waiting in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle, waiting, error, observe)
        except RuntimeError:  # the loop has closed; nobody is waiting any more
            continue


def _settle(waiting: list[_Pending], error: AuditUnavailable | None, observe: Callable[[AuditEvent], None]) -> None:
    for pending in waiting:
        if error is None:
            observe(pending.event)  # even if its caller stopped waiting (cancelled): it is durable
        done = pending.done
        if done is None or done.done():
            continue
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(AuditUnavailable())
