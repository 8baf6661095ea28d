"""The README's "First call" and "Your own tools" run as written and print what it shows.

The code blocks are taken from README.md itself and run in a fresh directory with ``.venv``
pointing at this environment; the only change is the port (a free one instead of 8750).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from tests.support import web
from tests.support.server import free_port

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def section(title: str) -> str:
    start = README.index(f"## {title}")
    return README[start : README.index("\n## ", start + 1)]


def blocks(text: str) -> list[tuple[str, str]]:
    """``(language, body)`` of every fenced block in ``text``, in order."""
    return re.findall(r"```(\w*)\n(.*?)```", text, flags=re.S)


class Workspace:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.env = {**os.environ, "TENANTRY_SERVER__PORT": str(self.port)}
        (root / ".venv").symlink_to(sys.prefix)
        self.server: subprocess.Popen[bytes] | None = None

    def shell(self, script: str) -> str:
        script = script.replace("127.0.0.1:8750", f"127.0.0.1:{self.port}")
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, f"{script}\nfailed: {result.stderr}"
        return result.stdout

    def serve(self, command: str) -> None:
        log = (self.root / "server.log").open("wb")
        self.server = subprocess.Popen(
            ["bash", "-c", f"exec {command.strip()}"], cwd=self.root, env=self.env, stdout=log, stderr=log
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.server.poll() is None, (self.root / "server.log").read_text()
            try:
                if web.get(f"http://127.0.0.1:{self.port}/readyz", timeout=1).status_code == 200:
                    return
            except httpx2.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError("server not ready:\n" + (self.root / "server.log").read_text())

    def stop(self) -> None:
        if self.server is not None and self.server.poll() is None:
            self.server.terminate()
            self.server.wait(timeout=15)


@pytest.fixture
def workspace(tmp_path: Path) -> Iterator[Workspace]:
    space = Workspace(tmp_path)
    yield space
    space.stop()


def test_first_call_prints_what_the_readme_shows(workspace: Workspace) -> None:
    quick_start = dict(blocks(section("Quick start")))["bash"]
    serve = next(line for line in quick_start.splitlines() if "tenantry serve --demo" in line)
    workspace.serve(serve.split("&&")[-1])
    first_call = blocks(section("First call"))
    issue, snippet, shown = first_call[0][1], first_call[1][1], first_call[2][1]
    assert workspace.shell(issue + snippet) == shown


def test_the_framework_example_works_as_written(workspace: Workspace) -> None:
    text = section("Your own tools (framework mode)")
    fenced = blocks(text)
    module = next(body for language, body in fenced if language == "python")
    assert module.startswith("# my_tools.py\n")
    (workspace.root / "my_tools.py").write_text(module)
    bash = [body for language, body in fenced if language == "bash"]
    serve, setup, calls = bash[0], bash[1], bash[2]
    shown = fenced[[body for _, body in fenced].index(calls) + 1][1]
    workspace.serve(serve)
    workspace.shell(setup)
    assert workspace.shell(calls) == shown


@pytest.mark.gateway_npm
def test_the_gateway_walkthrough_works_as_written(workspace: Workspace) -> None:
    from tests.support.ci import require_executable

    require_executable("npx", "the README's gateway walkthrough")
    fenced = blocks(section("Gateway mode (existing MCP servers)"))
    commands, snippet, shown = fenced[0][1], fenced[1][1], fenced[2][1]
    lines = commands.strip().splitlines()
    assert len(lines) == 5, "the walkthrough promises five commands"
    workspace.serve(lines[0].removesuffix("&").strip())
    workspace.shell("\n".join(lines[1:4]))
    assert workspace.shell(lines[4] + "\n" + snippet) == shown
