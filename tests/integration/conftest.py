from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.server import RunningServer, start_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(tmp_path_factory.mktemp("integration") / "data")
    yield running
    running.stop()
