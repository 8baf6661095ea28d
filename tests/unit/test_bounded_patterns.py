"""Upstream schemas' regular expressions match in bounded time and without holding the interpreter."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

import pytest

from tenantry.core.errors import InvalidArguments
from tenantry.gateway.bounded_patterns import PatternTooSlow, bounded_validator, matching_budget, uses_patterns
from tenantry.gateway.tools import UpstreamToolMetadata, _AnyArguments

CATASTROPHIC = "^(a|a)*$"
SLOW = "a" * 60 + "!"  # both Python's re and the regex module would backtrack for hours


def errors(schema: dict[str, Any], instance: Any) -> list[str]:
    with matching_budget():
        return [e.message for e in bounded_validator(schema).iter_errors(instance)]


def timed(fn: Any) -> float:
    began = time.monotonic()
    with pytest.raises(PatternTooSlow):
        fn()
    return time.monotonic() - began


@pytest.mark.parametrize(
    "schema, instance",
    [
        ({"type": "string", "pattern": CATASTROPHIC}, SLOW),
        ({"type": "object", "patternProperties": {CATASTROPHIC: {}}}, {SLOW: 1}),
        ({"type": "object", "patternProperties": {CATASTROPHIC: {}}, "additionalProperties": False}, {SLOW: 1}),
        ({"type": "object", "propertyNames": {"pattern": CATASTROPHIC}}, {SLOW: 1}),
        ({"type": "object", "patternProperties": {CATASTROPHIC: {}}, "unevaluatedProperties": False}, {SLOW: 1}),
    ],
    ids=["pattern", "patternProperties", "additionalProperties", "propertyNames", "unevaluatedProperties"],
)
def test_a_catastrophic_pattern_stops_at_the_budget(schema: dict[str, Any], instance: Any) -> None:
    assert timed(lambda: errors(schema, instance)) < 1.0


@pytest.mark.parametrize(
    "schema, good, bad",
    [
        ({"type": "string", "pattern": CATASTROPHIC}, "aaaa", "b"),
        ({"type": "string", "pattern": "^(a+)+$"}, "aaaa", "a" * 60 + "!"),  # catastrophic for re only
        ({"type": "object", "patternProperties": {"^x": {"type": "integer"}}}, {"x1": 1}, {"x1": "one"}),
        ({"type": "object", "patternProperties": {"^x": {}}, "additionalProperties": False}, {"x1": 1}, {"y": 1}),
        ({"type": "object", "patternProperties": {"^x": {}}, "unevaluatedProperties": False}, {"x1": 1}, {"y": 1}),
    ],
    ids=["pattern", "catastrophic-for-re", "patternProperties", "additionalProperties", "unevaluatedProperties"],
)
def test_patterns_still_decide_as_json_schema_says(schema: dict[str, Any], good: Any, bad: Any) -> None:
    assert errors(schema, good) == []
    assert errors(schema, bad)


def test_matching_releases_the_interpreter() -> None:
    ticks = 0
    done = threading.Event()

    def validate() -> None:
        with contextlib.suppress(PatternTooSlow):
            errors({"type": "string", "pattern": CATASTROPHIC}, SLOW)
        done.set()

    thread = threading.Thread(target=validate)
    thread.start()
    while not done.is_set():
        ticks += 1
        time.sleep(0.001)
    thread.join()
    assert ticks >= 20  # the other thread kept running for the whole match (about 0.1 s)


def test_the_upstream_tool_refuses_with_a_clear_error_and_says_where_to_validate() -> None:
    schema = {"type": "object", "properties": {"code": {"type": "string", "pattern": CATASTROPHIC}}}
    metadata = UpstreamToolMetadata(arg_model=_AnyArguments).bind("up", schema)
    with pytest.raises(InvalidArguments, match="took too long"):
        metadata.validate_arguments({"code": SLOW})
    assert metadata.validate_arguments({"code": "aa"}) == {"code": "aa"}
    assert uses_patterns(schema)
    assert not uses_patterns({"type": "object", "properties": {"pattern": {"type": "string"}}})
