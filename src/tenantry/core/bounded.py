"""Bounding what an untrusted caller puts into audit records, logs and alerts.

A refused request still leaves a record, and the fields it contributes (a tool name it made
up, a subject an identity provider vouched for, a reason quoting a header) must not be able
to grow that record without bound or to fake other lines when a human reads it. Every such
field goes through :func:`bounded_text`: control and formatting characters are escaped, and
text beyond the limit is cut and replaced by its length and a hash, so two long values stay
distinguishable without being stored.
"""

from __future__ import annotations

import hashlib
import unicodedata

__all__ = ["bounded_text", "FIELD_LIMIT", "NAME_LIMIT", "is_plain"]

FIELD_LIMIT = 256
"""Characters kept of a free-text field (a reason, a subject) before it is cut."""
NAME_LIMIT = 128
"""Characters kept of a name the caller chose (a tool, prompt or resource name)."""

_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def is_plain(text: str) -> bool:
    """Whether ``text`` holds only printable characters that cannot reformat a line (no control,
    format, separator or unassigned characters: no newline, ANSI escape or bidi override)."""
    if text.isascii():
        return text.isprintable()
    return all(unicodedata.category(char) not in _UNSAFE_CATEGORIES for char in text)


def bounded_text(value: str, limit: int = FIELD_LIMIT) -> str:
    """``value`` made safe to store and print: unsafe characters escaped (``\\x1b``, ``\\u202e``),
    and, past ``limit`` characters, cut and suffixed with ``…[N chars, sha256:<12 hex>]``."""
    if len(value) <= limit and (value.isascii() and value.isprintable()):
        return value  # the common case: a real tool name, subject or reason
    head = value[: limit + 1]
    escaped = "".join(_escape(c) if unicodedata.category(c) in _UNSAFE_CATEGORIES else c for c in head)
    if len(value) <= limit and len(escaped) <= limit * 4:
        return escaped
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{escaped[:limit]}…[{len(value)} chars, sha256:{digest}]"
