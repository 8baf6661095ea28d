"""``tenantry compliance report``: the running configuration and the latest evidence, mapped
to SOC 2, GDPR and EU AI Act controls. Gaps are stated as gaps, never as passes."""

from __future__ import annotations

__all__: list[str] = []
