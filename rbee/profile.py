"""The security settings of the two profiles: development (the default) and production
(`RBEE_PRODUCTION=1`). A pure function of the environment, so that rbee/settings.py
stays a list of assignments and the rules can be tested without starting Django.

Production refuses to start (ImproperlyConfigured) without explicit host names and
CSRF trusted origins, and turns on secure cookies and HSTS. A queen that serves TLS
itself (`rbee queen start --tls-cert`, which sets RBEE_TLS_CERT) turns them on in either
profile: its pages are only ever reached over https. Proxy headers are trusted only
when RBEE_TRUSTED_PROXIES names the proxies, in either profile.

RBEE_PUBLIC_URL (either profile; set it in production) is the origin people reach the
queen at, e.g. https://rbee.example: the links in password-reset and invitation e-mails
are built from it, never from the request's Host header. Without it those links are
built from the request only when its host is loopback or RBEE_ALLOWED_HOSTS is explicit
(web/links.py); otherwise the portal refuses to send them.

RBEE_CORS_ORIGINS (comma-separated origins) lets web pages on those origins call /v1
from a browser (inference/cors.py); none may by default, and production refuses '*'.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured

HSTS_SECONDS = 31_536_000  # one year


def _list(environ: Mapping[str, str], name: str) -> list[str]:
    return [v.strip() for v in environ.get(name, "").split(",") if v.strip()]


def _cors_origins(environ: Mapping[str, str]) -> list[str]:
    """RBEE_CORS_ORIGINS: the origins whose web pages may call /v1 from a browser (CORS),
    "*" for any (development only); none by default."""
    origins = _list(environ, "RBEE_CORS_ORIGINS")
    for origin in origins:
        if origin != "*" and not _is_origin(origin):
            raise ImproperlyConfigured(
                f"RBEE_CORS_ORIGINS: {origin!r} is not '*' or an origin like https://app.example"
            )
    return origins


def _bool(environ: Mapping[str, str], name: str) -> bool:
    return environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOST = re.compile(rf"^(?:{_LABEL}\.)*{_LABEL}$|^\[[0-9a-f:.]+\]$")


def _is_origin(url: str) -> bool:
    """scheme://host[:port] and nothing else (no path, query, fragment or credentials)."""
    try:
        parts = urlsplit(url)
        port = parts.port  # raises for a port that is not a number in range
    except ValueError:
        return False
    netloc = parts.netloc.lower()
    host = netloc.rsplit(":", 1)[0] if port is not None else netloc
    return (
        parts.scheme in {"http", "https"}
        and url == f"{parts.scheme}://{parts.netloc}"
        and "@" not in parts.netloc
        and bool(_HOST.match(host))
    )


def security(environ: Mapping[str, str]) -> dict[str, Any]:
    """The security settings for this environment (names as Django spells them, plus
    RBEE_PRODUCTION, RBEE_TLS, RBEE_PUBLIC_URL, RBEE_TRUSTED_PROXIES and
    RBEE_METRICS_TOKEN)."""
    production = _bool(environ, "RBEE_PRODUCTION")
    hosts = _list(environ, "RBEE_ALLOWED_HOSTS")
    origins = _list(environ, "RBEE_CSRF_TRUSTED_ORIGINS")
    proxies = _list(environ, "RBEE_TRUSTED_PROXIES")
    for proxy in proxies:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError as exc:
            raise ImproperlyConfigured(
                f"RBEE_TRUSTED_PROXIES: {proxy!r} is not an IP address or CIDR block"
            ) from exc
    for origin in origins:
        parts = urlsplit(origin)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise ImproperlyConfigured(
                f"RBEE_CSRF_TRUSTED_ORIGINS: {origin!r} is not an origin like https://rbee.example"
            )
    public_url = environ.get("RBEE_PUBLIC_URL", "").strip().rstrip("/")
    if public_url and not _is_origin(public_url):
        raise ImproperlyConfigured(
            f"RBEE_PUBLIC_URL: {public_url!r} is not an origin like https://rbee.example"
        )
    out: dict[str, Any] = {
        "RBEE_PRODUCTION": production,
        "RBEE_PUBLIC_URL": public_url,
        "RBEE_TRUSTED_PROXIES": proxies,
        "RBEE_METRICS_TOKEN": environ.get("RBEE_METRICS_TOKEN", ""),
        "ALLOWED_HOSTS": hosts or ["*"],
        "CSRF_TRUSTED_ORIGINS": origins,
        "SECURE_CONTENT_TYPE_NOSNIFF": True,
        "SESSION_COOKIE_HTTPONLY": True,
        "SECURE_PROXY_SSL_HEADER": None,
        "USE_X_FORWARDED_HOST": False,
    }
    if proxies:
        # Only set when the queen is told which proxies speak for the client: otherwise
        # any client could claim https by sending the header itself.
        out["SECURE_PROXY_SSL_HEADER"] = ("HTTP_X_FORWARDED_PROTO", "https")
    out["RBEE_CORS_ORIGINS"] = cors = _cors_origins(environ)
    tls = bool(environ.get("RBEE_TLS_CERT", "").strip())
    out["RBEE_TLS"] = tls
    if tls or production:
        hsts = environ.get("RBEE_HSTS_SECONDS", "").strip()
        try:
            hsts_seconds = int(hsts) if hsts else HSTS_SECONDS
        except ValueError as exc:
            raise ImproperlyConfigured(f"RBEE_HSTS_SECONDS: {hsts!r} is not a number") from exc
        if hsts_seconds < 0:
            raise ImproperlyConfigured(f"RBEE_HSTS_SECONDS: {hsts!r} is below 0")
        out.update(
            {
                "SESSION_COOKIE_SECURE": True,
                "CSRF_COOKIE_SECURE": True,
                "SECURE_HSTS_SECONDS": hsts_seconds,
            }
        )
    if not production:
        return out
    missing = [
        name
        for name, value in (
            ("RBEE_ALLOWED_HOSTS", hosts),
            ("RBEE_CSRF_TRUSTED_ORIGINS", origins),
        )
        if not value
    ]
    if missing:
        raise ImproperlyConfigured(
            f"RBEE_PRODUCTION=1 needs {' and '.join(missing)} (comma-separated): the host "
            "names the queen answers to and the origins its forms are posted from."
        )
    if "*" in hosts:
        raise ImproperlyConfigured("RBEE_PRODUCTION=1: RBEE_ALLOWED_HOSTS may not be '*'.")
    if "*" in cors:
        raise ImproperlyConfigured(
            "RBEE_PRODUCTION=1: RBEE_CORS_ORIGINS may not be '*'; name the origins of the web "
            "apps that call the API."
        )
    if _bool(environ, "RBEE_DEBUG"):
        raise ImproperlyConfigured("RBEE_PRODUCTION=1 and RBEE_DEBUG=1 do not go together.")
    out.update(
        {
            "CSRF_COOKIE_HTTPONLY": True,
            "SECURE_HSTS_INCLUDE_SUBDOMAINS": True,
            "SECURE_REFERRER_POLICY": "same-origin",
            "X_FRAME_OPTIONS": "DENY",
        }
    )
    return out
