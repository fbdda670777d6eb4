"""Plans moved from billing to tenants (tenants must not import billing). A database made
at the schema before the move, with rows in every table of both apps, keeps every row and
every link after migrating, on SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("tenants", "0003_stripe_event_order"), ("billing", "0001_initial")]

pytestmark = pytest.mark.django_db(transaction=True)


def _migrate(targets: list[tuple[str, str]]):  # type: ignore[no-untyped-def]
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    executor = MigrationExecutor(connection)
    return executor.loader.project_state(targets).apps


def _latest() -> list[tuple[str, str]]:
    executor = MigrationExecutor(connection)
    return [
        node for node in executor.loader.graph.leaf_nodes() if node[0] in {"tenants", "billing"}
    ]


def test_every_row_and_link_survives_the_move() -> None:
    latest = _latest()
    # the move's migrations are in the history (later additive ones may follow them)
    graph = MigrationExecutor(connection).loader.graph
    assert ("tenants", "0004_plan") in graph.nodes
    assert ("billing", "0003_plan_moved_to_tenants") in latest
    old = _migrate(BEFORE)
    assert not any(m._meta.label == "tenants.Plan" for m in old.get_models())

    User = old.get_model("auth", "User")
    Plan = old.get_model("billing", "Plan")
    Tenant = old.get_model("tenants", "Tenant")
    ApiKey = old.get_model("tenants", "ApiKey")
    Membership = old.get_model("tenants", "Membership")
    Invitation = old.get_model("tenants", "Invitation")
    UsageEvent = old.get_model("billing", "UsageEvent")
    Price = old.get_model("billing", "Price")
    Invoice = old.get_model("billing", "Invoice")
    MeterEvent = old.get_model("billing", "MeterEvent")
    StripeEvent = old.get_model("billing", "StripeEvent")

    now = datetime(2026, 12, 1, 12, tzinfo=UTC)
    user = User.objects.create(username="ada", email="ada@example.com")
    pro = Plan.objects.create(
        name="pro",
        allowed_models=["llama-3-8b"],
        tokens_per_day=5_000_000,
        max_concurrent=4,
        stripe_price_id="price_pro",
    )
    free = Plan.objects.create(name="free", requests_per_day=100)
    acme = Tenant.objects.create(name="acme", tier="pro", plan=pro, overrides={"tokens_per_day": 7})
    key = ApiKey.objects.create(tenant=acme, name="ci", prefix="abcdefghij", key_hash="0" * 64)
    Membership.objects.create(user=user, tenant=acme, role="owner")
    Invitation.objects.create(
        tenant=acme,
        email="bob@example.com",
        role="member",
        token_hash="1" * 64,
        invited_by=user,
        expires_at=now + timedelta(days=7),
    )
    usage = UsageEvent.objects.create(
        request_id="req-1",
        tenant=acme,
        api_key=key,
        model="llama-3-8b",
        modality="chat",
        prompt_tokens=12,
        completion_tokens=30,
    )
    Price.objects.create(model="*", unit="prompt_tokens", plan=pro, unit_price=Decimal("0.000001"))
    Price.objects.create(model="*", unit="prompt_tokens", plan=None, unit_price=Decimal("0.000002"))
    Invoice.objects.create(
        tenant=acme,
        period_start=date(2026, 11, 1),
        period_end=date(2026, 11, 30),
        lines=[{"model": "llama-3-8b"}],
        total=Decimal("1.5"),
    )
    MeterEvent.objects.create(
        usage=usage,
        event_name="rbee_tokens",
        identifier="req-1:prompt",
        customer="cus_1",
        value=Decimal(12),
        timestamp=now,
    )
    StripeEvent.objects.create(event_id="evt_1", type="customer.subscription.updated")
    counts = {
        "plan": 2,
        "tenant": 1,
        "apikey": 1,
        "membership": 1,
        "invitation": 1,
        "usage": 1,
        "price": 2,
        "invoice": 1,
        "meter": 1,
        "stripe": 1,
    }

    new = _migrate(latest)
    assert not any(m._meta.label == "billing.Plan" for m in new.get_models())
    Plan = new.get_model("tenants", "Plan")
    Tenant = new.get_model("tenants", "Tenant")
    Price = new.get_model("billing", "Price")
    assert {
        "plan": Plan.objects.count(),
        "tenant": Tenant.objects.count(),
        "apikey": new.get_model("tenants", "ApiKey").objects.count(),
        "membership": new.get_model("tenants", "Membership").objects.count(),
        "invitation": new.get_model("tenants", "Invitation").objects.count(),
        "usage": new.get_model("billing", "UsageEvent").objects.count(),
        "price": Price.objects.count(),
        "invoice": new.get_model("billing", "Invoice").objects.count(),
        "meter": new.get_model("billing", "MeterEvent").objects.count(),
        "stripe": new.get_model("billing", "StripeEvent").objects.count(),
    } == counts

    moved = Plan.objects.get(name="pro")
    assert moved.pk == pro.pk
    assert moved.allowed_models == ["llama-3-8b"] and moved.tokens_per_day == 5_000_000
    assert moved.max_concurrent == 4 and moved.stripe_price_id == "price_pro"
    acme = Tenant.objects.get(name="acme")
    assert acme.plan_id == pro.pk and acme.overrides == {"tokens_per_day": 7}
    assert Price.objects.get(plan__isnull=False).plan_id == pro.pk
    assert set(Plan.objects.get(pk=pro.pk).tenants.values_list("name", flat=True)) == {"acme"}

    # The table is usable as tenants' own: new rows get fresh ids, links still hold.
    team = Plan.objects.create(name="team", tokens_per_day=1)
    assert team.pk not in {pro.pk, free.pk}
    Tenant.objects.create(name="globex", plan=team)
    assert Tenant.objects.filter(plan__name="team").count() == 1
