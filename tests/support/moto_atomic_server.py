"""moto's S3 server, with conditional writes atomic as real S3's are.

moto checks ``If-Match`` / ``If-None-Match`` and then stores the object in separate steps, on a
thread per request: two conditional writes of the same key can both pass their check (seen on
a loaded CI host: two replicas' usage ledgers both wrote on one ETag, and a quota was passed
by one file). Amazon S3 applies a conditional write atomically; so does this server, by taking
one lock around every request that carries a condition. Run as a script with moto's own
arguments.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

import moto.server
from moto.moto_server.werkzeug_app import DomainDispatcherApplication

_CONDITIONS = ("HTTP_IF_MATCH", "HTTP_IF_NONE_MATCH")


class AtomicConditionalWrites(DomainDispatcherApplication):
    _lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") in ("PUT", "POST") and any(name in environ for name in _CONDITIONS):
            with self._lock:
                return list(super().__call__(environ, start_response))
        return super().__call__(environ, start_response)  # type: ignore[no-any-return]


if __name__ == "__main__":
    setattr(moto.server, "DomainDispatcherApplication", AtomicConditionalWrites)  # noqa: B010 (its main() looks it up there)
    moto.server.main(sys.argv[1:])
