"""Import contracts: the folder layout is the architecture, so it is enforced."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import tenantry

SRC = Path(tenantry.__file__).parent
LAYERS = [
    "core",
    "policy",
    "auth",
    "audit",
    "scoping",
    "controlplane",
    "ratelimit",
    "admin",
    "framework",
    "server",
    "cli",
]
FORBIDDEN_BELOW_SERVER = ("starlette", "uvicorn", "typer", "rich", "click")
# A package may import from these tenantry packages (besides itself).
ALLOWED = {
    "core": set(),
    "policy": {"core"},
    "auth": {"core"},
    "audit": {"core", "auth"},  # checkpoints are signed with an auth key ring
    "scoping": {"core"},
    "controlplane": {"core"},
    "ratelimit": {"core"},
    "admin": {"core", "policy", "auth", "audit", "controlplane"},
    "framework": {"core", "policy", "auth", "audit", "scoping", "controlplane", "ratelimit"},
    "demo": {"core", "policy", "framework", "scoping", "controlplane"},
    "server": {
        "core",
        "policy",
        "auth",
        "audit",
        "scoping",
        "controlplane",
        "ratelimit",
        "admin",
        "framework",
        "runtime",
    },
    "cli": {
        "core",
        "policy",
        "auth",
        "audit",
        "scoping",
        "controlplane",
        "ratelimit",
        "admin",
        "framework",
        "server",
        "runtime",
        "logs",
        "demo",
    },
}


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_follow_the_dependency_direction(package: str) -> None:
    for path in (SRC / package).rglob("*.py"):
        for module in imports_of(path):
            if module == "tenantry" or not module.startswith("tenantry."):
                continue
            target = module.split(".")[1]
            assert target == package or target in ALLOWED[package], f"{path.relative_to(SRC)} imports {module}"


@pytest.mark.parametrize(
    "package", ["core", "policy", "auth", "audit", "scoping", "controlplane", "ratelimit", "admin", "framework"]
)
def test_domain_code_knows_nothing_of_http_or_the_cli(package: str) -> None:
    for path in (SRC / package).rglob("*.py"):
        for module in imports_of(path):
            assert not module.startswith(FORBIDDEN_BELOW_SERVER), f"{path.relative_to(SRC)} imports {module}"


def test_core_does_no_io_imports() -> None:
    for path in (SRC / "core").rglob("*.py"):
        for module in imports_of(path):
            assert module.split(".")[0] not in {"sqlite3", "socket", "httpx2", "anyio", "mcp"}, path


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
