"""Requests that cost the caller one HTTP request must not cost the server an unbounded number of
durable audit records (found by the outside attack review).

* ``resources/read`` of a URI that exists nowhere and ``prompts/get`` of an unknown prompt are
  admitted against the tenant's limits before their denial is recorded, as ``tools/call`` is: a
  tenant over its burst gets ``rate_limited`` and its refusals go through the refusal budget;
* presenting another principal's session id is recorded within the audit record budget (per
  client address and stream); the rest become one summary record.

Each refusal keeps a positive control beside it: the first requests are still answered and
recorded one by one, and another tenant is served as before.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.support import web
from tests.support.rates import most_admitted
from tests.support.rpc import LegacySession, modern_call
from tests.support.server import RunningServer, start_server

ATTEMPTS = 30


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningServer]:
    running = start_server(tmp_path / "data", env={"TENANTRY_AUDIT__REFUSED_RECORDS_PER_SOURCE": "5/minute"})
    yield running
    running.stop()


def error_code(response: httpx2.Response) -> str | None:
    body = response.json()
    return body["error"]["data"]["code"] if "error" in body else None


def set_limits(server: RunningServer, tenant: str, *assignments: str) -> None:
    server.cli("tenant", "limits", tenant, *assignments)
    time.sleep(1.5)  # the server's next control-plane poll (every 0.25 s; slower on a loaded host)


def denials(server: RunningServer, tenant: str, reason: str) -> list[dict[str, Any]]:
    return [r for r in server.audit_records(tenant) if r["event_type"] == "access_denied" and r["reason"] == reason]


@pytest.mark.parametrize(
    ("method", "params", "reason"),
    [
        ("resources/read", {"uri": "nowhere://x"}, "resource_unavailable"),
        ("prompts/get", {"name": "no_such_prompt"}, "prompt_unavailable"),
    ],
)
def test_unknown_reads_and_prompts_are_counted_against_the_tenants_limits(
    server: RunningServer, method: str, params: dict[str, Any], reason: str
) -> None:
    set_limits(server, "acme", "burst=3", "calls_per_second=0.5")
    acme, globex = server.token("acme", "flooder"), server.token("globex", "quiet")
    began = time.monotonic()
    codes = [error_code(modern_call(server.mcp_url, acme, method, params)) for _ in range(ATTEMPTS)]
    # at most the burst of 3, then the sustained 5 per 10 s and what it earns back meanwhile
    allowed = most_admitted(0.5, time.monotonic() - began)
    # The positive control: the first ones are answered "not found" and recorded one by one.
    assert codes[:3] == ["not_found"] * 3, codes
    assert codes.count("not_found") <= allowed and set(codes) == {"not_found", "rate_limited"}, codes
    # Another tenant, under its own limits, is answered (and audited) as before.
    assert error_code(modern_call(server.mcp_url, globex, method, params)) == "not_found"
    time.sleep(0.5)  # outcomes follow with the next group commit
    assert 3 <= len(denials(server, "acme", reason)) == codes.count("not_found")
    assert len(denials(server, "globex", reason)) == 1
    # Limit refusals are recorded within the refusal budget, not one per request.
    limited = denials(server, "acme", "rate_limited")
    assert 1 <= len(limited) <= codes.count("rate_limited"), len(limited)


def hijacks(server: RunningServer, tenant: str) -> list[dict[str, Any]]:
    return [r for r in server.audit_records(tenant) if r["event_type"] == "session_hijack_attempt"]


def test_hijack_attempts_are_recorded_within_the_audit_record_budget(server: RunningServer) -> None:
    owner = LegacySession(server.mcp_url, server.token("acme", "alice"))
    intruder = server.token("globex", "mallory")
    answers = [owner.call("tools/list", {}, token=intruder).status_code for _ in range(ATTEMPTS)]
    assert answers == [404] * ATTEMPTS  # every attempt is refused, recorded or not
    # The positive control: the owner still uses its session.
    assert owner.call("tools/list", {}).status_code == 200

    def summarised(tenant: str) -> int:
        return sum((r.get("detail") or {}).get("suppressed", 0) for r in hijacks(server, tenant))

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:  # summaries follow with the server's maintenance rounds
        if all(summarised(tenant) >= ATTEMPTS - 5 for tenant in ("acme", "globex")):
            break
        time.sleep(0.5)
    for tenant in ("acme", "globex"):
        one_by_one = [r for r in hijacks(server, tenant) if "suppressed" not in (r.get("detail") or {})]
        assert len(one_by_one) == 5, (tenant, len(one_by_one))  # the budget: 5 per address and stream
        assert summarised(tenant) == ATTEMPTS - 5, tenant  # the rest counted, none lost


def exchange(server: RunningServer, key: str) -> httpx2.Response:
    return web.post(
        server.base_url + "/oauth/token", data={"grant_type": "client_credentials"}, auth=(key.split("_")[2], key)
    )


def test_token_exchanges_are_counted_against_the_tenants_limits(server: RunningServer) -> None:
    acme_key = server.cli("apikey", "create", "--tenant", "acme", "--tools", "whoami").stdout.strip()
    globex_key = server.cli("apikey", "create", "--tenant", "globex", "--tools", "whoami").stdout.strip()
    set_limits(server, "acme", "burst=3", "calls_per_second=0.5")
    began = time.monotonic()
    answers = [exchange(server, acme_key) for _ in range(ATTEMPTS)]
    allowed = most_admitted(0.5, time.monotonic() - began)
    statuses = [a.status_code for a in answers]
    # The positive control: the first ones get their tokens.
    assert statuses[:3] == [200] * 3, statuses
    assert statuses.count(200) <= allowed and set(statuses) == {200, 429}, statuses
    refused = next(a for a in answers if a.status_code == 429)
    assert refused.json()["error"] == "invalid_request" and int(refused.headers["Retry-After"]) >= 1
    assert "access_token" not in refused.json()
    # Another tenant's key is exchanged as before.
    assert exchange(server, globex_key).status_code == 200
    issued = [r for r in server.audit_records("acme") if r["event_type"] == "token_issued"]
    assert len(issued) == statuses.count(200)  # every token issued is audited, and only those
