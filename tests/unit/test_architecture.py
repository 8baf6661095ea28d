"""Import contracts: the folder layout is the architecture, so it is enforced.

Every folder and every top-level module of the package is a *component* with rules below. The
components are discovered from the source tree, so a new folder or module fails these tests
until it is given rules; a checker run over a planted tree proves the checks can fail.

Imports are found in ``import``/``from`` statements anywhere in a file (relative ones resolved,
lazy ones inside functions included) and in string constants naming one of the package's own
modules (``importlib.import_module("tenantry.framework.app")``, ``"tenantry.demo.tools:demo_app"``).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

import tenantry

SRC = Path(tenantry.__file__).parent
ROOT = "__init__"  # the package itself: the public API and __version__

# Which of the package's components each component may import (besides itself).
ALLOWED: dict[str, set[str]] = {
    ROOT: {"core", "framework", "scoping"},  # lazy re-exports of the public API
    "logs": set(),
    "core": set(),
    "policy": {"core"},
    "auth": {"core"},
    # Checkpoints are signed with an auth key ring; the writer process logs as the server does.
    "audit": {"core", "auth", "logs"},
    "scoping": {"core"},
    "controlplane": {"core"},
    "ratelimit": {"core"},
    "admin": {"core", "policy", "auth", "audit", "controlplane"},
    # Export and erasure of a tenant across every store the runtime opened.
    "lifecycle": {"core", "auth", "audit", "scoping", "controlplane", "admin", "runtime"},
    "framework": {"core", "policy", "auth", "audit", "scoping", "controlplane", "ratelimit"},
    "demo": {"core", "policy", "framework", "scoping", "controlplane"},
    # A black-box client of any MCP deployment: it must not lean on the server it probes.
    "probe": set(),
    "compliance": {"core", "auth", "audit", "controlplane", "runtime"},
    # Gateway mode plugs upstream MCP servers into the framework's invoker seam.
    "gateway": {ROOT, "core", "framework", "scoping"},
    # The composition root below the entry points: opens stores and verifiers from settings.
    "runtime": {"core", "policy", "auth", "audit", "scoping", "controlplane", "ratelimit"},
    "server": {
        ROOT,
        "core",
        "policy",
        "auth",
        "audit",
        "scoping",
        "controlplane",
        "ratelimit",
        "admin",
        "framework",
        "gateway",
        "runtime",
    },
    "cli": {
        ROOT,
        "core",
        "policy",
        "auth",
        "audit",
        "scoping",
        "controlplane",
        "ratelimit",
        "admin",
        "framework",
        "gateway",
        "server",
        "runtime",
        "logs",
        "demo",
        "lifecycle",
        "probe",
        "compliance",
    },
}
# Only the entry points may know HTTP or the command line.
WEB_AND_CLI = ("starlette", "uvicorn", "typer", "rich", "click")
MAY_USE_WEB_AND_CLI = {"server", "cli"}
IO_MODULES = {
    "sqlite3",
    "socket",
    "httpx2",
    "aiohttp",
    "yarl",
    "anyio",
    "mcp",
    "psycopg",
    "apsw",
    "boto3",
    "qdrant_client",
}


@dataclass(frozen=True)
class Import:
    path: Path
    module: str  # absolute dotted name

    def where(self, src: Path) -> str:
        return f"{self.path.relative_to(src)} imports {self.module}"


def components(src: Path) -> set[str]:
    """Every folder holding Python code and every top-level module (``ROOT`` for ``__init__.py``)."""
    found = {path.stem for path in src.glob("*.py")}
    found |= {path.name for path in src.iterdir() if path.is_dir() and any(path.rglob("*.py"))}
    return found


def _module_of(path: Path, src: Path, package: str) -> list[str]:
    parts = [package, *path.relative_to(src).with_suffix("").parts]
    return parts[:-1] if parts[-1] == "__init__" else parts


def imports_of(path: Path, src: Path, package: str) -> list[Import]:
    tree = ast.parse(path.read_text())
    here = _module_of(path, src, package)
    is_package = path.name == "__init__.py"
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here if is_package else here[:-1]
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                prefix = ".".join(base)
                module = f"{prefix}.{node.module}" if node.module else prefix
            else:
                module = node.module or ""
            found.append(module)
            if module == package or module.startswith(package + "."):
                # ``from package import sub`` imports the submodule ``sub``.
                found.extend(f"{module}.{alias.name}" for alias in node.names if alias.name != "*")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            name = node.value.split(":")[0]
            if name.startswith(package + ".") and _names_a_module(name, src):
                found.append(name)
    return [Import(path, module) for module in found]


def _names_a_module(name: str, src: Path) -> bool:
    parts = name.split(".")
    if not all(part.isidentifier() for part in parts):
        return False
    relative = Path(*parts[1:])
    return (src / relative).with_suffix(".py").is_file() or (src / relative / "__init__.py").is_file()


def component_of(module: str, src: Path, package: str) -> str | None:
    """The component ``module`` belongs to, or ``None`` when it is not the package's own."""
    parts = module.split(".")
    if parts[0] != package:
        return None
    if len(parts) == 1:
        return ROOT
    if (src / parts[1]).is_dir() or (src / f"{parts[1]}.py").is_file():
        return parts[1]
    return ROOT  # a name defined in the package's __init__ (``from tenantry import __version__``)


def files_of(component: str, src: Path) -> list[Path]:
    if component == ROOT:
        return [src / "__init__.py"]
    single = src / f"{component}.py"
    return [single] if single.is_file() else sorted((src / component).rglob("*.py"))


def unknown_components(src: Path, rules: dict[str, set[str]]) -> set[str]:
    return components(src) - set(rules)


def dependency_violations(src: Path, package: str, rules: dict[str, set[str]]) -> list[str]:
    """Imports of the package's own components that the importing component's rules do not allow."""
    problems = []
    for component in sorted(components(src)):
        allowed = rules.get(component, set())
        for path in files_of(component, src):
            for imported in imports_of(path, src, package):
                target = component_of(imported.module, src, package)
                if target is not None and target != component and target not in allowed:
                    problems.append(imported.where(src))
    return sorted(set(problems))


def third_party_violations(src: Path, package: str, forbidden: tuple[str, ...], exempt: set[str]) -> list[str]:
    problems = []
    for component in sorted(components(src) - exempt):
        for path in files_of(component, src):
            for imported in imports_of(path, src, package):
                if imported.module.split(".")[0] in forbidden:
                    problems.append(imported.where(src))
    return sorted(set(problems))


# --- the package's own rules -----------------------------------------------------------------


def test_every_folder_and_module_has_rules() -> None:
    unknown = unknown_components(SRC, ALLOWED)
    assert not unknown, f"no import rules for {sorted(unknown)}: add them to ALLOWED in {Path(__file__).name}"


def test_rules_name_only_existing_components() -> None:
    stale = set(ALLOWED) - components(SRC)
    named = set().union(*ALLOWED.values()) - components(SRC)
    assert not stale and not named, f"rules for components that do not exist: {sorted(stale | named)}"


def test_the_rules_form_layers() -> None:
    """No two components may import each other, even through others: the rules are acyclic."""
    visiting: set[str] = set()
    done: set[str] = set()

    def visit(component: str, trail: tuple[str, ...]) -> None:
        assert component not in visiting, f"import cycle allowed: {' -> '.join((*trail, component))}"
        if component in done:
            return
        visiting.add(component)
        for target in ALLOWED[component]:
            visit(target, (*trail, component))
        visiting.discard(component)
        done.add(component)

    for component in ALLOWED:
        visit(component, ())


def test_package_imports_follow_the_dependency_direction() -> None:
    assert dependency_violations(SRC, "tenantry", ALLOWED) == []


def test_only_the_entry_points_know_http_or_the_cli() -> None:
    assert third_party_violations(SRC, "tenantry", WEB_AND_CLI, MAY_USE_WEB_AND_CLI) == []


def test_core_does_no_io_imports() -> None:
    problems = [
        imported.where(SRC)
        for path in files_of("core", SRC)
        for imported in imports_of(path, SRC, "tenantry")
        if imported.module.split(".")[0] in IO_MODULES
    ]
    assert problems == []


def test_public_api_is_pinned() -> None:
    assert set(tenantry.__all__) == {
        "__version__",
        "App",
        "ToolContext",
        "ResourcePath",
        "ResourcePrefix",
        "FileEntry",
        "VectorDocument",
        "VectorMatch",
        "TenantryError",
        "InvalidArguments",
        "NotFound",
        "ScopeViolation",
        "UsageError",
    }


# --- positive controls: the checker over a planted tree --------------------------------------

PLANTED_RULES = {ROOT: {"core"}, "core": set(), "server": {"core"}, "util": set()}


def plant(tmp_path: Path, files: dict[str, str]) -> Path:
    src = tmp_path / "pkg"
    for name, text in {
        "__init__.py": "from pkg.core import errors\n",
        "core/__init__.py": "",
        "core/errors.py": "class Error(Exception): ...\n",
        "server/__init__.py": "",
        "server/app.py": "import starlette\nfrom pkg.core.errors import Error\nfrom ..core import errors\n",
        "util.py": "import json\n",
        **files,
    }.items():
        path = src / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return src


def test_checker_passes_a_clean_tree(tmp_path: Path) -> None:
    src = plant(tmp_path, {})
    assert unknown_components(src, PLANTED_RULES) == set()
    assert dependency_violations(src, "pkg", PLANTED_RULES) == []
    assert third_party_violations(src, "pkg", WEB_AND_CLI, {"server"}) == []


@pytest.mark.parametrize(
    ("text", "module"),
    [
        ("from pkg.server.app import app\n", "pkg.server.app"),
        ("import pkg.server.app\n", "pkg.server.app"),
        ("from pkg import server\n", "pkg.server"),
        ("from ..server import app\n", "pkg.server"),
        ("from .. import util\n", "pkg.util"),
        ("def lazy():\n    from pkg.server import app\n", "pkg.server"),
        ("import importlib\nMOD = importlib.import_module('pkg.server.app')\n", "pkg.server.app"),
        ("SPEC = 'pkg.server.app:app'\n", "pkg.server.app"),
    ],
    ids=["from", "import", "from-package", "relative", "relative-module", "lazy", "import_module", "app-spec"],
)
def test_checker_catches_a_planted_bad_import(tmp_path: Path, text: str, module: str) -> None:
    src = plant(tmp_path, {"core/bad.py": text})
    assert f"core/bad.py imports {module}" in dependency_violations(src, "pkg", PLANTED_RULES)


def test_checker_ignores_strings_that_name_no_module(tmp_path: Path) -> None:
    src = plant(tmp_path, {"core/names.py": "LOGGER = 'pkg.server.requests'\nDOC = 'see pkg.server.app'\n"})
    assert dependency_violations(src, "pkg", PLANTED_RULES) == []


def test_checker_catches_a_planted_web_import_below_the_server(tmp_path: Path) -> None:
    src = plant(tmp_path, {"core/web.py": "from starlette.responses import Response\n"})
    assert third_party_violations(src, "pkg", WEB_AND_CLI, {"server"}) == ["core/web.py imports starlette.responses"]


@pytest.mark.parametrize("new", ["gateway/upstream.py", "gateway/http/client.py", "tiers.py"])
def test_a_new_folder_or_module_has_no_rules_until_given_some(tmp_path: Path, new: str) -> None:
    src = plant(tmp_path, {new: "from pkg.server.app import app\n"})
    component = new.split("/")[0].removesuffix(".py")
    assert unknown_components(src, PLANTED_RULES) == {component}
    # Its imports are checked against no allowance at all meanwhile.
    assert f"{new} imports pkg.server.app" in dependency_violations(src, "pkg", PLANTED_RULES)
