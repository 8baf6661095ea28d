"""Counting by client: an IPv4 address, or an IPv6 /64 (a host picks any address in it)."""

from __future__ import annotations

import pytest

from tenantry.core.addresses import address_bucket
from tenantry.core.settings import load_settings


@pytest.mark.parametrize(
    ("address", "bucket"),
    [
        ("10.0.0.1", "10.0.0.1"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("::ffff:10.0.0.7", "10.0.0.7"),
        ("not-an-address", "not-an-address"),
    ],
)
def test_addresses_are_counted_per_client(address: str, bucket: str) -> None:
    assert address_bucket(address) == bucket


def test_two_ipv6_networks_are_two_clients() -> None:
    assert address_bucket("2001:db8:1:2::1") != address_bucket("2001:db8:1:3::1")


def test_connection_timeouts_accept_seconds_fractions_and_durations() -> None:
    server = load_settings(server={"header_timeout": "2.5", "body_timeout": "1m", "keep_alive_timeout": "5s"}).server
    assert (server.header_timeout, server.body_timeout, server.keep_alive_timeout) == (2.5, 60, 5)
    defaults = load_settings().server
    assert (defaults.header_timeout, defaults.body_timeout, defaults.max_connections_per_address) == (10, 30, 64)
