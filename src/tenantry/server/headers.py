"""The request headers the ``/mcp`` gate reads, decoded once per request."""

from __future__ import annotations

__all__ = ["RequestHeaders"]

_WANTED = frozenset(
    {
        b"host",
        b"origin",
        b"authorization",
        b"mcp-session-id",
        b"mcp-protocol-version",
        b"content-type",
        b"content-length",
        b"accept",
        b"mcp-method",
        b"mcp-name",
    }
)


class RequestHeaders:
    """First value of each header the gate cares about, plus how often each occurred.

    ASGI servers deliver header names lowercased; only the handful of names the gate reads
    are decoded, since this runs on every request.
    """

    __slots__ = ("_counts", "_values")

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        values: dict[str, str] = {}
        counts: dict[str, int] = {}
        for key, value in raw:
            if key not in _WANTED:
                lowered = key.lower()
                if lowered not in _WANTED:
                    continue
                key = lowered
            name = key.decode("latin-1")
            if name in values:
                counts[name] = counts.get(name, 1) + 1
            else:
                values[name] = value.decode("latin-1")
        self._values = values
        self._counts = counts

    def get(self, name: str, default: str | None = None) -> str | None:
        return self._values.get(name, default)

    def count(self, name: str) -> int:
        return self._counts.get(name, 1 if name in self._values else 0)
