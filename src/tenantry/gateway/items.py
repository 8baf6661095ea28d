"""An upstream's resources, resource templates and prompts as :mod:`tenantry.framework.app`
definitions, and their answers as Tenantry serves them.

A definition only describes the item (its grantable name, exposed URI, prompt arguments); reading
or rendering it goes through :class:`~tenantry.gateway.invoker.UpstreamInvoker`, after the
dispatcher's admission, and its answer through the dispatcher's outcome (size check, redaction,
audit), as for an upstream tool.
"""

from __future__ import annotations

from typing import Any

from mcp.server.mcpserver.utilities.func_metadata import ArgModelBase, FuncMetadata
from mcp_types import (
    AudioContent,
    BlobResourceContents,
    EmbeddedResource,
    GetPromptResult,
    ImageContent,
    Prompt,
    PromptMessage,
    ReadResourceResult,
    Resource,
    ResourceLink,
    ResourceTemplate,
    TextContent,
    TextResourceContents,
)
from pydantic import ConfigDict, PrivateAttr

from tenantry.core.errors import InvalidArguments, UsageError
from tenantry.core.upstreams import exposed_uri
from tenantry.framework.app import PromptDefinition, ResourceDefinition
from tenantry.gateway.naming import ExposedItem

__all__ = [
    "upstream_resource_definition",
    "upstream_prompt_definition",
    "served_read_result",
    "served_prompt_result",
    "served_content",
    "UpstreamPromptMetadata",
]

_MAX_PROMPT_ARGUMENTS = 100


class _AnyArguments(ArgModelBase):
    model_config = ConfigDict(extra="allow")


class UpstreamPromptMetadata(FuncMetadata):
    """Prompt arguments checked against the upstream's declared ones: strings, required ones
    present, no undeclared ones (nothing the upstream did not ask for is sent to it)."""

    _declared: dict[str, bool] = PrivateAttr(default_factory=dict)

    def bind(self, arguments: tuple[tuple[str, bool, str | None], ...]) -> UpstreamPromptMetadata:
        self._declared = {name: required for name, required, _ in arguments}
        return self

    def validate_arguments(self, arguments_to_validate: dict[str, Any]) -> dict[str, Any]:
        problems = [
            f"{name[:100]}: unexpected argument" for name in arguments_to_validate if name not in self._declared
        ]
        problems += [
            f"{name}: required" for name, req in self._declared.items() if req and name not in arguments_to_validate
        ]
        problems += [
            f"{name[:100]}: must be a string"
            for name, value in arguments_to_validate.items()
            if not isinstance(value, str)
        ]
        if problems:
            raise InvalidArguments("invalid arguments: " + "; ".join(problems[:5]))
        return arguments_to_validate


async def _not_in_process(**_: Any) -> None:
    raise UsageError("an upstream resource or prompt is served through the gateway's upstream invoker")


def upstream_resource_definition(
    upstream: str, exposed: ExposedItem, tenants: frozenset[str] | None
) -> ResourceDefinition:
    item = exposed.item
    assert isinstance(item, Resource | ResourceTemplate) and exposed.uri is not None
    return ResourceDefinition(
        name=exposed.name,
        uri=exposed.uri,
        fn=_not_in_process,
        description=(item.description or "")[:10_000],
        mime_type=(item.mime_type or "")[:200],
        context_param=None,
        tenants=tenants,
        title=item.title[:500] if item.title else None,
        template=exposed.template,
        upstream=upstream,
        upstream_name=exposed.upstream_name,
    )


def upstream_prompt_definition(upstream: str, exposed: ExposedItem, tenants: frozenset[str] | None) -> PromptDefinition:
    item = exposed.item
    assert isinstance(item, Prompt)
    arguments = tuple(
        (a.name, bool(a.required), a.description[:2000] if a.description else None)
        for a in (item.arguments or [])[:_MAX_PROMPT_ARGUMENTS]
    )
    return PromptDefinition(
        name=exposed.name,
        fn=_not_in_process,
        description=(item.description or "")[:10_000],
        metadata=UpstreamPromptMetadata(arg_model=_AnyArguments).bind(arguments),
        context_param=None,
        tenants=tenants,
        arguments=arguments,
        title=item.title[:500] if item.title else None,
        upstream=upstream,
        upstream_name=exposed.upstream_name,
    )


def served_read_result(upstream: str, result: ReadResourceResult) -> ReadResourceResult:
    """The upstream's answer with every content's URI in its exposed form (so it names this
    upstream, as the request did) and without the upstream's ``_meta`` (it could imitate the
    gateway's own error codes)."""
    contents: list[TextResourceContents | BlobResourceContents] = []
    for content in result.contents:
        uri = exposed_uri(upstream, content.uri)
        if isinstance(content, BlobResourceContents):
            contents.append(BlobResourceContents(uri=uri, mime_type=content.mime_type, blob=content.blob))
        else:
            contents.append(TextResourceContents(uri=uri, mime_type=content.mime_type, text=content.text))
    return ReadResourceResult(contents=contents)


def served_prompt_result(upstream: str, result: GetPromptResult) -> GetPromptResult:
    """The upstream's prompt without its ``_meta``, the resources its messages name in their exposed form."""
    messages = [PromptMessage(role=m.role, content=served_content(upstream, m.content)) for m in result.messages]
    return GetPromptResult(description=result.description, messages=messages)


Content = TextContent | ImageContent | AudioContent | ResourceLink | EmbeddedResource


def served_content(upstream: str, content: Content) -> Content:
    """One content block of an upstream's answer as Tenantry serves it: a resource link or an
    embedded resource names the resource by its exposed URI (``upstream://U/...``), so a client
    that follows it reads through Tenantry, under its own grants, from the same upstream."""
    if isinstance(content, ResourceLink):
        return content.model_copy(update={"uri": exposed_uri(upstream, content.uri), "meta": None})
    if isinstance(content, EmbeddedResource):
        inner = content.resource.model_copy(update={"uri": exposed_uri(upstream, content.resource.uri), "meta": None})
        return content.model_copy(update={"resource": inner, "meta": None})
    return content
