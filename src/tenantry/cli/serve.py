"""``tenantry serve`` and ``tenantry stdio``."""

from __future__ import annotations

import asyncio
import gc
import importlib
import socket
import sys
from pathlib import Path
from typing import Any

import anyio
import uvicorn

from tenantry.admin.grants import publish_catalogue
from tenantry.cli.common import open_runtime
from tenantry.core.errors import UsageError
from tenantry.framework.app import App
from tenantry.framework.redaction import RedactingLogFilter
from tenantry.logs import configure_logging
from tenantry.runtime import MCP_PATH, Runtime

__all__ = ["run_http", "run_stdio", "load_app", "publish_served"]


def load_app(spec: str | None, *, demo: bool) -> App:
    """The tools to serve: ``--app module:object``, the demo tools, or both."""
    served = App("tenantry")
    if demo:
        from tenantry.demo.tools import demo_app

        served.include(demo_app)
    if spec:
        module_name, _, attribute = spec.partition(":")
        if not module_name or not attribute:
            raise UsageError("--app must look like module:object, e.g. my_tools:app")
        if str(Path.cwd()) not in sys.path:
            sys.path.insert(0, str(Path.cwd()))
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise UsageError(f"cannot import {module_name!r}: {exc}") from None
        user_app = getattr(module, attribute, None)
        if not isinstance(user_app, App):
            raise UsageError(f"{spec} is not a tenantry.App")
        served.include(user_app)
        served.name = user_app.name
    return served


def publish_served(runtime: Runtime, served: App, app_spec: str | None) -> None:
    """Record what an ``--app`` serves in the control store, so its tools can be granted
    (the demo tools are always known and need no publishing)."""
    if app_spec:
        publish_catalogue(runtime.store, served.name, served.catalogue())


async def _seed(runtime: Runtime) -> list[str]:
    from tenantry.demo.seed import seed_demo

    return await seed_demo(runtime.store, runtime.scopes, runtime.secrets)


class _AnnouncingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, announce: str, *, slow_callbacks: float | None = None) -> None:
        super().__init__(config)
        self._announce = announce
        self._slow_callbacks = slow_callbacks

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        if self._slow_callbacks is not None:
            loop = asyncio.get_running_loop()
            loop.set_debug(True)
            loop.slow_callback_duration = self._slow_callbacks
        await super().startup(sockets)
        if self.started:
            sys.stdout.write(self._announce)
            sys.stdout.flush()


def run_http(
    data_dir: Path | None, config: Path | None, *, host: str | None, port: int | None, demo: bool, app_spec: str | None
) -> None:
    server_overrides: dict[str, Any] = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
    with open_runtime(
        data_dir, config, serving=True, **({"server": server_overrides} if server_overrides else {})
    ) as runtime:
        settings = runtime.settings
        configure_logging(settings.logging.level, settings.logging.format, [RedactingLogFilter()])
        served = load_app(app_spec, demo=demo)
        runtime.prepare_keys()
        anyio.run(runtime.check_data_plane)
        publish_served(runtime, served, app_spec)
        if demo:
            anyio.run(_seed, runtime)
        from tenantry.server.app import create_http_app

        http = create_http_app(runtime, served)
        url = runtime.endpoints.public_url + MCP_PATH
        lines = [f"Tenantry serving MCP at {url}", f"  data dir: {runtime.data_dir}", f"  tools: {len(served.tools)}"]
        if demo:
            lines.append("  demo tenants: acme, globex  (try: tenantry token issue --tenant acme --sub alice)")
        config_ = uvicorn.Config(
            http.asgi,
            host=settings.server.host,
            port=settings.server.port,
            log_config=None,
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=5,
            server_header=False,
            # uvicorn believes X-Forwarded-For from 127.0.0.1 by default: any local client could
            # forge its audited address. Only configured proxies are believed.
            proxy_headers=bool(settings.server.trusted_proxies),
            forwarded_allow_ips=list(settings.server.trusted_proxies) or [],
        )
        server = _AnnouncingServer(
            config_, "\n".join(lines) + "\n", slow_callbacks=settings.server.debug_slow_callbacks
        )
        # Everything loaded so far (SDK, pydantic models, the app) lives as long as the process:
        # keep it out of the cyclic GC's generations so collections stay cheap under load.
        gc.collect()
        gc.freeze()
        server.run()
        if not server.started:
            raise UsageError(f"could not start on {settings.server.host}:{settings.server.port} (is the port in use?)")


def run_stdio(data_dir: Path | None, config: Path | None, *, token: str, demo: bool, app_spec: str | None) -> None:
    from tenantry.server.stdio import serve_stdio, verify_startup_token

    with open_runtime(data_dir, config) as runtime:
        configure_logging(runtime.settings.logging.level, runtime.settings.logging.format, [RedactingLogFilter()])
        served = load_app(app_spec, demo=demo)
        anyio.run(runtime.check_data_plane)
        publish_served(runtime, served, app_spec)
        principal = anyio.run(verify_startup_token, runtime, token)
        anyio.run(serve_stdio, runtime, served, principal)
