"""The queen serves the web faces' static files itself, under content-hashed names with a
year-long immutable cache (no CDN, no `collectstatic`: a homelab may be offline, and
`rbee up` has no build step).

`asset_url("vendor/htmx/htmx.min.js")` -> `/static/rbee/vendor/htmx/htmx.min.3f9c2a1b0d4e.js`;
the hash is the first 12 hex digits of the file's SHA-256, computed once per process. A
request whose hash is not the current file's is a 404, so a stale page never gets a new
file under an old name."""

from __future__ import annotations

import hashlib
import mimetypes
import re
from functools import cache
from pathlib import Path

from django.http import FileResponse, Http404, HttpRequest, HttpResponseBase

STATIC_ROOT = Path(__file__).resolve().parent / "static"
URL_PREFIX = "/static/rbee/"
_SUFFIXES = {".js", ".css", ".svg", ".png", ".ico", ".woff2", ".map"}
_HASHED = re.compile(r"^(?P<stem>.+)\.(?P<hash>[0-9a-f]{12})(?P<ext>\.[a-z0-9]+)$")


@cache
def _digests() -> dict[str, str]:
    """Every servable file under web/static, relative path -> short SHA-256."""
    found: dict[str, str] = {}
    for path in sorted(STATIC_ROOT.rglob("*")):
        if path.is_file() and path.suffix in _SUFFIXES:
            rel = path.relative_to(STATIC_ROOT).as_posix()
            found[rel] = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    return found


def asset_url(name: str) -> str:
    """The hashed URL of the static file `name` (relative to web/static)."""
    digest = _digests().get(name)
    if digest is None:
        raise ValueError(f"no static file {name!r} under {STATIC_ROOT}")
    stem, dot, ext = name.rpartition(".")
    return f"{URL_PREFIX}{stem}.{digest}{dot}{ext}"


def serve_asset(request: HttpRequest, name: str) -> HttpResponseBase:
    """GET /static/rbee/<stem>.<hash>.<ext>: the file, cached for a year; anything else 404."""
    match = _HASHED.match(name)
    if match is None:
        raise Http404("no such asset")
    rel = f"{match['stem']}{match['ext']}"
    if _digests().get(rel) != match["hash"]:
        raise Http404("no such asset")
    path = (STATIC_ROOT / rel).resolve()
    if STATIC_ROOT not in path.parents:
        raise Http404("no such asset")
    content_type = mimetypes.guess_type(rel)[0] or "application/octet-stream"
    if content_type in {"application/javascript", "text/javascript", "text/css"}:
        content_type += "; charset=utf-8"
    response = FileResponse(path.open("rb"), content_type=content_type)
    response["Cache-Control"] = "public, max-age=31536000, immutable"
    response["ETag"] = f'"{match["hash"]}"'
    response["X-Content-Type-Options"] = "nosniff"
    return response
