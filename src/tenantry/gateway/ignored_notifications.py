"""The upstream notifications the gateway does not relay, dropped as soon as they are parsed.

An upstream's progress and log notifications are not passed on to the tenant's client (their
text could quote anything) and nothing in the gateway waits for them. A stdio or HTTP upstream
can send them by the hundred thousand during one call; dispatched through the SDK's session (or
validated as server notifications on the direct HTTP path), each would cost the event loop every
tenant shares tens of microseconds. Only notifications are dropped, never a request or an answer.
"""

from __future__ import annotations

import mcp_types as types

__all__ = ["IGNORED_METHODS", "is_ignored"]

IGNORED_METHODS = frozenset({"notifications/progress", "notifications/message"})


def is_ignored(message: object) -> bool:
    """``message`` (a JSON-RPC message, parsed to a dict or validated) is a notification the gateway drops."""
    if isinstance(message, types.JSONRPCNotification):
        return message.method in IGNORED_METHODS
    return isinstance(message, dict) and "id" not in message and message.get("method") in IGNORED_METHODS
