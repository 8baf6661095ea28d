"""The enforcement path, in-process: ACL, argument checks, handler isolation and the audit seam."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest

import tenantry
from tenantry.audit.chain import StoredRecord
from tenantry.audit.events import AuditEvent
from tenantry.audit.store.sqlite import SqliteAuditStore
from tenantry.audit.writer import DurableAuditSink
from tenantry.controlplane.directory import TenantDirectory
from tenantry.controlplane.sqlite import SqliteTenantStore
from tenantry.core.calls import Caller
from tenantry.core.errors import AuditUnavailable, InvalidArguments, ScopeViolation, TenantHalted, ToolUnavailable
from tenantry.core.identity import Principal
from tenantry.framework.dispatcher import Dispatcher
from tenantry.scoping.files.local import LocalFileScopes
from tenantry.scoping.handles import DataScopes
from tenantry.scoping.secrets.envelope import MasterKey
from tenantry.scoping.secrets.store import StoredSecretScopes
from tenantry.scoping.sql.sqlite import SqliteSqlScopes
from tenantry.scoping.vectors.embedders import HashingEmbedder
from tenantry.scoping.vectors.sqlite import SqliteVectorScopes

pytestmark = pytest.mark.anyio


class RecordingSink:
    def __init__(self) -> None:
        self.events: list[AuditEvent] = []
        self.writable = True

    @property
    def available(self) -> bool:
        return self.writable

    def ensure_writable(self) -> None:
        if not self.writable:
            raise AuditUnavailable()

    async def record(self, event: AuditEvent) -> None:
        self.ensure_writable()
        self.events.append(event)

    def begin(self, event: AuditEvent) -> Awaitable[None]:
        self.ensure_writable()  # queued at once, as the real sinks do
        self.events.append(event)
        return asyncio.sleep(0)

    def submit(self, event: AuditEvent) -> None:
        self.events.append(event)

    def add_observer(self, observer: object) -> None:
        return None

    async def aclose(self) -> None:
        return None


RAN: list[str] = []
app = tenantry.App()


@app.tool()
async def shared(ctx: tenantry.ToolContext, text: str = "") -> dict:
    RAN.append(f"shared:{ctx.tenant_id}")
    return {"tenant": ctx.tenant_id, "text": text}


@app.tool(tenants=["globex"])
async def secret_plan(ctx: tenantry.ToolContext) -> str:
    RAN.append("secret_plan")
    return "globex-canary plan"


@app.tool()
async def read(ctx: tenantry.ToolContext, path: tenantry.ResourcePath) -> str:
    RAN.append("read")
    return path


@app.tool()
async def boom(ctx: tenantry.ToolContext) -> str:
    raise RuntimeError("internal detail globex-canary")


@app.tool(annotations=None)
async def with_header(region: str) -> str:
    return region


@app.tool()
async def reveal(ctx: tenantry.ToolContext) -> dict[str, str]:
    key = await ctx.secrets.get("api_key")
    return {"key": key, "sentence": f"use {key} wisely"}


def data_scopes(tmp_path: Path, store: SqliteTenantStore) -> DataScopes:
    return DataScopes(
        sql=SqliteSqlScopes(tmp_path),
        files=LocalFileScopes(tmp_path),
        vectors=SqliteVectorScopes(tmp_path, HashingEmbedder()),
        secrets=StoredSecretScopes(store, MasterKey(b"m" * 32)),
    )


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Dispatcher, RecordingSink, SqliteTenantStore]:
    RAN.clear()
    store = SqliteTenantStore(tmp_path / "control.sqlite3")
    store.create_tenant("acme", tools=["shared", "read", "boom", "secret_plan", "with_header", "reveal"])
    store.create_tenant("globex", tools=["shared", "secret_plan"])
    directory = TenantDirectory(store)
    directory.refresh(force=True)
    sink = RecordingSink()
    return Dispatcher(app, directory, data_scopes(tmp_path, store), sink), sink, store


def caller(tenant: str, tools: set[str], prefix: str | None = None) -> Caller:
    principal = Principal(
        issuer="https://iss",
        tenant_id=tenant,
        subject="alice",
        allowed_tools=frozenset(tools),
        token_id="jti-1",
        expires_at=2**31,
        issued_at=0,
        resource_prefix=prefix,
    )
    return Caller(principal=principal, request_id="req-1", client_address="127.0.0.1")


ALL = {"shared", "read", "boom", "secret_plan", "with_header"}


async def test_tool_list_is_the_intersection(setup) -> None:
    dispatcher, _, _ = setup
    assert [t.name for t in dispatcher.list_tools(caller("acme", ALL))] == ["boom", "read", "shared", "with_header"]
    assert [t.name for t in dispatcher.list_tools(caller("globex", ALL))] == ["secret_plan", "shared"]
    assert [t.name for t in dispatcher.list_tools(caller("acme", {"shared"}))] == ["shared"]


async def test_refusals_are_identical_and_the_handler_never_runs(setup) -> None:
    dispatcher, sink, _ = setup
    acme = caller("acme", ALL)
    with pytest.raises(ToolUnavailable) as foreign:
        await dispatcher.call_tool(acme, "secret_plan", {})
    with pytest.raises(ToolUnavailable) as missing:
        await dispatcher.call_tool(acme, "nope", {})
    assert (foreign.value.code, foreign.value.jsonrpc_code) == (missing.value.code, missing.value.jsonrpc_code)
    assert "secret_plan" not in RAN
    denied = [e for e in sink.events if e.event_type == "tool_denied"]
    assert [(e.tool_name, e.reason) for e in denied] == [("secret_plan", "not_registered"), ("nope", "not_registered")]


async def test_token_tools_narrow_the_grant(setup) -> None:
    dispatcher, sink, _ = setup
    with pytest.raises(ToolUnavailable):
        await dispatcher.call_tool(caller("acme", {"read"}), "shared", {})
    assert sink.events[-1].reason == "not_in_token"
    assert RAN == []


async def test_arguments_are_checked_before_the_handler(setup) -> None:
    dispatcher, _, _ = setup
    acme = caller("acme", ALL)
    for arguments in ({"text": 5}, {"tenant_id": "globex"}, {"text": "x", "extra": 1}):
        with pytest.raises(InvalidArguments):
            await dispatcher.call_tool(acme, "shared", arguments)
    with pytest.raises(ScopeViolation):
        await dispatcher.call_tool(acme, "read", {"path": "../globex/files/x"})
    with pytest.raises(ScopeViolation):
        await dispatcher.call_tool(caller("acme", ALL, prefix="reports"), "read", {"path": "other/x"})
    assert RAN == []


async def test_allowed_call_is_audited_at_its_start_and_with_its_outcome(setup) -> None:
    dispatcher, sink, _ = setup
    result = await dispatcher.call_tool(caller("acme", ALL), "shared", {"text": "hello"})
    assert result.structured_content == {"tenant": "acme", "text": "hello"}
    kinds = [e.event_type for e in sink.events]
    assert kinds == ["call_started", "tool_call"]
    assert sink.events[0].request_id == sink.events[1].request_id  # the outcome closes its start
    assert sink.events[0].detail == {"method": "tools/call"}
    assert all(e.args_hash and e.args_hash.startswith("sha256:") for e in sink.events)
    assert all("hello" not in str(e.to_dict()) for e in sink.events)
    assert sink.events[0].session_id == "jti:jti-1"  # sessionless: the token's jti


async def test_tool_crash_is_a_generic_error_without_internals(setup) -> None:
    dispatcher, sink, _ = setup
    result = await dispatcher.call_tool(caller("acme", ALL), "boom", {})
    assert result.is_error
    text = result.content[0].text
    assert "globex-canary" not in text and "RuntimeError" not in text and "req-1" in text
    assert sink.events[-1].result_status == "error"


async def test_halted_and_unknown_tenants(setup) -> None:
    dispatcher, _, store = setup
    store.set_status("acme", "halted", "incident")
    dispatcher._directory.refresh(force=True)
    with pytest.raises(TenantHalted):
        await dispatcher.call_tool(caller("acme", ALL), "shared", {})
    with pytest.raises(ToolUnavailable):
        await dispatcher.call_tool(caller("initech", ALL), "shared", {})
    assert RAN == []


class SlowStartSink(RecordingSink):
    """Holds each call's durable start until released: a halt can land in that window."""

    def __init__(self) -> None:
        super().__init__()
        self.start_reached = anyio.Event()
        self.release = anyio.Event()

    async def record(self, event: AuditEvent) -> None:
        if event.event_type == "call_started":
            await self._held()
        await super().record(event)

    def begin(self, event: AuditEvent) -> Awaitable[None]:
        if event.event_type != "call_started":
            return super().begin(event)
        return asyncio.ensure_future(self._held_then(event))

    async def _held(self) -> None:
        self.start_reached.set()
        await self.release.wait()

    async def _held_then(self, event: AuditEvent) -> None:
        await self._held()
        await RecordingSink.record(self, event)


@pytest.mark.parametrize("halt", [True, False], ids=["halted-while-starting", "control-not-halted"])
async def test_a_halt_landing_while_a_call_starts_still_stops_the_call(tmp_path: Path, halt: bool) -> None:
    RAN.clear()
    store = SqliteTenantStore(tmp_path / "control.sqlite3")
    store.create_tenant("acme", tools=["shared"])
    directory = TenantDirectory(store)
    directory.refresh(force=True)
    sink = SlowStartSink()
    dispatcher = Dispatcher(app, directory, data_scopes(tmp_path, store), sink, start_before="tool")
    directory.add_listener(dispatcher.on_control_change)
    outcome: list[Any] = []

    async def run_call() -> None:
        outcome.append(await dispatcher.call_tool(caller("acme", {"shared"}), "shared", {"text": "x"}))

    async with anyio.create_task_group() as group:
        group.start_soon(run_call)
        await sink.start_reached.wait()  # admitted, its start not yet durable
        if halt:
            store.set_status("acme", "halted", "incident")
            await directory.sync()  # the kill switch fires: nothing is registered with an invoker yet
        sink.release.set()
    result = outcome[0]
    if halt:
        assert result.is_error and result.meta["io.tenantry/error"]["code"] == "call_cancelled"
        assert RAN == [] and sink.events[-1].result_status == "cancelled"
    else:
        assert not result.is_error and RAN == ["shared:acme"]


class FailingStartSink(SlowStartSink):
    """A start that is never recorded (the store failed while it was being flushed)."""

    async def _held_then(self, event: AuditEvent) -> None:
        await self._held()
        raise AuditUnavailable()


@app.tool()
async def write_note(ctx: tenantry.ToolContext, text: str) -> str:
    sink = NOTE_SINK[0]
    RAN.append(f"computed, start durable: {any(e.event_type == 'call_started' for e in sink.events)}")
    await ctx.files.write_bytes("note.txt", text.encode())
    RAN.append(f"wrote, start durable: {any(e.event_type == 'call_started' for e in sink.events)}")
    return "noted"


NOTE_SINK: list[RecordingSink] = []


@pytest.mark.parametrize("recorded", [True, False], ids=["start-recorded", "start-not-recorded"])
async def test_with_start_before_effects_the_tool_computes_while_its_start_is_flushed_but_every_effect_waits(
    tmp_path: Path, recorded: bool
) -> None:
    RAN.clear()
    store = SqliteTenantStore(tmp_path / "control.sqlite3")
    store.create_tenant("acme", tools=["write_note"])
    directory = TenantDirectory(store)
    directory.refresh(force=True)
    sink = SlowStartSink() if recorded else FailingStartSink()
    NOTE_SINK[:] = [sink]
    dispatcher = Dispatcher(app, directory, data_scopes(tmp_path, store), sink, start_before="effects")
    outcome: list[Any] = []

    async def run_call() -> None:
        try:
            outcome.append(await dispatcher.call_tool(caller("acme", {"write_note"}), "write_note", {"text": "hi"}))
        except AuditUnavailable as exc:
            outcome.append(exc)

    async with anyio.create_task_group() as group:
        group.start_soon(run_call)
        await sink.start_reached.wait()
        await anyio.sleep(0.1)  # the tool runs meanwhile, up to its first effect
        assert RAN == ["computed, start durable: False"]
        assert outcome == []  # no result before the start is durable
        sink.release.set()
    note = tmp_path / "tenants" / "acme" / "files" / "note.txt"
    if recorded:
        assert RAN == ["computed, start durable: False", "wrote, start durable: True"]
        assert not outcome[0].is_error and note.read_bytes() == b"hi"
        assert [e.event_type for e in sink.events] == ["call_started", "tool_call"]
    else:  # the effect never happened, and the call answers as one that did not run
        assert isinstance(outcome[0], AuditUnavailable) and "not run" in outcome[0].message
        assert RAN == ["computed, start durable: False"] and not note.exists()
        assert sink.events == []  # neither a start nor an outcome


async def test_input_schema_hook_reveals_only_visible_tools(setup) -> None:
    dispatcher, _, _ = setup
    assert dispatcher.tool_input_schema(caller("acme", ALL), "secret_plan") is None
    assert dispatcher.tool_input_schema(caller("globex", ALL), "secret_plan") is not None
    assert dispatcher.tool_input_schema(caller("acme", {"shared"}), "with_header") is None
    assert dispatcher.tool_input_schema(caller("initech", ALL), "shared") is None


@app.tool()
async def sleepy(ctx: tenantry.ToolContext) -> str:
    import asyncio

    await asyncio.sleep(5)
    RAN.append("sleepy finished")
    return "late"


async def test_a_slow_tool_is_cut_off_at_its_timeout(tmp_path: Path) -> None:
    RAN.clear()
    store = SqliteTenantStore(tmp_path / "control.sqlite3")
    store.create_tenant("acme", tools=["sleepy", "shared"])
    directory = TenantDirectory(store)
    directory.refresh(force=True)
    sink = RecordingSink()
    dispatcher = Dispatcher(app, directory, data_scopes(tmp_path, store), sink, tool_timeout=0.1)
    result = await dispatcher.call_tool(caller("acme", {"sleepy", "shared"}), "sleepy", {})
    assert result.is_error and "did not finish within 0.1s" in result.content[0].text
    assert sink.events[-1].result_status == "timeout"
    assert "sleepy finished" not in RAN
    assert (await dispatcher.call_tool(caller("acme", {"shared"}), "shared", {})).structured_content["tenant"] == "acme"


async def test_calls_fail_closed_when_the_audit_cannot_record(setup) -> None:
    dispatcher, sink, _ = setup
    sink.writable = False
    with pytest.raises(AuditUnavailable):
        await dispatcher.call_tool(caller("acme", ALL), "shared", {"text": "x"})
    assert RAN == []


async def test_a_secret_value_in_a_result_is_redacted_before_it_leaves(setup) -> None:
    dispatcher, sink, store = setup
    StoredSecretScopes(store, MasterKey(b"m" * 32)).set_secret("acme", "api_key", "sk-acme-canary-0123456789")
    result = await dispatcher.call_tool(caller("acme", {"reveal"}), "reveal", {})
    dumped = result.model_dump_json()
    assert "sk-acme-canary-0123456789" not in dumped
    assert result.structured_content == {"key": "[redacted]", "sentence": "use [redacted] wisely"}
    assert sink.events[-1].result_status == "ok"


async def test_a_result_is_withheld_when_the_secrets_cannot_be_decrypted(tmp_path: Path) -> None:
    store = SqliteTenantStore(tmp_path / "control.sqlite3")
    store.create_tenant("acme", tools=["shared"])
    StoredSecretScopes(store, MasterKey(b"a" * 32)).set_secret("acme", "api_key", "sk-acme-canary-0123456789")
    directory = TenantDirectory(store)
    directory.refresh(force=True)
    sink = RecordingSink()
    scopes = DataScopes(
        sql=SqliteSqlScopes(tmp_path),
        files=LocalFileScopes(tmp_path),
        vectors=SqliteVectorScopes(tmp_path, HashingEmbedder()),
        secrets=StoredSecretScopes(store, MasterKey(b"b" * 32)),  # not the key that sealed them
    )
    result = await Dispatcher(app, directory, scopes, sink).call_tool(caller("acme", {"shared"}), "shared", {})
    assert result.is_error
    assert result.meta == {"io.tenantry/error": {"code": "secrets_unavailable"}}
    assert sink.events[-1].reason == "secrets_unavailable"


async def test_a_call_is_not_run_when_its_start_cannot_be_recorded(setup) -> None:
    dispatcher, sink, _ = setup
    sink.writable = False
    with pytest.raises(AuditUnavailable) as refused:
        await dispatcher.call_tool(caller("acme", ALL), "shared", {"text": "x"})
    assert "not run" in refused.value.message and not refused.value.data.get("ran")
    assert RAN == []


STORE_FAILS: list[RecordingSink] = []


@app.tool()
async def fails_the_store(ctx: tenantry.ToolContext) -> str:
    STORE_FAILS[0].writable = False  # the audit store goes down while the tool runs
    return "done"


async def test_a_call_that_ran_while_the_store_failed_says_so_and_keeps_its_outcome(setup) -> None:
    dispatcher, sink, store = setup
    STORE_FAILS[:] = [sink]
    store.grant("acme", ["fails_the_store"])
    dispatcher._directory.refresh(force=True)
    with pytest.raises(AuditUnavailable) as withheld:
        await dispatcher.call_tool(caller("acme", {"fails_the_store"}), "fails_the_store", {})
    assert withheld.value.data == {"ran": True} and "ran" in withheld.value.message
    assert [e.event_type for e in sink.events][-2:] == ["call_started", "tool_call"]  # the outcome is kept


class SlowDiskStore(SqliteAuditStore):
    """A real audit store whose commits block their thread, as an fsync on a busy disk does."""

    def append(self, events: Sequence[AuditEvent]) -> list[StoredRecord]:
        time.sleep(0.3)
        return super().append(events)

    def append_if_free(self, events: Sequence[AuditEvent]) -> list[StoredRecord] | None:
        time.sleep(0.3)  # what an inline commit on the event loop would cost
        return super().append(events)


async def test_a_lone_call_never_holds_the_event_loop_while_its_start_is_committed(tmp_path: Path) -> None:
    store = SqliteTenantStore(tmp_path / "control.sqlite3")
    store.create_tenant("acme", tools=["shared"])
    directory = TenantDirectory(store)
    directory.refresh(force=True)
    sink = DurableAuditSink(lambda: SlowDiskStore(tmp_path / "audit.sqlite3"))
    dispatcher = Dispatcher(app, directory, data_scopes(tmp_path, store), sink)
    ticks: list[float] = []

    async def tick() -> None:
        while True:
            ticks.append(time.monotonic())
            await anyio.sleep(0.01)

    results = []
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(tick)
        with anyio.fail_after(15):
            for _ in range(2):  # nothing else in flight: the case a server once committed inline
                results.append(await dispatcher.call_tool(caller("acme", {"shared"}), "shared", {"text": "x"}))
                await anyio.sleep(0.5)  # the writer is idle again when the next call comes
        tasks.cancel_scope.cancel()
    await sink.aclose()
    gaps = [later - earlier for earlier, later in itertools.pairwise(ticks)]
    assert max(gaps) < 0.15, f"the event loop stalled for {max(gaps):.3f} s"
    # The control: the calls succeeded and their starts are durable.
    assert all(not r.is_error for r in results)
    audit = SqliteAuditStore(tmp_path / "audit.sqlite3")
    assert audit.heads()["acme"][0] >= 2
    audit.close()
