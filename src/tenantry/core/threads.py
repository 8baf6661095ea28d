"""The shape of "run this blocking function off the event loop", for code below the scoping layer.

The control plane and the audit trail take a :class:`BlockingRunner` so that the composition root
can hand them the system's reserved thread capacity
(:meth:`tenantry.scoping.threads.ThreadBulkheads.run_system`), which tenants' work cannot take.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

__all__ = ["BlockingRunner"]

_T = TypeVar("_T")


class BlockingRunner(Protocol):
    """Runs ``fn`` in a worker thread and returns (or raises) what it did."""

    def __call__(self, fn: Callable[[], _T], /) -> Awaitable[_T]: ...
