"""Writes for billing: usage events (and their Stripe outbox rows), plans."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, cast

from django.conf import settings
from django.db import IntegrityError, connection, models, transaction
from django.db.models import Count, Sum
from django.db.models.functions import Now, TruncDate
from django.utils import timezone

from billing.models import UNITS, MeterEvent, Price, UsageDaily, UsageEvent
from tenants.actors import SYSTEM, Actor
from tenants.models import Plan, Tenant
from tenants.services import plan_audit

logger = logging.getLogger("billing.services")


@dataclass(frozen=True)
class Usage:
    """What one request used, as the worker reported it."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    images: int = 0
    audio_seconds: float = 0.0
    characters: int = 0
    video_seconds: float = 0.0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def meter_names() -> dict[str, str]:
    """Our unit -> the Stripe Billing Meter's event name (RBEE_STRIPE_METERS)."""
    return dict(settings.RBEE_STRIPE_METERS)


def usage_begin(
    *,
    request_id: str,
    tenant_id: int,
    api_key_id: int | None,
    model: str,
    modality: str,
    queen: str,
    ticket: str = "",
    end_user: str = "",
    client_request_id: str = "",
) -> None:
    """Write a request's provisional usage row when it is admitted: if the queen dies
    before the request ends, the row is still there to be settled (usage_settle_stale).
    A request id seen before is left alone. `heartbeat_at` is the database's clock, as
    is the settler's cutoff: queens whose clocks disagree still agree on a lease."""
    row = UsageEvent(
        request_id=request_id,
        tenant_id=tenant_id,
        api_key_id=api_key_id,
        model=model[:200],
        modality=modality,
        outcome=UsageEvent.Outcome.PROVISIONAL,
        queen=queen[:120],
        ticket=ticket[:64],
        end_user=end_user[:256],
        client_request_id=client_request_id[:512],
        heartbeat_at=Now(),
    )
    try:
        if connection.in_atomic_block:
            # A savepoint, so that a request id seen before leaves the caller's
            # transaction usable.
            with transaction.atomic():
                row.save(force_insert=True)
        else:
            # One INSERT in autocommit is atomic by itself: no BEGIN and COMMIT round
            # trips on the request path (every request writes this row before dispatch).
            row.save(force_insert=True)
    except IntegrityError:
        pass


def usage_progress(*, request_id: str, usage: Usage, latency_ms: int = 0, worker: str = "") -> bool:
    """Refresh a provisional row: its running counts and its heartbeat. False when the row
    is no longer provisional (finalised, or settled because this queen was thought gone)."""
    fields: dict[str, Any] = {
        "prompt_tokens": max(0, usage.prompt_tokens),
        "completion_tokens": max(0, usage.completion_tokens),
        "images": max(0, usage.images),
        "audio_seconds": max(0.0, usage.audio_seconds),
        "characters": max(0, usage.characters),
        "video_seconds": max(0.0, usage.video_seconds),
        "latency_ms": max(0, latency_ms),
        "heartbeat_at": Now(),  # the database's clock, never this queen's
    }
    if worker:
        fields["worker"] = worker[:200]
    provisional = UsageEvent.objects.filter(
        request_id=request_id, outcome=UsageEvent.Outcome.PROVISIONAL
    )
    return provisional.update(**fields) == 1


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
    region: str = "",
    end_user: str = "",
) -> UsageEvent:
    """Record one request's usage, exactly once: the request's provisional row (if it has
    one) is finalised, else a row is made; a row the settler marked `interrupted` takes
    these final counts instead of its heartbeat's, once (the Stripe outbox gets the
    difference); a request id already final returns its row unchanged. The Stripe meter
    events to send are written in the same transaction (an outbox), so usage and what
    Stripe will be told never diverge."""
    final = {
        "prompt_tokens": max(0, usage.prompt_tokens),
        "completion_tokens": max(0, usage.completion_tokens),
        "images": max(0, usage.images),
        "audio_seconds": max(0.0, usage.audio_seconds),
        "characters": max(0, usage.characters),
        "video_seconds": max(0.0, usage.video_seconds),
        "latency_ms": max(0, latency_ms),
        "worker": worker[:200],
        "outcome": outcome,
        "region": region[:32],
    }
    try:
        with transaction.atomic():
            # The request's provisional row, if it still is one: one finaliser wins (this
            # call, a concurrent one, or the settler).
            won = UsageEvent.objects.filter(
                request_id=request_id, outcome=UsageEvent.Outcome.PROVISIONAL
            ).update(heartbeat_at=None, **final)
            if won:
                # The row and its tenant's Stripe customer in one query (the hot path).
                found: UsageEvent = UsageEvent.objects.annotate(
                    _customer=models.F("tenant__stripe_customer_id")
                ).get(request_id=request_id)
                _rollup_event(found)
                _outbox_for(found, getattr(found, "_customer", None))
                return found
            # Settled as interrupted meanwhile (its queen was thought gone, or its final
            # write came after the lease): the real figures replace the heartbeat's, once
            # (the row is no longer interrupted afterwards), and Stripe is told the
            # difference.
            # Its interrupted counts (what the roll-up holds for it), locked: they change
            # only here, once.
            before = (
                UsageEvent.objects.select_for_update()
                .filter(request_id=request_id, outcome=UsageEvent.Outcome.INTERRUPTED)
                .values(*UNITS)
                .first()
            )
            late = (
                UsageEvent.objects.filter(
                    request_id=request_id, outcome=UsageEvent.Outcome.INTERRUPTED
                ).update(heartbeat_at=None, **final)
                if before is not None
                else 0
            )
            if late and before is not None:
                event = UsageEvent.objects.get(request_id=request_id)
                _rollup_event(event, requests=0, minus=before)
                _outbox_correct(event)
                logger.warning(
                    "request %s was settled as interrupted but has ended: its final usage "
                    "(%d+%d tokens) replaces the interrupted counts",
                    request_id,
                    event.prompt_tokens,
                    event.completion_tokens,
                )
                return event
            existing = UsageEvent.objects.filter(request_id=request_id).first()
            if existing is not None:
                return existing  # already final: unchanged
            event = UsageEvent.objects.create(
                request_id=request_id,
                tenant_id=tenant_id,
                api_key_id=api_key_id,
                model=model[:200],
                modality=modality,
                end_user=end_user[:256],
                **final,
            )
            _rollup_event(event)
            _outbox_for(event)
            return event
    except IntegrityError:  # the same request id, recorded concurrently
        return UsageEvent.objects.get(request_id=request_id)


def _outbox_for(event: UsageEvent, customer: str | None = None) -> None:
    """The row's meter events for Stripe, if its tenant is a Stripe customer (`customer`:
    the tenant's customer id when the caller read it already)."""
    if customer is None:
        customer = (
            Tenant.objects.filter(pk=event.tenant_id).values_list("stripe_customer_id", flat=True)
        ).first()
    if customer:
        _outbox(event, customer)


@dataclass(frozen=True)
class Settled:
    """A provisional row settled as interrupted: what its reservation is settled with."""

    request_id: str
    tenant_id: int
    ticket: str
    usage: Usage


def usage_settle_stale(*, lease_s: float, limit: int = 500) -> list[Settled]:
    """Settle provisional rows nobody will finalise as `interrupted`, with the counts of
    their last heartbeat: rows whose queen process is gone (kernel.process.instance_gone:
    a queen restarted on this host, boot and pid namespace settles its predecessor's rows
    at once) and rows whose heartbeat is older than `lease_s` by the database's clock (a
    queen elsewhere that died, or cannot reach the database; should it be alive after
    all, its final write still wins, see usage_record). Each row is settled once, whoever
    else settles or finalises it at the same time; the Stripe outbox is written with it.
    Returns what was settled, so the caller can settle the limiter reservations too (as
    interim: a final settle still corrects them)."""
    from kernel.process import instance_gone, instance_id

    provisional = UsageEvent.objects.filter(outcome=UsageEvent.Outcome.PROVISIONAL)
    me = instance_id()
    queens = set(provisional.exclude(queen=me).values_list("queen", flat=True).distinct()[:1000])
    gone = [q for q in queens if q and instance_gone(q)]
    # The database's clock, the one every heartbeat was written with (usage_begin,
    # usage_progress): a queen whose own clock is off does not settle live rows.
    cutoff = Now() - timedelta(seconds=lease_s)
    stale = provisional.filter(models.Q(heartbeat_at__lt=cutoff) | models.Q(queen__in=gone))
    settled: list[Settled] = []
    for pk in list(stale.order_by("pk").values_list("pk", flat=True)[:limit]):
        with transaction.atomic():
            won = UsageEvent.objects.filter(pk=pk, outcome=UsageEvent.Outcome.PROVISIONAL).update(
                outcome=UsageEvent.Outcome.INTERRUPTED, heartbeat_at=None
            )
            if not won:
                continue
            event = UsageEvent.objects.get(pk=pk)
            _rollup_event(event)
            _outbox_for(event)
        settled.append(
            Settled(
                request_id=event.request_id,
                tenant_id=event.tenant_id,
                ticket=event.ticket,
                usage=Usage(
                    prompt_tokens=event.prompt_tokens,
                    completion_tokens=event.completion_tokens,
                    images=event.images,
                    audio_seconds=event.audio_seconds,
                    characters=event.characters,
                    video_seconds=event.video_seconds,
                ),
            )
        )
    return settled


def _meter_values(event: UsageEvent) -> dict[str, Decimal]:
    """The row's amount of each metered unit, as the outbox writes it."""
    values: dict[str, Any] = {
        "prompt_tokens": event.prompt_tokens,
        "completion_tokens": event.completion_tokens,
        "images": event.images,
        "audio_seconds": event.audio_seconds,
        "characters": event.characters,
        "video_seconds": event.video_seconds,
    }
    return {unit: Decimal(str(round(float(value), 6))) for unit, value in values.items()}


def _outbox(event: UsageEvent, customer: str) -> None:
    names = meter_names()
    rows = [
        MeterEvent(
            usage=event,
            event_name=names[unit],
            identifier=f"{event.request_id}:{unit}",
            customer=customer,
            value=value,
            timestamp=event.created_at or timezone.now(),
        )
        for unit, value in _meter_values(event).items()
        if value and unit in names
    ]
    MeterEvent.objects.bulk_create(rows)


def _outbox_correct(event: UsageEvent) -> None:
    """A row settled as interrupted (its outbox written with the heartbeat's counts, and
    maybe sent already) now holds its final counts: write what Stripe still lacks, per
    unit, as one more meter event `{request_id}:{unit}:final` with the difference (Stripe
    sums a meter's events, and takes negative values to correct over-reported usage).
    Its identifier is unique and this runs only in the transaction that moved the row out
    of `interrupted`, so the correction is counted once. A row whose outbox was never
    written (no Stripe customer then) gets its ordinary one, with the final counts."""
    outbox = list(
        MeterEvent.objects.filter(usage=event).values_list("identifier", "value", "customer")
    )
    if not outbox:
        _outbox_for(event)
        return
    customer = outbox[0][2]  # the customer the interrupted counts went to
    sent = {identifier: value for identifier, value, _customer in outbox}
    names = meter_names()
    rows = []
    for unit, value in _meter_values(event).items():
        if unit not in names:
            continue
        already = sent.get(f"{event.request_id}:{unit}", Decimal(0))
        delta = value - Decimal(already)
        if delta:
            rows.append(
                MeterEvent(
                    usage=event,
                    event_name=names[unit],
                    identifier=f"{event.request_id}:{unit}:final",
                    customer=customer,
                    value=delta,
                    timestamp=event.created_at or timezone.now(),
                )
            )
    MeterEvent.objects.bulk_create(rows)


def plan_get_or_create_defaults(*, actor: Actor = SYSTEM) -> dict[str, Plan]:
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
            out[name], created = Plan.objects.get_or_create(name=name, defaults=fields)
            if created:
                plan_audit(plan=out[name], created=True, actor=actor)
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
    # Provisional rows get theirs when they are finalised or settled.
    pending = UsageEvent.objects.filter(tenant_id=tenant_id, meter_events__isnull=True).exclude(
        outcome=UsageEvent.Outcome.PROVISIONAL
    )
    for event in pending.iterator(chunk_size=500):
        with transaction.atomic():
            before = MeterEvent.objects.filter(usage=event).count()
            if before == 0:
                _outbox(event, customer)
                written += 1
    return written


# --- the price book -------------------------------------------------------------------------

PRICE_PLACES = 12  # billing.models.Price.unit_price: 20 digits, 12 after the point


def price_set(
    *,
    model: str,
    unit: str,
    unit_price: Decimal | str,
    plan_name: str | None = None,
    currency: str = "usd",
    actor: Actor = SYSTEM,
) -> tuple[Price, bool]:
    """Set the price of one `unit` of `model` ("*": every model without a row of its own)
    for the plan `plan_name` (None: the default that plans without their own price use).
    Returns (price, created); recorded as price.set with the old and the new price."""
    from billing.errors import BillingCode, BillingError
    from gdpr import audit
    from gdpr.actions import AuditAction

    def bad(message: str) -> BillingError:
        return BillingError(BillingCode.INVALID_PRICE, message)

    model = (model or "").strip()
    if not model or len(model) > 200:
        raise bad("name a model (up to 200 characters), or * for every model")
    if unit not in Price.Unit.values:
        raise bad(f"unknown unit {unit!r}: use {', '.join(Price.Unit.values)}")
    currency = (currency or "").strip().lower()
    if len(currency) != 3 or not currency.isascii() or not currency.isalpha():
        raise bad(f"not a currency code: {currency!r} (ISO 4217, e.g. usd, eur)")
    try:
        value = Decimal(str(unit_price).strip())
    except ArithmeticError:
        raise bad(f"not a price: {str(unit_price)[:40]!r}") from None
    if not value.is_finite() or value < 0 or value >= Decimal(10) ** (20 - PRICE_PLACES):
        raise bad(f"a unit price is from 0 to below 10^{20 - PRICE_PLACES}, not {value}")
    if value != value.quantize(Decimal(1).scaleb(-PRICE_PLACES)):
        raise bad(f"a unit price has at most {PRICE_PLACES} decimal places")
    plan = None
    if plan_name:
        plan = Plan.objects.filter(name=plan_name).first()
        if plan is None:
            raise bad(f"no plan named {plan_name!r}")
    with transaction.atomic():
        row = Price.objects.select_for_update().filter(model=model, unit=unit, plan=plan).first()
        before = None if row is None else (format(row.unit_price.normalize(), "f"), row.currency)
        if row is None:
            row = Price(model=model, unit=unit, plan=plan)
        row.unit_price = value
        row.currency = currency
        row.save()
        audit.record(
            AuditAction.PRICE_SET,
            actor=actor,
            data={
                "model": model,
                "unit": unit,
                "plan": plan.name if plan is not None else None,
                "unit_price": format(value.normalize(), "f"),
                "currency": currency,
                "created": before is None,
                "from": None
                if before is None
                else {"unit_price": before[0], "currency": before[1]},
            },
        )
    return row, before is None


# --- the daily roll-up (billing.models.UsageDaily) ------------------------------------

_ROLLUP_KEY = ("tenant_id", "day", "model", "key_id", "modality")
_ROLLUP_SUMS = ("requests", *UNITS)


def _upsert_sql() -> str:
    """One INSERT that adds to an existing row's counters instead (PostgreSQL and SQLite
    >= 3.24 share the syntax): concurrent writers of the same group never lose one."""
    table = UsageDaily._meta.db_table
    columns = ", ".join((*_ROLLUP_KEY, *_ROLLUP_SUMS))
    marks = ", ".join(["%s"] * (len(_ROLLUP_KEY) + len(_ROLLUP_SUMS)))
    adds = ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in _ROLLUP_SUMS)
    return (
        f"INSERT INTO {table} ({columns}) VALUES ({marks}) "  # noqa: S608 (names are ours)
        f"ON CONFLICT ({', '.join(_ROLLUP_KEY)}) DO UPDATE SET {adds}"
    )


def usage_day(created_at: datetime) -> date:
    """The roll-up's day of a request: the UTC date it was admitted."""
    return created_at.astimezone(UTC).date()


_FLOAT_UNITS = ("audio_seconds", "video_seconds")


def _rollup_add(
    *,
    tenant_id: int,
    day: date,
    model: str,
    key_id: int,
    modality: str,
    requests: int,
    amounts: dict[str, Any],
) -> None:
    values: list[Any] = [tenant_id, day.isoformat(), model, key_id, modality, requests]
    values += [amounts.get(unit) or (0.0 if unit in _FLOAT_UNITS else 0) for unit in UNITS]
    if not any(values[len(_ROLLUP_KEY) :]):
        return
    with connection.cursor() as cursor:
        cursor.execute(_upsert_sql(), values)


def _rollup_event(
    event: UsageEvent, *, requests: int = 1, minus: dict[str, Any] | None = None
) -> None:
    """Add a row that has just come to count (finalised, made final, settled as
    interrupted) to its day's roll-up; `minus`: the counts it already added (a late
    final write replacing interrupted counts adds only the difference, and no request).
    Runs inside the transaction of the write it follows."""
    amounts: dict[str, Any] = {unit: getattr(event, unit) for unit in UNITS}
    if minus is not None:
        amounts = {unit: amounts[unit] - (minus.get(unit) or 0) for unit in UNITS}
    _rollup_add(
        tenant_id=event.tenant_id,
        day=usage_day(event.created_at),
        model=event.model,
        key_id=event.api_key_id or 0,
        modality=event.modality,
        requests=requests,
        amounts=amounts,
    )


def _lock_rollup() -> None:
    """Hold off every roll-up writer until this transaction ends (PostgreSQL: a usage
    write takes ROW EXCLUSIVE, which SHARE ROW EXCLUSIVE conflicts with; SQLite has one
    writer at a time anyway), so what is rebuilt and what is written meanwhile add up."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"LOCK TABLE {UsageDaily._meta.db_table} IN SHARE ROW EXCLUSIVE MODE")


def usage_rollup_rebuild(
    *,
    tenant_ids: Iterable[int] | None = None,
    start: date | None = None,
    end: date | None = None,
) -> int:
    """Recompute the daily roll-up from the raw usage events: every tenant's (or
    `tenant_ids`'), every day (or the UTC days start..end, both inclusive). For data
    written before the roll-up existed, or after an operator edited usage rows by hand.
    One transaction, with usage writers held off meanwhile (a few seconds per million
    events); returns the number of roll-up rows written."""
    ids = None if tenant_ids is None else sorted(set(tenant_ids))
    rows = UsageDaily.objects.all()
    events = UsageEvent.objects.exclude(outcome=UsageEvent.Outcome.PROVISIONAL)
    if ids is not None:
        rows = rows.filter(tenant_id__in=ids)
        events = events.filter(tenant_id__in=ids)
    if start is not None:
        rows = rows.filter(day__gte=start)
        events = events.filter(created_at__gte=datetime.combine(start, time.min, tzinfo=UTC))
    if end is not None:
        rows = rows.filter(day__lte=end)
        after = datetime.combine(end + timedelta(days=1), time.min, tzinfo=UTC)
        events = events.filter(created_at__lt=after)
    groups = (
        events.annotate(day=TruncDate("created_at", tzinfo=UTC))
        .values("tenant_id", "day", "model", "api_key_id", "modality")
        .annotate(requests=Count("id"), **{unit: Sum(unit) for unit in UNITS})
        .order_by()
    )
    written = 0
    with transaction.atomic():
        _lock_rollup()
        rows.delete()
        batch: list[UsageDaily] = []
        for item in groups.iterator(chunk_size=5000):
            g = cast(dict[str, Any], item)
            batch.append(
                UsageDaily(
                    tenant_id=g["tenant_id"],
                    day=g["day"],
                    model=g["model"],
                    key_id=g["api_key_id"] or 0,
                    modality=g["modality"],
                    requests=g["requests"],
                    **{unit: g[unit] or 0 for unit in UNITS},
                )
            )
            if len(batch) >= 5000:
                UsageDaily.objects.bulk_create(batch)
                written += len(batch)
                batch = []
        UsageDaily.objects.bulk_create(batch)
        written += len(batch)
    return written


def usage_rollup_forget_key(*, tenant_id: int, key_id: int) -> None:
    """A deleted key's usage rows lose their key (UsageEvent.api_key is SET_NULL): its
    roll-up rows are merged into the keyless ones (key_id 0) the same way."""
    if not key_id:
        return
    table = UsageDaily._meta.db_table
    columns = ", ".join((*_ROLLUP_KEY, *_ROLLUP_SUMS))
    picked = ", ".join(("tenant_id", "day", "model", "0", "modality", *_ROLLUP_SUMS))
    adds = ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in _ROLLUP_SUMS)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} ({columns}) SELECT {picked} FROM {table} "  # noqa: S608 (names are ours)
            f"WHERE tenant_id = %s AND key_id = %s "
            f"ON CONFLICT ({', '.join(_ROLLUP_KEY)}) DO UPDATE SET {adds}",
            [tenant_id, key_id],
        )
        UsageDaily.objects.filter(tenant_id=tenant_id, key_id=key_id).delete()
