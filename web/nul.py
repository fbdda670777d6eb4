"""No NUL characters in the faces' input: a 400 page for any request under /ui, /console
or /portal whose path, query or form carries one (names or values). PostgreSQL refuses
NUL in text, so a filter or a form field with one would otherwise end in a DataError (a
500) wherever it reaches a query, and no legitimate input holds one."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import render

PREFIXES = {"/ui": "ui", "/console": "console", "/portal": "portal"}
NUL = "\x00"


def _face(path: str) -> str | None:
    for prefix, face in PREFIXES.items():
        if path == prefix or path.startswith(prefix + "/"):
            return face
    return None


def _has_nul(data: QueryDict) -> bool:
    return any(NUL in key or any(NUL in v for v in values) for key, values in data.lists())


class RejectNulMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        face = _face(request.path)
        if face is not None and (
            NUL in request.path
            or _has_nul(request.GET)
            or (request.method == "POST" and _has_nul(request.POST))
        ):
            return render(
                request,
                "web/error.html",
                {
                    "face": face,
                    "section": "",
                    "title": "Bad request · rbee",
                    "heading": "Bad request",
                    "message": "The request carried a NUL character, which no field accepts. "
                    "Go back and type the value again.",
                },
                status=400,
            )
        return self.get_response(request)
