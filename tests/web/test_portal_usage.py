"""The portal's usage and billing pages (Django's test client, real database and Redis):
exact figures from the daily roll-up in the table, the charts' JSON and the CSV (quoted,
formulas defused); ranges validated (a 400 with a message, never a 500); tenants
isolated (another tenant's pages, invoices and key ids are 404s, its usage never shows);
roles (billing sees billing but no keys, member sees usage but no invoices); the plan's
limits with overrides and today's remaining quota, read without consuming anything."""

from __future__ import annotations

import asyncio
import csv
import io
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from billing import limits as lim
from billing.models import Invoice, Price, UsageEvent
from billing.services import Usage, usage_record, usage_rollup_rebuild
from tenants.models import ApiKey, Membership, Plan, Tenant

pytestmark = pytest.mark.django_db

TODAY = datetime.now(UTC).date()


@pytest.fixture
def limiter_prefix(settings: Any) -> Iterator[Any]:
    """The gate's limiter, on its own key prefix (Redis when the suite has one)."""
    settings.RBEE_LIMITS_PREFIX = f"rbee:test:portal:{uuid.uuid4().hex[:12]}"
    yield settings
    if getattr(settings, "REDIS_URL", ""):
        import redis

        r = redis.Redis.from_url(settings.REDIS_URL)
        keys = list(r.scan_iter(match=f"{settings.RBEE_LIMITS_PREFIX}:*", count=1000))
        if keys:
            r.delete(*keys)
        r.close()


def member(tenant: Tenant, role: str, email: str | None = None) -> Client:
    email = email or f"{role}-{tenant.name}@example.com"
    user = User.objects.create_user(email, email, "pw-123456789")
    Membership.objects.create(user=user, tenant=tenant, role=role)
    client = Client()
    client.force_login(user)
    return client


def record(tenant: Tenant, rid: str, *, key: ApiKey | None, model: str, **usage: Any) -> None:
    usage_record(
        request_id=rid,
        tenant_id=tenant.pk,
        api_key_id=key.pk if key else None,
        model=model,
        modality=usage.pop("modality", "chat"),
        usage=Usage(**usage),
    )


@pytest.fixture
def world(limiter_prefix: Any) -> dict[str, Any]:
    plan = Plan.objects.create(
        name="team", description="For teams", tokens_per_day=10_000, requests_per_minute=60
    )
    acme = Tenant.objects.create(name="acme", plan=plan, overrides={"requests_per_day": 500})
    globex = Tenant.objects.create(name="globex", plan=plan)
    k1 = ApiKey.objects.create(tenant=acme, name="prod", prefix="prod1", key_hash="a" * 64)
    k2 = ApiKey.objects.create(tenant=acme, name="", prefix="dev22", key_hash="b" * 64)
    gk = ApiKey.objects.create(tenant=globex, name="theirs", prefix="glob1", key_hash="c" * 64)
    Price.objects.create(model="m1", unit="prompt_tokens", unit_price=Decimal("0.001"))
    Price.objects.create(model="m1", unit="completion_tokens", unit_price=Decimal("0.002"))
    Price.objects.create(model="*", unit="audio_seconds", unit_price=Decimal("0.01"))
    record(acme, "a1", key=k1, model="m1", prompt_tokens=100, completion_tokens=50)
    record(acme, "a2", key=k2, model="m1", prompt_tokens=10, completion_tokens=5)
    record(acme, "a3", key=None, model="=HYPERLINK(1)", prompt_tokens=1)
    record(acme, "a4", key=k1, model="whisper", modality="transcription", audio_seconds=2.5)
    # Two days ago, by hand (and the roll-up rebuilt to follow it).
    record(acme, "a5", key=k1, model="m1", prompt_tokens=7, completion_tokens=3)
    two_days_ago = datetime.now(UTC) - timedelta(days=2)
    UsageEvent.objects.filter(request_id="a5").update(created_at=two_days_ago)
    usage_rollup_rebuild(tenant_ids=[acme.pk])
    record(globex, "g1", key=gk, model="m1", prompt_tokens=999_999, completion_tokens=1)
    return {"acme": acme, "globex": globex, "k1": k1, "k2": k2, "gk": gk}


def rows(response: Any) -> list[list[str]]:
    return list(csv.reader(io.StringIO(response.content.decode())))


def test_the_usage_page_shows_exact_figures_from_the_rollup(world: dict[str, Any]) -> None:
    owner = member(world["acme"], "owner")
    response = owner.get("/portal/t/acme/usage?range=7d&group=model")
    assert response.status_code == 200
    html = response.content.decode()
    assert "<title>Usage · acme · rbee portal</title>" in html
    ctx = response.context
    table = {r["group"]: r for r in ctx["rows"]}
    assert set(table) == {"=HYPERLINK(1)", "m1", "whisper"}
    m1 = table["m1"]
    assert (m1["requests"], m1["prompt_tokens"], m1["completion_tokens"]) == (3, 117, 58)
    # 117 x 0.001 + 58 x 0.002
    assert m1["cost"] == Decimal("0.233000")
    assert table["whisper"]["audio_seconds"] == 2.5 and table["whisper"]["cost"] == Decimal(
        "0.025000"
    )
    totals = ctx["totals"]
    assert (totals["requests"], totals["total_tokens"], totals["cost"]) == (
        5,
        176,
        Decimal("0.258000"),
    )
    assert '<b data-total="requests">5</b>' in html
    assert '<b data-total="cost">0.258000</b>' in html
    assert "999999" not in html and "1000000" not in html  # globex's never shows
    # By day: every day of the range, the quiet ones too.
    by_day = owner.get("/portal/t/acme/usage?range=7d&group=day").context["rows"]
    assert [r["group"] for r in by_day] == [
        (TODAY - timedelta(days=n)).isoformat() for n in range(6, -1, -1)
    ]
    assert [r["requests"] for r in by_day] == [0, 0, 0, 0, 1, 0, 4]
    # By key (labels, keyless last) and by modality.
    by_key = owner.get("/portal/t/acme/usage?range=7d&group=key").context["rows"]
    assert [(r["group"], r["requests"]) for r in by_key] == [
        ("prod (sk-rbee-prod1-…)", 3),
        ("sk-rbee-dev22-…", 1),
        ("no key", 1),
    ]
    by_modality = owner.get("/portal/t/acme/usage?range=7d&group=modality").context["rows"]
    assert [(r["group"], r["requests"]) for r in by_modality] == [
        ("chat", 4),
        ("transcription", 1),
    ]
    # This month (the default) starts on the 1st: the two-days-ago row counts only then.
    month = owner.get("/portal/t/acme/usage").context
    assert month["query"].start == TODAY.replace(day=1)
    expected = 5 if (TODAY - timedelta(days=2)) >= TODAY.replace(day=1) else 4
    assert month["totals"]["requests"] == expected


def test_the_csv_is_the_tables_rows_quoted_and_defused(world: dict[str, Any]) -> None:
    owner = member(world["acme"], "owner")
    response = owner.get("/portal/t/acme/usage.csv?range=7d&group=model")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == (
        f'attachment; filename="acme-usage-by-model-{TODAY - timedelta(days=6)}-{TODAY}.csv"'
    )
    assert rows(response) == [
        [
            "model",
            "requests",
            "prompt_tokens",
            "completion_tokens",
            "images",
            "audio_seconds",
            "characters",
            "video_seconds",
            "total_tokens",
            "cost",
            "currency",
        ],
        ["'=HYPERLINK(1)", "1", "1", "0", "0", "0", "0", "0", "1", "0.000000", "usd"],
        ["m1", "3", "117", "58", "0", "0", "0", "0", "175", "0.233000", "usd"],
        ["whisper", "1", "0", "0", "0", "2.5", "0", "0", "0", "0.025000", "usd"],
    ]
    keyed = rows(owner.get("/portal/t/acme/usage.csv?range=7d&group=key"))
    assert [r[:2] for r in keyed[1:]] == [
        ["prod (sk-rbee-prod1-…)", "3"],
        ["sk-rbee-dev22-…", "1"],
        ["no key", "1"],
    ]


def test_the_chart_json_has_one_point_per_day(world: dict[str, Any]) -> None:
    owner = member(world["acme"], "owner")
    k1 = world["k1"].pk
    data = owner.get(f"/portal/t/acme/usage/chart/tokens?range=7d&key={k1}").json()
    first = datetime.combine(TODAY - timedelta(days=6), datetime.min.time(), tzinfo=UTC)
    assert data["x"] == [int(first.timestamp()) + 86400 * n for n in range(7)]
    assert data["unit"] == ""
    assert data["series"] == [
        {"label": "Prompt tokens", "values": [0, 0, 0, 0, 7, 0, 100]},
        {"label": "Completion tokens", "values": [0, 0, 0, 0, 3, 0, 50]},
    ]
    requests = owner.get("/portal/t/acme/usage/chart/requests?range=7d").json()
    assert requests["series"] == [{"label": "Requests", "values": [0, 0, 0, 0, 1, 0, 4]}]
    cost = owner.get("/portal/t/acme/usage/chart/cost?range=7d").json()
    assert cost["unit"] == "USD" and cost["series"][0]["values"][-1] == pytest.approx(
        0.245
    )  # 110 x 0.001 + 55 x 0.002 + 2.5 x 0.01
    assert owner.get("/portal/t/acme/usage/chart/nope?range=7d").status_code == 404


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("range=custom&start=2026-13-01&end=2026-12-01", "The start date &#x27;2026-13-01&#x27;"),
        ("range=custom&start=2026-02-01&end=2026-01-01", "ends (2026-01-01) before it starts"),
        ("range=custom&start=2020-01-01&end=2021-12-31", "at most 366 days"),
        ("range=custom&start=1999-12-01&end=1999-12-31", "cannot start before 2000-01-01"),
        ("range=custom&start=2000-01-01", "needs both a start and an end"),
        ("range=forever", "Unknown range &#x27;forever&#x27;"),
        ("group=colour", "Unknown grouping &#x27;colour&#x27;"),
        ("key=abc", "is not a key id"),
    ],
)
def test_a_bad_range_is_a_400_with_a_message(
    world: dict[str, Any], query: str, message: str
) -> None:
    owner = member(world["acme"], "owner")
    response = owner.get(f"/portal/t/acme/usage?{query}")
    assert response.status_code == 400
    assert message in response.content.decode()
    assert 'role="alert"' in response.content.decode()
    assert owner.get(f"/portal/t/acme/usage.csv?{query}").status_code == 400
    assert owner.get(f"/portal/t/acme/usage/chart/requests?{query}").status_code == 400


def test_a_range_ending_in_the_future_is_refused(world: dict[str, Any]) -> None:
    owner = member(world["acme"], "owner")
    tomorrow = TODAY + timedelta(days=1)
    response = owner.get(f"/portal/t/acme/usage?range=custom&start={TODAY}&end={tomorrow}")
    assert response.status_code == 400 and b"cannot end after today" in response.content
    ok = owner.get(f"/portal/t/acme/usage?range=custom&start={TODAY}&end={TODAY}")
    assert ok.status_code == 200 and ok.context["totals"]["requests"] == 4


def test_tenants_are_isolated(world: dict[str, Any]) -> None:
    owner = member(world["acme"], "owner")
    for url in (
        "/portal/t/globex/usage",
        "/portal/t/globex/usage.csv",
        "/portal/t/globex/usage/chart/requests",
        "/portal/t/globex/billing",
        "/portal/t/nowhere/usage",
    ):
        assert owner.get(url).status_code == 404, url
    # Another tenant's key id in a filter: 404, never its data.
    theirs = world["gk"].pk
    for url in (
        f"/portal/t/acme/usage?key={theirs}",
        f"/portal/t/acme/usage.csv?key={theirs}",
        f"/portal/t/acme/usage/chart/tokens?key={theirs}",
    ):
        response = owner.get(url)
        assert response.status_code == 404, url
        assert b"999999" not in response.content
    # Another tenant's invoice id: 404.
    theirs_invoice = Invoice.objects.create(
        tenant=world["globex"], period_start=TODAY.replace(day=1), period_end=TODAY
    )
    assert owner.get(f"/portal/t/acme/billing/invoices/{theirs_invoice.pk}").status_code == 404
    # Signed out: to the sign-in page.
    response = Client().get("/portal/t/acme/usage")
    assert response.status_code == 302
    assert response["Location"] == "/portal/login?next=%2Fportal%2Ft%2Facme%2Fusage"


def test_roles_billing_sees_billing_member_does_not_see_invoices(world: dict[str, Any]) -> None:
    acme = world["acme"]
    invoice = Invoice.objects.create(
        tenant=acme,
        period_start=TODAY.replace(day=1),
        period_end=TODAY,
        total=Decimal("0.233000"),
        lines=[
            {
                "model": "m1",
                "unit": "prompt_tokens",
                "quantity": "117",
                "unit_price": "0.001",
                "amount": "0.117000",
            },
            {
                "model": "m9",
                "unit": "images",
                "quantity": "2",
                "unit_price": None,
                "amount": "0",
                "unpriced": True,
            },
        ],
    )
    billing = member(acme, "billing")
    page = billing.get("/portal/t/acme/billing")
    assert page.status_code == 200
    html = page.content.decode()
    assert f'data-invoice="{invoice.pk}"' in html and "0.233000" in html
    detail = billing.get(f"/portal/t/acme/billing/invoices/{invoice.pk}")
    assert detail.status_code == 200
    assert detail.context["lines"][0] == {
        "model": "m1",
        "unit": "prompt tokens",
        "quantity": "117",
        "unit_price": "0.001",
        "amount": "0.117000",
        "unpriced": False,
    }
    assert b"unpriced" in detail.content
    # Billing sees usage, but not keys: no key grouping, no key filter.
    usage = billing.get("/portal/t/acme/usage?range=7d")
    assert usage.status_code == 200 and b'name="key"' not in usage.content
    assert b"sk-rbee-" not in usage.content
    assert billing.get("/portal/t/acme/usage?group=key").status_code == 404
    assert billing.get(f"/portal/t/acme/usage?key={world['k1'].pk}").status_code == 404
    # A member sees usage (and keys), never billing nor invoices.
    plain = member(acme, "member")
    assert plain.get("/portal/t/acme/usage?range=7d&group=key").status_code == 200
    assert plain.get("/portal/t/acme/billing").status_code == 404
    assert plain.get(f"/portal/t/acme/billing/invoices/{invoice.pk}").status_code == 404
    assert b'href="/portal/t/acme/billing"' not in plain.get("/portal/t/acme/usage").content


def test_limits_show_overrides_and_todays_remaining_quota_without_consuming(
    world: dict[str, Any],
) -> None:
    acme = world["acme"]
    limiter = lim.get_limiter()
    limits = lim.Limits(tokens_per_day=10_000, requests_per_day=500)

    async def admit_and_read() -> dict[str, float]:
        decision = await limiter.admit(str(acme.pk), limits, lim.Cost(tokens=1234))
        assert decision.allowed
        used = await limiter.usage(str(acme.pk))
        if isinstance(limiter, lim.RedisLimiter):
            await limiter.aclose()
        return used

    loop = asyncio.new_event_loop()
    try:
        before = loop.run_until_complete(admit_and_read())
    finally:
        loop.close()
    assert (before["requests"], before["tokens"]) == (1, 1234)
    owner = member(acme, "owner")
    for _ in range(3):
        response = owner.get("/portal/t/acme/usage")
    rows_by_name = {r["name"]: r for r in response.context["limit_rows"]}
    assert response.context["plan_name"] == "team"
    assert response.context["overridden"] == ["requests_per_day"]
    assert rows_by_name["tokens_per_day"] | {} == {
        "name": "tokens_per_day",
        "label": "Tokens per day",
        "limit": 10_000,
        "daily": "tokens",
        "used": "1234",
        "used_value": 1234.0,
        "remaining": "8766",
        "fraction": 0.1234,
    }
    assert rows_by_name["requests_per_day"]["limit"] == 500  # the tenant's override
    assert rows_by_name["requests_per_day"]["remaining"] == "499"
    assert rows_by_name["requests_per_minute"]["limit"] == 60
    assert rows_by_name["images_per_day"]["limit"] is None
    # Unlimited quotas are not counted by the limiter: today's use comes from the roll-up
    # (a4's 2.5 audio seconds, finished today), never a misleading 0.
    assert rows_by_name["audio_seconds_per_day"]["limit"] is None
    assert rows_by_name["audio_seconds_per_day"]["used"] == "2.50"
    assert rows_by_name["images_per_day"]["used"] == "0"
    html = response.content.decode()
    assert '<tr data-limit="tokens_per_day">' in html and "8766" in html
    # Reading the page three times consumed nothing.
    loop = asyncio.new_event_loop()
    try:
        after = loop.run_until_complete(limiter.usage(str(acme.pk)))
        if isinstance(limiter, lim.RedisLimiter):
            loop.run_until_complete(limiter.aclose())
    finally:
        loop.close()
    assert after == before


def test_every_page_links_its_assets_under_the_csp(world: dict[str, Any]) -> None:
    owner = member(world["acme"], "owner")
    html = owner.get("/portal/t/acme/usage").content.decode()
    assert "/static/rbee/web/usage." in html and "/static/rbee/web/charts." in html
    assert html.count("data-chart") == 3
    assert 'aria-current="page">Usage<' in html
    billing = owner.get("/portal/t/acme/billing")
    assert billing.status_code == 200 and b'aria-current="page">Billing<' in billing.content
    assert billing["Content-Security-Policy"].startswith("default-src")
