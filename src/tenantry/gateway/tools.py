"""An upstream tool as a :class:`~tenantry.framework.app.ToolDefinition`: validated against the
upstream's own ``inputSchema``, its result passed on as the upstream gave it (then redacted and
size-checked by the dispatcher like any other)."""

from __future__ import annotations

from typing import Any

from mcp.server.mcpserver.utilities.func_metadata import ArgModelBase, FuncMetadata
from mcp_types import CallToolResult, InputRequiredResult, TextContent
from pydantic import ConfigDict, PrivateAttr

from tenantry.core.errors import InvalidArguments, UsageError
from tenantry.framework.app import ToolDefinition
from tenantry.gateway.bounded_patterns import PatternTooSlow, bounded_validator, matching_budget, uses_patterns
from tenantry.gateway.items import served_content
from tenantry.gateway.naming import Exposed

__all__ = ["upstream_tool_definition", "UpstreamToolMetadata"]


class _AnyArguments(ArgModelBase):
    model_config = ConfigDict(extra="allow")


class UpstreamToolMetadata(FuncMetadata):
    """Argument validation by the upstream's JSON schema; results taken as the upstream's own."""

    _validator: Any = PrivateAttr(default=None)
    _upstream: str = PrivateAttr(default="")

    def bind(self, upstream: str, schema: dict[str, Any]) -> UpstreamToolMetadata:
        self._validator = bounded_validator(schema)
        self._upstream = upstream
        return self

    def validate_arguments(self, arguments_to_validate: dict[str, Any]) -> dict[str, Any]:
        problems = []
        try:
            with matching_budget():
                errors = list(self._validator.iter_errors(arguments_to_validate))
        except PatternTooSlow:
            raise InvalidArguments(
                "invalid arguments: matching them against the upstream's patterns took too long"
            ) from None
        for error in sorted(errors, key=lambda e: list(e.path))[:5]:
            where = ".".join(str(part) for part in error.path) or "arguments"
            problems.append(f"{where}: {error.message[:200]}")
        if problems:
            raise InvalidArguments("invalid arguments: " + "; ".join(problems))
        return arguments_to_validate

    def convert_result(self, result: Any) -> CallToolResult | InputRequiredResult:
        if not isinstance(result, CallToolResult):
            return CallToolResult(content=[TextContent(type="text", text="the upstream returned no result")])
        # The upstream's _meta is not passed on: it could imitate the gateway's own error codes.
        return CallToolResult(
            content=[served_content(self._upstream, block) for block in result.content],
            structured_content=result.structured_content,
            is_error=result.is_error,
        )


async def _not_in_process(**_: Any) -> None:
    raise UsageError("an upstream tool runs through the gateway's upstream invoker, not in this process")


def upstream_tool_definition(upstream: str, exposed: Exposed, tenants: frozenset[str] | None) -> ToolDefinition:
    tool = exposed.tool
    metadata = UpstreamToolMetadata(arg_model=_AnyArguments, output_schema=tool.output_schema).bind(
        upstream, tool.input_schema
    )
    description = tool.description or ""
    return ToolDefinition(
        name=exposed.name,
        fn=_not_in_process,
        description=description[:10_000],
        metadata=metadata,
        input_schema=tool.input_schema,
        context_param=None,
        tenants=tenants,
        resource_arguments={},
        title=tool.title,
        annotations=tool.annotations,
        argument_names=frozenset(),
        validate_off_loop=uses_patterns(tool.input_schema),
        upstream=upstream,
        upstream_name=exposed.upstream_tool,
    )
