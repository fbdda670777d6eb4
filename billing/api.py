"""The tenant portal's billing API (DRF): usage and invoices, on tenants' portal base.

    GET    /api/tenants/<id>/usage                        ?group_by=day|model|key|modality
                                                          &start=YYYY-MM-DD&end=YYYY-MM-DD
                                                          (both inclusive, UTC; default:
                                                          this month)
    GET    /api/tenants/<id>/usage.csv                    ?start=&end=: one line per request
    GET    /api/tenants/<id>/invoices                     invoices, newest first
    GET    /api/tenants/<id>/invoices/<invoice_id>        one invoice with its lines

Access, roles, errors and tenant isolation are the portal's (tenants/api.py): every object
is looked up through the caller's membership of the tenant, 404 otherwise.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime, time, timedelta
from itertools import islice
from typing import Any

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.http import StreamingHttpResponse
from django.urls import path
from django.utils import timezone
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from billing.models import Invoice
from billing.selectors import usage_csv, usage_summary
from tenants.api import INVOICE_READERS, PortalView, not_found, tenant_access, valid


class InvoiceOutput(serializers.ModelSerializer[Invoice]):
    class Meta:
        model = Invoice
        fields = [
            "id",
            "period_start",
            "period_end",
            "status",
            "currency",
            "total",
            "created_at",
            "updated_at",
        ]


class InvoiceDetailOutput(InvoiceOutput):
    class Meta(InvoiceOutput.Meta):
        fields = [*InvoiceOutput.Meta.fields, "lines"]


# Usage ----------------------------------------------------------------------------------


class PeriodInput(serializers.Serializer[Any]):
    """?start=YYYY-MM-DD&end=YYYY-MM-DD, both inclusive (UTC days); default: this month."""

    start = serializers.DateField(required=False)
    end = serializers.DateField(required=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        today = timezone.now().astimezone(UTC).date()
        start: date = attrs.get("start") or today.replace(day=1)
        if "end" in attrs:
            end: date = attrs["end"]
        else:
            next_month = (start.replace(day=1) + timedelta(days=32)).replace(day=1)
            end = next_month - timedelta(days=1)
        if end < start:
            raise serializers.ValidationError("end is before start")
        return {**attrs, "start": start, "end": end}


def _bounds(start: date, end: date) -> tuple[datetime, datetime]:
    """[start 00:00, the day after end 00:00) in UTC."""
    return (
        datetime.combine(start, time.min, tzinfo=UTC),
        datetime.combine(end + timedelta(days=1), time.min, tzinfo=UTC),
    )


class UsageApi(PortalView):
    class InputSerializer(PeriodInput):
        group_by = serializers.ChoiceField(
            choices=["day", "model", "key", "modality"], default="day"
        )

    def get(self, request: Request, tenant_id: int) -> Response:
        access = tenant_access(request, tenant_id, audit=True)
        v = valid(self.InputSerializer(data=request.query_params))
        start, end = _bounds(v["start"], v["end"])
        rows = usage_summary(
            tenant_id=access.tenant.pk, start=start, end=end, group_by=v["group_by"]
        )
        return Response(
            {
                "tenant": access.tenant.pk,
                "group_by": v["group_by"],
                "start": v["start"].isoformat(),
                "end": v["end"].isoformat(),
                "data": rows,
            }
        )


CSV_BATCH = 500  # lines per chunk sent


async def _async_chunks(lines: Iterator[str]) -> AsyncIterator[str]:
    """Under ASGI Django reads a synchronous iterator whole before sending anything;
    pull the lines in batches on the request's thread instead, so it streams."""

    def take() -> str:
        return "".join(islice(lines, CSV_BATCH))

    next_chunk = sync_to_async(take, thread_sensitive=True)
    while chunk := await next_chunk():
        yield chunk


class UsageCsvApi(PortalView):
    def perform_content_negotiation(self, request: Request, force: bool = False) -> Any:
        # `Accept: text/csv` must not be refused (406): the CSV is not a DRF renderer's.
        return super().perform_content_negotiation(request, force=True)

    def get(self, request: Request, tenant_id: int) -> StreamingHttpResponse:
        access = tenant_access(request, tenant_id, audit=True)
        v = valid(PeriodInput(data=request.query_params))
        start, end = _bounds(v["start"], v["end"])
        lines = usage_csv(tenant_id=access.tenant.pk, start=start, end=end)
        response = StreamingHttpResponse(
            _async_chunks(lines) if isinstance(request._request, ASGIRequest) else lines,
            content_type="text/csv; charset=utf-8",
        )
        name = f"{access.tenant.name}-usage-{v['start'].isoformat()}-{v['end'].isoformat()}.csv"
        response["Content-Disposition"] = f'attachment; filename="{name}"'
        response["Cache-Control"] = "no-store"
        return response


# Invoices -------------------------------------------------------------------------------


class InvoicesApi(PortalView):
    def get(self, request: Request, tenant_id: int) -> Response:
        access = tenant_access(request, tenant_id, audit=True)
        access.require(*INVOICE_READERS)
        rows = Invoice.objects.filter(tenant=access.tenant).order_by("-period_start", "-id")
        return Response({"data": InvoiceOutput(rows, many=True).data})


class InvoiceDetailApi(PortalView):
    def get(self, request: Request, tenant_id: int, invoice_id: int) -> Response:
        access = tenant_access(request, tenant_id, audit=True)
        access.require(*INVOICE_READERS)
        invoice = Invoice.objects.filter(pk=invoice_id, tenant=access.tenant).first()
        if invoice is None:
            raise not_found()
        return Response(InvoiceDetailOutput(invoice).data)


T = "api/tenants/<int:tenant_id>"
urlpatterns = [
    path(f"{T}/usage", UsageApi.as_view()),
    path(f"{T}/usage.csv", UsageCsvApi.as_view()),
    path(f"{T}/invoices", InvoicesApi.as_view()),
    path(f"{T}/invoices/<int:invoice_id>", InvoiceDetailApi.as_view()),
]
