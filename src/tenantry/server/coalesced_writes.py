"""One socket write per response, not one per ASGI message.

uvicorn's h11 protocol writes a response's status line and headers to the socket when the
application sends ``http.response.start``, then its body with ``http.response.body``: two
``send()`` calls for every JSON answer, and on loopback each one also wakes the client. A
:class:`CoalescedWrites` transport holds a write until the next one (both then leave in one
call: a response's body does not wait for the loop's next turn), the loop's next turn, or the
transport's close. A write larger than :data:`_HOLD_LIMIT` is not copied: it goes out at once,
after what is held.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["CoalescedWrites"]

_HOLD_LIMIT = 64 * 1024


class CoalescedWrites(asyncio.Transport):
    """``transport``, its writes of one loop turn joined into one (in order; nothing else changes)."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] = []
        self._held_bytes = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if len(data) > _HOLD_LIMIT:  # a large body is not copied to save one send()
            self.flush()
            self._transport.write(data)
            return
        if self._held:  # a response's body after its head: both leave now, not a loop turn later
            self._held.append(bytes(data))
            self.flush()
            return
        self._loop.call_soon(self.flush)
        self._held.append(bytes(data))
        self._held_bytes += len(data)

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def flush(self) -> None:
        """Write what is held now (a no-op when nothing is)."""
        if not self._held:
            return
        data = self._held[0] if len(self._held) == 1 else b"".join(self._held)
        self._held.clear()
        self._held_bytes = 0
        self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._held.clear()
        self._held_bytes = 0
        self._transport.abort()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def get_write_buffer_size(self) -> int:
        return self._held_bytes + self._transport.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()
