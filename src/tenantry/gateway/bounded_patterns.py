"""An upstream's JSON Schema, with its regular expressions matched in bounded time.

jsonschema matches ``pattern`` and ``patternProperties`` with Python's ``re``: a backtracking
engine that holds the interpreter while it runs. A careless upstream pattern such as
``^(a+)+$`` and a 27-character argument then stall every tenant's requests for seconds, and
each further character doubles it. Here those keywords (and ``additionalProperties``, which
consults ``patternProperties``) match with the ``regex`` module instead, which releases the
interpreter while it matches and takes a timeout. One validation may spend
:data:`MATCH_BUDGET` seconds matching in all; past it the validation fails with
:class:`PatternTooSlow`, and the call is refused.

``unevaluatedProperties`` consults ``patternProperties`` inside jsonschema's own code, out of
reach of this module: there, every key of the arguments is first matched here against every
``patternProperties`` pattern of the schema, within the same budget, before jsonschema runs.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import regex
from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError

__all__ = ["MATCH_BUDGET", "PatternTooSlow", "bounded_validator", "matching_budget", "uses_patterns"]

MATCH_BUDGET = 0.1
"""Seconds of pattern matching one validation may spend, all patterns together."""

_DEADLINE: ContextVar[float | None] = ContextVar("tenantry_pattern_deadline", default=None)


class PatternTooSlow(Exception):
    """A pattern of the schema did not finish matching the arguments within the budget."""


@contextmanager
def matching_budget() -> Iterator[None]:
    """Within it, the patterns matched share one :data:`MATCH_BUDGET`."""
    token = _DEADLINE.set(time.monotonic() + MATCH_BUDGET)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


@functools.lru_cache(maxsize=4096)
def _compiled(pattern: str) -> regex.Pattern[str]:
    return regex.compile(pattern)


def _search(pattern: str, text: str) -> bool:
    deadline = _DEADLINE.get()
    remaining = MATCH_BUDGET if deadline is None else deadline - time.monotonic()
    if remaining <= 0:
        raise PatternTooSlow()
    try:
        compiled = _compiled(pattern)
    except regex.error:
        return False  # an invalid pattern matches nothing (the upstream's schema is wrong)
    try:
        return compiled.search(text, timeout=remaining, concurrent=True) is not None
    except TimeoutError:
        raise PatternTooSlow() from None


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not _search(pattern, instance):
        yield ValidationError(f"{instance[:100]!r} does not match {pattern[:200]!r}")


def _pattern_properties(validator: Any, patterns: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for key, value in instance.items():
            if _search(pattern, key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional_properties(validator: Any, allowed: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    properties = schema.get("properties", {})
    patterns = list(schema.get("patternProperties", {}))
    extras = [
        key for key in instance if key not in properties and not any(_search(pattern, key) for pattern in patterns)
    ]
    if validator.is_type(allowed, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], allowed, path=extra)
    elif not allowed and extras:
        listed = ", ".join(repr(extra[:100]) for extra in sorted(extras)[:5])
        yield ValidationError(f"additional properties are not allowed ({listed} unexpected)")


def _objects(value: Any) -> Iterator[dict[str, Any]]:
    """Every JSON object in ``value``, nested ones included."""
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            yield node
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def uses_patterns(schema: Any) -> bool:
    """Whether validating against ``schema`` may match regular expressions."""
    return any(
        isinstance(node.get("pattern"), str) or isinstance(node.get("patternProperties"), dict)
        for node in _objects(schema)
    )


def bounded_validator(schema: dict[str, Any]) -> Any:
    """A validator for ``schema`` (its own draft, default 2020-12) whose patterns match in bounded
    time (see the module). It never fetches a remote ``$ref``: its registry is empty."""
    base = validators.validator_for(schema, default=Draft202012Validator)
    keywords: dict[str, Any] = {}
    for name, keyword in (
        ("pattern", _pattern),
        ("patternProperties", _pattern_properties),
        ("additionalProperties", _additional_properties),
    ):
        if name in base.VALIDATORS:
            keywords[name] = keyword
    original = base.VALIDATORS.get("unevaluatedProperties")
    key_patterns = [
        pattern
        for node in _objects(schema)
        if isinstance(node.get("patternProperties"), dict)
        for pattern in node["patternProperties"]
        if isinstance(pattern, str)
    ]
    if original is not None and key_patterns:

        def unevaluated(validator: Any, value: Any, instance: Any, subschema: Any) -> Iterator[ValidationError]:
            for node in _objects(instance):
                for key in node:
                    for pattern in key_patterns:
                        _search(pattern, key)  # raises if the key would take too long to match
            yield from original(validator, value, instance, subschema)

        keywords["unevaluatedProperties"] = unevaluated
    return validators.extend(base, keywords)(schema)
