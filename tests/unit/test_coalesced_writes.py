"""A response's writes of one loop turn reach the socket in one write, in order, and nothing is lost."""

from __future__ import annotations

import asyncio

import pytest

from tenantry.server.coalesced_writes import CoalescedWrites

pytestmark = pytest.mark.anyio


class Recording(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.events: list[bytes | str] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.events.append(bytes(data))

    def close(self) -> None:
        self.events.append("close")

    def abort(self) -> None:
        self.events.append("abort")

    def is_closing(self) -> bool:
        return "close" in self.events

    def get_write_buffer_size(self) -> int:
        return 0


def coalesced() -> tuple[CoalescedWrites, Recording]:
    real = Recording()
    return CoalescedWrites(real, asyncio.get_running_loop()), real


async def next_turn() -> None:
    await asyncio.sleep(0)


async def test_headers_and_body_leave_in_one_write_as_soon_as_the_body_is_written() -> None:
    transport, real = coalesced()
    transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
    assert real.events == []  # the head waits for its body
    transport.write(b"{}")
    assert real.events == [b"HTTP/1.1 200 OK\r\n\r\n{}"]  # not a loop turn later
    transport.write(b"")
    await next_turn()
    assert real.events == [b"HTTP/1.1 200 OK\r\n\r\n{}"]


async def test_writes_of_later_turns_follow_in_order() -> None:
    transport, real = coalesced()
    transport.write(b"a")
    await next_turn()
    transport.writelines([b"b", b"c"])
    await next_turn()
    assert real.events == [b"a", b"bc"]


async def test_close_writes_what_is_held_first() -> None:
    transport, real = coalesced()
    transport.write(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
    transport.close()
    await next_turn()
    assert real.events == [b"HTTP/1.1 408 Request Timeout\r\n\r\n", "close"]


async def test_more_than_the_hold_limit_is_written_at_once_in_order() -> None:
    transport, real = coalesced()
    transport.write(b"head")
    transport.write(b"x" * (64 * 1024 + 1))
    assert real.events == [b"head", b"x" * (64 * 1024 + 1)]  # a large body is not copied
    transport.write(b"y" * (32 * 1024))
    assert len(real.events) == 2 and transport.get_write_buffer_size() == 32 * 1024
    transport.write(b"z")
    assert real.events[2:] == [b"y" * (32 * 1024) + b"z"]
    assert transport.get_write_buffer_size() == 0


async def test_abort_drops_what_is_held() -> None:
    transport, real = coalesced()
    transport.write(b"partial")
    transport.abort()
    await next_turn()
    assert real.events == ["abort"]
