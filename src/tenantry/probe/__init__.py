"""``tenantry probe``: the isolation suite as a black-box client of any MCP deployment.

A client only: it imports nothing of the server, so what it proves holds for the deployment
as reached over HTTP, Tenantry or not.
"""

from __future__ import annotations

from tenantry.probe.context import ProbeOptions
from tenantry.probe.results import PROBE_FORMAT, Check, ProbeRun, Status
from tenantry.probe.runner import run_probe

__all__ = ["ProbeOptions", "ProbeRun", "Check", "Status", "PROBE_FORMAT", "run_probe"]
