"""The tools, resources and prompts the official MCP conformance suite expects, as a ``tenantry.App``.

Served by a real Tenantry server to the tenant ``conformance``; every handler goes through
Tenantry's full enforcement path (authentication, ACL, schema validation, audit).
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Annotated, Any

from mcp.shared.exceptions import MCPError
from mcp_types import (
    MISSING_REQUIRED_CLIENT_CAPABILITY,
    AudioContent,
    ClientCapabilities,
    CreateMessageRequest,
    CreateMessageRequestParams,
    ElicitRequest,
    ElicitRequestFormParams,
    EmbeddedResource,
    ImageContent,
    InputRequiredResult,
    ListRootsRequest,
    MissingRequiredClientCapabilityErrorData,
    PromptMessage,
    SamplingCapability,
    SamplingMessage,
    TextContent,
    TextResourceContents,
)
from pydantic import Field

import tenantry

app = tenantry.App("tenantry-conformance-fixture")

PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
WAV_B64 = "UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAAB9AAACABAAZGF0YQIAAAA="

Ctx = tenantry.ToolContext


# -- content -------------------------------------------------------------------------------


@app.tool(description="Returns simple text")
async def test_simple_text() -> str:
    return "This is a simple text response for testing."


@app.tool(description="Returns image content")
async def test_image_content() -> list[ImageContent]:
    return [ImageContent(type="image", data=PNG_B64, mime_type="image/png")]


@app.tool(description="Returns audio content")
async def test_audio_content() -> list[AudioContent]:
    return [AudioContent(type="audio", data=WAV_B64, mime_type="audio/wav")]


@app.tool(description="Returns an embedded resource")
async def test_embedded_resource() -> list[EmbeddedResource]:
    return [
        EmbeddedResource(
            type="resource",
            resource=TextResourceContents(
                uri="test://embedded-resource", mime_type="text/plain", text="This is an embedded resource content."
            ),
        )
    ]


@app.tool(description="Returns text, image and resource content")
async def test_multiple_content_types() -> list[TextContent | ImageContent | EmbeddedResource]:
    return [
        TextContent(type="text", text="Multiple content types test:"),
        ImageContent(type="image", data=PNG_B64, mime_type="image/png"),
        EmbeddedResource(
            type="resource",
            resource=TextResourceContents(
                uri="test://mixed-content-resource",
                mime_type="application/json",
                text=json.dumps({"test": "data", "value": 123}),
            ),
        ),
    ]


@app.tool(description="Always fails")
async def test_error_handling() -> str:
    raise RuntimeError("This tool intentionally returns an error for testing")


# -- notifications -------------------------------------------------------------------------


@app.tool(description="Sends three info log notifications")
async def test_tool_with_logging(ctx: Ctx) -> str:
    for text in ("Tool execution started", "Tool processing data", "Tool execution completed"):
        await ctx.client.log("info", text)
        await asyncio.sleep(0.05)
    return "Tool with logging executed successfully"


@app.tool(description="Sends three progress notifications")
async def test_tool_with_progress(ctx: Ctx) -> str:
    for step in (0, 50, 100):
        await ctx.client.report_progress(step, 100, f"Completed step {step} of 100")
        await asyncio.sleep(0.05)
    return "Progress test completed"


# -- server-to-client requests (handshake era) ----------------------------------------------


@app.tool(description="Requests LLM sampling from the client")
async def test_sampling(ctx: Ctx, prompt: str) -> str:
    result = await ctx.client.sample(
        [SamplingMessage(role="user", content=TextContent(type="text", text=prompt))], max_tokens=100
    )
    text = getattr(result.content, "text", "No response")
    return f"LLM response: {text}"


def _form(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return schema


@app.tool(description="Requests user input (elicitation) from the client")
async def test_elicitation(ctx: Ctx, message: str) -> str:
    result = await ctx.client.elicit(
        message,
        _form(
            {
                "username": {"type": "string", "description": "User's response"},
                "email": {"type": "string", "description": "User's email address"},
            },
            ["username", "email"],
        ),
    )
    return f"User response: action={result.action}, content={json.dumps(result.content or {})}"


@app.tool(description="Elicitation with defaults for every primitive type (SEP-1034)")
async def test_elicitation_sep1034_defaults(ctx: Ctx) -> str:
    result = await ctx.client.elicit(
        "Please provide user information",
        _form(
            {
                "name": {"type": "string", "description": "User name", "default": "John Doe"},
                "age": {"type": "integer", "description": "User age", "default": 30},
                "score": {"type": "number", "description": "User score", "default": 95.5},
                "status": {
                    "type": "string",
                    "description": "User status",
                    "enum": ["active", "inactive", "pending"],
                    "default": "active",
                },
                "verified": {"type": "boolean", "description": "Verification status", "default": True},
            }
        ),
    )
    return f"Elicitation completed: action={result.action}, content={json.dumps(result.content or {})}"


@app.tool(description="Elicitation with the five enum variants (SEP-1330)")
async def test_elicitation_sep1330_enums(ctx: Ctx) -> str:
    titled = [
        {"const": f"value{i}", "title": t} for i, t in enumerate(("First Option", "Second Option", "Third Option"), 1)
    ]
    choices = [
        {"const": f"value{i}", "title": t} for i, t in enumerate(("First Choice", "Second Choice", "Third Choice"), 1)
    ]
    result = await ctx.client.elicit(
        "Please select values using different enum schema types",
        _form(
            {
                "untitledSingle": {"type": "string", "enum": ["option1", "option2", "option3"]},
                "titledSingle": {"type": "string", "oneOf": titled},
                "legacyEnum": {
                    "type": "string",
                    "enum": ["opt1", "opt2", "opt3"],
                    "enumNames": ["Option One", "Option Two", "Option Three"],
                },
                "untitledMulti": {
                    "type": "array",
                    "items": {"type": "string", "enum": ["option1", "option2", "option3"]},
                },
                "titledMulti": {"type": "array", "items": {"anyOf": choices}},
            },
            ["untitledSingle", "titledSingle", "legacyEnum", "untitledMulti", "titledMulti"],
        ),
    )
    return f"Elicitation completed: action={result.action}, content={json.dumps(result.content or {})}"


# -- 2026-07-28 multi-round-trip (InputRequiredResult) ----------------------------------------


def _elicit(message: str, properties: dict[str, Any], required: list[str]) -> ElicitRequest:
    return ElicitRequest(params=ElicitRequestFormParams(message=message, requested_schema=_form(properties, required)))


def _sample(text: str, max_tokens: int) -> CreateMessageRequest:
    return CreateMessageRequest(
        params=CreateMessageRequestParams(
            messages=[SamplingMessage(role="user", content=TextContent(type="text", text=text))], max_tokens=max_tokens
        )
    )


def _answer(ctx: Ctx, key: str) -> Any:
    return (ctx.client.input_responses or {}).get(key)


def _field(answer: Any, name: str) -> Any:
    content = getattr(answer, "content", None) or {}
    return content.get(name) if isinstance(content, dict) else None


@app.tool(description="MRTR: one elicitation input request")
async def test_input_required_result_elicitation(ctx: Ctx) -> str | InputRequiredResult:
    answer = _answer(ctx, "user_name")
    if answer is None or getattr(answer, "action", None) != "accept" or not _field(answer, "name"):
        return InputRequiredResult(
            input_requests={"user_name": _elicit("What is your name?", {"name": {"type": "string"}}, ["name"])}
        )
    return f"Hello, {_field(answer, 'name')}!"


@app.tool(description="MRTR: one sampling input request")
async def test_input_required_result_sampling(ctx: Ctx) -> str | InputRequiredResult:
    answer = _answer(ctx, "capital_question")
    if answer is None:
        return InputRequiredResult(input_requests={"capital_question": _sample("What is the capital of France?", 100)})
    return f"Sampling response: {getattr(getattr(answer, 'content', None), 'text', '')}"


@app.tool(description="MRTR: one roots/list input request")
async def test_input_required_result_list_roots(ctx: Ctx) -> str | InputRequiredResult:
    answer = _answer(ctx, "client_roots")
    if answer is None:
        return InputRequiredResult(input_requests={"client_roots": ListRootsRequest()})
    return "Client roots: " + ", ".join(str(r.uri) for r in getattr(answer, "roots", []))


@app.tool(description="MRTR: requestState round trip")
async def test_input_required_result_request_state(ctx: Ctx) -> str | InputRequiredResult:
    if _answer(ctx, "confirm") is None or ctx.client.request_state != "round-1":
        return InputRequiredResult(
            input_requests={"confirm": _elicit("Please confirm", {"ok": {"type": "boolean"}}, ["ok"])},
            request_state="round-1",
        )
    return "Confirmed: state-ok"


@app.tool(description="MRTR: three input requests at once")
async def test_input_required_result_multiple_inputs(ctx: Ctx) -> str | InputRequiredResult:
    keys = ("user_name", "greeting", "client_roots")
    if ctx.client.request_state != "multi" or any(_answer(ctx, k) is None for k in keys):
        return InputRequiredResult(
            input_requests={
                "user_name": _elicit("What is your name?", {"name": {"type": "string"}}, ["name"]),
                "greeting": _sample("Generate a greeting", 50),
                "client_roots": ListRootsRequest(),
            },
            request_state="multi",
        )
    return f"All inputs received for {_field(_answer(ctx, 'user_name'), 'name')}"


@app.tool(description="MRTR: multi-round with evolving requestState")
async def test_input_required_result_multi_round(ctx: Ctx) -> str | InputRequiredResult:
    state = ctx.client.request_state
    if state == "round-2" and _answer(ctx, "step2") is not None:
        return f"Done: color={_field(_answer(ctx, 'step2'), 'color')}"
    if state == "round-1" and _answer(ctx, "step1") is not None:
        return InputRequiredResult(
            input_requests={
                "step2": _elicit("Step 2: What is your favorite color?", {"color": {"type": "string"}}, ["color"])
            },
            request_state="round-2",
        )
    return InputRequiredResult(
        input_requests={"step1": _elicit("Step 1: What is your name?", {"name": {"type": "string"}}, ["name"])},
        request_state="round-1",
    )


@app.tool(description="MRTR: integrity-protected requestState")
async def test_input_required_result_tampered_state(ctx: Ctx) -> str | InputRequiredResult:
    if ctx.client.request_state != "sealed" or _answer(ctx, "confirm") is None:
        return InputRequiredResult(
            input_requests={"confirm": _elicit("Please confirm", {"ok": {"type": "boolean"}}, ["ok"])},
            request_state="sealed",
        )
    return "State verified"


@app.tool(description="MRTR: only requests what the client declared")
async def test_input_required_result_capabilities(ctx: Ctx) -> str | InputRequiredResult:
    if ctx.client.input_responses:
        return "Capabilities respected"
    caps = ctx.client.capabilities
    requests: dict[str, Any] = {}
    if caps is not None and caps.elicitation is not None:
        requests["user_name"] = _elicit("What is your name?", {"name": {"type": "string"}}, ["name"])
    if caps is not None and caps.sampling is not None:
        requests["greeting"] = _sample("Generate a greeting", 50)
    if caps is not None and caps.roots is not None:
        requests["client_roots"] = ListRootsRequest()
    return InputRequiredResult(input_requests=requests) if requests else "No input capabilities declared"


@app.tool(description="Asks for elicitation via InputRequiredResult (never a standalone request)")
async def test_streaming_elicitation(ctx: Ctx) -> str | InputRequiredResult:
    answer = _answer(ctx, "user_name")
    if answer is None:
        return InputRequiredResult(
            input_requests={"user_name": _elicit("What is your name?", {"name": {"type": "string"}}, ["name"])}
        )
    return f"Hello, {_field(answer, 'name')}!"


@app.tool(description="Requires the client 'sampling' capability (SEP-2575 -32021 probe)")
async def test_missing_capability(ctx: Ctx) -> str:
    caps = ctx.client.capabilities
    if caps is None or caps.sampling is None:
        raise MCPError(
            code=MISSING_REQUIRED_CLIENT_CAPABILITY,
            message="Client did not declare required capability 'sampling'",
            data=MissingRequiredClientCapabilityErrorData(
                required_capabilities=ClientCapabilities(sampling=SamplingCapability())
            ).model_dump(by_alias=True, mode="json", exclude_none=True),
        )
    return "sampling capability present"


@app.tool(description="Emits a log message (suppressed unless the request opted in)")
async def test_logging_tool(ctx: Ctx) -> str:
    await ctx.client.log("info", "test_logging_tool log line")
    return "logged"


@app.tool(description="Tool with a parameter mirrored into the Mcp-Param-Region header (SEP-2243)")
async def test_custom_headers(region: Annotated[str, Field(json_schema_extra={"x-mcp-header": "Region"})]) -> str:
    return f"region={region}"


# -- resources -----------------------------------------------------------------------------


@app.resource("test://static-text", name="static-text", description="Static text resource", mime_type="text/plain")
async def static_text() -> str:
    return "This is the content of the static text resource."


@app.resource("test://static-binary", name="static-binary", description="Static binary resource", mime_type="image/png")
async def static_binary() -> bytes:
    return base64.b64decode(PNG_B64)


@app.resource(
    "test://template/{id}/data", name="template", description="Template resource", mime_type="application/json"
)
async def template_data(id: str) -> str:
    return json.dumps({"id": id, "templateTest": True, "data": f"Data for ID: {id}"})


@app.resource(
    "test://watched-resource", name="watched-resource", description="Subscribable resource", mime_type="text/plain"
)
async def watched() -> str:
    return "Watched resource content"


# -- prompts -------------------------------------------------------------------------------


def _user(content: Any) -> PromptMessage:
    return PromptMessage(role="user", content=content)


@app.prompt(description="A simple prompt without arguments")
async def test_simple_prompt() -> list[PromptMessage]:
    return [_user(TextContent(type="text", text="This is a simple prompt for testing."))]


@app.prompt(description="A prompt with required arguments")
async def test_prompt_with_arguments(arg1: str, arg2: str) -> list[PromptMessage]:
    return [_user(TextContent(type="text", text=f"Prompt with arguments: arg1='{arg1}', arg2='{arg2}'"))]


@app.prompt(description="A prompt with an embedded resource")
async def test_prompt_with_embedded_resource(resourceUri: str) -> list[PromptMessage]:
    return [
        _user(
            EmbeddedResource(
                type="resource",
                resource=TextResourceContents(
                    uri=resourceUri, mime_type="text/plain", text="Embedded resource content."
                ),
            )
        ),
        _user(TextContent(type="text", text="Please process the embedded resource above.")),
    ]


@app.prompt(description="A prompt with image content")
async def test_prompt_with_image() -> list[PromptMessage]:
    return [
        _user(ImageContent(type="image", data=PNG_B64, mime_type="image/png")),
        _user(TextContent(type="text", text="Please analyze the image above.")),
    ]


@app.prompt(description="MRTR on prompts/get")
async def test_input_required_result_prompt(ctx: Ctx) -> list[PromptMessage] | InputRequiredResult:
    answer = _answer(ctx, "user_context")
    if answer is None:
        return InputRequiredResult(
            input_requests={
                "user_context": _elicit(
                    "What context should the prompt use?", {"context": {"type": "string"}}, ["context"]
                )
            }
        )
    return [_user(TextContent(type="text", text=f"Context: {_field(answer, 'context')}"))]
