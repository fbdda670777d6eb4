"""Who a request comes from, for the edge's per-client byte cap (rbee/server.py)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from daphne import http_protocol
from twisted.web.test.requesthelper import DummyChannel

from kernel.errors import Unavailable
from rbee.server import Edge, client_address, install, parse_networks


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


# --- the per-client cap groups IPv6 clients by /64 ----------------------------------------


def test_ipv6_clients_are_counted_by_their_64() -> None:
    from rbee.server import client_group

    # Anyone with a /64 has 2**64 addresses: they are one client to the byte cap.
    a = client_group("2001:db8:1:2::1")
    assert a == client_group("2001:db8:1:2:ffff:ffff:ffff:ffff")
    assert a == client_group("2001:0db8:0001:0002:0000:0000:0000:0abc")
    assert a != client_group("2001:db8:1:3::1")
    # IPv4 by address; an IPv4 client on a dual-stack socket is that IPv4 address.
    assert client_group("203.0.113.7") == "203.0.113.7"
    assert client_group("203.0.113.7") != client_group("203.0.113.8")
    assert client_group("::ffff:203.0.113.7") == "203.0.113.7"
    assert client_group("?") == "?"  # not an address: as it is


# --- the path the edge classifies is the one Django routes --------------------------------


def test_the_edge_classifies_the_decoded_path() -> None:
    from rbee.server import app_path

    assert app_path(b"/%76%31/chat/completions?x=1") == "/v1/chat/completions"
    assert app_path(b"/v1%2Fchat/completions") == "/v1/chat/completions"
    assert app_path(b"/x/v1/chat/completions", b"/x") == "/v1/chat/completions"
    assert app_path(b"/api/tenants") == "/api/tenants"
    assert app_path("/v1/é".encode()) == ""  # Daphne refuses it (400)


# --- a key whose lookup failed is not remembered --------------------------------------------

KEY = "sk-rbee-abcdefghij-" + "A" * 40


class _Transport(DummyChannel.SSL):
    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False


def _request(edge: Edge, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A Daphne request as the edge builds it, on a channel that records what is written."""
    monkeypatch.setattr(http_protocol, "WebRequest", http_protocol.WebRequest)
    install(edge)
    channel = DummyChannel()
    channel.transport = _Transport()
    channel.factory = SimpleNamespace(server=SimpleNamespace(protocol_connected=lambda r: None))
    channel._path = b"/v1/chat/completions"
    request = http_protocol.WebRequest(channel)
    request.requestHeaders.setRawHeaders(b"Authorization", [f"Bearer {KEY}".encode()])
    request.requestHeaders.setRawHeaders(b"Content-Type", [b"application/json"])
    return request


async def test_a_key_is_remembered_only_when_its_lookup_succeeds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def database_down(key: str) -> str | None:
        raise Unavailable("database", "connection refused")

    edge = Edge(
        body_limit=2**20,
        json_limit=2**20,
        inflight_per_client=0,
        anonymous=False,
        check_key=database_down,
    )
    request = _request(edge, monkeypatch)
    request.gotLength(512 * 1024)  # over the early-auth threshold: the key is looked up
    for _ in range(5):
        await asyncio.sleep(0)
    # Let through (the view answers 503), but not vouched for: the next large request
    # is looked up again rather than passed unverified for a minute.
    assert request.channel.transport.paused is False
    assert not edge.known(KEY)

    async def valid(key: str) -> str | None:
        return None

    edge.check_key = valid
    request = _request(edge, monkeypatch)
    request.gotLength(512 * 1024)
    for _ in range(5):
        await asyncio.sleep(0)
    assert edge.known(KEY)


# --- HTTP/2 is never offered: its streams would bypass the edge ----------------------------


def test_installing_the_edge_turns_http2_off_even_where_twisted_has_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from twisted.web import http as twisted_http

    monkeypatch.setattr(http_protocol, "WebRequest", http_protocol.WebRequest)
    factory = http_protocol.HTTPFactory(SimpleNamespace())
    was = twisted_http.H2_ENABLED
    twisted_http.H2_ENABLED = True  # as with the `h2` package installed
    try:
        assert factory.acceptableProtocols() == [b"h2", b"http/1.1"]
        install(Edge(body_limit=1, json_limit=1, inflight_per_client=0, anonymous=True))
        # What Daphne offers in ALPN over TLS, and what Twisted will switch a connection to.
        assert factory.acceptableProtocols() == [b"http/1.1"]
        assert twisted_http.H2_ENABLED is False
    finally:
        twisted_http.H2_ENABLED = was
