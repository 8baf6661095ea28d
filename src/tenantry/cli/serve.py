"""``tenantry serve`` and ``tenantry stdio``."""

from __future__ import annotations

import asyncio
import errno
import gc
import importlib
import os
import socket
import sys
import sysconfig
import traceback
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import anyio
import uvicorn

from tenantry.admin.grants import publish_catalogue
from tenantry.cli.common import open_runtime
from tenantry.core.errors import TenantryError, UsageError
from tenantry.framework.app import App
from tenantry.framework.redaction import RedactingLogFilter
from tenantry.logs import configure_logging
from tenantry.runtime import MCP_PATH, Runtime

if TYPE_CHECKING:
    from tenantry.server.workers import WorkerSource

__all__ = ["run_http", "run_stdio", "load_app", "publish_served"]


def load_app(spec: str | None, *, demo: bool, search_path: Path | None = None) -> App:
    """The tools to serve: ``--app module:object``, the demo tools, or both; the module is
    imported from ``search_path`` (default: the current directory) or ``sys.path``.

    :raises UsageError: a malformed spec, a module that cannot be imported (with the file and
        line of the error in the user's code, never a traceback) or an object that is not an App.
    """
    served = App("tenantry")
    if demo:
        from tenantry.demo.tools import demo_app

        served.include(demo_app)
    if spec:
        module_name, _, attribute = spec.partition(":")
        if not module_name or not attribute:
            raise UsageError("--app must look like module:object, e.g. my_tools:app")
        where = str(search_path or Path.cwd())
        if where not in sys.path:
            sys.path.insert(0, where)
        module = _import_user_module(module_name)
        user_app = getattr(module, attribute, None)
        if user_app is None:
            raise UsageError(f"module {module_name!r} has no attribute {attribute!r}")
        if not isinstance(user_app, App):
            raise UsageError(f"{spec} is not a tenantry.App (found {type(user_app).__name__})")
        served.include(user_app)
        served.name = user_app.name
    return served


def worker_source(app_spec: str | None, *, demo: bool) -> WorkerSource:
    """Dedicated workers serve the same app as this server, imported from the same directory."""
    from tenantry.server.workers import WorkerSource

    return WorkerSource(
        command=(sys.executable, "-m", "tenantry.cli.worker"), app_spec=app_spec, demo=demo, app_path=Path.cwd()
    )


def publish_served(runtime: Runtime, served: App, app_spec: str | None) -> None:
    """Record what an ``--app`` serves in the control store, so its tools can be granted
    (the demo tools are always known and need no publishing)."""
    if app_spec:
        publish_catalogue(runtime.store, served.name, served.catalogue())


def _import_user_module(module_name: str) -> ModuleType:
    try:
        return importlib.import_module(module_name)
    except SyntaxError as exc:  # str() is "invalid syntax (my_tools.py, line 3)"
        raise UsageError(f"cannot import {module_name!r}: {exc}") from None
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            where = f"in {Path.cwd()} or on sys.path" if "." not in module_name else "on sys.path"
            raise UsageError(f"cannot import {module_name!r}: no module named {exc.name!r} {where}") from None
        raise UsageError(f"cannot import {module_name!r}: {_describe(exc)}") from None
    except Exception as exc:
        raise UsageError(f"cannot import {module_name!r}: {_describe(exc)}") from None


def _describe(exc: BaseException) -> str:
    """``Type: message (file, line N)``, the line being the last one in the user's own code."""
    text = exc.message if isinstance(exc, TenantryError) else f"{type(exc).__name__}: {exc}"
    frame = _user_frame(exc)
    return text if frame is None else f"{text} ({frame[0]}, line {frame[1]})"


def _user_frame(exc: BaseException) -> tuple[str, int] | None:
    """The innermost traceback frame outside the interpreter's and installed packages' files."""
    library_roots = tuple(
        str(Path(p).resolve()) + os.sep
        for key in ("stdlib", "platstdlib", "purelib", "platlib")
        if (p := sysconfig.get_paths().get(key))
    )
    own_root = str(Path(__file__).resolve().parents[1]) + os.sep  # tenantry itself
    found: tuple[str, int] | None = None
    for entry in traceback.extract_tb(exc.__traceback__):
        if entry.filename.startswith("<") or entry.lineno is None:
            continue
        resolved = str(Path(entry.filename).resolve())
        if resolved.startswith(library_roots) or resolved.startswith(own_root):
            continue
        try:
            shown = str(Path(resolved).relative_to(Path.cwd()))
        except ValueError:
            shown = resolved
        found = (shown, entry.lineno)
    return found


async def _seed(runtime: Runtime) -> list[str]:
    from tenantry.demo.seed import seed_demo

    return await seed_demo(runtime.store, runtime.scopes, runtime.secrets)


def listen_socket(host: str, port: int) -> socket.socket:
    """The bound (not yet listening) socket ``serve`` hands to the ASGI server, so a taken port
    is one clear error before anything starts.

    :raises TenantryError: the address is in use, not on this machine, or not allowed.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on accepted sockets whose protocol says
    # TCP. Without it a response written in two parts waits ~40 ms for the client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise TenantryError(
                f"port {port} on {host} is already in use (another tenantry serve?); use --port"
            ) from None
        raise TenantryError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    except (OverflowError, socket.gaierror) as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {exc}") from None
    sock.set_inheritable(True)
    return sock


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
        listener = listen_socket(settings.server.host, settings.server.port)
        runtime.prepare_keys()
        anyio.run(runtime.check_data_plane)
        publish_served(runtime, served, app_spec)
        if demo:
            anyio.run(_seed, runtime)
        from tenantry.server.app import create_http_app
        from tenantry.server.connections import ConnectionPolicy, guarded_protocol

        http = create_http_app(runtime, served, workers=worker_source(app_spec, demo=demo))
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
            http=guarded_protocol(
                ConnectionPolicy(
                    header_timeout=settings.server.header_timeout,
                    body_timeout=settings.server.body_timeout,
                    max_per_address=settings.server.max_connections_per_address,
                    trusted_proxies=settings.server.trusted_proxies,
                )
            ),
            timeout_keep_alive=settings.server.keep_alive_timeout,
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
        try:
            server.run(sockets=[listener])
        finally:
            listener.close()
        if not server.started:
            raise TenantryError("the server stopped before it started serving (see the log lines above)")


def run_stdio(data_dir: Path | None, config: Path | None, *, token: str, demo: bool, app_spec: str | None) -> None:
    from tenantry.server.stdio import serve_stdio, verify_startup_token

    with open_runtime(data_dir, config) as runtime:
        configure_logging(runtime.settings.logging.level, runtime.settings.logging.format, [RedactingLogFilter()])
        served = load_app(app_spec, demo=demo)
        anyio.run(runtime.check_data_plane)
        publish_served(runtime, served, app_spec)
        principal = anyio.run(verify_startup_token, runtime, token)
        anyio.run(lambda: serve_stdio(runtime, served, principal, workers=worker_source(app_spec, demo=demo)))
