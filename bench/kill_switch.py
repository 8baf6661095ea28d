"""How fast a running server obeys the CLI: ``tenant halt`` and ``token revoke`` (target: median
at most 1 s from the command returning to the first refused call of a busy session).

Starts a real server (subprocess, embedded default), keeps one session of tenant ``acme`` busy
calling ``whoami`` back to back, then over several rounds runs ``tenantry tenant halt`` (and
``resume``) and ``tenantry token revoke --jti`` as separate processes, and measures from each
command's exit to the first refused call. A second tenant's busy session runs throughout and
must see no refusal at all. Prints the medians, the spread, and each median as a fraction of
the 1-second budget.

    .venv/bin/python bench/kill_switch.py [--rounds 15]
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.rpc import LegacySession
from tests.support.server import start_server

WHOAMI = {"name": "whoami", "arguments": {}}


class Busy(threading.Thread):
    def __init__(self, session: LegacySession) -> None:
        super().__init__(daemon=True)
        self.session = session
        self.results: list[tuple[float, int]] = []
        self.lock = threading.Lock()
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            status = self.session.call("tools/call", WHOAMI).status_code
            with self.lock:
                self.results.append((time.monotonic(), status))

    def first_refusal_after(self, moment: float, timeout: float = 5.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                for at, status in self.results:
                    if at >= moment and status != 200:
                        return at - moment
            time.sleep(0.005)
        raise RuntimeError("no refusal within the timeout")

    def wait_until_served(self, timeout: float = 5.0) -> None:
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            with self.lock:
                if self.results and self.results[-1][0] > start and self.results[-1][1] == 200:
                    return
            time.sleep(0.01)
        raise RuntimeError("not served again")


def jti_of(token: str) -> str:
    return json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))["jti"]


def summary(name: str, seconds: list[float]) -> None:
    ms = sorted(s * 1000 for s in seconds)
    median = statistics.median(ms)
    print(
        f"{name:<22} median {median:7.1f} ms   p90 {ms[int(len(ms) * 0.9) - 1]:7.1f} ms   "
        f"max {ms[-1]:7.1f} ms   median/budget(1 s) {median / 1000:.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(Path(tmp) / "data")
        try:
            bystander = Busy(LegacySession(server.mcp_url, server.token("globex", "bystander")))
            bystander.start()
            halts: list[float] = []
            session = Busy(LegacySession(server.mcp_url, server.token("acme", "busy")))
            session.start()
            for _ in range(args.rounds):
                session.wait_until_served()
                server.cli("tenant", "halt", "acme", "--reason", "benchmark")
                returned = time.monotonic()
                halts.append(session.first_refusal_after(returned))
                server.cli("tenant", "resume", "acme")
            session.done.set()

            revokes: list[float] = []
            for i in range(args.rounds):
                token = server.token("acme", f"busy-{i}")
                busy = Busy(LegacySession(server.mcp_url, token))
                busy.start()
                busy.wait_until_served()
                server.cli("token", "revoke", "--jti", jti_of(token))
                returned = time.monotonic()
                revokes.append(busy.first_refusal_after(returned))
                busy.done.set()
            bystander.done.set()
            time.sleep(0.2)
            refused = sum(1 for _, status in bystander.results if status != 200)
            print(
                f"rounds: {args.rounds}; the other tenant's busy session made {len(bystander.results)} calls, "
                f"{refused} refused"
            )
            summary("tenant halt -> 403", halts)
            summary("token revoke -> 401", revokes)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
