"""Client addresses as the logs may keep them."""

from __future__ import annotations

import ipaddress


def address_net(address: str) -> str:
    """A client address cut to its network (IPv4 /24, IPv6 /48): what the log keeps in
    `data` when there is no data subject to seal the full address under (the audit API
    refuses personal fields without one)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return ""
    bits = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{bits}", strict=False))
