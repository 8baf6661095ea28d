from __future__ import annotations

import pytest

from tenantry.core.paths import PathRejected, normalize_path, normalize_prefix, within_prefix


@pytest.mark.parametrize(
    ("path", "parts"),
    [
        ("", ()),
        ("a", ("a",)),
        ("a/b/c.txt", ("a", "b", "c.txt")),
        ("./a//b/", ("a", "b")),
        ("reports/q3.txt", ("reports", "q3.txt")),
        ("with space/ünïcode.md", ("with space", "ünïcode.md")),
        ("a..b/c", ("a..b", "c")),
    ],
)
def test_valid_paths_normalise_to_components(path: str, parts: tuple[str, ...]) -> None:
    assert normalize_path(path) == parts


@pytest.mark.parametrize(
    "path",
    [
        "..",
        "../globex",
        "a/../../globex",
        "a/..",
        "/etc/passwd",
        "//server/share",
        "C:/Windows",
        "c:relative",
        "~/secrets",
        "a\\..\\b",
        "..\\globex",
        "a\x00b",
        "a\nb",
        "%2e%2e/globex",
        "%2E%2E%2Fglobex",
        "a%2fb",
        "a%5cb",
        "a%00",
        "%252e%252e/x",
        "\uff0e\uff0e/globex",  # fullwidth full stops
        "a\uff0fb",  # fullwidth solidus
        "\u2024\u2024/x",  # one dot leaders
        "x" * 2000,
        "a/" + "b" * 300,
    ],
)
def test_escaping_paths_are_rejected(path: str) -> None:
    with pytest.raises(PathRejected):
        normalize_path(path)


def test_prefix_matching_is_component_wise() -> None:
    assert within_prefix(("acme", "x"), "acme")
    assert not within_prefix(("acme-evil", "x"), "acme")
    assert not within_prefix(("acmex",), "acme")
    assert within_prefix(("anything",), None)
    assert within_prefix(("reports", "2026", "q1"), "reports/2026")
    assert not within_prefix(("reports",), "reports/2026")


def test_prefix_is_canonicalised() -> None:
    assert normalize_prefix("./reports//2026/") == "reports/2026"
    with pytest.raises(PathRejected):
        normalize_prefix("../other")
