"""A handshake-era session's event stream (``GET /mcp``) does not outlive its credential: it ends
when the token expires or is revoked, cleanly (the connection is reusable), while another
session's stream, whose credential still counts, stays open (the positive control)."""

from __future__ import annotations

import base64
import json
import threading
import time
from dataclasses import dataclass, field

import httpx2

from tests.support import web
from tests.support.rpc import LegacySession
from tests.support.server import RunningServer


@dataclass
class Listener:
    """Holds a session's event stream open in a thread; ``ended`` is set when the server ends it."""

    session: LegacySession
    url: str
    ended: threading.Event = field(default_factory=threading.Event)
    status: int | None = None
    error: BaseException | None = None

    def start(self) -> Listener:
        threading.Thread(target=self._listen, daemon=True).start()
        return self

    def _listen(self) -> None:
        headers = {
            **self.session.headers(),
            "Authorization": f"Bearer {self.session.token}",
            "Accept": "text/event-stream",
        }
        try:
            with web.stream("GET", self.url, headers=headers, timeout=httpx2.Timeout(30.0)) as stream:
                self.status = stream.status_code
                for _ in stream.iter_lines():
                    pass
        except httpx2.HTTPError as exc:  # a stream cut off mid-chunk (not a clean end)
            self.error = exc
        self.ended.set()


def jti_of(token: str) -> str:
    return str(claims_of(token)["jti"])


def test_an_event_stream_ends_when_its_token_is_revoked_and_another_stays_open(server: RunningServer) -> None:
    token = server.token("acme", "stream-revoked")
    revoked = Listener(LegacySession(server.mcp_url, token), server.mcp_url).start()
    control = Listener(LegacySession(server.mcp_url, server.token("acme", "stream-kept")), server.mcp_url).start()
    time.sleep(1.0)
    assert not revoked.ended.is_set() and not control.ended.is_set()
    assert revoked.status == 200
    server.cli("token", "revoke", "--jti", jti_of(token), "--reason", "laptop stolen")
    assert revoked.ended.wait(3.0), "the revoked token's stream is still open"
    assert revoked.error is None  # ended with the final chunk, not cut off
    assert not control.ended.is_set()


def claims_of(token: str) -> dict[str, int]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def test_an_event_stream_ends_when_its_token_expires(server: RunningServer) -> None:
    token = server.token("globex", "stream-short", ttl="5s")
    short = Listener(LegacySession(server.mcp_url, token), server.mcp_url)
    long = Listener(LegacySession(server.mcp_url, server.token("globex", "stream-long")), server.mcp_url)
    short.start(), long.start()
    assert short.ended.wait(12.0), "the expired token's stream is still open"
    assert time.time() >= claims_of(token)["exp"] - 0.1  # it was open until the expiry, not cut before
    assert short.status == 200 and short.error is None
    assert not long.ended.is_set()
