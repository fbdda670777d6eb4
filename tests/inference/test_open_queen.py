"""An open queen (keyless requests as the default tenant) is for this machine's own
clients: only requests addressed to a loopback name are keyless, and the queen refuses to
listen anywhere but loopback while it is open."""

from __future__ import annotations

import pytest

from inference.pipeline import authenticate, loopback_host
from rbee.cli.queen import loopback_bind
from tenants.selectors import KeyRejected
from tenants.services import tenant_create


@pytest.mark.parametrize(
    "host",
    [
        "localhost",
        "localhost:7833",
        "127.0.0.1",
        "127.0.0.1:7833",
        "127.8.9.10:1",
        "[::1]:7833",
        "::1",
        "LOCALHOST:7833",
        "api.localhost:7833",
    ],
)
def test_loopback_hosts(host: str) -> None:
    assert loopback_host(host)


@pytest.mark.parametrize(
    "host",
    [
        "",
        "rebind.example",
        "rebind.example:7833",
        "10.0.0.5:7833",
        "192.168.1.2",
        "[2001:db8::1]:7833",
        "localhost.example.com",
        "127.0.0.1.nip.io",
        "0.0.0.0:7833",
    ],
)
def test_other_hosts(host: str) -> None:
    assert not loopback_host(host)


@pytest.mark.django_db
def test_keyless_requests_are_served_only_under_a_loopback_name(settings) -> None:  # type: ignore[no-untyped-def]
    tenant_create(name="default")
    settings.RBEE_ANONYMOUS_TENANT = "default"
    assert authenticate("", "127.0.0.1:7833").tenant_name == "default"
    with pytest.raises(KeyRejected):
        authenticate("", "rebind.example:7833")  # a web page's DNS rebinding
    with pytest.raises(KeyRejected):
        authenticate("", "")


def test_an_open_queen_listens_on_loopback_only() -> None:
    assert loopback_bind("127.0.0.1") and loopback_bind("::1") and loopback_bind("localhost")
    assert not loopback_bind("0.0.0.0") and not loopback_bind("192.168.1.2")
    assert not loopback_bind("::")
