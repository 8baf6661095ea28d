"""How many audit records refused requests may cause.

A request refused before (or at) authentication costs the attacker nothing, so it must not
cost the server an unbounded number of durable, unpurgeable audit records. Each source (a
client address, or a tenant whose credentials are refused) may cause ``per_source`` records
per window and all sources together ``overall``; refusals beyond that are counted, not
recorded one by one, and the counts become one summary record per stream and window.
Memory is bounded: at most ``max_sources`` sources are counted per stream, the rest share
one bucket.
"""

from __future__ import annotations

from tenantry.ratelimit.windows import MovingWindow

__all__ = ["RecordBudget", "OTHER_SOURCES"]

OTHER_SOURCES = "_other"


class RecordBudget:
    def __init__(self, *, per_source: str = "30/minute", overall: str = "600/minute", max_sources: int = 1000) -> None:
        # Every (stream, source) pair seen within a window is remembered, up to a bound: past
        # it the least recent is forgotten (spoofed addresses cannot grow this without end).
        self._per_source = MovingWindow(per_source, max_keys=max(max_sources * 10, 10_000))
        self._overall = MovingWindow(overall, max_keys=1)
        self._max_sources = max_sources
        self._suppressed: dict[str, dict[str, int]] = {}

    def admit(self, stream: str, source: str) -> bool:
        """Whether a record for a refusal from ``source`` may be written to ``stream`` now; if
        not, it is counted for the next summary."""
        if self._per_source.hit((stream, source)) and self._overall.hit(None):
            return True
        counts = self._suppressed.setdefault(stream, {})
        if source not in counts and len(counts) >= self._max_sources:
            source = OTHER_SOURCES
        counts[source] = counts.get(source, 0) + 1
        if len(self._suppressed) > self._max_sources:  # streams are tenants or the system stream
            self._suppressed.pop(next(iter(self._suppressed)))
        return False

    @property
    def sources_counted(self) -> int:
        return len(self._per_source)

    def take_suppressed(self) -> dict[str, dict[str, int]]:
        """The refusals counted but not recorded since the last call, per stream and source."""
        taken, self._suppressed = self._suppressed, {}
        return taken
