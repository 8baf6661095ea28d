"""Gateway mode: Tenantry in front of existing MCP servers (upstreams).

An upstream's tools, resources, resource templates and prompts are registered in the served
:class:`~tenantry.framework.app.App` under ``<upstream>__<name>`` (resource URIs under
``upstream://<upstream>/<its own URI>``) and run through
:class:`~tenantry.gateway.invoker.UpstreamInvoker`, so admission (grants, token, schema, limits)
and outcome (redaction, audit, metrics) are the dispatcher's, exactly as for native ones. See
``docs/gateway.md``.
"""

from __future__ import annotations

__all__: list[str] = []
