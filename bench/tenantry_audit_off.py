"""Benchmark-only: Tenantry's full path with the audit sink replaced by one that discards.

There is deliberately no setting that turns audit off; this script builds the server in
process and swaps the sink, so ``throughput.py`` can measure what durable audit costs.
"""

from __future__ import annotations

import argparse
import gc
import sys
from collections.abc import Awaitable
from pathlib import Path

import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tenantry.audit.events import AuditEvent
from tenantry.audit.sink import AuditObserver
from tenantry.cli.serve import load_app
from tenantry.core.settings import load_settings
from tenantry.logs import configure_logging
from tenantry.runtime import Runtime
from tenantry.server.app import create_http_app


class _Done:
    def __await__(self):  # type: ignore[no-untyped-def]
        return iter(())


_DONE = _Done()


class DiscardingSink:
    available = True
    committed = 0
    batches = 0

    def ensure_writable(self) -> None:
        return None

    async def record(self, event: AuditEvent) -> None:
        return None

    def begin(self, event: AuditEvent) -> Awaitable[None]:
        return _DONE

    def submit(self, event: AuditEvent) -> None:
        return None

    def add_observer(self, observer: AuditObserver) -> None:
        return None

    async def aclose(self) -> None:
        return None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    runtime = Runtime(load_settings(server={"port": args.port}), serving=True, create=True)
    configure_logging("INFO", "json")
    runtime.audit = DiscardingSink()  # type: ignore[assignment]
    http = create_http_app(runtime, load_app("bench.trivial_app:app", demo=False))
    gc.collect()
    gc.freeze()
    uvicorn.run(http.asgi, host="127.0.0.1", port=args.port, log_config=None, access_log=False, server_header=False)


if __name__ == "__main__":
    main()
