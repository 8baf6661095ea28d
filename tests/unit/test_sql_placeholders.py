from __future__ import annotations

import pytest

from tenantry.core.errors import UsageError
from tenantry.scoping.sql.placeholders import qmark_to_pyformat


@pytest.mark.parametrize(
    ("sql", "expected", "count"),
    [
        ("SELECT * FROM t WHERE a = ? AND b = ?", "SELECT * FROM t WHERE a = %s AND b = %s", 2),
        ("SELECT '?' , ?", "SELECT '?' , %s", 1),
        ("SELECT 'it''s ?', ?", "SELECT 'it''s ?', %s", 1),
        ("SELECT E'\\'?', ?", "SELECT E'\\'?', %s", 1),
        ('SELECT "we?ird" FROM t WHERE x = ?', 'SELECT "we?ird" FROM t WHERE x = %s', 1),
        ("SELECT $$ ? $$, $tag$ ? $tag$, ?", "SELECT $$ ? $$, $tag$ ? $tag$, %s", 1),
        ("SELECT 1 -- ?\n, ?", "SELECT 1 -- ?\n, %s", 1),
        ("SELECT /* ? /* ? */ */ ?", "SELECT /* ? /* ? */ */ %s", 1),
        ("SELECT 5 % 2, '50%', ?", "SELECT 5 %% 2, '50%%', %s", 1),
        ("SELECT $1", "SELECT $1", 0),
        ("SELECT name'x\\' AS a, ?", "SELECT name'x\\' AS a, %s", 1),  # a typed literal, not E''
        ("SELECT date'2026-01-01', ?", "SELECT date'2026-01-01', %s", 1),
    ],
)
def test_only_bare_question_marks_become_placeholders(sql: str, expected: str, count: int) -> None:
    assert qmark_to_pyformat(sql) == (expected, count)


@pytest.mark.parametrize("sql", ["SELECT 'open", 'SELECT "open', "SELECT /* open", "SELECT $x$ open"])
def test_unterminated_literals_are_refused(sql: str) -> None:
    with pytest.raises(UsageError, match="unterminated"):
        qmark_to_pyformat(sql)
