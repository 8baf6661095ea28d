"""The baseline: the same trivial tool served by the bare MCP SDK (MCPServer), no Tenantry."""

from __future__ import annotations

import argparse

import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings


def build(json_response: bool) -> object:
    server = MCPServer(name="bare")

    @server.tool()
    async def echo(text: str) -> str:
        """Return the text unchanged."""
        return text

    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True, allowed_hosts=["127.0.0.1:*"], allowed_origins=["http://127.0.0.1:*"]
    )
    return server.streamable_http_app(json_response=json_response, transport_security=security)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--sse", action="store_true")
    args = parser.parse_args()
    uvicorn.run(build(not args.sse), host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
