"""Writes for billing: usage events (and their Stripe outbox rows), plans."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from billing.models import MeterEvent, UsageEvent
from tenants.models import Plan, Tenant


@dataclass(frozen=True)
class Usage:
    """What one request used, as the worker reported it."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    images: int = 0
    audio_seconds: float = 0.0
    characters: int = 0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def meter_names() -> dict[str, str]:
    """Our unit -> the Stripe Billing Meter's event name (RBEE_STRIPE_METERS)."""
    return dict(settings.RBEE_STRIPE_METERS)


def usage_record(
    *,
    request_id: str,
    tenant_id: int,
    api_key_id: int | None,
    model: str,
    modality: str,
    usage: Usage,
    latency_ms: int = 0,
    worker: str = "",
    outcome: str = UsageEvent.Outcome.OK,
) -> UsageEvent:
    """Record one request's usage, exactly once: a second call with the same request id
    returns the first row unchanged. The Stripe meter events to send are written in the
    same transaction (an outbox), so usage and what Stripe will be told never diverge."""
    existing = UsageEvent.objects.filter(request_id=request_id).first()
    if existing is not None:
        return existing
    try:
        with transaction.atomic():
            event = UsageEvent.objects.create(
                request_id=request_id,
                tenant_id=tenant_id,
                api_key_id=api_key_id,
                model=model[:200],
                modality=modality,
                prompt_tokens=max(0, usage.prompt_tokens),
                completion_tokens=max(0, usage.completion_tokens),
                images=max(0, usage.images),
                audio_seconds=max(0.0, usage.audio_seconds),
                characters=max(0, usage.characters),
                latency_ms=max(0, latency_ms),
                worker=worker[:200],
                outcome=outcome,
            )
            customer = (
                Tenant.objects.filter(pk=tenant_id).values_list("stripe_customer_id", flat=True)
            ).first()
            if customer:
                _outbox(event, customer)
            return event
    except IntegrityError:  # the same request id, recorded concurrently
        return UsageEvent.objects.get(request_id=request_id)


def _outbox(event: UsageEvent, customer: str) -> None:
    values: dict[str, Any] = {
        "prompt_tokens": event.prompt_tokens,
        "completion_tokens": event.completion_tokens,
        "images": event.images,
        "audio_seconds": event.audio_seconds,
        "characters": event.characters,
    }
    names = meter_names()
    rows = [
        MeterEvent(
            usage=event,
            event_name=names[unit],
            identifier=f"{event.request_id}:{unit}",
            customer=customer,
            value=Decimal(str(round(float(value), 6))),
            timestamp=event.created_at or timezone.now(),
        )
        for unit, value in values.items()
        if value and unit in names
    ]
    MeterEvent.objects.bulk_create(rows)


def plan_get_or_create_defaults() -> dict[str, Plan]:
    """The three plans rbee starts with (editable afterwards in the admin or with
    `rbee plan set`): free, pro and enterprise."""
    defaults: dict[str, dict[str, Any]] = {
        "free": {
            "description": "Try it: small daily quotas",
            "requests_per_day": 1000,
            "tokens_per_day": 200_000,
            "images_per_day": 20,
            "audio_seconds_per_day": 3600,
            "characters_per_day": 100_000,
            "requests_per_minute": 60,
            "tokens_per_minute": 40_000,
            "max_concurrent": 4,
        },
        "pro": {
            "description": "Production use",
            "tokens_per_day": 20_000_000,
            "images_per_day": 2000,
            "audio_seconds_per_day": 360_000,
            "characters_per_day": 10_000_000,
            "requests_per_minute": 1200,
            "tokens_per_minute": 1_000_000,
            "max_concurrent": 64,
        },
        "enterprise": {"description": "No limits but the hardware's"},
    }
    out = {}
    with transaction.atomic():
        for name, fields in defaults.items():
            out[name], _ = Plan.objects.get_or_create(name=name, defaults=fields)
    return out


def meter_events_backfill(*, tenant_id: int) -> int:
    """Write the Stripe outbox rows of a tenant's usage recorded before it had a Stripe
    customer (each row's identifier is unique, so running this twice adds nothing)."""
    customer = (
        Tenant.objects.filter(pk=tenant_id).values_list("stripe_customer_id", flat=True).first()
    )
    if not customer:
        return 0
    written = 0
    pending = UsageEvent.objects.filter(tenant_id=tenant_id, meter_events__isnull=True)
    for event in pending.iterator(chunk_size=500):
        with transaction.atomic():
            before = MeterEvent.objects.filter(usage=event).count()
            if before == 0:
                _outbox(event, customer)
                written += 1
    return written
