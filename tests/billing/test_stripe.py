"""Stripe: meter events reach Stripe exactly once, customers are created once, and the
webhook moves tenants between active, past due and suspended, and between plans.

Stripe itself is tests/billing/fakestripe.py on loopback (RBEE_STRIPE_API_BASE)."""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
import stripe
from django.db import connection
from django.test import Client
from django.urls import path
from django.utils import timezone

from billing import tasks
from billing.models import MeterEvent, StripeEvent, UsageEvent
from billing.services import Usage, meter_names, usage_begin, usage_record, usage_settle_stale
from billing.stripe_sync import (
    StripeNotConfigured,
    StripeUnreachable,
    customer_ensure,
    meter_events_send,
    past_due_suspend,
    stripe_client,
)
from billing.webhooks import stripe_webhook
from tenants.models import Plan, Tenant
from tenants.selectors import KeyRejected, caller_from_key
from tenants.services import api_key_create, tenant_create
from tests.billing.fakestripe import API_KEY, FakeStripe, sign, webhook_event

# The webhook, mounted for these tests as rbee/urls.py mounts it.
urlpatterns = [path("stripe/webhook", stripe_webhook)]

WHSEC = "whsec_test_rbee_0123456789abcdef"


@pytest.fixture
def fake(settings: Any) -> Iterator[FakeStripe]:
    with FakeStripe() as f:
        settings.RBEE_STRIPE_SECRET_KEY = API_KEY
        settings.RBEE_STRIPE_API_BASE = f.url
        settings.RBEE_STRIPE_WEBHOOK_SECRET = WHSEC
        yield f


def _tenant(name: str = "acme", customer: str = "cus_acme") -> Tenant:
    t = tenant_create(name=name)
    t.stripe_customer_id = customer
    t.save(update_fields=["stripe_customer_id"])
    return t


def _use(t: Tenant, n: int, start: int = 0) -> dict[str, Decimal]:
    """Record n requests' usage; returns what each unit adds up to."""
    want: dict[str, Decimal] = defaultdict(Decimal)
    for i in range(start, start + n):
        u = Usage(
            prompt_tokens=10 + i,
            completion_tokens=3 * i,
            images=i % 2,
            audio_seconds=1.25 * (i % 3),
            characters=7,
        )
        usage_record(
            request_id=f"req-{t.name}-{i}",
            tenant_id=t.pk,
            api_key_id=None,
            model="m",
            modality="chat",
            usage=u,
        )
        for unit in ("prompt_tokens", "completion_tokens", "images", "audio_seconds", "characters"):
            want[unit] += Decimal(str(getattr(u, unit)))
    return {unit: v for unit, v in want.items() if v}


def _expected(customer: str, want: dict[str, Decimal]) -> dict[tuple[str, str], Decimal]:
    names = meter_names()
    return {(customer, names[unit]): v for unit, v in want.items()}


def _unsent() -> int:
    return MeterEvent.objects.filter(sent_at__isnull=True).count()


# --- meter events ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_stripe_off_sends_nothing(settings: Any) -> None:
    settings.RBEE_STRIPE_SECRET_KEY = ""
    t = _tenant()
    _use(t, 2)
    assert stripe_client() is None
    assert meter_events_send() == (0, 0)
    assert _unsent() > 0
    with pytest.raises(StripeNotConfigured):
        customer_ensure(tenant_create(name="other"))


@pytest.mark.django_db
def test_meter_events_are_sent_once_each_despite_failures(fake: FakeStripe) -> None:
    t = _tenant()
    want = _use(t, 4)
    rows = MeterEvent.objects.count()
    assert rows > 4

    # Stripe fails three times in a row: the run stops, and the rows wait.
    fake.fail_next(3, "500")
    assert meter_events_send() == (0, 3)
    assert fake.totals() == {}
    failed = MeterEvent.objects.filter(attempts=1)
    assert failed.count() == 3
    assert all(r.last_error.startswith("APIError 500") for r in failed)
    assert all(r.sent_at is None for r in failed)

    # The next run sends everything, each row once, with its identifier (a new
    # idempotency key per attempt: Stripe replays a saved 500 for the old one).
    assert meter_events_send() == (rows, 0)
    assert _unsent() == 0
    assert fake.totals() == _expected("cus_acme", want)
    calls = fake.calls_to("POST", "/v1/billing/meter_events")
    assert len(calls) == rows + 3
    sent = {c.params["identifier"] for c in calls if c.status == 200}
    assert sent == set(MeterEvent.objects.values_list("identifier", flat=True))
    assert all(c.idempotency_key and c.idempotency_key.startswith("rbee-meter-") for c in calls)
    assert all(c.authorization == f"Bearer {API_KEY}" for c in calls)
    assert MeterEvent.objects.exclude(last_error="").count() == 0

    # Nothing is left to send.
    assert meter_events_send() == (0, 0)
    assert len(fake.calls_to("POST", "/v1/billing/meter_events")) == rows + 3

    # More usage later: only the new rows go.
    more = _use(t, 2, start=4)
    new_rows = MeterEvent.objects.count() - rows
    assert meter_events_send() == (new_rows, 0)
    for unit, v in more.items():
        want[unit] = want.get(unit, Decimal(0)) + v
    assert fake.totals() == _expected("cus_acme", want)


@pytest.mark.django_db
def test_a_request_settled_as_interrupted_then_finalised_sums_to_its_final_usage(
    fake: FakeStripe,
) -> None:
    """Stripe is told the interrupted counts, then the difference to the final ones (a
    negative value where the final count is lower): its meter sums to the final usage."""
    t = _tenant()
    usage_begin(
        request_id="req-late",
        tenant_id=t.pk,
        api_key_id=None,
        model="m",
        modality="chat",
        queen="another-host/1/0123456789abcdef:7:cafe00000001",
    )
    UsageEvent.objects.filter(request_id="req-late").update(
        prompt_tokens=20, completion_tokens=30, heartbeat_at=timezone.now() - timedelta(hours=1)
    )
    assert [s.request_id for s in usage_settle_stale(lease_s=120)] == ["req-late"]
    assert meter_events_send() == (2, 0)
    usage_record(
        request_id="req-late",
        tenant_id=t.pk,
        api_key_id=None,
        model="m",
        modality="chat",
        usage=Usage(prompt_tokens=18, completion_tokens=90, characters=0),
    )
    assert meter_events_send() == (2, 0)
    assert fake.totals() == _expected(
        "cus_acme", {"prompt_tokens": Decimal(18), "completion_tokens": Decimal(90)}
    )
    assert meter_events_send() == (0, 0)


@pytest.mark.django_db
def test_lost_answers_and_throttling_never_count_twice(fake: FakeStripe) -> None:
    t = _tenant()
    want = _use(t, 3)
    rows = MeterEvent.objects.count()
    # Stripe records the first event but the answer is lost; then throttles; then the
    # connection drops. Three transient failures in a row: the run stops.
    fake.fail_next(1, "drop_after")
    fake.fail_next(1, "429")
    fake.fail_next(1, "drop")
    assert meter_events_send() == (0, 3)
    assert len(fake.meter_events) == 1
    errors = sorted(MeterEvent.objects.exclude(last_error="").values_list("last_error", flat=True))
    assert [e.split(":")[0] for e in errors] == sorted(
        ["APIConnectionError", "RateLimitError 429", "APIConnectionError"]
    )

    # Retried: the event Stripe already holds answers "already exists": counted as sent.
    assert meter_events_send() == (rows, 0)
    assert _unsent() == 0
    assert fake.totals() == _expected("cus_acme", want)
    dupes = [c for c in fake.calls_to("POST", "/v1/billing/meter_events") if c.status == 400]
    assert len(dupes) == 1


@pytest.mark.django_db
def test_a_duplicate_identifier_answered_by_stripe_counts_as_sent(fake: FakeStripe) -> None:
    t = _tenant()
    want = _use(t, 1)
    rows = MeterEvent.objects.count()
    assert meter_events_send() == (rows, 0)
    # As if our write of sent_at had been lost, and Stripe had forgotten the keys.
    MeterEvent.objects.update(sent_at=None)
    fake.forget_idempotency_keys()
    assert meter_events_send() == (rows, 0)
    assert _unsent() == 0
    assert fake.totals() == _expected("cus_acme", want)
    answers = [c.status for c in fake.calls_to("POST", "/v1/billing/meter_events")]
    assert answers == [200] * rows + [400] * rows


@pytest.mark.django_db
def test_a_wrong_key_stops_the_run_and_is_never_stored(fake: FakeStripe, settings: Any) -> None:
    t = _tenant()
    _use(t, 3)
    settings.RBEE_STRIPE_SECRET_KEY = "sk_test_wrong_key_0000000000abcd"
    assert meter_events_send() == (0, 1)
    row = MeterEvent.objects.get(attempts=1)
    assert row.last_error.startswith("AuthenticationError 401")
    assert "sk_test_wrong_key_0000000000abcd" not in row.last_error
    assert "wrong_key" not in row.last_error
    assert fake.totals() == {}


@pytest.mark.django_db
def test_a_row_stripe_keeps_refusing_does_not_hold_back_new_usage(fake: FakeStripe) -> None:
    t = _tenant()
    _use(t, 1)
    # An old row Stripe refuses (its timestamp is past Stripe's 35 days).
    old = MeterEvent.objects.order_by("pk").first()
    assert old is not None
    MeterEvent.objects.filter(pk=old.pk).update(timestamp=timezone.now() - timedelta(days=40))
    sent, failed = meter_events_send()
    assert failed == 1 and sent == MeterEvent.objects.count() - 1
    old.refresh_from_db()
    assert old.sent_at is None and "35 calendar days" in old.last_error
    # New usage goes first next time, within a small batch.
    _use(t, 1, start=1)
    fresh = MeterEvent.objects.filter(sent_at__isnull=True, attempts=0).count()
    assert meter_events_send(limit=fresh) == (fresh, 0)
    assert list(MeterEvent.objects.filter(sent_at__isnull=True)) == [old]


@pytest.mark.django_db(transaction=True)
def test_two_runs_at_once_send_each_row_once(fake: FakeStripe) -> None:
    if not connection.features.has_select_for_update_skip_locked:
        pytest.skip("row locks need PostgreSQL (the embedded SQLite queen is one process)")
    t = _tenant()
    want = _use(t, 6)
    rows = MeterEvent.objects.count()
    fake.delay = 0.01
    results: list[tuple[int, int]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(meter_events_send())
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    assert not errors
    assert sum(s for s, _ in results) == rows and all(f == 0 for _, f in results)
    assert all(s > 0 for s, _ in results)  # both took part
    calls = fake.calls_to("POST", "/v1/billing/meter_events")
    assert len(calls) == rows  # no row was sent twice
    assert fake.totals() == _expected("cus_acme", want)


@pytest.mark.django_db
def test_report_usage_task(fake: FakeStripe) -> None:
    t = _tenant()
    want = _use(t, 2)
    rows = MeterEvent.objects.count()
    # Eager (as on the embedded default): runs in-process, no retry loop; rows wait.
    fake.fail_next(3, "drop")
    assert tasks.report_usage.apply().get() == {"sent": 0, "failed": 3}
    # Called as a worker would (not eager): Stripe unreachable raises, for autoretry.
    fake.fail_next(3, "drop")
    with pytest.raises(StripeUnreachable):
        tasks.report_usage()
    assert tasks.report_usage.apply().get() == {"sent": rows, "failed": 0}
    assert fake.totals() == _expected("cus_acme", want)
    assert stripe.APIConnectionError in tasks.report_usage.autoretry_for
    assert StripeUnreachable in tasks.report_usage.autoretry_for
    assert tasks.report_usage.max_retries == 5
    assert tasks.report_usage.retry_backoff


# --- customers ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_customer_ensure_creates_the_customer_once(fake: FakeStripe) -> None:
    t = tenant_create(name="acme")
    cid = customer_ensure(t)
    assert cid.startswith("cus_")
    assert Tenant.objects.get(pk=t.pk).stripe_customer_id == cid
    assert customer_ensure(t) == cid
    assert customer_ensure(Tenant.objects.get(pk=t.pk)) == cid
    calls = fake.calls_to("POST", "/v1/customers")
    assert len(calls) == 1
    assert calls[0].idempotency_key == f"rbee-customer-{t.pk}"
    assert calls[0].params["metadata"] == {"rbee_tenant_id": str(t.pk), "rbee_tenant": "acme"}
    client = stripe_client()
    assert client is not None
    got = client.v1.customers.retrieve(cid)
    assert (got.object, got.id, got.name) == ("customer", cid, "acme")
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.customers.retrieve("cus_nope")
    assert exc.value.http_status == 404 and exc.value.code == "resource_missing"
    # Usage recorded from now on goes to Stripe.
    want = _use(t, 1)
    meter_events_send()
    assert fake.totals() == _expected(cid, want)


@pytest.mark.django_db
def test_customer_ensure_after_a_lost_answer_finds_the_same_customer(fake: FakeStripe) -> None:
    t = tenant_create(name="acme")
    fake.fail_next(1, "drop_after")
    with pytest.raises(stripe.APIConnectionError):
        customer_ensure(t)
    assert Tenant.objects.get(pk=t.pk).stripe_customer_id == ""
    cid = customer_ensure(t)
    assert list(fake.customers) == [cid]  # the idempotency key replayed the first answer
    assert fake.calls_to("POST", "/v1/customers")[-1].replayed


# --- webhooks --------------------------------------------------------------------------------


def _post(body: bytes, signature: str | None = None, **kw: Any) -> Any:
    headers = {} if signature is None else {"Stripe-Signature": signature}
    client = Client(enforce_csrf_checks=True)
    return client.post(
        "/stripe/webhook", data=body, content_type="application/json", headers=headers, **kw
    )


def _deliver(
    type_: str, obj: dict[str, Any], event_id: str | None = None, created: int | None = None
) -> Any:
    body = webhook_event(type_, obj, event_id, created)
    return _post(body, sign(body, WHSEC))


def _invoice(customer: Any = "cus_acme", **kw: Any) -> dict[str, Any]:
    return {"id": "in_1", "object": "invoice", "customer": customer, **kw}


def _subscription(
    price: str, customer: str = "cus_acme", status: str = "active", *more_prices: str
) -> dict[str, Any]:
    """A subscription whose items carry `price`, then `more_prices`, in that order."""
    prices = [price, *more_prices]
    return {
        "id": "sub_1",
        "object": "subscription",
        "customer": customer,
        "status": status,
        "items": {
            "object": "list",
            "data": [
                {"id": f"si_{i}", "object": "subscription_item", "price": {"id": p}}
                for i, p in enumerate(prices, 1)
            ],
        },
    }


def _status(t: Tenant) -> str:
    t.refresh_from_db()
    return t.status


pytestmark_urls = pytest.mark.urls("tests.billing.test_stripe")


@pytestmark_urls
@pytest.mark.django_db
def test_webhook_signatures(fake: FakeStripe, settings: Any) -> None:
    t = _tenant()
    body = webhook_event("invoice.payment_failed", _invoice())

    r = _post(body)  # no signature
    assert r.status_code == 400 and "error" in r.json()
    r = _post(body, "t=1,v1=deadbeef")
    assert r.status_code == 400 and r.json() == {"error": "invalid signature"}
    r = _post(body, sign(body, "whsec_someone_else"))
    assert r.status_code == 400
    r = _post(body, "garbage")
    assert r.status_code == 400
    r = _post(body + b" ", sign(body, WHSEC))  # the body was changed after signing
    assert r.status_code == 400
    r = _post(body, sign(body, WHSEC, t=int(time.time()) - 600))  # stale
    assert r.status_code == 400
    assert _status(t) == Tenant.Status.ACTIVE
    assert StripeEvent.objects.count() == 0

    bad = b"{not json"
    r = _post(bad, sign(bad, WHSEC))
    assert r.status_code == 400 and r.json() == {"error": "invalid payload"}

    r = Client().get("/stripe/webhook")
    assert r.status_code == 405

    r = _post(body, sign(body, WHSEC))
    assert r.status_code == 200 and r.json() == {"received": True}
    assert _status(t) == Tenant.Status.PAST_DUE

    settings.RBEE_STRIPE_WEBHOOK_SECRET = ""
    r = _post(body, sign(body, WHSEC))
    assert r.status_code == 503 and "error" in r.json()


@pytestmark_urls
@pytest.mark.django_db
def test_payment_failed_grace_suspension_and_payment(fake: FakeStripe, settings: Any) -> None:
    settings.RBEE_PAST_DUE_GRACE_DAYS = 7
    t = _tenant()
    _, key = api_key_create(tenant=t)
    assert caller_from_key(key).tenant_name == "acme"

    assert _deliver("invoice.payment_failed", _invoice(), "evt_fail_1").status_code == 200
    t.refresh_from_db()
    assert t.status == Tenant.Status.PAST_DUE and t.past_due_since is not None
    first_failure = t.past_due_since
    # A second failure keeps the first one's time.
    assert _deliver("invoice.payment_failed", _invoice(), "evt_fail_2").status_code == 200
    t.refresh_from_db()
    assert t.past_due_since == first_failure

    # Within the grace period nothing happens: the tenant is still served.
    assert tasks.suspend_past_due.apply().get() == {"suspended": 0, "tenants": []}
    assert _status(t) == Tenant.Status.PAST_DUE
    assert caller_from_key(key).tenant_name == "acme"
    # After it, the tenant is suspended and its key refused at once.
    Tenant.objects.filter(pk=t.pk).update(past_due_since=timezone.now() - timedelta(days=7.5))
    assert tasks.suspend_past_due.apply().get() == {"suspended": 1, "tenants": ["acme"]}
    assert _status(t) == Tenant.Status.SUSPENDED
    with pytest.raises(KeyRejected) as exc:
        caller_from_key(key)
    assert exc.value.reason == "suspended"
    assert past_due_suspend() == []  # idempotent

    # Paid: active again, the key works.
    r = _deliver("invoice.paid", _invoice(status="paid"), "evt_paid_1")
    assert r.status_code == 200
    t.refresh_from_db()
    assert t.status == Tenant.Status.ACTIVE and t.past_due_since is None
    assert caller_from_key(key).tenant_name == "acme"

    # A replay of the old failure changes nothing.
    body = webhook_event("invoice.payment_failed", _invoice(), "evt_fail_1")
    r = _post(body, sign(body, WHSEC))
    assert r.status_code == 200 and r.json() == {"received": True, "duplicate": True}
    assert _status(t) == Tenant.Status.ACTIVE
    assert StripeEvent.objects.filter(event_id="evt_fail_1").count() == 1


@pytestmark_urls
@pytest.mark.django_db
def test_payment_succeeded_does_not_lift_a_manual_suspension(fake: FakeStripe) -> None:
    t = _tenant()
    Tenant.objects.filter(pk=t.pk).update(status=Tenant.Status.SUSPENDED)
    assert _deliver("invoice.payment_succeeded", _invoice()).status_code == 200
    assert _status(t) == Tenant.Status.SUSPENDED
    # ... but it lifts one for non-payment.
    Tenant.objects.filter(pk=t.pk).update(past_due_since=timezone.now() - timedelta(days=30))
    assert _deliver("invoice.payment_succeeded", _invoice()).status_code == 200
    assert _status(t) == Tenant.Status.ACTIVE


@pytestmark_urls
@pytest.mark.django_db
def test_subscription_changes_move_the_tenant_between_plans(fake: FakeStripe) -> None:
    free = Plan.objects.create(name="free")
    pro = Plan.objects.create(name="pro", stripe_price_id="price_pro")
    t = _tenant()
    t.plan = free
    t.save(update_fields=["plan"])

    assert _deliver("customer.subscription.created", _subscription("price_pro")).status_code == 200
    t.refresh_from_db()
    assert (t.plan_id, t.tier) == (pro.pk, "pro")

    # An unknown price: logged, nothing changes.
    r = _deliver("customer.subscription.updated", _subscription("price_unknown"))
    assert r.status_code == 200
    t.refresh_from_db()
    assert (t.plan_id, t.tier) == (pro.pk, "pro")

    Plan.objects.create(name="enterprise", stripe_price_id="price_ent")
    assert _deliver("customer.subscription.updated", _subscription("price_ent")).status_code == 200
    t.refresh_from_db()
    assert t.tier == "enterprise"

    assert _deliver("customer.subscription.deleted", _subscription("price_ent")).status_code == 200
    t.refresh_from_db()
    assert (t.plan_id, t.tier) == (free.pk, "free")


@pytestmark_urls
@pytest.mark.django_db
def test_only_an_active_or_trialing_subscription_grants_its_plan(fake: FakeStripe) -> None:
    """An incomplete subscription (its first payment not made) does not move the tenant;
    the same subscription once active does. Nor do the other statuses that are not paid."""
    free = Plan.objects.create(name="free")
    pro = Plan.objects.create(name="pro", stripe_price_id="price_pro")
    team = Plan.objects.create(name="team", stripe_price_id="price_team")
    t = _tenant()
    t.plan = free
    t.save(update_fields=["plan"])
    now = int(time.time())

    sub = _subscription("price_pro", "cus_acme", "incomplete")
    assert _deliver("customer.subscription.created", sub, created=now).status_code == 200
    t.refresh_from_db()
    assert (t.plan_id, t.tier) == (free.pk, "free")
    for i, status in enumerate(
        ["incomplete_expired", "past_due", "unpaid", "canceled", "paused"], 1
    ):
        sub = _subscription("price_pro", "cus_acme", status)
        r = _deliver("customer.subscription.updated", sub, created=now + i)
        assert r.status_code == 200
        t.refresh_from_db()
        assert (t.plan_id, t.tier) == (free.pk, "free"), status

    sub = _subscription("price_pro", "cus_acme", "active")
    assert _deliver("customer.subscription.updated", sub, created=now + 10).status_code == 200
    t.refresh_from_db()
    assert (t.plan_id, t.tier) == (pro.pk, "pro")

    # A trial grants its plan too.
    sub = _subscription("price_team", "cus_acme", "trialing")
    assert _deliver("customer.subscription.updated", sub, created=now + 20).status_code == 200
    t.refresh_from_db()
    assert (t.plan_id, t.tier) == (team.pk, "team")

    # A subscription without a status grants nothing.
    sub = _subscription("price_pro")
    del sub["status"]
    assert _deliver("customer.subscription.updated", sub, created=now + 30).status_code == 200
    t.refresh_from_db()
    assert t.tier == "team"


@pytestmark_urls
@pytest.mark.django_db
def test_the_plan_comes_from_the_item_whose_price_is_a_plans(fake: FakeStripe) -> None:
    """Add-on items (prices no plan has) may come before the plan's item."""
    Plan.objects.create(name="free")
    pro = Plan.objects.create(name="pro", stripe_price_id="price_pro")
    t = _tenant()
    now = int(time.time())
    sub = _subscription("price_addon", "cus_acme", "active", "price_pro")
    assert _deliver("customer.subscription.created", sub, created=now).status_code == 200
    t.refresh_from_db()
    assert (t.plan_id, t.tier) == (pro.pk, "pro")

    # Only add-ons: no plan, nothing changes.
    sub = _subscription("price_addon", "cus_acme", "active", "price_other_addon")
    assert _deliver("customer.subscription.updated", sub, created=now + 1).status_code == 200
    t.refresh_from_db()
    assert (t.plan_id, t.tier) == (pro.pk, "pro")


@pytestmark_urls
@pytest.mark.django_db
def test_a_late_active_event_does_not_undo_a_newer_unpaid_state(fake: FakeStripe) -> None:
    """Out of order: a trial that ended unpaid (paused) at t+10, delivered before the
    trialing event of t: the older event does not grant the plan afterwards."""
    free = Plan.objects.create(name="free")
    Plan.objects.create(name="pro", stripe_price_id="price_pro")
    t = _tenant()
    t.plan = free
    t.save(update_fields=["plan"])
    now = int(time.time())
    paused = _subscription("price_pro", "cus_acme", "paused")
    trialing = _subscription("price_pro", "cus_acme", "trialing")
    assert _deliver("customer.subscription.updated", paused, created=now + 10).status_code == 200
    assert _deliver("customer.subscription.created", trialing, created=now).status_code == 200
    t.refresh_from_db()
    assert t.tier == "free"


@pytestmark_urls
@pytest.mark.django_db
def test_unknown_customers_and_other_events_are_recorded_and_ignored(fake: FakeStripe) -> None:
    t = _tenant()
    r = _deliver("invoice.payment_failed", _invoice(customer="cus_stranger"), "evt_a")
    assert r.status_code == 200
    r = _deliver("charge.refunded", {"id": "ch_1", "object": "charge"}, "evt_b")
    assert r.status_code == 200 and r.json() == {"received": True}
    assert _status(t) == Tenant.Status.ACTIVE
    assert set(StripeEvent.objects.values_list("event_id", "type")) == {
        ("evt_a", "invoice.payment_failed"),
        ("evt_b", "charge.refunded"),
    }
    # An expanded customer object works like its id.
    r = _deliver("invoice.payment_failed", _invoice(customer={"id": "cus_acme"}))
    assert r.status_code == 200
    assert _status(t) == Tenant.Status.PAST_DUE


@pytestmark_urls
@pytest.mark.django_db
def test_an_event_that_fails_midway_leaves_nothing_and_is_delivered_again(
    fake: FakeStripe, monkeypatch: pytest.MonkeyPatch
) -> None:
    from billing import webhooks

    t = _tenant()

    def boom(obj: dict[str, Any], event_id: str) -> None:
        Tenant.objects.filter(pk=t.pk).update(status=Tenant.Status.PAST_DUE)
        raise RuntimeError("database went away")

    monkeypatch.setitem(webhooks.HANDLERS, "invoice.payment_failed", boom)
    body = webhook_event("invoice.payment_failed", _invoice(), "evt_x")
    r = _post(body, sign(body, WHSEC))
    assert r.status_code == 500
    assert not StripeEvent.objects.filter(event_id="evt_x").exists()
    assert _status(t) == Tenant.Status.ACTIVE
    monkeypatch.undo()
    r = _post(body, sign(body, WHSEC))
    assert r.status_code == 200 and r.json() == {"received": True}
    assert _status(t) == Tenant.Status.PAST_DUE


def test_sign_matches_stripes_own_verification() -> None:
    body = json.dumps({"id": "evt_1", "object": "event"}).encode()
    header = sign(body, WHSEC)
    assert stripe.WebhookSignature.verify_header(body, header, WHSEC, 300)
    assert header == stripe.WebhookSignature.generate_signature_header(
        body.decode(), WHSEC, timestamp=int(header.split(",")[0][2:])
    )


@pytest.mark.django_db(transaction=True)
def test_tenants_get_a_customer_and_earlier_usage_is_queued(fake: FakeStripe) -> None:
    """A tenant that used rbee before Stripe knew it gets its customer on the next report,
    and the usage recorded meanwhile is sent too — once."""
    from billing.stripe_sync import customers_sync
    from billing.tasks import report_usage

    t = Tenant.objects.create(name="latecomer")
    usage_record(
        request_id="early-1",
        tenant_id=t.pk,
        api_key_id=None,
        model="m",
        modality="chat",
        usage=Usage(prompt_tokens=7, completion_tokens=3),
    )
    assert not MeterEvent.objects.filter(usage__request_id="early-1").exists()
    report_usage.apply()
    t.refresh_from_db()
    assert t.stripe_customer_id.startswith("cus_")
    assert (
        MeterEvent.objects.filter(usage__request_id="early-1", sent_at__isnull=False).count() == 2
    )
    assert customers_sync() == 0  # nothing left to do
    report_usage.apply()
    assert MeterEvent.objects.filter(usage__request_id="early-1").count() == 2


@pytestmark_urls
@pytest.mark.django_db
def test_events_delivered_out_of_order_never_undo_newer_ones(
    fake: FakeStripe, settings: Any
) -> None:
    """Stripe does not promise order: a payment failure created before the payment that
    followed it, but delivered after, leaves the tenant active; likewise for plans."""
    settings.RBEE_STRIPE_WEBHOOK_SECRET = WHSEC
    t = Tenant.objects.create(name="acme", stripe_customer_id="cus_acme")
    Plan.objects.create(name="pro", stripe_price_id="price_pro")
    Plan.objects.create(name="team", stripe_price_id="price_team")
    now = int(time.time())
    assert _deliver("invoice.paid", _invoice(), created=now).status_code == 200
    assert _deliver("invoice.payment_failed", _invoice(), created=now - 60).status_code == 200
    assert _status(t) == Tenant.Status.ACTIVE
    # A newer failure does count.
    assert _deliver("invoice.payment_failed", _invoice(), created=now + 60).status_code == 200
    assert _status(t) == Tenant.Status.PAST_DUE
    _deliver("customer.subscription.updated", _subscription("price_team"), created=now + 10)
    _deliver("customer.subscription.updated", _subscription("price_pro"), created=now + 5)
    t.refresh_from_db()
    assert t.plan is not None and t.plan.name == "team"
