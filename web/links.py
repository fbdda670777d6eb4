"""Absolute links that leave the queen in e-mails (password reset, invitations).

A link built from the request's Host header points wherever the sender of the request
wants: with ALLOWED_HOSTS = ["*"] (the default outside production) anyone could make the
reset e-mail of any account carry a link to their own host and collect the token. So an
e-mailed link is built from RBEE_PUBLIC_URL when it is set; without it, from the request
only when its host is loopback (a homelab reached at localhost) or ALLOWED_HOSTS names
the hosts (Django has then refused every other Host); otherwise there is no safe origin
and the caller refuses to send the e-mail (`NO_PUBLIC_URL` says why).
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from django.conf import settings
from django.http import HttpRequest
from django.http.request import split_domain_port

NO_PUBLIC_URL = (
    "This queen cannot send e-mailed links yet: the operator must set RBEE_PUBLIC_URL "
    "(the address people reach it at, e.g. https://rbee.example) and restart it."
)


LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


def _loopback(host: str, peer: str) -> bool:
    """The page was asked for on this machine, by this machine: a loopback peer and a Host
    that is exactly localhost, 127.0.0.1 or [::1] (any port). A remote sender cannot make
    the link point anywhere else: its peer address is not loopback."""
    domain, _port = split_domain_port(host)
    if domain.strip("[]") not in LOOPBACK_NAMES:
        return False
    try:
        return ipaddress.ip_address(peer).is_loopback
    except ValueError:
        return False


def public_origin(request: HttpRequest) -> str | None:
    """The origin (scheme://host[:port], no slash) for links in e-mails, or None when
    there is no trustworthy one (see the module's docstring)."""
    configured = str(getattr(settings, "RBEE_PUBLIC_URL", "") or "").rstrip("/")
    if configured:
        return configured
    host = request.get_host()  # validated against ALLOWED_HOSTS
    if _loopback(host, str(request.META.get("REMOTE_ADDR") or "")) or (
        "*" not in settings.ALLOWED_HOSTS
    ):
        return f"{request.scheme}://{host}"
    return None


def split_origin(origin: str) -> tuple[str, str]:
    """(protocol, domain[:port]) of an origin, as Django's reset e-mail context wants."""
    parts = urlsplit(origin)
    return parts.scheme, parts.netloc
