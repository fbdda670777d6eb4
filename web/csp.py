"""A strict Content-Security-Policy for the web faces: scripts and styles only from the
queen's own files (no inline script, no eval, no inline style), no frames, forms and
fetches only to the queen itself. htmx runs with eval and script tags off (the meta
config in base.html) and Alpine is its CSP build, so nothing on a page needs more.

Applied to every response under the faces' prefixes; Django's admin keeps its own pages."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self'",
        # 'self' covers the page's own ws:/wss: origin (CSP Level 3) for the live views.
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
PREFIXES = ("/ui", "/console", "/portal", "/static/rbee/")


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if request.path.startswith(PREFIXES):
            response.setdefault("Content-Security-Policy", POLICY)
            response.setdefault("Cross-Origin-Opener-Policy", "same-origin")
            response.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
        return response
