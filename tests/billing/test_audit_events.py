"""Stripe-driven changes of a tenant (billing/webhooks.py) and the past-due suspension
(billing/stripe_sync.py, billing.tasks.suspend_past_due) are audit events with actor
"stripe" (or "system" for the periodic job), one per change, in the transaction that
applies the change: a replayed, late or failing delivery records nothing."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from billing import tasks
from billing.services import plan_get_or_create_defaults
from gdpr.actions import AuditAction as A
from tenants.models import Plan, Tenant
from tests.audit_events import (
    actions,
    assert_not_in_clear,
    audit_home,  # noqa: F401 (the fixture)
    events,
    one,
)
from tests.billing.test_stripe import (
    _deliver,
    _invoice,
    _subscription,
    _tenant,
    fake,  # noqa: F401 (the fixture, used by name)
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("audit_home")]


def _status(t: Tenant) -> str:
    t.refresh_from_db()
    return t.status


@pytest.mark.usefixtures("fake")
def test_payment_failure_suspension_and_payment(settings: Any) -> None:
    settings.RBEE_PAST_DUE_GRACE_DAYS = 7
    t = _tenant()
    before = len(actions())
    assert _deliver("invoice.payment_failed", _invoice(), "evt_fail_1").status_code == 200
    assert _deliver("invoice.payment_failed", _invoice(), "evt_fail_2").status_code == 200
    assert _deliver("invoice.payment_failed", _invoice(), "evt_fail_1").status_code == 200
    past_due = one(A.TENANT_PAST_DUE)  # the second failure and the replay change nothing
    assert (past_due["actor"], past_due["tenant_id"]) == ("stripe", t.pk)
    assert past_due["data"] == {
        "from": "active", "to": "past_due", "stripe_event": "evt_fail_1", "stripe_object": "in_1",
    }  # fmt: skip

    assert tasks.suspend_past_due.apply().get()["suspended"] == 0
    assert events(A.TENANT_SUSPEND) == []
    Tenant.objects.filter(pk=t.pk).update(past_due_since=timezone.now() - timedelta(days=8))
    assert tasks.suspend_past_due.apply().get()["suspended"] == 1
    suspend = one(A.TENANT_SUSPEND)
    assert (suspend["actor"], suspend["tenant_id"]) == ("system", t.pk)
    assert suspend["data"]["reason"] == "past_due" and suspend["data"]["to"] == "suspended"
    tasks.suspend_past_due.apply().get()  # nothing left to suspend: no second event
    assert len(events(A.TENANT_SUSPEND)) == 1

    assert _deliver("invoice.paid", _invoice(status="paid"), "evt_paid_1").status_code == 200
    back = one(A.TENANT_REACTIVATE)
    assert (back["actor"], back["tenant_id"], back["data"]["from"]) == ("stripe", t.pk, "suspended")
    assert back["data"]["stripe_event"] == "evt_paid_1"
    assert len(actions()) == before + 3
    assert_not_in_clear("whsec_test_rbee_0123456789abcdef")


@pytest.mark.usefixtures("fake")
def test_a_paid_invoice_of_a_manually_suspended_tenant_records_nothing() -> None:
    t = _tenant()
    Tenant.objects.filter(pk=t.pk).update(status=Tenant.Status.SUSPENDED)
    before = actions()
    assert _deliver("invoice.payment_succeeded", _invoice()).status_code == 200
    assert _status(t) == Tenant.Status.SUSPENDED
    assert actions() == before


@pytest.mark.usefixtures("fake")
def test_subscriptions_move_plans_as_stripe() -> None:
    free = Plan.objects.create(name="free")
    Plan.objects.create(name="pro", stripe_price_id="price_pro")
    t = _tenant()
    t.plan = free
    t.save(update_fields=["plan"])
    assert _deliver("customer.subscription.created", _subscription("price_pro")).status_code == 200
    # Not granted (incomplete) and unknown prices: no change, no event.
    sub = _subscription("price_pro", status="incomplete")
    assert _deliver("customer.subscription.updated", sub).status_code == 200
    assert _deliver("customer.subscription.updated", _subscription("nope")).status_code == 200
    assert _deliver("customer.subscription.deleted", _subscription("price_pro")).status_code == 200
    up, down = events(A.TENANT_PLAN)
    assert (up["actor"], up["tenant_id"], up["data"]["from"], up["data"]["to"]) == (
        "stripe", t.pk, "free", "pro",
    )  # fmt: skip
    assert (down["actor"], down["data"]["from"], down["data"]["to"]) == ("stripe", "pro", "free")
    assert up["data"]["stripe_object"] == "sub_1"


@pytest.mark.usefixtures("fake")
def test_a_delivery_that_fails_midway_leaves_no_event(monkeypatch: pytest.MonkeyPatch) -> None:
    from billing import webhooks

    t = _tenant()
    before = actions()
    real = webhooks._payment_failed

    def fails_after_the_change(obj: dict[str, Any], event_id: str, created: Any) -> None:
        real(obj, event_id, created)  # the status change and its event ...
        raise RuntimeError("database went away")  # ... then the handler fails

    monkeypatch.setitem(webhooks.HANDLERS, "invoice.payment_failed", fails_after_the_change)
    assert _deliver("invoice.payment_failed", _invoice(), "evt_x").status_code == 500
    assert _status(t) == Tenant.Status.ACTIVE
    assert actions() == before
    monkeypatch.undo()
    assert _deliver("invoice.payment_failed", _invoice(), "evt_x").status_code == 200
    assert one(A.TENANT_PAST_DUE)["data"]["stripe_event"] == "evt_x"


def test_default_plans_are_recorded_once() -> None:
    plan_get_or_create_defaults(actor="cli:root")
    plan_get_or_create_defaults(actor="cli:root")
    made = events(A.PLAN_SET)
    assert sorted(e["data"]["plan"] for e in made) == ["enterprise", "free", "pro"]
    assert {e["actor"] for e in made} == {"cli:root"}
