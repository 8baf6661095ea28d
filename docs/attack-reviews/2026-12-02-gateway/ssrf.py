"""SSRF guard: loopback/private/link-local in odd spellings, names resolving to loopback, and redirects.

Each URL points at a port where a hostile upstream listens on 127.0.0.1 (so a bypass would
connect). Added with --no-check (so the runtime guard is exercised, not only `upstream add`'s),
granted to acme, then called. Expected: every call refused with upstream_unavailable, the
upstream's request log stays empty; a redirect from an --allow-private upstream to another
origin is not followed.
"""

from __future__ import annotations

import http.server
import socket
import threading

from common import Lab, free_port, show

lab_spellings = [
    "127.1", "2130706433", "0x7f000001", "0177.0.0.1", "127.0.0.01", "0", "0.0.0.0", "[::1]", "[::]",
    "[::ffff:127.0.0.1]", "[::ffff:7f00:1]", "[0:0:0:0:0:ffff:127.0.0.1]", "[64:ff9b::127.0.0.1]",
    "[2002:7f00:1::]", "[fe80::1%25lo]", "localhost", "LOCALHOST", "localhost.", "ip6-localhost",
    socket.gethostname(), "user@127.0.0.1", "127.0.0.1%2f", "169.254.169.254", "100.64.0.1", "10.0.0.1",
]


class Redirect(http.server.BaseHTTPRequestHandler):
    target = ""

    def do_POST(self) -> None:  # noqa: N802
        self.send_response(307)
        self.send_header("Location", self.target)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST

    def log_message(self, *a: object) -> None:
        pass


def main() -> None:
    with Lab() as lab:
        port = lab.http_port
        seen_before = lab.client("acme").call("web__all_seen")[1]
        n_before = len(seen_before["result"]) if isinstance(seen_before, dict) else 0
        for i, host in enumerate(lab_spellings):
            url = f"http://{host}:{port}/mcp"
            if host in ("127.0.0.1%2f",):
                url = f"http://{host}/mcp"
            add = lab.cli("upstream", "add", f"s{i}", "--url", url, "--no-check", check=False)
            if "added" not in add:
                print(f"{url:45} add refused: {add[:110]}")
                continue
            lab.cli("tenant", "grant", "acme", f"s{i}__headers", "--pending", check=False)
            import time
            time.sleep(1.2)
            ok, res = lab.client("acme").call(f"s{i}__headers")
            print(f"{url:45} call -> {ok} {str(res)[:140]}")
        # Redirect: an upstream allowed to be private that redirects to another origin.
        Redirect.target = f"http://127.0.0.1:{port}/mcp"
        rport = free_port()
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", rport), Redirect)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        add = lab.cli("upstream", "add", "redir", "--url", f"http://127.0.0.1:{rport}/mcp", "--allow-private",
                      check=False)
        print("redirecting upstream add:", add[:200])
        srv.shutdown()
        seen = lab.client("acme").call("web__all_seen")[1]
        n_after = len(seen["result"]) if isinstance(seen, dict) else 0
        show("requests that reached the hostile upstream through a refused URL (expect 0)", n_after - n_before)


if __name__ == "__main__":
    main()
