"""An upstream tool as a :class:`~tenantry.framework.app.ToolDefinition`: validated against the
upstream's own ``inputSchema``, its result passed on as the upstream gave it (then redacted and
size-checked by the dispatcher like any other)."""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator, validators
from mcp.server.mcpserver.utilities.func_metadata import ArgModelBase, FuncMetadata
from mcp_types import CallToolResult, InputRequiredResult, TextContent
from pydantic import ConfigDict, PrivateAttr

from tenantry.core.errors import InvalidArguments, UsageError
from tenantry.framework.app import ToolDefinition
from tenantry.gateway.naming import Exposed

__all__ = ["upstream_tool_definition", "UpstreamToolMetadata"]


class _AnyArguments(ArgModelBase):
    model_config = ConfigDict(extra="allow")


class UpstreamToolMetadata(FuncMetadata):
    """Argument validation by the upstream's JSON schema; results taken as the upstream's own."""

    _validator: Any = PrivateAttr(default=None)

    def bind(self, schema: dict[str, Any]) -> UpstreamToolMetadata:
        # No remote $ref is ever fetched: the referencing registry is empty.
        self._validator = validators.validator_for(schema, default=Draft202012Validator)(schema)
        return self

    def validate_arguments(self, arguments_to_validate: dict[str, Any]) -> dict[str, Any]:
        problems = []
        for error in sorted(self._validator.iter_errors(arguments_to_validate), key=lambda e: list(e.path))[:5]:
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
            content=result.content, structured_content=result.structured_content, is_error=result.is_error
        )


async def _not_in_process(**_: Any) -> None:
    raise UsageError("an upstream tool runs through the gateway's upstream invoker, not in this process")


def upstream_tool_definition(upstream: str, exposed: Exposed, tenants: frozenset[str] | None) -> ToolDefinition:
    tool = exposed.tool
    metadata = UpstreamToolMetadata(arg_model=_AnyArguments, output_schema=tool.output_schema).bind(tool.input_schema)
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
        upstream=upstream,
        upstream_name=exposed.upstream_tool,
    )
