"""The trivial tool both sides of bench/throughput.py serve."""

from __future__ import annotations

import tenantry

app = tenantry.App("bench")


@app.tool()
async def echo(text: str) -> str:
    """Return the text unchanged."""
    return text
