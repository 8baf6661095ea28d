from __future__ import annotations

from mcp_types import CallToolResult, TextContent

from tenantry.framework.redaction import REDACTED, SecretRedactor


def test_every_occurrence_of_every_value_is_replaced() -> None:
    redactor = SecretRedactor(["sk-live-123456", "hunter22"])
    assert redactor.text("a sk-live-123456 b hunter22 c sk-live-123456") == f"a {REDACTED} b {REDACTED} c {REDACTED}"


def test_longer_values_win_over_their_prefixes() -> None:
    redactor = SecretRedactor(["abcd", "abcdefgh"])
    assert redactor.text("xabcdefghx") == f"x{REDACTED}x"


def test_values_are_matched_literally_not_as_patterns() -> None:
    redactor = SecretRedactor(["a.b*c"])
    assert redactor.text("aXbbbc a.b*c") == f"aXbbbc {REDACTED}"


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
