"""GET /mcp event streams vs. credential lifetime: does a stream (and what it pushes) outlive
its credential? Each case opens a handshake session and its standalone stream, then lapses the
credential in some way, and reports when the stream ended and which notifications came after.

Run: TENANTRY_DATA_DIR=... .venv/bin/python attack/stream_lifetime.py
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import httpx2

sys.path.insert(0, str(Path(__file__).parent))
from common import HANDSHAKE, MCP, Legacy, base, cli, token  # noqa: E402


class Stream(threading.Thread):
    def __init__(self, sid: str, tok: str, extra: dict[str, str] | None = None) -> None:
        super().__init__(daemon=True)
        self.sid, self.tok, self.extra = sid, tok, extra or {}
        self.events: list[tuple[float, str]] = []
        self.status: int | None = None
        self.ended: float | None = None
        self.opened = threading.Event()
        self.start()

    def run(self) -> None:
        h = {"Accept": "text/event-stream", "Authorization": f"Bearer {self.tok}", "Mcp-Session-Id": self.sid,
             "MCP-Protocol-Version": HANDSHAKE, **self.extra}
        try:
            with httpx2.stream("GET", MCP, headers=h, timeout=httpx2.Timeout(5, read=120)) as r:
                self.status = r.status_code
                self.opened.set()
                for line in r.iter_lines():
                    if line.startswith("data:"):
                        self.events.append((time.time(), json.loads(line[5:]).get("method", "?")))
        except Exception as exc:  # noqa: BLE001
            self.events.append((time.time(), f"error {type(exc).__name__}"))
        finally:
            self.opened.set()
            self.ended = time.time()


def poke_list_changed() -> float:
    """Something that makes the server push tools/list_changed to acme's sessions."""
    at = time.time()
    cli("tenant", "ungrant", "acme", "send_email")
    time.sleep(0.6)
    cli("tenant", "grant", "acme", "send_email")
    return at


def report(name: str, st: Stream, lapsed_at: float) -> None:
    after = [m for t, m in st.events if t > lapsed_at + 1.5]
    alive = st.ended is None
    print(f"[{name}] status={st.status} ended={'still open' if alive else f'{st.ended - lapsed_at:+.1f}s after lapse'}"
          f" events={[m for _, m in st.events]} after_lapse={after}")


def wait_end(st: Stream, limit: float = 6) -> None:
    st.join(limit)


def case_expiry() -> None:
    tok = token("acme", "alice", "--ttl", "1m")
    exp = json.loads(__import__("base64").urlsafe_b64decode(tok.split(".")[1] + "==").decode())["exp"]
    s = Legacy(tok)
    st = Stream(s.sid, tok)
    st.opened.wait(5)
    print(f"[expiry] stream opened, token expires in {exp - time.time():.0f}s; waiting")
    time.sleep(max(0, exp - time.time()) + 3)
    report("expiry", st, exp)


def case_jti_revoke_other_token() -> None:
    a = cli("token", "issue", "--tenant", "acme", "--sub", "alice", "--json")
    a_tok, a_jti = json.loads(a)["token"], json.loads(a)["jti"]
    b_tok = token("acme", "alice")
    s = Legacy(a_tok)
    st = Stream(s.sid, b_tok)  # keep the stream with another token of the same principal
    st.opened.wait(5)
    at = time.time()
    cli("token", "revoke", "--jti", a_jti)
    time.sleep(2)
    r = s.call("tools/list")
    print("[jti] session with revoked A ->", r.status_code, "; with B ->", s.call("tools/list", tok=b_tok).status_code)
    poke_list_changed()
    time.sleep(1.5)
    report("jti-revoked A, stream kept with B (same principal: expected to stay)", st, at)


def case_api_key(direct: bool) -> None:
    key = cli("apikey", "create", "--tenant", "acme", "--name", "attack")
    key_id = key.split("_")[2]
    cred = key
    if not direct:
        r = httpx2.post(base() + "/oauth/token", data={"grant_type": "client_credentials"}, auth=(key_id, key))
        cred = r.json()["access_token"]
    s = Legacy(cred)
    st = Stream(s.sid, cred)
    st.opened.wait(5)
    at = time.time()
    cli("apikey", "revoke", key_id)
    wait_end(st)
    poke_list_changed()
    time.sleep(1)
    report("apikey revoke, " + ("key used directly" if direct else "exchanged token"), st, at)
    print("   new GET after revoke ->", Stream(s.sid, cred).join(5) or "")


def case_halt() -> None:
    tok = token()
    s = Legacy(tok)
    st = Stream(s.sid, tok)
    st.opened.wait(5)
    at = time.time()
    cli("tenant", "halt", "acme", "--reason", "attack test")
    wait_end(st)
    report("tenant halt", st, at)
    cli("tenant", "resume", "acme")


def case_notifications_flow() -> None:
    tok = token()
    s = Legacy(tok)
    st = Stream(s.sid, tok)
    st.opened.wait(5)
    at = poke_list_changed()
    time.sleep(1.5)
    print("[control] notifications on a valid stream:", [m for t, m in st.events if t >= at])


if __name__ == "__main__":
    case_notifications_flow()
    case_jti_revoke_other_token()
    case_api_key(direct=True)
    case_api_key(direct=False)
    case_halt()
    if "--expiry" in sys.argv:
        case_expiry()
