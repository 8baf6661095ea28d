"""The server's log configuration: what third-party libraries may write to it."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import httpx2
import pytest

from tenantry.logs import configure_logging
from tests.support import web


@pytest.fixture
def configured() -> Iterator[None]:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    levels = {name: logging.getLogger(name).level for name in ("httpx2", "httpcore2", "mcp", "httpx", "httpcore")}
    try:
        yield
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def test_httpx2_request_lines_with_their_urls_are_not_logged(
    configured: None, capsys: pytest.CaptureFixture[str]
) -> None:
    # An upstream's URL may carry a tenant's secret ("--url https://api.example/mcp?key={secret:k}");
    # httpx2 logs every request with its URL at INFO.
    configure_logging("INFO")
    transport = httpx2.MockTransport(lambda request: httpx2.Response(200))
    with web.Client(transport=transport) as client:
        assert client.get("http://upstream.example/mcp?key=tenant-secret-8d1f").status_code == 200
    logging.getLogger("tenantry.gateway").info("a line of our own")  # positive control: INFO is written
    written = capsys.readouterr().err
    assert "a line of our own" in written
    assert "tenant-secret-8d1f" not in written and "HTTP Request" not in written
