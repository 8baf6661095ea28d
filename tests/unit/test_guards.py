from __future__ import annotations

import json

from tenantry.server.guards import json_depth_exceeds


def nested(depth: int) -> bytes:
    return ("[" * depth + "]" * depth).encode()


def test_depth_limit_counts_real_nesting() -> None:
    assert not json_depth_exceeds(nested(64), 64)
    assert json_depth_exceeds(nested(65), 64)
    assert json_depth_exceeds(('{"a":' * 100 + "1" + "}" * 100).encode(), 64)


def test_brackets_inside_strings_do_not_count() -> None:
    body = json.dumps({"text": "[" * 500 + '\\"' + "{" * 500}).encode()
    assert not json_depth_exceeds(body, 8)


def test_many_siblings_are_not_depth() -> None:
    assert not json_depth_exceeds(json.dumps([[1]] * 1000).encode(), 4)
