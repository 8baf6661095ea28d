"""``tenantry serve`` start-up failures a newcomer meets first: a taken port, a broken ``--app``
module, and ``tenantry --version``. Black-box, through the CLI."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from textwrap import dedent

import pytest

from tests.support.server import free_port, run_cli


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_a_port_in_use_is_one_clear_line_and_exit_1(tmp_path: Path, taken_port: int) -> None:
    started = time.monotonic()
    result = run_cli("serve", "--demo", "--port", str(taken_port), data_dir=tmp_path / "data", check=False)
    assert result.returncode == 1
    assert result.stderr == (
        f"error: port {taken_port} on 127.0.0.1 is already in use (another tenantry serve?); use --port\n"
    )
    assert "Traceback" not in result.stdout and "Tenantry serving" not in result.stdout
    assert time.monotonic() - started < 20


def test_an_address_not_on_this_machine_is_one_clear_line(tmp_path: Path) -> None:
    result = run_cli(
        "serve", "--host", "192.0.2.1", "--port", str(free_port()), data_dir=tmp_path / "data", check=False
    )
    assert result.returncode == 1
    assert result.stderr.startswith("error: cannot listen on 192.0.2.1:") and result.stderr.count("\n") == 1


def test_version_option_and_command(tmp_path: Path) -> None:
    from importlib.metadata import version

    option = run_cli("--version")
    assert option.stdout == f"tenantry {version('tenantry')}\n" and option.stderr == ""
    assert run_cli("version").stdout.strip() == version("tenantry")


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            "import tenantry\n\napp = tenantry.App('x'\n",
            "error: cannot import 'broken_tools': '(' was never closed (broken_tools.py, line 3)\n",
        ),
        (
            "import tenantry\n\ndef f(:\n    pass\n",
            "error: cannot import 'broken_tools': invalid syntax (broken_tools.py, line 3)\n",
        ),
        (
            dedent(
                """
                import json

                CONFIG = json.loads("{")
                """
            ),
            "error: cannot import 'broken_tools': JSONDecodeError: Expecting property name enclosed in double"
            " quotes: line 1 column 2 (char 1) (broken_tools.py, line 4)\n",
        ),
        (
            dedent(
                """
                import tenantry
                from helper_module import LIMIT

                app = tenantry.App("x")
                """
            ),
            "error: cannot import 'broken_tools': ZeroDivisionError: division by zero (helper_module.py, line 2)\n",
        ),
    ],
    ids=["unclosed-paren", "invalid-syntax", "exception-in-library-call", "exception-in-imported-user-module"],
)
def test_a_broken_app_module_names_the_file_and_line_without_a_traceback(
    tmp_path: Path, source: str, expected: str
) -> None:
    (tmp_path / "broken_tools.py").write_text(source)
    (tmp_path / "helper_module.py").write_text("LIMIT = 10\nRATIO = LIMIT / 0\n")
    result = run_cli(
        "serve",
        "--app",
        "broken_tools:app",
        "--port",
        str(free_port()),
        data_dir=tmp_path / "data",
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert result.stderr == expected
    assert "Traceback" not in result.stderr + result.stdout


def test_a_module_without_the_named_app_says_what_it_found(tmp_path: Path) -> None:
    (tmp_path / "tools_a.py").write_text("app = 5\n")
    for spec, message in (
        ("tools_a:app", "error: tools_a:app is not a tenantry.App (found int)\n"),
        ("tools_a:missing", "error: module 'tools_a' has no attribute 'missing'\n"),
        ("nowhere:app", f"error: cannot import 'nowhere': no module named 'nowhere' in {tmp_path} or on sys.path\n"),
    ):
        result = run_cli("serve", "--app", spec, data_dir=tmp_path / "data", check=False, cwd=tmp_path)
        assert (result.returncode, result.stderr) == (2, message)
