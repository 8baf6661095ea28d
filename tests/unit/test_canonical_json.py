"""The fast canonical-JSON path must produce exactly what RFC 8785 prescribes."""

from __future__ import annotations

import random
import string

import pytest
import rfc8785

from tenantry.audit.events import args_hash, canonical_json

ALPHABET = string.printable + "éßü€中文\u2028\u2029\x00\x01\x1f\x7f\ufeff\U0001f600\ue000"


def random_value(rng: random.Random, depth: int = 0) -> object:
    kind = rng.randrange(9 if depth < 3 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.random() < 0.5
    if kind == 2:
        return rng.choice([0, 1, -1, 2**53 - 1, -(2**53) + 1, rng.randrange(-(10**12), 10**12)])
    if kind == 3:
        return rng.choice(
            [
                0.5,
                1.0,
                -0.0,
                1e21,
                1e-7,
                123.456,
                5e-324,
                0.0001,
                0.00012,
                1e16 - 0.5,
                2.5e15,
                rng.uniform(-1e6, 1e6),
                round(rng.uniform(0, 5000), 3),
                9.999e-5,
                1e-4 * 3,
            ]
        )
    if kind in (4, 5):
        return "".join(rng.choice(ALPHABET) for _ in range(rng.randrange(12)))
    if kind in (6, 7):
        return {
            "".join(rng.choice(ALPHABET) for _ in range(rng.randrange(1, 6))): random_value(rng, depth + 1)
            for _ in range(rng.randrange(5))
        }
    return [random_value(rng, depth + 1) for _ in range(rng.randrange(5))]


@pytest.mark.parametrize("seed", range(400))
def test_fast_path_matches_rfc8785(seed: int) -> None:
    value = random_value(random.Random(seed))
    assert canonical_json(value) == rfc8785.dumps(value)


@pytest.mark.parametrize(
    "value",
    [{"b": 1, "a": [1.0, "x"]}, {"\U0001f600": 1, "\ue000": 2}, {"n": 2**60}, {"f": float("nan")}, {"z": "\u2028"}],
)
def test_edge_cases(value: object) -> None:
    try:
        expected = rfc8785.dumps(value)
    except rfc8785.CanonicalizationError:
        with pytest.raises(ValueError):
            canonical_json(value)
        return
    assert canonical_json(value) == expected


def test_args_hash_is_stable_and_hides_the_arguments() -> None:
    assert args_hash({"b": 2, "a": "secret"}) == args_hash({"a": "secret", "b": 2})
    assert args_hash({}) == args_hash(None) == args_hash({})
    assert "secret" not in args_hash({"a": "secret"})
    assert args_hash({"x": float("nan")}).startswith("sha256:")


@pytest.mark.parametrize("seed", range(100))
def test_audit_records_are_rfc8785(seed: int) -> None:
    import pydantic_core

    from tenantry.audit.chain import encode_record
    from tenantry.audit.events import AuditEvent

    rng = random.Random(seed)
    text = lambda: "".join(rng.choice(ALPHABET) for _ in range(rng.randrange(8)))  # noqa: E731
    event = AuditEvent(
        event_type="tool_call",
        tenant_id="acme",
        result_status="ok",
        subject=text(),
        tool_name=text() or None,
        reason=text() or None,
        latency_ms=rng.choice([0.0, 0.0004, 0.001, 1.0, 2.5, rng.uniform(0, 10_000), None]),
        detail=rng.choice([{}, {"k": text(), "n": rng.randrange(100)}, {"f": 1.5e-7}]),
        created=rng.uniform(0, 2e9),
    )
    record = encode_record(event, rng.randrange(1, 10**9))
    assert record == rfc8785.dumps(pydantic_core.from_json(record))
