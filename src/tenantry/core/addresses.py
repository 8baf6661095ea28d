"""What one client is, for counting by address.

An IPv4 address is one client. An IPv6 host usually owns a whole ``/64`` (and can pick any
address in it at will), so IPv6 addresses are counted by their ``/64``; an IPv4-mapped IPv6
address counts as its IPv4 address. Anything that does not parse is counted as itself.
"""

from __future__ import annotations

import functools
import ipaddress

__all__ = ["address_bucket"]


@functools.lru_cache(maxsize=4096)
def address_bucket(address: str) -> str:
    """The key that requests and connections from ``address`` are counted under."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.IPv6Network((parsed, 64), strict=False))
    return address
