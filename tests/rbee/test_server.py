"""Who a request comes from, for the edge's per-client byte cap (rbee/server.py)."""

from __future__ import annotations

from rbee.server import client_address, parse_networks


def test_forwarded_for_counts_only_from_a_trusted_proxy() -> None:
    proxies = parse_networks(["10.0.0.0/8", "192.168.1.5"])
    hops = [b"6.6.6.6, 203.0.113.9, 10.1.2.3"]
    # A client's own X-Forwarded-For is its word: the peer is who it is.
    assert client_address("198.51.100.7", hops, proxies) == "198.51.100.7"
    # Through the proxies: the last hop they did not add (the first ones are spoofable).
    assert client_address("192.168.1.5", hops, proxies) == "203.0.113.9"
    assert client_address("192.168.1.5", None, proxies) == "192.168.1.5"
    assert client_address("192.168.1.5", [b"10.0.0.1"], proxies) == "192.168.1.5"
    assert client_address("10.9.9.9", [b"garbage, 203.0.113.1"], []) == "10.9.9.9"
