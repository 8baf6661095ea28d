"""The suite's one rule for missing runtimes: skip locally, fail in CI (``CI=true``).

A green CI run must have exercised every backend and harness, so a test that cannot run there
is a failure, never a skip. Imports nothing from ``tenantry``.
"""

from __future__ import annotations

import os
import shutil

import pytest

__all__ = ["IN_CI", "require_executable", "RUNTIME_MARKERS"]

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# Markers of tests that need a runtime outside Python, and what it is, for the messages.
RUNTIME_MARKERS = {
    "postgres": "PostgreSQL",
    "redis": "Redis",
    "conformance": "npm (the MCP conformance suite)",
    "idp": "npm (the OpenID provider harness)",
    "gateway_npm": "npm (the gateway's stdio upstreams)",
}


def require_executable(name: str, purpose: str) -> str:
    """The path of executable ``name``; without it the test is skipped, or failed when ``CI=true``.

    :param purpose: what needs it, for the message (``"the conformance suite"``).
    """
    path = shutil.which(name)
    if path is None:
        message = f"{name} not found, needed by {purpose}"
        if IN_CI:
            pytest.fail(f"CI=true forbids skipping: {message}", pytrace=False)
        pytest.skip(message)
    return path
