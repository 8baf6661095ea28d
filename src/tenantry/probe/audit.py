"""Audit completeness, where the operator gives audit access: many calls across both tenants,
each found in the right tenant's stream and in no other, and the streams verify."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio

from tenantry.probe.context import ProbeContext

__all__ = ["check_audit", "CALLS_PER_TENANT"]

CALLS_PER_TENANT = 10


def _tenantry(ctx: ProbeContext) -> str:
    """The ``tenantry`` command of this installation (audit access is to a Tenantry data dir)."""
    return str(Path(sys.executable).parent / "tenantry")


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)  # noqa: S603


async def _stream(ctx: ProbeContext, tenant: str, data_dir: Path) -> tuple[list[dict[str, Any]], str | None]:
    """The records of ``tenant``'s exported stream, or the reason it could not be read."""
    with tempfile.TemporaryDirectory(prefix="tenantry-probe-") as tmp:
        out = Path(tmp) / f"{tenant}.jsonl"
        command = [
            _tenantry(ctx),
            "audit",
            "export",
            "--tenant",
            tenant,
            "--out",
            str(out),
            "--data-dir",
            str(data_dir),
        ]
        done = await anyio.to_thread.run_sync(_run, command)
        if done.returncode != 0:
            return [], (done.stderr.strip().splitlines() or ["audit export failed"])[-1]
        with out.open() as lines:
            return [json.loads(line) for line in lines if line.strip()], None


def _count(records: list[dict[str, Any]], session_id: str, event_type: str) -> int:
    return sum(1 for r in records if r.get("session_id") == session_id and r.get("event_type") == event_type)


async def check_audit(ctx: ProbeContext) -> None:
    title = "every call is in its own tenant's audit stream, and in no other"
    data_dir = ctx.options.audit_data_dir
    if data_dir is None:
        ctx.record("audit", "audit", title, "not_checked", "no audit access given (--audit-data-dir DIR)")
        return
    a, b = ctx.a, ctx.b
    if a.tenant is None or b.tenant is None or a.tenant == b.tenant:
        ctx.record("audit", "audit", title, "not_checked", "the two tenants' ids are not known apart")
        return
    # A fresh session per tenant: its id names exactly the calls made here.
    sessions: dict[str, tuple[str, int, int]] = {}
    for view, letter in ((a, "A"), (b, "B")):
        session = await ctx.wire.open_session(view.token)
        name = view.whoami or next(
            (n for n, t in view.tools.items() if not t.get("inputSchema", {}).get("required")), None
        )
        if session is None or session.session_id is None or name is None:
            ctx.record(
                "audit", "audit", title, "not_checked", f"no session with an id, or no tool to call, for {letter}"
            )
            return
        served = 0
        for _ in range(CALLS_PER_TENANT):
            served += (await session.call("tools/call", {"name": name, "arguments": {}})).ok
        refusal = await session.call("tools/call", {"name": ctx.unknown_name(), "arguments": {}})
        sessions[letter] = (session.session_id, served, int(refusal.refused))
        await session.close()
    streams: dict[str, list[dict[str, Any]]] = {}
    for view, letter in ((a, "A"), (b, "B")):
        assert view.tenant is not None
        records, error = await _stream(ctx, view.tenant, data_dir)
        if error is not None:
            ctx.record("audit", "audit", title, "fail", f"{letter}'s stream could not be exported: {error}")
            return
        streams[letter] = records
    problems = []
    for letter, other in (("A", "B"), ("B", "A")):
        session_id, served, denied = sessions[letter]
        calls, denials = (
            _count(streams[letter], session_id, "tool_call"),
            _count(streams[letter], session_id, "tool_denied"),
        )
        if calls != served:
            problems.append(f"{letter}'s stream holds {calls} of its {served} served calls")
        if denials != denied:
            problems.append(f"{letter}'s stream holds {denials} of its {denied} refused calls")
        leaked = [r for r in streams[other] if r.get("session_id") == session_id]
        if leaked:
            problems.append(f"{len(leaked)} of {letter}'s events recorded in {other}'s stream")
        if served == 0:
            problems.append(f"control failed: none of {letter}'s calls was served")
    verify = await anyio.to_thread.run_sync(_run, [_tenantry(ctx), "audit", "verify", "--data-dir", str(data_dir)])
    if verify.returncode != 0:
        problems.append("audit verify failed: " + (verify.stderr.strip().splitlines() or ["?"])[-1])
    total = sum(s[1] + s[2] for s in sessions.values())
    ctx.conclude(
        "audit",
        "audit",
        title,
        problems,
        f"all {total} calls (a refusal each included) in the right stream only; audit verify ok",
        "each tenant's served calls are found in its own stream",
    )
