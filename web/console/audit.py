"""/console/audit: the tamper-evident audit log. Search and filter (action, actor, tenant,
subject, time range) with paging, export the filtered rows (CSV or JSON lines, streamed),
and the verification `rbee audit verify` runs (gdpr.ledger.verify), as an action: it
rereads the whole log, so its last result is kept and shown rather than rerun on every
page. Area `audit`."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, time, timedelta
from itertools import islice
from typing import Any

from asgiref.sync import sync_to_async
from django.core.cache import cache
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponse, QueryDict, StreamingHttpResponse
from django.urls import path
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from gdpr import ledger
from gdpr.selectors import audit_event_search, audit_events_view
from gdpr.sinks import get_sink
from tenants.models import Tenant
from web.auth import operator_page
from web.console.common import invalid, page, paged, query_without_page
from web.dates import parse_day

SECTION = "audit"
VERIFIED = "web.console:audit-verified"  # the last verification's result (Django's cache)
EXPORT_BATCH = 500
CSV_COLUMNS = (
    "id",
    "created_at",
    "action",
    "actor",
    "tenant_id",
    "subject",
    "region",
    "outcome",
    "request_id",
    "data",
)


class BadFilter(ValueError):
    pass


def _day(text: str, name: str) -> datetime | None:
    if not text:
        return None
    try:
        day = parse_day(text, name)  # years bounded: `until` + 1 day stays a date
    except ValueError as exc:
        raise BadFilter(str(exc)) from None
    return datetime.combine(day, time.min, tzinfo=UTC)


def search(query: QueryDict) -> tuple[Any, dict[str, str]]:
    """The events the query's filters select, and the filters as given."""
    given = {
        k: query.get(k, "").strip()[:254]
        for k in ("action", "actor", "tenant", "subject", "since", "until")
    }
    tenant_id = None
    if given["tenant"]:
        tenant_id = Tenant.objects.filter(name=given["tenant"]).values_list("pk", flat=True).first()
        if tenant_id is None:
            if not given["tenant"].isdigit() or len(given["tenant"]) > 18:
                raise BadFilter(f"tenant: no tenant named {given['tenant']!r}")
            tenant_id = int(given["tenant"])  # a deleted tenant's events keep its id
    since = _day(given["since"], "since")
    until = _day(given["until"], "until")
    if until is not None:
        until += timedelta(days=1)  # the whole day, inclusive
    if since and until and until <= since:
        raise BadFilter("until is before since")
    rows = audit_event_search(
        action=given["action"],
        actor=given["actor"],
        tenant_id=tenant_id,
        subject=given["subject"],
        since=since,
        until=until,
    )
    return rows, given


def verification() -> dict[str, Any]:
    """The last verification's result (None before the first), the newest signed
    checkpoint and the tree's size now."""
    latest = get_sink().latest()
    return {
        "last": cache.get(VERIFIED),
        "checkpoint": {"size": latest.size, "time": latest.time, "root": latest.root.hex()}
        if latest is not None
        else None,
        "tree_size": ledger.tree_size(),
    }


@operator_page("audit")
@require_GET
def audit_log(request: HttpRequest) -> HttpResponse:
    """GET /console/audit?action=&actor=&tenant=&subject=&since=&until=&page=."""
    try:
        rows, given = search(request.GET)
    except BadFilter as exc:
        return invalid(request, str(exc), section=SECTION, back="/console/audit")
    current = paged(request, rows)
    tenants = dict(Tenant.objects.values_list("pk", "name"))
    events = audit_events_view(list(current.object_list))
    for event in events:
        event["tenant"] = tenants.get(event["tenant_id"], event["tenant_id"])
        event["data_text"] = json.dumps(event["data"], sort_keys=True)
    query = query_without_page(request)
    return page(
        request,
        "console/audit.html",
        section=SECTION,
        title="Audit log",
        events=events,
        pager=current,
        pager_query=query,
        f=given,
        export_query=query,
        verify=verification(),
    )


def _lines(rows: Any, fmt: str) -> Iterator[str]:
    if fmt == "csv":
        out = io.StringIO()
        csv.writer(out).writerow(CSV_COLUMNS)
        yield out.getvalue()
    for start in range(0, 10**12, EXPORT_BATCH):
        batch = list(rows[start : start + EXPORT_BATCH])
        if not batch:
            return
        for event in audit_events_view(batch):
            if fmt == "jsonl":
                yield json.dumps(event, sort_keys=True, default=str) + "\n"
            else:
                out = io.StringIO()
                writer = csv.writer(out)
                writer.writerow(
                    [
                        json.dumps(event[c], sort_keys=True)
                        if c == "data"
                        else ("" if event[c] is None else event[c])
                        for c in CSV_COLUMNS
                    ]
                )
                yield out.getvalue()


async def _async_chunks(lines: Iterator[str]) -> AsyncIterator[str]:
    """Under ASGI Django reads a synchronous iterator whole before sending anything: pull
    the lines in batches on the request's thread instead, so the export streams."""

    def take() -> str:
        return "".join(islice(lines, EXPORT_BATCH))

    next_chunk = sync_to_async(take, thread_sensitive=True)
    while chunk := await next_chunk():
        yield chunk


@operator_page("audit")
@require_GET
def audit_export(request: HttpRequest) -> Any:
    """GET /console/audit/export?format=csv|jsonl&<the filters>: every filtered event,
    newest first, streamed."""
    fmt = request.GET.get("format", "csv")
    if fmt not in ("csv", "jsonl"):
        return invalid(request, "format: csv or jsonl", section=SECTION, back="/console/audit")
    try:
        rows, _ = search(request.GET)
    except BadFilter as exc:
        return invalid(request, str(exc), section=SECTION, back="/console/audit")
    lines = _lines(rows, fmt)
    response = StreamingHttpResponse(
        _async_chunks(lines) if isinstance(request, ASGIRequest) else lines,
        content_type="text/csv; charset=utf-8" if fmt == "csv" else "application/x-ndjson",
    )
    stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
    response["Content-Disposition"] = f'attachment; filename="rbee-audit-{stamp}.{fmt}"'
    response["Cache-Control"] = "no-store"
    return response


@operator_page("audit")
@require_POST
def audit_verify(request: HttpRequest) -> HttpResponse:
    """POST /console/audit/verify: check every event against the signed checkpoints now
    (what `rbee audit verify` does); the result is kept for this page and the home page."""
    sink = get_sink()
    result: dict[str, Any] = {"at": timezone.now().isoformat(timespec="seconds")}
    try:
        done = ledger.verify(sink=sink)
    except ledger.LogBroken as exc:
        result.update(ok=False, message=str(exc), index=exc.index, checkpoint=exc.checkpoint)
    else:
        result.update(
            ok=True,
            size=done.size,
            root=done.root.hex(),
            checkpoints=done.checkpoints,
            pending=done.pending,
            message=f"ok: {done.size} events, {done.checkpoints} signed checkpoint(s) verified"
            + (f"; {done.pending} appended since, not yet in the tree" if done.pending else ""),
        )
    cache.set(VERIFIED, result, timeout=None)
    return page(
        request,
        "console/audit_verified.html",
        section=SECTION,
        title="Audit log verification",
        status=200 if result["ok"] else 409,
        result=result,
        verify=verification(),
    )


urlpatterns = [
    path("audit", audit_log, name="console-audit"),
    path("audit/export", audit_export, name="console-audit-export"),
    path("audit/verify", audit_verify, name="console-audit-verify"),
]
