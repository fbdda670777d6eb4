"""/console/gdpr: the data-subject request queue (exports, erasures) with their Art. 12(3)
deadlines, overdue ones first and highlighted; extend a deadline (with the reason told to
the subject) and run a waiting or failed request again. Area `audit`. The subjects are
shown as GET /gdpr/requests shows them to operators; every action is audited by
gdpr.services with the operator as actor, as the API names them."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db.models import Case, IntegerField, Value, When
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.urls import path
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from gdpr import access, selectors, services
from gdpr.models import SubjectRequest
from gdpr.rights_api import ExtendInput
from gdpr.tasks import request_enqueue
from web.auth import operator_page
from web.console.common import action, page, paged, query_without_page

SECTION = "gdpr"
NEAR = timedelta(days=7)  # a deadline this close is "near" (the home page's panel)


def gdpr_actor(request: HttpRequest) -> Any:
    """The operator as the GDPR API names them in the log (gdpr/rights_api.py)."""
    who = access.current().principal(request.user)
    if who is None:  # pragma: no cover (operator_page let them in)
        raise PermissionError("not an operator")
    return who.subject if who.subject.email else f"account:{who.user_id}"


def open_requests() -> Any:
    return SubjectRequest.objects.filter(status__in=selectors.OPEN)


def near_deadline() -> list[SubjectRequest]:
    """Open requests whose deadline has passed or comes within NEAR, soonest first."""
    soon = timezone.now() + NEAR
    rows = [r for r in open_requests().order_by("due_at")[:500] if r.deadline <= soon]
    return sorted(rows, key=lambda r: r.deadline)


@operator_page("audit")
@require_GET
def queue(request: HttpRequest) -> HttpResponse:
    """GET /console/gdpr?state=open|overdue|done|all&kind=export|erase."""
    state = request.GET.get("state", "open")
    kind = request.GET.get("kind", "")
    rows = selectors.request_list(overdue_only=state == "overdue")
    if state == "open":
        rows = rows.filter(status__in=selectors.OPEN)
    elif state == "done":
        rows = rows.filter(status=SubjectRequest.Status.DONE)
    if kind in SubjectRequest.Kind.values:
        rows = rows.filter(kind=kind)
    # Open ones by deadline (soonest first), then the rest newest first.
    rows = rows.annotate(
        closed=Case(
            When(status__in=selectors.OPEN, then=Value(0)),
            default=Value(1),
            output_field=IntegerField(),
        )
    ).order_by("closed", "due_at", "-received_at", "-pk")
    current = paged(request, rows)
    now = timezone.now()
    items = [
        {
            **selectors.request_data(r, with_subject=True),
            "deadline_at": r.deadline,
            "received": r.received_at,
            "near": r.status in selectors.OPEN and r.deadline <= now + NEAR,
            "may_retry": r.status != SubjectRequest.Status.DONE,
            "may_extend": r.status in selectors.OPEN,
        }
        for r in current.object_list
    ]
    return page(
        request,
        "console/gdpr.html",
        section=SECTION,
        title="GDPR requests",
        requests=items,
        pager=current,
        pager_query=query_without_page(request),
        state=state,
        kind=kind,
        overdue=sum(selectors.overdue_counts().values()),
        today=now,
    )


@operator_page("audit")
@require_POST
@action(SECTION, back=lambda **kw: "/console/gdpr")
def request_extend(request: HttpRequest, request_id: int) -> str:
    req = get_object_or_404(SubjectRequest, pk=request_id)
    body = ExtendInput(
        data={
            "months": request.POST.get("months", ""),
            "reason": request.POST.get("reason", ""),
            "notified_at": request.POST.get("notified_at", ""),
        }
    )
    body.is_valid(raise_exception=True)
    req = services.request_extend(request=req, actor=gdpr_actor(request), **body.validated_data)
    return f"Request {req.pk}'s deadline is now {req.deadline:%Y-%m-%d}."


@operator_page("audit")
@require_POST
@action(SECTION, back=lambda **kw: "/console/gdpr")
def request_retry(request: HttpRequest, request_id: int) -> str:
    req = get_object_or_404(SubjectRequest, pk=request_id)
    req = services.request_retry(request=req, actor=gdpr_actor(request))
    request_enqueue(req.pk)
    return f"Request {req.pk} was sent to run again."


urlpatterns = [
    path("gdpr", queue, name="console-gdpr"),
    path("gdpr/<int:request_id>/extend", request_extend),
    path("gdpr/<int:request_id>/retry", request_retry),
]
