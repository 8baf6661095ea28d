"""A test app with one coroutine tool that sleeps: a call that stays in flight as long as a test needs."""

from __future__ import annotations

from textwrap import dedent

NAP_APP = dedent(
    '''
    import anyio
    import tenantry

    app = tenantry.App("naps")

    @app.tool()
    async def nap(ctx: tenantry.ToolContext, seconds: float) -> str:
        """Sleep, then say so."""
        await anyio.sleep(seconds)
        return "rested"
    '''
)
