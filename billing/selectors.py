"""Reads for billing: the price book, usage summaries and the usage CSV.

Tenant isolation is a hard rule here: every query over usage is filtered by the tenant
id it was given, before anything else is added to it (`_usage`).

Costs are Decimal throughout. A cost is quantity x unit price per (model, unit), each
product quantized to 6 places (ROUND_HALF_EVEN) and then summed, the same way an
invoice line is computed, so a month's summary by model adds up to its invoice.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import Count, Min, Q, QuerySet, Sum
from django.db.models.functions import TruncDate

from billing.models import UNITS, MeterEvent, Price, UsageDaily, UsageEvent
from kernel import regions
from tenants.models import ApiKey, Tenant

ANY_MODEL = "*"
DEFAULT_CURRENCY = "usd"
PLACES = Decimal("0.000001")  # amounts and fractional quantities: 6 decimal places

# group_by -> (the value the database groups by, the key of the row's field)
GROUPS: dict[str, tuple[str, str]] = {
    "day": ("day", "day"),
    "model": ("model", "model"),
    "key": ("api_key__prefix", "api_key"),
    "modality": ("modality", "modality"),
}

CSV_HEADER = (
    "created_at",
    "request_id",
    "model",
    "modality",
    "api_key",
    *UNITS,
    "latency_ms",
    "outcome",
    "cost",
    "currency",
)


@dataclass(frozen=True)
class Rate:
    unit_price: Decimal
    currency: str


class PriceBook:
    """Prices loaded once (one query), looked up in memory for bulk costing.

    Precedence for (model, unit, plan): the plan's row for the model, then the plan-less
    row for the model, then the plan's '*' row, then the plan-less '*' row."""

    def __init__(self, rows: Iterable[tuple[str, str, int | None, Decimal, str]]) -> None:
        self._rates: dict[tuple[str, str, int | None], Rate] = {
            (model, unit, plan_id): Rate(Decimal(unit_price), currency or DEFAULT_CURRENCY)
            for model, unit, plan_id, unit_price, currency in rows
        }

    @classmethod
    def load(cls, *, plan_id: int | None = None, every_plan: bool = True) -> PriceBook:
        """Every price (every_plan), or only the plan-less ones and `plan_id`'s."""
        qs = Price.objects.all()
        if not every_plan:
            qs = qs.filter(Q(plan__isnull=True) | Q(plan_id=plan_id))
        return cls(qs.values_list("model", "unit", "plan_id", "unit_price", "currency"))

    @classmethod
    def for_plan(cls, plan_id: int | None) -> PriceBook:
        return cls.load(plan_id=plan_id, every_plan=False)

    def rate(self, model: str, unit: str, plan_id: int | None) -> Rate | None:
        candidates: list[tuple[str, str, int | None]] = []
        if plan_id is not None:
            candidates.append((model, unit, plan_id))
        candidates.append((model, unit, None))
        if plan_id is not None:
            candidates.append((ANY_MODEL, unit, plan_id))
        candidates.append((ANY_MODEL, unit, None))
        for key in candidates:
            found = self._rates.get(key)
            if found is not None:
                return found
        return None

    def price(self, model: str, unit: str, plan_id: int | None) -> Decimal | None:
        found = self.rate(model, unit, plan_id)
        return found.unit_price if found is not None else None

    def cost(
        self, model: str, quantities: dict[str, Any], plan_id: int | None
    ) -> tuple[Decimal, set[str]]:
        """The cost of `quantities` ({unit: amount}) of `model`, and the currencies of
        the prices used (more than one means a misconfigured price book)."""
        total = Decimal(0)
        currencies: set[str] = set()
        for unit in UNITS:
            quantity = as_decimal(quantities.get(unit) or 0)
            if not quantity:
                continue
            found = self.rate(model, unit, plan_id)
            if found is None:
                continue
            total += amount(quantity, found.unit_price)
            currencies.add(found.currency)
        return total, currencies


def price_for(model: str, unit: str, plan_id: int | None) -> Decimal | None:
    """The unit price of `model`'s `unit` on `plan_id` (None: the plan-less prices), or
    None when it is unpriced. One query; use PriceBook for many look-ups."""
    return PriceBook.for_plan(plan_id).price(model, unit, plan_id)


def as_decimal(value: Any) -> Decimal:
    """A quantity from the database as a Decimal: integers exactly, floats (audio
    seconds) through their shortest repr, rounded to 6 places."""
    if isinstance(value, Decimal):
        return value
    if isinstance(value, float):
        return Decimal(repr(value)).quantize(PLACES)
    return Decimal(int(value))


def amount(quantity: Decimal, unit_price: Decimal) -> Decimal:
    return (quantity * unit_price).quantize(PLACES)


def plain(value: Decimal) -> str:
    """A Decimal as a plain string: no exponent, no trailing zeros ("0.0000005", "12")."""
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "") else text


def key_display(prefix: str | None) -> str | None:
    return f"{ApiKey.KIND}-{prefix}-…" if prefix else None


def _usage(tenant_id: int, start: datetime, end: datetime) -> QuerySet[UsageEvent]:
    """The tenant's usage in [start, end). Every usage query starts here. Requests still
    running (provisional rows) are left out until they are final or settled."""
    if tenant_id is None:
        raise ValueError("usage is always read for one tenant: tenant_id is required")
    return UsageEvent.objects.filter(
        tenant_id=tenant_id, created_at__gte=start, created_at__lt=end
    ).exclude(outcome=UsageEvent.Outcome.PROVISIONAL)


def currency_label(currencies: set[str]) -> str:
    """The currency of a cost from the currencies of the prices used: the default when
    none was used, and all of them ("eur,usd") when the price book mixes currencies
    (a misconfiguration: invoices refuse it, see billing.invoices)."""
    return ",".join(sorted(currencies)) or DEFAULT_CURRENCY


def _sums() -> dict[str, Any]:
    return {
        "requests": Count("id"),
        **{unit: Sum(unit) for unit in UNITS},
    }


def _plan_id(tenant_id: int) -> int | None:
    return Tenant.objects.filter(pk=tenant_id).values_list("plan_id", flat=True).first()


def usage_summary(
    *, tenant_id: int, start: datetime, end: datetime, group_by: str
) -> list[dict[str, Any]]:
    """The tenant's usage in [start, end) grouped by "day" (UTC, "YYYY-MM-DD"), "model",
    "key" (the key's display prefix, None for keyless requests) or "modality".

    Each row: the group's field, requests, prompt/completion/total tokens, images,
    audio_seconds, characters, cost (a Decimal as a string, at the tenant's plan prices)
    and currency. Summed in the database per (group, model); costed per model."""
    if group_by not in GROUPS:
        raise ValueError(f"group_by must be one of {', '.join(GROUPS)}, not {group_by!r}")
    source, field = GROUPS[group_by]
    qs = _usage(tenant_id, start, end)
    if group_by == "day":
        qs = qs.annotate(day=TruncDate("created_at", tzinfo=UTC))
    fields = [source] if group_by == "model" else [source, "model"]
    grouped = qs.values(*fields).annotate(**_sums()).order_by()

    book = PriceBook.for_plan(plan_id := _plan_id(tenant_id))
    rows: dict[Any, dict[str, Any]] = {}
    currencies: set[str] = set()
    for item in grouped:
        group = item[source]
        row = rows.get(group)
        if row is None:
            row = rows[group] = {
                field: _group_value(group_by, group),
                "requests": 0,
                **{unit: 0 for unit in UNITS},
                "cost": Decimal(0),
            }
        row["requests"] += item["requests"]
        for unit in UNITS:
            row[unit] += item[unit] or 0
        cost, used = book.cost(item["model"], item, plan_id)
        row["cost"] += cost
        currencies |= used
    currency = currency_label(currencies)
    out = []
    for row in rows.values():
        row["audio_seconds"] = float(as_decimal(float(row["audio_seconds"])))
        row["video_seconds"] = float(as_decimal(float(row["video_seconds"])))
        row["total_tokens"] = row["prompt_tokens"] + row["completion_tokens"]
        row["cost"] = str(row["cost"].quantize(PLACES))
        row["currency"] = currency
        out.append(row)
    # The same order on every database (collations differ); keyless requests last.
    out.sort(key=lambda r: (r[field] is None, r[field] or ""))
    return out


def _group_value(group_by: str, value: Any) -> Any:
    if group_by == "day":
        return value.isoformat()
    if group_by == "key":
        return key_display(value)
    return value


def _csv_line(values: Iterable[Any]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerow(values)
    return buffer.getvalue()


def _text(value: str) -> str:
    """A free-text cell, defused for spreadsheets (no formulas: =, +, -, @, tab, CR)."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def usage_csv(*, tenant_id: int, start: datetime, end: datetime) -> Iterator[str]:
    """The tenant's usage events in [start, end) as CSV lines (a header, then one line
    per request, oldest first), streamed from the database in chunks."""
    book = PriceBook.for_plan(plan_id := _plan_id(tenant_id))
    yield _csv_line(CSV_HEADER)
    qs = (
        _usage(tenant_id, start, end)
        .order_by("created_at", "id")
        .values_list(
            "created_at",
            "request_id",
            "model",
            "modality",
            "api_key__prefix",
            *UNITS,
            "latency_ms",
            "outcome",
        )
    )
    for created_at, request_id, model, modality, prefix, *rest in qs.iterator(chunk_size=2000):
        quantities = dict(zip(UNITS, rest[: len(UNITS)], strict=True))
        latency_ms, outcome = rest[len(UNITS) :]
        cost, used = book.cost(model, quantities, plan_id)
        yield _csv_line(
            (
                created_at.astimezone(UTC).isoformat(),
                _text(request_id),
                _text(model),
                modality,
                key_display(prefix) or "",
                *(plain(as_decimal(quantities[unit])) for unit in UNITS),
                latency_ms,
                outcome,
                str(cost.quantize(PLACES)),
                currency_label(used),
            )
        )


def usage_period(start: date | None = None, end: date | None = None) -> tuple[date, date]:
    """A usage period in whole UTC days, both inclusive: `start` defaults to the first
    day of this month, `end` to the last day of `start`'s month. ValueError when `end`
    is before `start`."""
    if start is None:
        start = datetime.now(UTC).date().replace(day=1)
    if end is None:
        next_month = (start.replace(day=1) + timedelta(days=32)).replace(day=1)
        end = next_month - timedelta(days=1)
    if end < start:
        raise ValueError(f"the period ends ({end}) before it starts ({start})")
    return start, end


def period_bounds(start: date, end: date) -> tuple[datetime, datetime]:
    """The UTC days start..end (inclusive) as the [from, to) instants that
    `usage_summary` and `usage_csv` take."""
    return (
        datetime.combine(start, time.min, tzinfo=UTC),
        datetime.combine(end + timedelta(days=1), time.min, tzinfo=UTC),
    )


# --- residency: where each request ran ----------------------------------------------------


@dataclass(frozen=True)
class ResidencyRow:
    region: str  # the serving hive's region as its operator set it, recorded on the usage row
    hive: str
    requests: int
    within: bool  # whether it lies within the tenant's data region


@dataclass(frozen=True)
class Residency:
    """Where one tenant's requests of one period ran (`rbee gdpr residency`)."""

    tenant: str
    data_region: str  # "" = anywhere
    start: datetime
    end: datetime
    rows: list[ResidencyRow]
    not_run: int  # requests refused or ended before any hive took them (no region)
    # Requests that ran outside the tenant's data region: (request_id, created_at, region,
    # worker). With EU-only routing in force this is always empty; it is listed so that an
    # auditor sees it is, rather than being told.
    outside: list[tuple[str, datetime, str, str]]

    @property
    def total(self) -> int:
        return sum(r.requests for r in self.rows) + self.not_run


def month_bounds(month: str) -> tuple[datetime, datetime]:
    """[start, end) of a YYYY-MM month in UTC (ValueError otherwise)."""
    try:
        first = datetime.strptime(month, "%Y-%m").replace(tzinfo=UTC)
    except ValueError as exc:
        raise ValueError(f"not a month: {month!r} (use YYYY-MM)") from exc
    if first.year > 9998:  # the next month would leave Python's dates (OverflowError)
        raise ValueError(f"not a month: {month!r} (the year must be before 9999)")
    nxt = (first + timedelta(days=32)).replace(day=1)
    return first, nxt


def usage_residency(*, tenant: Tenant, start: datetime, end: datetime) -> Residency:
    """Counts per (region, hive) of the tenant's requests in [start, end), in-flight ones
    included, and every request that ran outside its data region. The region is the one
    recorded on the usage row when the request ran (the hive's operator-set region then),
    so relabelling a hive later does not rewrite history."""
    rows = UsageEvent.objects.filter(tenant_id=tenant.pk, created_at__gte=start, created_at__lt=end)
    groups = rows.values("region", "worker").annotate(n=Count("id")).order_by("region", "worker")
    per_hive: dict[tuple[str, str], int] = {}
    not_run = 0
    outside_keys: list[tuple[str, str]] = []
    for g in groups:
        if not g["worker"]:
            not_run += g["n"]
            continue
        hive = str(g["worker"]).split("/", 1)[0]
        per_hive[(g["region"], hive)] = per_hive.get((g["region"], hive), 0) + g["n"]
        if not regions.within(g["region"], tenant.data_region):
            outside_keys.append((g["region"], g["worker"]))
    outside: list[tuple[str, datetime, str, str]] = []
    for region, worker in outside_keys:
        for r in rows.filter(region=region, worker=worker).order_by("created_at"):
            outside.append((r.request_id, r.created_at, r.region, r.worker))
    return Residency(
        tenant=tenant.name,
        data_region=tenant.data_region,
        start=start,
        end=end,
        rows=[
            ResidencyRow(region, hive, n, regions.within(region, tenant.data_region))
            for (region, hive), n in sorted(per_hive.items())
        ],
        not_run=not_run,
        outside=sorted(outside, key=lambda o: o[1]),
    )


# --- the portal's usage: daily roll-ups (billing.models.UsageDaily) -------------------

DAILY_GROUPS = ("day", "model", "key", "modality")
DAILY_SUMS = ("requests", *UNITS)
NO_KEY = "no key"


def _daily(tenant_id: int, start: date, end: date, key_id: int | None) -> QuerySet[UsageDaily]:
    """The tenant's roll-up rows of the UTC days start..end (inclusive). Every read of
    the roll-up starts here, filtered by the tenant first; `key_id` narrows it to one
    key's rows (the caller checks the key is the tenant's: one of another tenant's
    simply matches nothing here)."""
    if tenant_id is None:
        raise ValueError("usage is always read for one tenant: tenant_id is required")
    qs = UsageDaily.objects.filter(tenant_id=tenant_id, day__gte=start, day__lte=end)
    if key_id is not None:
        qs = qs.filter(key_id=key_id)
    return qs


def key_labels(*, tenant_id: int) -> dict[int, str]:
    """The tenant's keys as the portal names them ("name (sk-rbee-abc-…)"), by id."""
    out: dict[int, str] = {}
    for pk, name, prefix in ApiKey.objects.filter(tenant_id=tenant_id).values_list(
        "pk", "name", "prefix"
    ):
        display = key_display(prefix) or ""
        out[pk] = f"{name} ({display})" if name else display
    return out


def usage_daily_table(
    *,
    tenant_id: int,
    start: date,
    end: date,
    group_by: str,
    key_id: int | None = None,
) -> list[dict[str, Any]]:
    """The tenant's usage of the UTC days start..end from the daily roll-up, one row per
    day (every day of the range, empty ones too), model, key or modality: "group" (its
    value: an ISO day, a model, a key's label or NO_KEY, a modality), requests, the five
    units, total_tokens, cost (a Decimal, 6 places: quantity x unit price per (model,
    unit) at the tenant's plan prices, as an invoice line) and currency."""
    if group_by not in DAILY_GROUPS:
        raise ValueError(f"group_by must be one of {', '.join(DAILY_GROUPS)}, not {group_by!r}")
    source = {"day": "day", "model": "model", "key": "key_id", "modality": "modality"}[group_by]
    fields = [source] if group_by == "model" else [source, "model"]
    grouped = (
        _daily(tenant_id, start, end, key_id)
        .values(*fields)
        .annotate(**{s: Sum(s) for s in DAILY_SUMS})
        .order_by()
    )
    plan_id = _plan_id(tenant_id)
    book = PriceBook.for_plan(plan_id)
    rows: dict[Any, dict[str, Any]] = {}
    if group_by == "day":
        day = start
        while day <= end:  # every day, so a chart and the table show the quiet ones
            rows[day] = _empty_row(day.isoformat())
            day += timedelta(days=1)
    currencies: set[str] = set()
    for item in grouped:
        group = item[source]
        row = rows.get(group)
        if row is None:
            row = rows[group] = _empty_row(group)
        for s in DAILY_SUMS:
            row[s] += item[s] or 0
        cost, used = book.cost(item["model"], item, plan_id)
        row["cost"] += cost
        currencies |= used
    if group_by == "key":
        labels = key_labels(tenant_id=tenant_id)
        for row in rows.values():
            row["group"] = labels.get(row["group"], NO_KEY) if row["group"] else NO_KEY
    currency = currency_label(currencies)
    out = []
    for row in rows.values():
        row["audio_seconds"] = float(as_decimal(float(row["audio_seconds"])))
        row["video_seconds"] = float(as_decimal(float(row["video_seconds"])))
        row["total_tokens"] = row["prompt_tokens"] + row["completion_tokens"]
        row["cost"] = row["cost"].quantize(PLACES)
        row["currency"] = currency
        out.append(row)
    if group_by == "key":
        out.sort(key=lambda r: (r["group"] == NO_KEY, r["group"]))
    else:
        out.sort(key=lambda r: r["group"])
    return out


def _empty_row(group: Any) -> dict[str, Any]:
    return {"group": group, **{s: 0 for s in DAILY_SUMS}, "cost": Decimal(0)}


def usage_daily_totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The sums of a usage_daily_table's rows (its last line)."""
    totals: dict[str, Any] = {s: sum(r[s] for r in rows) for s in (*DAILY_SUMS, "total_tokens")}
    totals["audio_seconds"] = float(as_decimal(float(totals["audio_seconds"])))
    totals["video_seconds"] = float(as_decimal(float(totals["video_seconds"])))
    totals["cost"] = sum((r["cost"] for r in rows), Decimal(0)).quantize(PLACES)
    totals["currency"] = rows[0]["currency"] if rows else DEFAULT_CURRENCY
    return totals


DAILY_CSV_HEADER = (
    "requests",
    *UNITS,
    "total_tokens",
    "cost",
    "currency",
)


def usage_daily_csv(rows: list[dict[str, Any]], *, group_by: str) -> Iterator[str]:
    """A usage_daily_table's rows as CSV lines (RFC 4180 quoting), headed by the
    grouping's name; text cells are defused for spreadsheets (a leading =, +, -, @, tab
    or CR gets a quote: a model or key name is the tenant's own text)."""
    yield _csv_line((group_by, *DAILY_CSV_HEADER))
    for row in rows:
        yield _csv_line(
            (
                _text(str(row["group"])),
                row["requests"],
                *(plain(as_decimal(row[unit])) for unit in UNITS),
                row["total_tokens"],
                str(row["cost"]),
                row["currency"],
            )
        )


def usage_day_totals(*, tenant_id: int, day: date) -> dict[str, float]:
    """One UTC day's finished usage of a tenant from the daily roll-up, in the limiter's
    units (requests, tokens, images, audio_seconds, characters)."""
    from django.db.models import Sum

    from billing.models import UsageDaily

    sums = UsageDaily.objects.filter(tenant_id=tenant_id, day=day).aggregate(
        requests=Sum("requests"),
        prompt=Sum("prompt_tokens"),
        completion=Sum("completion_tokens"),
        images=Sum("images"),
        audio_seconds=Sum("audio_seconds"),
        characters=Sum("characters"),
    )
    return {
        "requests": float(sums["requests"] or 0),
        "tokens": float((sums["prompt"] or 0) + (sums["completion"] or 0)),
        "images": float(sums["images"] or 0),
        "audio_seconds": float(sums["audio_seconds"] or 0.0),
        "characters": float(sums["characters"] or 0),
    }


def usage_today(*, tenant_id: int) -> dict[str, float] | None:
    """Today's (UTC) used + reserved amounts of the tenant's daily quotas, as the gate's
    limiter counts them (billing.limits; a read: nothing is reserved or consumed), or
    None when its store does not answer."""
    import asyncio

    from billing import limits as lim

    async def read() -> dict[str, float]:
        limiter = lim.get_limiter()
        try:
            return await limiter.usage(str(tenant_id))
        finally:
            if isinstance(limiter, lim.RedisLimiter):
                await limiter.aclose()  # this loop's client: the loop ends with this call

    try:
        return asyncio.run(read())
    except lim.STORE_DOWN:
        return None


def meter_outbox_backlog() -> tuple[int, datetime | None]:
    """The Stripe outbox's meter events not sent yet, and the usage time of the oldest
    (None when none waits): one query, for /metrics."""
    got = MeterEvent.objects.filter(sent_at__isnull=True).aggregate(
        n=Count("id"), oldest=Min("timestamp")
    )
    return int(got["n"] or 0), got["oldest"]
