"""Retention by record class and jurisdiction, with legal hold: real rows of every class,
aged by hand, one purge run, and what is left; every run, setting and hold is audited."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from click.testing import CliRunner

from billing.models import Invoice, StripeEvent, UsageEvent
from billing.services import Usage, usage_record
from gdpr import audit, retention, schedule, subjects
from gdpr.models import AuditEvent, LegalHold, RetentionSetting
from inference.models import GeneratedImage
from rbee.cli import main
from tenants.models import Tenant
from tenants.services import tenant_create

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 6, 1, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _home(tmp_path: Any, monkeypatch: Any) -> None:
    monkeypatch.setenv("RBEE_HOME", str(tmp_path))
    audit._cache.clear()


def ago(years: float = 0, days: float = 0) -> datetime:
    return NOW - timedelta(days=years * 365.25 + days)


def usage(tenant: Tenant, rid: str, when: datetime, end_user: str = "") -> None:
    usage_record(
        request_id=rid,
        tenant_id=tenant.pk,
        api_key_id=None,
        model="m",
        modality="chat",
        usage=Usage(prompt_tokens=1),
        end_user=end_user,
    )
    UsageEvent.objects.filter(request_id=rid).update(created_at=when)


def invoice(tenant: Tenant, when: datetime) -> None:
    start = when.date().replace(day=1)
    Invoice.objects.create(tenant=tenant, period_start=start, period_end=when.date())


def left() -> set[str]:
    return set(UsageEvent.objects.values_list("request_id", flat=True))


def last_event(action: str) -> tuple[AuditEvent, dict[str, Any]]:
    ev = AuditEvent.objects.filter(action=action).order_by("-id").first()
    assert ev is not None, f"no {action} audit event"
    return ev, json.loads(ev.data)


@pytest.fixture
def fleet() -> dict[str, Tenant]:
    de = tenant_create(name="de-co", jurisdiction="DE")
    nl = tenant_create(name="nl-co", jurisdiction="NL")
    xx = tenant_create(name="any-co")
    for t in (de, nl, xx):
        for label, age in (("1y", 1), ("6y", 6), ("8y", 8.5), ("9y", 9.5), ("11y", 11)):
            usage(t, f"{t.name}-{label}", ago(age))
            invoice(t, ago(age))
    return {"de": de, "nl": nl, "any": xx}


def test_books_and_invoices_follow_the_tenants_jurisdiction(fleet: dict[str, Tenant]) -> None:
    run = retention.run(now=NOW)
    assert not run.errors
    # DE books 10 y, NL 7 y, elsewhere the default (10 y).
    assert left() == {
        "de-co-1y", "de-co-6y", "de-co-8y", "de-co-9y",
        "nl-co-1y", "nl-co-6y",
        "any-co-1y", "any-co-6y", "any-co-8y", "any-co-9y",
    }  # fmt: skip
    # DE invoices 8 y (not the books' 10), NL 7 y, default 10 y.
    by_tenant = {
        t.name: sorted(int((NOW.date() - d).days / 365.25) for d in
                       Invoice.objects.filter(tenant=t).values_list("period_end", flat=True))
        for t in fleet.values()
    }  # fmt: skip
    assert by_tenant == {"de-co": [1, 6], "nl-co": [1, 6], "any-co": [1, 6, 8, 9]}
    assert run.results["billing.usage"].deleted == 5
    assert run.results["billing.invoices"].deleted == 7
    ev, data = last_event("retention.run")
    assert ev.actor == "system" and ev.outcome == "ok"
    assert data["classes"]["billing.usage"]["deleted"] == 5
    assert data["classes"]["billing.invoices"]["deleted"] == 7
    # Idempotent: a second run finds nothing more.
    assert retention.run(now=NOW).deleted == 0


def test_a_tenant_under_legal_hold_keeps_everything_until_released(
    fleet: dict[str, Tenant],
) -> None:
    hold = retention.hold_place(reason="case 4711", actor="cli", tenant_id=fleet["nl"].pk)
    run = retention.run(now=NOW)
    assert {r for r in left() if r.startswith("nl-co")} == {
        "nl-co-1y", "nl-co-6y", "nl-co-8y", "nl-co-9y", "nl-co-11y"
    }  # fmt: skip
    assert run.results["billing.usage"].held == 3
    assert Invoice.objects.filter(tenant=fleet["nl"]).count() == 5
    assert "de-co-11y" not in left()  # others are purged as usual
    _, placed = last_event("retention.hold.place")
    assert placed == {"hold": hold.pk, "reason": "case 4711"}

    retention.hold_release(hold_id=hold.pk, actor="cli")
    last_event("retention.hold.release")
    retention.run(now=NOW)
    assert {r for r in left() if r.startswith("nl-co")} == {"nl-co-1y", "nl-co-6y"}
    with pytest.raises(retention.RetentionError, match="already released"):
        retention.hold_release(hold_id=hold.pk, actor="cli")


def test_a_held_end_user_keeps_their_records_and_no_one_elses() -> None:
    t = tenant_create(name="shop", jurisdiction="NL")
    usage(t, "held-old", ago(9), end_user="u-42")
    usage(t, "other-old", ago(9), end_user="u-7")
    usage(t, "anon-old", ago(9))
    retention.hold_place(reason="dispute", actor="cli", subject=subjects.end_user("shop", "u-42"))
    run = retention.run(now=NOW)
    assert left() == {"held-old"}
    assert run.results["billing.usage"].held == 1


def test_bounded_and_ttl_classes() -> None:
    for eid, days in (("evt_old", 120), ("evt_new", 10)):
        StripeEvent.objects.create(event_id=eid, type="invoice.paid")
        StripeEvent.objects.filter(event_id=eid).update(received_at=NOW - timedelta(days=days))
    GeneratedImage.objects.create(token="gone", content=b"x", expires_at=NOW - timedelta(hours=1))
    GeneratedImage.objects.create(token="live", content=b"x", expires_at=NOW + timedelta(hours=1))
    GeneratedImage.objects.filter(token="live").update(created_at=NOW)
    run = retention.run(now=NOW)
    assert set(StripeEvent.objects.values_list("event_id", flat=True)) == {"evt_new"}
    assert set(GeneratedImage.objects.values_list("token", flat=True)) == {"live"}
    assert run.results["billing.stripe_events"].deleted == 1
    assert run.results["inference.images"].deleted == 1


def test_the_audit_log_is_never_purged() -> None:
    eid = audit.record("key.create", actor="cli", data={"prefix": "x"})
    before = AuditEvent.objects.count()
    run = retention.run(now=NOW + timedelta(days=retention.years(50)))
    assert AuditEvent.objects.filter(pk=eid).exists()
    # Every event so far is past its 7 years at that date: reported, kept.
    assert run.results["gdpr.audit"].kept == before and run.results["gdpr.audit"].deleted == 0
    assert AuditEvent.objects.count() == before + 1  # the run's own event


def test_settings_never_go_below_the_law_and_are_audited(fleet: dict[str, Tenant]) -> None:
    with pytest.raises(retention.RetentionError, match="at least"):
        retention.retention_set(
            record_class="billing.usage", days=365, jurisdiction="DE", actor="cli"
        )
    with pytest.raises(retention.RetentionError, match="at least"):
        retention.retention_set(record_class="gdpr.audit", days=365, actor="cli")
    with pytest.raises(retention.RetentionError, match="no record class"):
        retention.retention_set(record_class="nope", days=365, actor="cli")
    assert not RetentionSetting.objects.exists()
    # Shorter for tenants with no statutory rule: allowed; DE and NL keep their law's.
    retention.retention_set(record_class="billing.usage", days=2 * 365, actor="cli")
    _, data = last_event("retention.setting")
    assert data == {"class": "billing.usage", "jurisdiction": "", "days": 730, "was": None}
    retention.run(now=NOW)
    assert {r for r in left() if r.startswith("any-co")} == {"any-co-1y"}
    assert "de-co-9y" in left() and "nl-co-6y" in left() and "nl-co-8y" not in left()


def test_the_purge_is_scheduled_for_beat_and_the_embedded_thread() -> None:
    assert "gdpr.retention_purge" in dict(schedule.SCHEDULE)
    from django.conf import settings

    assert any(v["task"] == "gdpr.retention_purge" for v in settings.CELERY_BEAT_SCHEDULE.values())
    from gdpr.tasks import retention_purge

    assert retention_purge.apply().get()["errors"] == {}
    assert last_event("retention.run")[0].actor == "retention"


def test_cli_holds_and_runs() -> None:
    tenant_create(name="cli-co", jurisdiction="FR")
    r = CliRunner().invoke(
        main, ["gdpr", "hold", "place", "--tenant", "cli-co", "--reason", "audit 2026"]
    )
    assert r.exit_code == 0, r.output
    hold_id = int(r.output.strip())
    assert LegalHold.objects.get(pk=hold_id).tenant_id == Tenant.objects.get(name="cli-co").pk
    r = CliRunner().invoke(main, ["gdpr", "hold", "place", "--subject", "nope", "--reason", "x"])
    assert r.exit_code != 0 and "TENANT:END_USER_ID" in r.output
    assert "audit 2026" in CliRunner().invoke(main, ["gdpr", "hold", "list"]).output
    r = CliRunner().invoke(main, ["gdpr", "retention", "run"])
    assert r.exit_code == 0 and "billing.usage" in r.output, r.output
    shown = CliRunner().invoke(main, ["gdpr", "retention", "show"]).output
    assert "DE 2922" in shown and "NL 2557" in shown  # invoices: 8 y and 7 y, in days
    r = CliRunner().invoke(
        main, ["gdpr", "retention", "set", "billing.usage", "30", "--jurisdiction", "FR"]
    )
    assert r.exit_code != 0 and "at least" in r.output
    assert CliRunner().invoke(main, ["gdpr", "hold", "release", str(hold_id)]).exit_code == 0


def test_books_and_invoices_are_kept_until_the_end_of_their_year_plus_the_period() -> None:
    """§ 147(4) AO and its peers count from the end of the calendar year: a German invoice
    for February 2018 is kept until 31 December 2026 (8 years), not until February."""
    de = tenant_create(name="de-late", jurisdiction="DE")
    when = datetime(2026, 12, 5, tzinfo=UTC)
    Invoice.objects.create(tenant=de, period_start=date(2018, 2, 1), period_end=date(2018, 2, 28))
    Invoice.objects.create(tenant=de, period_start=date(2017, 12, 1), period_end=date(2017, 12, 31))
    usage(de, "books-2016-03", datetime(2016, 3, 1, tzinfo=UTC))  # 10 years: until end of 2026
    usage(de, "books-2015-12", datetime(2015, 12, 31, tzinfo=UTC))
    run = retention.run(now=when)
    assert not run.errors
    assert list(Invoice.objects.filter(tenant=de).values_list("period_end", flat=True)) == [
        date(2018, 2, 28)
    ]
    assert left() == {"books-2016-03"}


def test_an_invoice_keeps_the_jurisdiction_it_was_issued_under() -> None:
    """A tenant that moves from the Netherlands (7 years) to Germany (8) does not shorten or
    lengthen what its Dutch invoices were issued under."""
    t = tenant_create(name="mover", jurisdiction="DE")
    issued_nl = Invoice.objects.create(
        tenant=t, period_start=date(2018, 5, 1), period_end=date(2018, 5, 31), jurisdiction="NL"
    )
    issued_de = Invoice.objects.create(
        tenant=t, period_start=date(2018, 4, 1), period_end=date(2018, 4, 30), jurisdiction="DE"
    )
    retention.run(now=datetime(2026, 3, 1, tzinfo=UTC))
    assert list(Invoice.objects.filter(tenant=t).values_list("pk", flat=True)) == [issued_de.pk]
    assert not Invoice.objects.filter(pk=issued_nl.pk).exists()


def test_a_held_person_keeps_the_invoices_addressed_to_them() -> None:
    t = tenant_create(name="solo", jurisdiction="NL")
    mine = Invoice.objects.create(
        tenant=t,
        period_start=date(2010, 1, 1),
        period_end=date(2010, 1, 31),
        customer_email="Held@Example.org",
    )
    other = Invoice.objects.create(
        tenant=t, period_start=date(2010, 2, 1), period_end=date(2010, 2, 28)
    )
    retention.hold_place(reason="audit", actor="cli", subject=subjects.user("held@example.org"))
    run = retention.run(now=NOW)
    assert Invoice.objects.filter(pk=mine.pk).exists()
    assert not Invoice.objects.filter(pk=other.pk).exists()
    assert run.results["billing.invoices"].held == 1
