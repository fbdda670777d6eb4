"""What every console page shares: rendering with the console's context, the one answer
to invalid input (a 400 page naming what is wrong), paging, and the operator's areas."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from django.contrib import messages
from django.core.paginator import Page, Paginator
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from rest_framework import serializers

from kernel.errors import DomainError
from tenants.permissions import may_operate
from tenants.selectors import operator_areas

View = TypeVar("View", bound=Callable[..., HttpResponse])

PAGE_SIZE = 25


def page(
    request: HttpRequest,
    template: str,
    *,
    section: str,
    title: str,
    status: int = 200,
    **context: Any,
) -> HttpResponse:
    """A console page: the console's face, its nav section and a <title>."""
    context.update(
        face="console",
        section=section,
        title=f"{title} · rbee console",
        heading=title,
        areas=set(operator_areas(user=request.user)),
    )
    response = render(request, template, context, status=status)
    response["Cache-Control"] = "no-store"
    return response


def invalid(
    request: HttpRequest, message: str, *, section: str, back: str, status: int = 400
) -> HttpResponse:
    """The answer to input the console cannot act on: what is wrong, and the way back."""
    return page(
        request,
        "console/invalid.html",
        section=section,
        title="Not done" if status == 400 else "Not found",
        status=status,
        message=message,
        back=back,
    )


def serializer_message(errors: Any) -> str:
    """A serializer's errors as one line: "field: message; other: message"."""
    if isinstance(errors, dict):
        parts = []
        for field, value in errors.items():
            text = serializer_message(value)
            parts.append(text if field in ("non_field_errors", "detail") else f"{field}: {text}")
        return "; ".join(parts)
    if isinstance(errors, list):
        return " ".join(serializer_message(e) for e in errors)
    return str(errors)


Action = Callable[..., "HttpResponse | str"]


def action(
    section: str, back: Callable[..., str], *, missing: int = 404
) -> Callable[[Action], Callable[..., HttpResponse]]:
    """A POST that changes something: a domain error or a serializer's validation error
    is a 400 page saying what is wrong (a `not_found` code: `missing`, 404 unless what is
    missing is a value the form chose); success redirects to `back(**kwargs)` with the
    view's message."""

    def decorate(view: Action) -> Callable[..., HttpResponse]:
        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            target = back(**kwargs)
            try:
                result = view(request, *args, **kwargs)
            except serializers.ValidationError as exc:
                return invalid(
                    request, serializer_message(exc.detail), section=section, back=target
                )
            except DomainError as exc:
                status = missing if str(exc.code) == "not_found" else 400
                return invalid(request, exc.message, section=section, back=target, status=status)
            if isinstance(result, HttpResponse):
                return result
            if result:
                messages.success(request, str(result))
            return HttpResponseRedirect(target)

        return wrapped

    return decorate


def paged(request: HttpRequest, rows: QuerySet[Any] | list[Any], size: int = PAGE_SIZE) -> Page:
    """The page `?page=N` of `rows` (a number out of range: the nearest page)."""
    return Paginator(rows, size).get_page(request.GET.get("page"))


def query_without_page(request: HttpRequest) -> str:
    """The current query string less `page`, for the pager's links."""
    query = request.GET.copy()
    query.pop("page", None)
    return query.urlencode()


def can(request: HttpRequest, area: str) -> bool:
    return may_operate(request.user, area)


def int_or_404(value: str) -> int:
    if not value.isdigit() or len(value) > 18:
        raise Http404("not found")
    return int(value)


def any_area(*areas: str) -> Callable[[View], View]:
    """A page for operators holding any one of `areas` (read-only pages shared by two)."""
    from django.core.exceptions import PermissionDenied

    from web.auth import operator_page

    def decorate(view: View) -> View:
        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not any(may_operate(request.user, a) for a in areas):
                raise PermissionDenied(
                    f"this page needs the operators' {' or '.join(areas)} permission"
                )
            return view(request, *args, **kwargs)

        return operator_page(None)(wrapped)  # type: ignore[return-value]

    return decorate


def scopes_text(scopes: Any) -> str:
    """A key's scopes as people read them: "endpoints: chat, audio · models: m1"
    ("everything" for none; "operator" for the queen's operator keys)."""
    if not isinstance(scopes, dict) or not any(scopes.values()):
        return "everything"
    parts = []
    if scopes.get("operator") is True:
        parts.append("operator")
    for name in ("endpoints", "models"):
        values = scopes.get(name) or []
        if values:
            parts.append(f"{name}: {', '.join(str(v) for v in values)}")
    return " · ".join(parts) or "everything"
