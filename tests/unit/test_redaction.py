from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from mcp_types import CallToolResult, TextContent

from tenantry.framework.redaction import REDACTED, RedactingChannel, SecretRedactor


def test_every_occurrence_of_every_value_is_replaced() -> None:
    redactor = SecretRedactor(["sk-live-123456", "hunter22"])
    assert redactor.text("a sk-live-123456 b hunter22 c sk-live-123456") == f"a {REDACTED} b {REDACTED} c {REDACTED}"


def test_longer_values_win_over_their_prefixes() -> None:
    redactor = SecretRedactor(["abcd", "abcdefgh"])
    assert redactor.text("xabcdefghx") == f"x{REDACTED}x"


def test_values_are_matched_literally_not_as_patterns() -> None:
    redactor = SecretRedactor(["a.b*c"])
    assert redactor.text("aXbbbc a.b*c") == f"aXbbbc {REDACTED}"


def test_a_value_spliced_together_by_another_replacement_is_replaced_too() -> None:
    # Replacing "XY" makes "a[redacted]b", in which the marker's end and "b" spell "d]b".
    redactor = SecretRedactor(["XY", "d]b"])
    assert redactor.text("aXYb") == f"a{REDACTED[:-2]}{REDACTED}"
    assert redactor.data(b"aXYb") == f"a{REDACTED[:-2]}{REDACTED}".encode()
    assert redactor.text("ad]b") == f"a{REDACTED}"  # the control: found at once, one pass


def test_a_value_inside_the_marker_is_replaced_once_and_does_not_grow_the_text() -> None:
    redactor = SecretRedactor(["a"])
    assert redactor.text("a-a") == f"{REDACTED}-{REDACTED}"  # the marker's own "a" is left alone
    assert len(redactor.text("a" * 10_000)) == len(REDACTED) * 10_000
    assert redactor.data(b"a-a") == f"{REDACTED}-{REDACTED}".encode()


def test_searching_megabytes_for_several_values_costs_about_one_search_each() -> None:
    """A regex alternation of the values (no common literal prefix) tried each value at every
    position: 43 ms for 4 MB and four values, held on the event loop per result. The fastest of
    three against ``str.find`` of the same values, so that a loaded host slows both alike."""
    text = "x" * 4_000_000
    values = ["acme-CRM-tok-AAAA1111", "sk_live_abcdefgh12345678", "hunter2hunter2", "xoxb-1234-5678"]
    redactor = SecretRedactor(values)
    assert redactor.text(text + values[2]) == text + REDACTED  # positive control

    def fastest(work: Callable[[], object]) -> float:
        times = []
        for _ in range(3):
            began = time.perf_counter()
            work()
            times.append(time.perf_counter() - began)
        return min(times)

    redacting = fastest(lambda: redactor.text(text))
    finding = fastest(lambda: [text.find(v) for v in values])
    assert redacting < 3 * finding + 0.002, (redacting, finding)


def test_nested_structures_and_keys_are_redacted() -> None:
    redactor = SecretRedactor(["s3cr3t-value"])
    value = {"k": ["x", {"s3cr3t-value": "pre s3cr3t-value post"}], "n": 3}
    assert redactor.value(value) == {"k": ["x", {REDACTED: f"pre {REDACTED} post"}], "n": 3}


def test_an_mcp_result_is_redacted_in_content_and_structured_content() -> None:
    redactor = SecretRedactor(["mail-key-0001"])
    result = CallToolResult(
        content=[TextContent(type="text", text="key=mail-key-0001")],
        structured_content={"echo": "mail-key-0001"},
    )
    clean = redactor.model(result)
    assert "mail-key-0001" not in clean.model_dump_json()
    assert clean.content[0].text == f"key={REDACTED}"  # type: ignore[union-attr]


def test_without_values_nothing_changes_and_the_same_object_is_returned() -> None:
    result = CallToolResult(content=[TextContent(type="text", text="hello")])
    assert SecretRedactor([]).model(result) is result
    assert not SecretRedactor([""])


def test_repr_never_shows_values() -> None:
    assert "topsecret" not in repr(SecretRedactor(["topsecret"]))


def test_values_that_json_escapes_are_still_found() -> None:
    redactor = SecretRedactor(['quo"te\\back', "ünïcødé-key"])
    result = CallToolResult(content=[TextContent(type="text", text='x quo"te\\back y ünïcødé-key')])
    text = redactor.model(result).content[0].text  # type: ignore[union-attr]
    assert text == f"x {REDACTED} y {REDACTED}"


async def _fixed(redactor: SecretRedactor) -> SecretRedactor:
    return redactor


class _RecordingChannel:
    capabilities = None
    input_responses = None
    request_state = None

    def __init__(self) -> None:
        self.sent: list[object] = []

    async def report_progress(self, progress: float, total: float | None = None, message: str | None = None) -> None:
        self.sent.append(message)

    async def log(self, level: str, data: object) -> None:
        self.sent.append(data)

    async def elicit(self, message: str, schema: dict) -> None:
        self.sent.append((message, schema))


@pytest.mark.anyio
async def test_notifications_and_elicitation_a_tool_sends_mid_call_are_redacted() -> None:
    inner = _RecordingChannel()
    redactor = SecretRedactor(["sk-notify-0001"])
    channel = RedactingChannel(inner, lambda: _fixed(redactor))  # type: ignore[arg-type]
    await channel.log("info", {"msg": "key sk-notify-0001"})
    await channel.report_progress(0.5, 1, "using sk-notify-0001")
    await channel.elicit("confirm sk-notify-0001?", {"title": "sk-notify-0001"})
    assert "sk-notify-0001" not in repr(inner.sent)
    assert inner.sent[0] == {"msg": f"key {REDACTED}"}


def test_errors_are_redacted_in_message_and_data() -> None:
    from mcp.shared.exceptions import MCPError

    from tenantry.core.errors import UsageError

    redactor = SecretRedactor(["sk-err-0001"])
    usage = redactor.error(UsageError("bad sk-err-0001", data={"k": "sk-err-0001"}))
    assert usage.message == f"bad {REDACTED}" and usage.data == {"k": REDACTED} and "sk-err" not in str(usage)
    protocol = redactor.error(MCPError(code=-32602, message="no sk-err-0001"))
    assert "sk-err-0001" not in str(protocol)
    assert redactor.data(b"x=sk-err-0001") == b"x=" + REDACTED.encode()
