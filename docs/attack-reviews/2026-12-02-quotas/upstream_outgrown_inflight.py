"""A lowered file_bytes should replace acme's command-upstream process at its next call. An agent
that always keeps one call in flight (overlapping naps) keeps the old process, under the old,
higher RLIMIT_FSIZE. Needs `tenantry upstream add probe --command ".../tests/support/stdio_upstream.py"`
and acme granted probe__whereami, probe__nap; "before" must show 100000 (a running process under a
stricter limit is kept: restart the server after `tenantry tenant limits acme file_bytes=100000`).
Old code: the pid and [100000, 100000] stay while a call is in flight; fixed: a new pid at 50000."""

import threading
import time

from common import Client, cli, token

cli("tenant", "limits", "acme", "file_bytes=100000", "file_count=1000", "sessions=10000")
time.sleep(2)
c = Client(token())
ok, before = c.call("probe__whereami", {})
print("before:", before["pid"] if ok else before, before["file_size"] if ok else "")
stop = False


napper = Client(token())


def keep_one_in_flight() -> None:
    while not stop:
        threading.Thread(target=lambda: napper.call("probe__nap", {"seconds": 3.0})).start()
        time.sleep(1.0)


t = threading.Thread(target=keep_one_in_flight)
t.start()
time.sleep(2)
cli("tenant", "limits", "acme", "file_bytes=50000")
time.sleep(2.5)  # the server obeys within a second
for _ in range(5):
    ok, now = c.call("probe__whereami", {})
    print("with a call always in flight:", ok, now["pid"] if ok else now, now["file_size"] if ok else "")
    time.sleep(1.5)
stop = True
t.join()
time.sleep(4)  # the naps end
ok, idle = c.call("probe__whereami", {})
print("once idle (the control):", idle["pid"], idle["file_size"])
