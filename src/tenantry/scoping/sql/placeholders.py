"""Translating the portable ``?`` placeholders of ``ctx.sql`` into psycopg's ``%s``.

A small scanner, not a parser: it knows the PostgreSQL lexical forms that may contain a
``?`` or ``%`` without being a placeholder (string and escape-string literals, quoted
identifiers, dollar-quoted bodies, comments) and copies them unchanged.
"""

from __future__ import annotations

import re

from tenantry.core.errors import UsageError

__all__ = ["qmark_to_pyformat"]

_DOLLAR_TAG = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")


def qmark_to_pyformat(sql: str) -> tuple[str, int]:
    """Return ``sql`` with each placeholder ``?`` as ``%s`` (and ``%`` doubled), and the count.

    PostgreSQL's jsonb ``?``/``?|``/``?&`` operators cannot be told from placeholders: use
    ``jsonb_exists``/``jsonb_exists_any``/``jsonb_exists_all`` instead.

    :raises UsageError: for an unterminated literal, identifier or comment.
    """
    out: list[str] = []
    count = 0
    i, n = 0, len(sql)
    while i < n:
        ch = sql[i]
        if ch == "?":
            out.append("%s")
            count += 1
            i += 1
        elif ch == "%":
            out.append("%%")
            i += 1
        elif ch in ("'", '"'):
            escape_string = ch == "'" and i > 0 and sql[i - 1] in "eE" and not (i > 1 and _is_ident_char(sql[i - 2]))
            end = _end_of_quoted(sql, i, ch, backslash=escape_string)
            out.append(sql[i:end].replace("%", "%%"))
            i = end
        elif ch == "-" and sql.startswith("--", i):
            end = sql.find("\n", i)
            end = n if end < 0 else end
            out.append(sql[i:end].replace("%", "%%"))
            i = end
        elif ch == "/" and sql.startswith("/*", i):
            end = _end_of_block_comment(sql, i)
            out.append(sql[i:end].replace("%", "%%"))
            i = end
        elif ch == "$" and (match := _DOLLAR_TAG.match(sql, i)) and not (i > 0 and _is_ident_char(sql[i - 1])):
            tag = match.group(0)
            close = sql.find(tag, match.end())
            if close < 0:
                raise UsageError("unterminated dollar-quoted string in SQL")
            end = close + len(tag)
            out.append(sql[i:end].replace("%", "%%"))
            i = end
        else:
            out.append(ch)
            i += 1
    return "".join(out), count


def _is_ident_char(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def _end_of_quoted(sql: str, start: int, quote: str, *, backslash: bool) -> int:
    i = start + 1
    while i < len(sql):
        ch = sql[i]
        if backslash and ch == "\\":
            i += 2
            continue
        if ch == quote:
            if sql.startswith(quote * 2, i):
                i += 2
                continue
            return i + 1
        i += 1
    kind = "identifier" if quote == '"' else "string literal"
    raise UsageError(f"unterminated quoted {kind} in SQL")


def _end_of_block_comment(sql: str, start: int) -> int:
    depth, i = 0, start
    while i < len(sql):
        if sql.startswith("/*", i):
            depth += 1
            i += 2
        elif sql.startswith("*/", i):
            depth -= 1
            i += 2
            if depth == 0:
                return i
        else:
            i += 1
    raise UsageError("unterminated comment in SQL")
