"""billing/selectors.py, billing/invoices.py and billing/invoice_tasks.py: the price book,
usage summaries, the usage CSV and monthly invoices, exact to the last decimal place.

Two tenants use the queen in March 2025 at the same times: acme (plan "pro") and globex
(no plan). Everything read for one must never show the other's usage.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest

from billing.invoice_tasks import build_monthly_invoices, previous_month
from billing.invoices import InvoiceError, invoice_build, invoices_build_all, month_bounds
from billing.models import Invoice, Price, UsageEvent
from billing.selectors import CSV_HEADER, PriceBook, price_for, usage_csv, usage_summary
from billing.services import Usage, usage_record
from tenants.models import ApiKey, Plan, Tenant
from tenants.services import api_key_create

pytestmark = pytest.mark.django_db

D = Decimal
MARCH = (datetime(2025, 3, 1, tzinfo=UTC), datetime(2025, 4, 1, tzinfo=UTC))


def at(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def record(
    tenant: Tenant,
    request_id: str,
    when: datetime,
    model: str,
    modality: str,
    key: ApiKey | None = None,
    **usage: Any,
) -> UsageEvent:
    event = usage_record(
        request_id=request_id,
        tenant_id=tenant.pk,
        api_key_id=key.pk if key else None,
        model=model,
        modality=modality,
        usage=Usage(**usage),
        latency_ms=42,
    )
    UsageEvent.objects.filter(pk=event.pk).update(created_at=when)
    return event


def price(model: str, unit: str, unit_price: str, plan: Plan | None = None) -> None:
    Price.objects.create(model=model, unit=unit, plan=plan, unit_price=D(unit_price))


@pytest.fixture
def pro() -> Plan:
    return Plan.objects.create(name="pro")


@pytest.fixture
def prices(pro: Plan) -> None:
    price("*", "prompt_tokens", "0.000001")
    price("*", "completion_tokens", "0.000002")
    price("*", "completion_tokens", "0.0000015", pro)
    price("llama", "prompt_tokens", "0.0000005")
    price("llama", "prompt_tokens", "0.0000004", pro)
    price("llama", "completion_tokens", "0.000003")
    price("sdxl", "images", "0.04")
    price("whisper", "audio_seconds", "0.0001")
    # characters: unpriced


class World:
    acme: Tenant
    globex: Tenant
    k1: ApiKey
    k2: ApiKey
    g1: ApiKey


@pytest.fixture
def world(pro: Plan, prices: None) -> World:
    w = World()
    w.acme = Tenant.objects.create(name="acme", tier="pro", plan=pro)
    w.globex = Tenant.objects.create(name="globex")
    w.k1, _ = api_key_create(tenant=w.acme, name="one")
    w.k2, _ = api_key_create(tenant=w.acme, name="two")
    w.g1, _ = api_key_create(tenant=w.globex, name="theirs")
    a = w.acme
    record(
        a,
        "a1",
        at(2025, 3, 1, 10),
        "llama",
        "chat",
        w.k1,
        prompt_tokens=1000,
        completion_tokens=500,
    )
    record(
        a,
        "a2",
        at(2025, 3, 1, 23, 30),
        "llama",
        "chat",
        w.k2,
        prompt_tokens=2000,
        completion_tokens=100,
    )
    record(
        a,
        "a3",
        at(2025, 3, 2, 0, 15),
        "qwen",
        "completion",
        None,
        prompt_tokens=300,
        completion_tokens=700,
    )
    record(a, "a4", at(2025, 3, 2, 12), "sdxl", "image", w.k1, images=2)
    record(a, "a5", at(2025, 3, 3, 8), "whisper", "transcription", w.k1, audio_seconds=12.5)
    record(a, "a6", at(2025, 3, 3, 9), "tts", "speech", w.k2, characters=1234)
    # Just outside March, on both sides.
    record(a, "a7", at(2025, 4, 1), "llama", "chat", w.k1, prompt_tokens=999)
    record(a, "a8", at(2025, 2, 28, 23, 59, 59), "llama", "chat", w.k1, prompt_tokens=777)
    # The other tenant, at the same times, with models and sizes of its own.
    g = w.globex
    for i, when in enumerate([at(2025, 3, 1, 10), at(2025, 3, 2, 12), at(2025, 3, 3, 9)]):
        record(
            g,
            f"g{i}",
            when,
            "secret-model",
            "chat",
            w.g1,
            prompt_tokens=1_000_000,
            completion_tokens=1_000_000,
        )
    record(g, "g-img", at(2025, 3, 2, 12), "sdxl", "image", w.g1, images=50)
    record(g, "g-llama", at(2025, 3, 1, 10), "llama", "chat", None, prompt_tokens=5000)
    return w


def by(rows: list[dict[str, Any]], field: str) -> dict[Any, dict[str, Any]]:
    return {row[field]: row for row in rows}


# --- price book -----------------------------------------------------------------------


def test_price_precedence(pro: Plan, prices: None) -> None:
    free = Plan.objects.create(name="free")
    # The plan's row for the model beats the plan-less one.
    assert price_for("llama", "prompt_tokens", pro.pk) == D("0.0000004")
    assert price_for("llama", "prompt_tokens", None) == D("0.0000005")
    assert price_for("llama", "prompt_tokens", free.pk) == D("0.0000005")
    # The plan-less row for the model beats the plan's '*'.
    assert price_for("llama", "completion_tokens", pro.pk) == D("0.000003")
    # The plan's '*' beats the plan-less '*'.
    assert price_for("qwen", "completion_tokens", pro.pk) == D("0.0000015")
    assert price_for("qwen", "completion_tokens", free.pk) == D("0.000002")
    assert price_for("qwen", "completion_tokens", None) == D("0.000002")
    assert price_for("qwen", "prompt_tokens", pro.pk) == D("0.000001")
    # Unpriced.
    assert price_for("qwen", "images", pro.pk) is None
    assert price_for("tts", "characters", None) is None
    assert price_for("sdxl", "images", pro.pk) == D("0.04")


def test_price_book_loads_once(pro: Plan, prices: None, django_assert_num_queries: Any) -> None:
    with django_assert_num_queries(1):
        book = PriceBook.load()
        looked_up = [
            book.price(model, unit, plan)
            for model in ("llama", "qwen", "sdxl", "whisper", "tts")
            for unit in ("prompt_tokens", "completion_tokens", "images", "audio_seconds")
            for plan in (pro.pk, None)
        ]
    assert book.price("llama", "prompt_tokens", pro.pk) == D("0.0000004")
    # prompt and completion tokens priced for every model (by "*"), images for sdxl, audio
    # seconds for whisper; on both plans.
    assert sum(p is not None for p in looked_up) == 2 * (5 * 2 + 1 + 1)
    only_pro = PriceBook.for_plan(pro.pk)
    assert only_pro.price("qwen", "completion_tokens", pro.pk) == D("0.0000015")


# --- summaries -------------------------------------------------------------------------


def test_summary_by_day(world: World) -> None:
    rows = usage_summary(tenant_id=world.acme.pk, start=MARCH[0], end=MARCH[1], group_by="day")
    assert [r["day"] for r in rows] == ["2025-03-01", "2025-03-02", "2025-03-03"]
    d = by(rows, "day")
    assert d["2025-03-01"] == {
        "day": "2025-03-01",
        "requests": 2,
        "prompt_tokens": 3000,
        "completion_tokens": 600,
        "total_tokens": 3600,
        "images": 0,
        "audio_seconds": 0.0,
        "characters": 0,
        "video_seconds": 0.0,
        # llama: 3000 x 0.0000004 + 600 x 0.000003
        "cost": "0.003000",
        "currency": "usd",
    }
    assert d["2025-03-02"]["requests"] == 2
    assert d["2025-03-02"]["images"] == 2
    # qwen: 300 x 0.000001 + 700 x 0.0000015, sdxl: 2 x 0.04
    assert D(d["2025-03-02"]["cost"]) == D("0.00135") + D("0.08")
    assert d["2025-03-03"]["audio_seconds"] == 12.5
    assert d["2025-03-03"]["characters"] == 1234
    assert D(d["2025-03-03"]["cost"]) == D("0.00125")  # characters unpriced


def test_summary_by_model(world: World) -> None:
    rows = usage_summary(tenant_id=world.acme.pk, start=MARCH[0], end=MARCH[1], group_by="model")
    assert [r["model"] for r in rows] == ["llama", "qwen", "sdxl", "tts", "whisper"]
    m = by(rows, "model")
    assert (m["llama"]["requests"], m["llama"]["total_tokens"], m["llama"]["cost"]) == (
        2,
        3600,
        "0.003000",
    )
    assert m["qwen"]["cost"] == "0.001350"
    assert m["sdxl"]["cost"] == "0.080000"
    assert m["tts"]["cost"] == "0.000000"
    assert m["whisper"]["cost"] == "0.001250"
    assert sum(D(r["cost"]) for r in rows) == D("0.0856")
    assert sum(r["requests"] for r in rows) == 6


def test_summary_by_key(world: World) -> None:
    rows = usage_summary(tenant_id=world.acme.pk, start=MARCH[0], end=MARCH[1], group_by="key")
    k1, k2 = world.k1.display, world.k2.display
    assert k1.startswith("sk-rbee-") and k1.endswith("…")
    assert [r["api_key"] for r in rows] == [*sorted([k1, k2]), None]
    k = by(rows, "api_key")
    assert (k[k1]["requests"], D(k[k1]["cost"])) == (3, D("0.0019") + D("0.08") + D("0.00125"))
    assert (k[k2]["requests"], D(k[k2]["cost"])) == (2, D("0.0011"))
    assert (k[None]["requests"], k[None]["cost"], k[None]["prompt_tokens"]) == (1, "0.001350", 300)


def test_summary_by_modality(world: World) -> None:
    rows = usage_summary(tenant_id=world.acme.pk, start=MARCH[0], end=MARCH[1], group_by="modality")
    m = by(rows, "modality")
    assert set(m) == {"chat", "completion", "image", "transcription", "speech"}
    assert (m["chat"]["requests"], m["chat"]["cost"]) == (2, "0.003000")
    assert m["completion"]["cost"] == "0.001350"
    assert (m["image"]["images"], m["image"]["cost"]) == (2, "0.080000")
    assert m["transcription"]["audio_seconds"] == 12.5
    assert (m["speech"]["characters"], m["speech"]["cost"]) == (1234, "0.000000")


def test_summary_uses_the_tenants_plan_prices(world: World) -> None:
    # globex has no plan: plan-less prices (llama prompt 0.0000005, sdxl 0.04,
    # '*' prompt 0.000001 and completion 0.000002 for secret-model).
    rows = usage_summary(tenant_id=world.globex.pk, start=MARCH[0], end=MARCH[1], group_by="model")
    m = by(rows, "model")
    assert set(m) == {"llama", "sdxl", "secret-model"}
    assert m["llama"]["cost"] == "0.002500"
    assert m["sdxl"]["cost"] == "2.000000"
    assert m["secret-model"]["cost"] == "9.000000"  # 3M x 0.000001 + 3M x 0.000002


def test_summary_rejects_unknown_grouping(world: World) -> None:
    with pytest.raises(ValueError, match="group_by"):
        usage_summary(tenant_id=world.acme.pk, start=MARCH[0], end=MARCH[1], group_by="worker")


def test_summary_of_an_empty_period(world: World) -> None:
    for group_by in ("day", "model", "key", "modality"):
        assert (
            usage_summary(
                tenant_id=world.acme.pk,
                start=at(2024, 1, 1),
                end=at(2024, 2, 1),
                group_by=group_by,
            )
            == []
        )


# --- tenant isolation ---------------------------------------------------------------------


def test_another_tenants_usage_never_appears(world: World) -> None:
    theirs = {"secret-model", world.g1.display}
    for group_by, field in (
        ("day", "day"),
        ("model", "model"),
        ("key", "api_key"),
        ("modality", "modality"),
    ):
        mine = usage_summary(
            tenant_id=world.acme.pk, start=MARCH[0], end=MARCH[1], group_by=group_by
        )
        assert sum(r["requests"] for r in mine) == 6, group_by
        assert sum(r["prompt_tokens"] for r in mine) == 3300, group_by
        assert sum(r["images"] for r in mine) == 2, group_by
        assert not theirs & {r[field] for r in mine}, group_by
        other = usage_summary(
            tenant_id=world.globex.pk, start=MARCH[0], end=MARCH[1], group_by=group_by
        )
        assert sum(r["requests"] for r in other) == 5, group_by
        assert sum(r["prompt_tokens"] for r in other) == 3_005_000, group_by
        assert not {world.k1.display, world.k2.display, "qwen", "tts"} & {
            r[field] for r in other
        }, group_by

    text = "".join(usage_csv(tenant_id=world.acme.pk, start=MARCH[0], end=MARCH[1]))
    assert "secret-model" not in text and world.g1.display not in text
    assert {r["request_id"] for r in csv.DictReader(io.StringIO(text))} == {
        "a1",
        "a2",
        "a3",
        "a4",
        "a5",
        "a6",
    }
    text = "".join(usage_csv(tenant_id=world.globex.pk, start=MARCH[0], end=MARCH[1]))
    assert {r["request_id"] for r in csv.DictReader(io.StringIO(text))} == {
        "g0",
        "g1",
        "g2",
        "g-img",
        "g-llama",
    }

    my_invoice = invoice_build(tenant=world.acme, year=2025, month=3)
    assert {line["model"] for line in my_invoice.lines} == {
        "llama",
        "qwen",
        "sdxl",
        "tts",
        "whisper",
    }
    llama = [line for line in my_invoice.lines if line["model"] == "llama"]
    assert [line["quantity"] for line in llama] == ["3000", "600"]  # not globex's 5000
    sdxl = next(line for line in my_invoice.lines if line["model"] == "sdxl")
    assert sdxl["quantity"] == "2"
    their_invoice = invoice_build(tenant=world.globex, year=2025, month=3)
    assert {line["model"] for line in their_invoice.lines} == {"llama", "sdxl", "secret-model"}
    assert their_invoice.total == D("11.0025")


def test_usage_is_never_read_without_a_tenant(world: World) -> None:
    with pytest.raises(ValueError, match="tenant"):
        usage_summary(tenant_id=None, start=MARCH[0], end=MARCH[1], group_by="day")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tenant"):
        list(usage_csv(tenant_id=None, start=MARCH[0], end=MARCH[1]))  # type: ignore[arg-type]


# --- CSV ------------------------------------------------------------------------------------


def test_csv_parses_back_and_sums_match(world: World) -> None:
    lines = list(usage_csv(tenant_id=world.acme.pk, start=MARCH[0], end=MARCH[1]))
    assert len(lines) == 7
    assert all(line.endswith("\r\n") for line in lines)
    reader = csv.reader(io.StringIO("".join(lines)))
    header = next(reader)
    assert tuple(header) == CSV_HEADER
    rows = [dict(zip(header, row, strict=True)) for row in reader]
    assert [r["request_id"] for r in rows] == ["a1", "a2", "a3", "a4", "a5", "a6"]  # oldest first
    assert rows[0]["created_at"] == "2025-03-01T10:00:00+00:00"
    assert rows[1]["api_key"] == world.k2.display
    assert rows[2]["api_key"] == ""
    assert rows[0]["latency_ms"] == "42" and rows[0]["outcome"] == "ok"
    assert [r["cost"] for r in rows] == [
        "0.001900",
        "0.001100",
        "0.001350",
        "0.080000",
        "0.001250",
        "0.000000",
    ]
    assert {r["currency"] for r in rows} == {"usd"}

    summary = by(
        usage_summary(tenant_id=world.acme.pk, start=MARCH[0], end=MARCH[1], group_by="model"),
        "model",
    )
    for unit in ("prompt_tokens", "completion_tokens", "images", "characters"):
        assert sum(int(r[unit]) for r in rows) == sum(s[unit] for s in summary.values()), unit
    assert sum(D(r["audio_seconds"]) for r in rows) == D("12.5")
    assert sum(D(r["cost"]) for r in rows) == sum(D(s["cost"]) for s in summary.values())
    assert (
        sum(D(r["cost"]) for r in rows)
        == invoice_build(tenant=world.acme, year=2025, month=3).total
    )


def test_csv_quotes_and_defuses_awkward_values(world: World) -> None:
    record(world.acme, "q1", at(2025, 3, 5), 'odd, "model"\nname', "chat", None, prompt_tokens=1)
    record(world.acme, "q2", at(2025, 3, 6), "=HYPERLINK(1)", "chat", None, prompt_tokens=1)
    text = "".join(usage_csv(tenant_id=world.acme.pk, start=at(2025, 3, 5), end=at(2025, 3, 7)))
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["model"] for r in rows] == ['odd, "model"\nname', "'=HYPERLINK(1)"]
    assert [r["cost"] for r in rows] == ["0.000001", "0.000001"]  # '*' prompt, plan-less


def test_csv_of_an_empty_period_is_just_the_header(world: World) -> None:
    lines = list(usage_csv(tenant_id=world.acme.pk, start=at(2024, 1, 1), end=at(2024, 2, 1)))
    assert lines == [",".join(CSV_HEADER) + "\r\n"]


# --- invoices -------------------------------------------------------------------------------


EXPECTED_LINES = [
    {
        "model": "llama",
        "unit": "prompt_tokens",
        "quantity": "3000",
        "unit_price": "0.0000004",
        "amount": "0.001200",
    },
    {
        "model": "llama",
        "unit": "completion_tokens",
        "quantity": "600",
        "unit_price": "0.000003",
        "amount": "0.001800",
    },
    {
        "model": "qwen",
        "unit": "prompt_tokens",
        "quantity": "300",
        "unit_price": "0.000001",
        "amount": "0.000300",
    },
    {
        "model": "qwen",
        "unit": "completion_tokens",
        "quantity": "700",
        "unit_price": "0.0000015",
        "amount": "0.001050",
    },
    {
        "model": "sdxl",
        "unit": "images",
        "quantity": "2",
        "unit_price": "0.04",
        "amount": "0.080000",
    },
    {
        "model": "tts",
        "unit": "characters",
        "quantity": "1234",
        "unit_price": None,
        "amount": "0",
        "unpriced": True,
    },
    {
        "model": "whisper",
        "unit": "audio_seconds",
        "quantity": "12.5",
        "unit_price": "0.0001",
        "amount": "0.001250",
    },
]


def test_invoice_lines_and_total_are_exact(world: World) -> None:
    invoice = invoice_build(tenant=world.acme, year=2025, month=3)
    invoice.refresh_from_db()
    assert invoice.lines == EXPECTED_LINES
    assert invoice.total == D("0.085600")
    assert invoice.total == sum(D(line["amount"]) for line in invoice.lines)
    assert (invoice.period_start, invoice.period_end) == (date(2025, 3, 1), date(2025, 3, 31))
    assert (invoice.status, invoice.currency) == (Invoice.Status.DRAFT, "usd")
    unpriced = [line for line in invoice.lines if line.get("unpriced")]
    assert [(line["model"], line["unit"]) for line in unpriced] == [("tts", "characters")]


def test_rebuilding_is_idempotent_and_follows_new_usage(world: World) -> None:
    first = invoice_build(tenant=world.acme, year=2025, month=3)
    again = invoice_build(tenant=world.acme, year=2025, month=3)
    assert again.pk == first.pk
    assert Invoice.objects.filter(tenant=world.acme).count() == 1
    again.refresh_from_db()
    assert (again.lines, again.total) == (EXPECTED_LINES, D("0.0856"))

    record(world.acme, "late", at(2025, 3, 31, 23, 59), "sdxl", "image", None, images=1)
    refreshed = invoice_build(tenant=world.acme, year=2025, month=3)
    refreshed.refresh_from_db()
    assert refreshed.pk == first.pk
    assert refreshed.total == D("0.1256")
    sdxl = next(line for line in refreshed.lines if line["model"] == "sdxl")
    assert (sdxl["quantity"], sdxl["amount"]) == ("3", "0.120000")


def test_a_final_invoice_is_left_alone(world: World) -> None:
    invoice = invoice_build(tenant=world.acme, year=2025, month=3)
    Invoice.objects.filter(pk=invoice.pk).update(status=Invoice.Status.FINAL)
    record(world.acme, "late", at(2025, 3, 20), "sdxl", "image", None, images=10)
    Price.objects.filter(model="sdxl").update(unit_price=D("1"))
    again = invoice_build(tenant=world.acme, year=2025, month=3)
    assert again.pk == invoice.pk and again.status == Invoice.Status.FINAL
    again.refresh_from_db()
    assert (again.lines, again.total) == (EXPECTED_LINES, D("0.0856"))
    assert invoices_build_all(2025, 3) == 2  # globex's draft built; acme's final untouched
    again.refresh_from_db()
    assert (again.lines, again.total) == (EXPECTED_LINES, D("0.0856"))


def test_an_empty_month_and_mixed_currencies(world: World) -> None:
    empty = invoice_build(tenant=world.acme, year=2024, month=12)
    assert (empty.lines, empty.total, empty.period_end) == ([], D(0), date(2024, 12, 31))
    Price.objects.filter(model="sdxl").update(currency="eur")
    with pytest.raises(InvoiceError, match="currencies"):
        invoice_build(tenant=world.acme, year=2025, month=3)
    # The bulk run skips (and logs) the tenant it cannot bill, and bills the others.
    assert invoices_build_all(2025, 3) == 0  # globex used sdxl and llama too
    Price.objects.filter(model="sdxl").update(currency="usd")
    assert invoices_build_all(2025, 3) == 2


def test_build_all_covers_every_tenant_with_usage(world: World) -> None:
    Tenant.objects.create(name="idle")
    assert invoices_build_all(2025, 3) == 2
    assert set(
        Invoice.objects.filter(period_start=date(2025, 3, 1)).values_list("tenant__name", flat=True)
    ) == {"acme", "globex"}
    assert invoices_build_all(2025, 3) == 2
    assert Invoice.objects.count() == 2
    # February: only acme's a8; April: only acme's a7.
    assert invoices_build_all(2025, 2) == 1
    feb = Invoice.objects.get(tenant=world.acme, period_start=date(2025, 2, 1))
    assert feb.lines == [
        {
            "model": "llama",
            "unit": "prompt_tokens",
            "quantity": "777",
            "unit_price": "0.0000004",
            "amount": "0.000311",
        }
    ]
    assert feb.total == D("0.000311")  # 0.0003108 rounded half-even to 6 places


def test_month_bounds() -> None:
    assert month_bounds(2025, 12) == (at(2025, 12, 1), at(2026, 1, 1))
    assert month_bounds(2024, 2) == (at(2024, 2, 1), at(2024, 3, 1))
    with pytest.raises(ValueError):
        month_bounds(2025, 13)
    assert previous_month(date(2025, 1, 15)) == (2024, 12)
    assert previous_month(date(2025, 4, 1)) == (2025, 3)


# --- the Celery task --------------------------------------------------------------------------


def test_the_task_builds_the_previous_and_current_month(world: World) -> None:
    # apply(): run here, through Celery's task machinery, whatever the broker (the
    # embedded default is eager; with Redis a worker would run it).
    result = build_monthly_invoices.apply(kwargs={"today": "2025-04-10"})
    assert result.get() == {"2025-03": 2, "2025-04": 1}
    march = Invoice.objects.get(tenant=world.acme, period_start=date(2025, 3, 1))
    april = Invoice.objects.get(tenant=world.acme, period_start=date(2025, 4, 1))
    assert (march.lines, march.total) == (EXPECTED_LINES, D("0.0856"))
    assert april.total == D("0.000400")  # 999 x 0.0000004 = 0.0003996
    assert april.status == Invoice.Status.DRAFT
    # Idempotent: a second run changes nothing.
    again = build_monthly_invoices.apply(kwargs={"today": "2025-04-10"}).get()
    assert again == {"2025-03": 2, "2025-04": 1}
    assert Invoice.objects.count() == 3
    # An explicit month.
    assert build_monthly_invoices.apply((2025, 2)).get() == {"2025-02": 1}
    assert Invoice.objects.count() == 4
    # New Year: December of the year before, and January.
    new_year = build_monthly_invoices.apply(kwargs={"today": "2026-01-02"}).get()
    assert new_year == {"2025-12": 0, "2026-01": 0}


def test_the_task_defaults_to_now() -> None:
    out = build_monthly_invoices.apply().get()
    today = datetime.now(UTC).date()
    y, m = previous_month(today)
    assert out == {f"{y:04d}-{m:02d}": 0, f"{today.year:04d}-{today.month:02d}": 0}
    with pytest.raises(ValueError):
        build_monthly_invoices.apply((2025,)).get()
