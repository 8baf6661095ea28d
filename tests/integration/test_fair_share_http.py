"""Over real HTTP: while the server is busy and another tenant is active, a tenant's requests
beyond its fair share wait their turn, and the other tenant's go straight in; a tenant alone
on the server is never held back, nor is anyone while the requests in progress only wait on
I/O, and the waiting request is answered once its turn comes.

The server runs with ``fair_share_capacity = 1`` (one request in progress before anyone
waits) and a long quantum, so the order is deterministic: ``churn`` keeps the event loop
computing in 9 ms steps, ``nap`` only sleeps.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator

import pytest

from tests.integration.test_halt_answers import InFlight
from tests.support.nap_app import NAP_APP
from tests.support.rpc import modern_headers, modern_params, request
from tests.support.server import RunningServer, start_server

CHURN = """

import hashlib as _hashlib
import time as _time

_BLOCK = bytes(256 * 1024)


@app.tool()
async def churn(ctx: tenantry.ToolContext, seconds: float) -> str:
    \"\"\"Keep the event loop busy, 9 ms at a time (hashing, which lets other
    threads, such as the audit writer's, have the interpreter meanwhile).\"\"\"
    until = _time.monotonic() + seconds
    while _time.monotonic() < until:
        step = _time.monotonic() + 0.009
        while _time.monotonic() < step:
            _hashlib.sha256(_BLOCK).digest()
        await anyio.sleep(0)
    return "churned"
"""


def _server(tmp_path_factory: pytest.TempPathFactory, capacity: int) -> RunningServer:
    root = tmp_path_factory.mktemp("fair-share")
    (root / "nap_tools.py").write_text(NAP_APP + CHURN)
    env = {"TENANTRY_LIMITS__FAIR_SHARE_CAPACITY": str(capacity), "TENANTRY_LIMITS__FAIR_SHARE_QUANTUM": "10"}
    server = start_server(root / "data", demo=False, app="nap_tools:app", cwd=root, env=env)
    try:
        for tenant in ("acme", "globex"):
            server.cli("tenant", "create", tenant, "--tools", "nap,churn")
    except BaseException:
        server.stop()  # no fixture will
        raise
    return server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = _server(tmp_path_factory, capacity=1)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def unfair_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = _server(tmp_path_factory, capacity=0)  # fair shares turned off
    yield running
    running.stop()


class _Timed(InFlight):
    """A request that also notes when its answer came (``time.monotonic``)."""

    ended = 0.0

    def run(self) -> None:
        super().run()
        self.ended = time.monotonic()


_IDS = itertools.count(1)


def _nap(server: RunningServer, token: str, seconds: float, timeout: float = 20, tool: str = "nap") -> _Timed:
    params = {"name": tool, "arguments": {"seconds": seconds}}
    body = request("tools/call", modern_params(params), id=next(_IDS))
    return _Timed(server.mcp_url, token, body, modern_headers("tools/call", params), timeout).sent()


def _warm(server: RunningServer, *tokens: str) -> None:
    """A first call of each tenant (its first call loads the tenant: slow on a computing loop)."""
    for token in tokens:
        _answered(_nap(server, token, 0), 10)


def _answered(call: _Timed, within: float) -> _Timed:
    call.join(within)
    assert call.status == 200 and call.body is not None and "result" in call.body, (call.status, call.body)
    return call


def test_a_tenant_over_its_share_waits_while_another_tenant_goes_straight_in(server: RunningServer) -> None:
    # Judged by the order calls end in, not by durations: a loaded host makes every call slow.
    acme = server.token("acme", "flood")
    globex = server.token("globex", "quiet")
    _warm(server, acme, globex)
    time.sleep(1.2)  # neither tenant active in the last second
    long_call = _nap(server, acme, 4, tool="churn")
    time.sleep(0.3)
    # Positive control: acme alone on a busy server is never held back.
    alone = _answered(_nap(server, acme, 0), 5)
    # globex becomes active, calling back to back (so it stays active however slow the host
    # is), and goes straight in each time although the server is full (its share is 1).
    stop = threading.Event()
    quiet: list[_Timed] = []

    def keep_calling() -> None:
        while not stop.is_set():
            quiet.append(_answered(_nap(server, globex, 0), 10))

    caller = threading.Thread(target=keep_calling, daemon=True)
    caller.start()
    while not quiet:
        time.sleep(0.05)
    # Now acme is over its share while globex is active and the loop computes: its next
    # request waits for its long call to end, and is then answered.
    waiting = _answered(_nap(server, acme, 0), 10)
    _answered(long_call, 10)
    stop.set()
    caller.join(10)
    assert alone.ended < long_call.ended and quiet[0].ended < long_call.ended
    assert waiting.ended >= long_call.ended - 0.05, (waiting.ended, long_call.ended)


def test_nobody_waits_while_the_requests_in_progress_only_wait_on_io(server: RunningServer) -> None:
    # Outside review F1: another tenant's trickle must not throttle calls that wait on I/O.
    acme = server.token("acme", "io")
    globex = server.token("globex", "quiet")
    long_call = _nap(server, acme, 4)
    time.sleep(0.3)
    calls = [_answered(_nap(server, token, 0), 5) for token in (globex, acme)]
    _answered(long_call, 10)
    assert all(call.ended < long_call.ended for call in calls)


def test_without_fair_shares_nobody_waits(unfair_server: RunningServer) -> None:
    acme = unfair_server.token("acme", "flood")
    globex = unfair_server.token("globex", "quiet")
    _warm(unfair_server, acme, globex)
    long_call = _nap(unfair_server, acme, 4, tool="churn")
    time.sleep(0.3)
    calls = [_answered(_nap(unfair_server, token, 0), 5) for token in (globex, acme, acme)]
    _answered(long_call, 10)
    assert all(call.ended < long_call.ended for call in calls)
