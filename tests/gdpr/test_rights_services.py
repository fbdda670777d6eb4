"""Requests and their jobs: Art. 12(3) deadlines and extensions, a run that fails part
way (a store unreachable) and is run again through the Celery task, and the operators'
CLI (`rbee gdpr requests | extend | processing`, `rbee tenant billing-email`)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from django.contrib.auth.models import User
from django.utils import timezone

from gdpr import audit, deadlines, selectors, services, subjects
from gdpr.models import SubjectRequest
from gdpr.tasks import request_run
from rbee.cli import main
from tenants.models import Membership, Tenant
from tests.billing.fakestripe import API_KEY, FakeStripe

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RBEE_HOME", str(tmp_path))
    audit._cache.clear()
    return tmp_path


def test_deadlines_are_one_month_and_at_most_two_more() -> None:
    jan31 = datetime(2027, 1, 31, 9, 30, tzinfo=UTC)
    assert deadlines.due(jan31) == datetime(2027, 2, 28, 9, 30, tzinfo=UTC)
    assert deadlines.due(datetime(2028, 1, 31, tzinfo=UTC)) == datetime(2028, 2, 29, tzinfo=UTC)
    assert deadlines.due(datetime(2027, 12, 15, tzinfo=UTC)) == datetime(2028, 1, 15, tzinfo=UTC)
    assert deadlines.latest_extension(jan31) == datetime(2027, 4, 30, 9, 30, tzinfo=UTC)
    req = services.request_create(
        kind="export", subject=subjects.user("a@b.example"), requested_by="cli", received_at=jan31
    )
    assert req.due_at == datetime(2027, 2, 28, 9, 30, tzinfo=UTC)
    assert req.extended_until is None and req.deadline == req.due_at


@pytest.fixture
def fake(settings: Any) -> Iterator[FakeStripe]:
    with FakeStripe() as f:
        yield f


def test_a_failed_erasure_keeps_what_it_needs_and_completes_when_run_again(
    fake: FakeStripe, settings: Any
) -> None:
    email = "pat@shop.example"
    subject = subjects.user(email)
    person = User.objects.create_user("pat", email, "pw-0123456789")
    shop = Tenant.objects.create(name="patshop", billing_email=email, stripe_customer_id="cus_x")
    fake.customers["cus_x"] = {
        "id": "cus_x",
        "object": "customer",
        "email": email,
        "name": "Pat",
        "phone": None,
        "description": None,
        "address": None,
        "shipping": None,
        "metadata": {},
    }
    Membership.objects.create(user=person, tenant=shop, role="owner")
    audit.record("login.success", actor=subject, subject=subject, personal={"ip": "192.0.2.9"})
    settings.RBEE_STRIPE_SECRET_KEY = ""  # Stripe is off: its customer cannot be redacted

    req = services.request_create(kind="erase", subject=subject, requested_by="cli")
    assert request_run.apply((req.pk,)).get() == "failed"
    req.refresh_from_db()
    assert req.status == SubjectRequest.Status.FAILED
    assert req.error == "stores failed: billing.stripe"
    assert req.result["complete"] is False
    stores = {s["store"]: s for s in req.result["stores"]}
    assert stores["billing.stripe"]["error"] == "StripeNotConfigured"
    # Nothing after the failed store was erased: what leads to the Stripe customer (the
    # billing e-mail) and to the subject (the request, the audit key) is still there.
    assert all(s.get("deferred") for n, s in stores.items() if n != "billing.stripe")
    assert Tenant.objects.get(pk=shop.pk).billing_email == email
    assert req.subject_label == str(subject)
    assert audit.events_for_subject(subject) != []
    assert User.objects.filter(username="pat").exists()
    # Failed and open: shown as overdue once past the deadline.
    SubjectRequest.objects.filter(pk=req.pk).update(due_at=timezone.now() - timedelta(days=1))
    assert selectors.overdue_counts() == {"export": 0, "erase": 1}

    # Stripe is back: the job is run again and completes, the customer redacted.
    settings.RBEE_STRIPE_SECRET_KEY = API_KEY
    settings.RBEE_STRIPE_API_BASE = fake.url
    assert request_run.apply((req.pk,)).get() == "done"
    req.refresh_from_db()
    assert req.status == SubjectRequest.Status.DONE and req.result["complete"] is True
    assert fake.customers["cus_x"]["email"] is None and fake.customers["cus_x"]["name"] is None
    assert not User.objects.filter(username="pat").exists()
    assert Tenant.objects.get(pk=shop.pk).billing_email == ""
    assert req.subject_label == services.pseudonym(subject)
    assert audit.events_for_subject(subject) == []
    assert selectors.overdue_counts() == {"export": 0, "erase": 0}
    assert request_run.apply((req.pk,)).get() == "done"  # idempotent


def _cli(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_the_operators_cli() -> None:
    Tenant.objects.create(name="acme")
    r = _cli("tenant", "billing-email", "acme", "not-an-email")
    assert r.exit_code == 1 and "not an e-mail address" in r.output
    assert _cli("tenant", "billing-email", "acme", "books@acme.example").exit_code == 0
    assert Tenant.objects.get(name="acme").billing_email == "books@acme.example"

    assert _cli("gdpr", "requests").output.strip() == "no requests"
    old = services.request_create(
        kind="export",
        subject=subjects.user("late@x.example"),
        requested_by="cli",
        received_at=timezone.now() - timedelta(days=35),
    )
    services.request_create(
        kind="erase", subject=subjects.end_user("acme", "u1"), requested_by="cli"
    )
    out = _cli("gdpr", "requests").output
    assert "user:late@x.example" in out and "enduser:acme:u1" in out
    assert out.count("OVERDUE") == 1
    only = _cli("gdpr", "requests", "--overdue").output
    assert "late@x.example" in only and "enduser:acme:u1" not in only

    notified = (old.received_at + timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%S")
    r = _cli(
        "gdpr", "extend", str(old.pk), "--months", "1", "--reason", " ", "--notified-at", notified
    )
    assert r.exit_code == 1 and "reason" in r.output
    r = _cli(
        "gdpr",
        "extend",
        str(old.pk),
        "--months",
        "1",
        "--reason",
        "complex",
        "--notified-at",
        notified,
    )
    assert r.exit_code == 0, r.output
    assert "OVERDUE" not in _cli("gdpr", "requests").output
    assert "(extended)" in _cli("gdpr", "requests").output

    r = _cli("gdpr", "export", "--subject", "nonsense", "--out", "/dev/null")
    assert r.exit_code == 1 and "a subject is an e-mail or TENANT:END_USER_ID" in r.output

    md = _cli("gdpr", "processing").output
    assert md.startswith("# Record of processing activities (Art. 30 GDPR)")
    for store in ("tenants.account", "billing.usage", "billing.invoices", "gdpr.audit"):
        assert f"(`{store}`)" in md


def test_a_request_waiting_when_its_subject_is_erased_ends_with_nothing_to_do() -> None:
    subject = subjects.user("gone@x.example")
    User.objects.create_user("gone", "gone@x.example", "pw-0123456789")
    waiting = services.request_create(kind="export", subject=subject, requested_by="cli")
    erase = services.request_create(kind="erase", subject=subject, requested_by="cli")
    assert services.request_run(request_id=erase.pk).status == SubjectRequest.Status.DONE
    done = services.request_run(request_id=waiting.pk)
    assert done.status == SubjectRequest.Status.DONE and done.archive == ""
    assert done.result == {"note": "the subject was erased before this request ran"}


def test_a_request_another_worker_runs_is_not_run_twice() -> None:
    req = services.request_create(
        kind="export", subject=subjects.user("x@x.example"), requested_by="cli"
    )
    SubjectRequest.objects.filter(pk=req.pk).update(status="running", started_at=timezone.now())
    assert services.request_run(request_id=req.pk).status == "running"
    stale = timezone.now() - services.RUNNING_LEASE - timedelta(seconds=1)
    SubjectRequest.objects.filter(pk=req.pk).update(started_at=stale)
    assert services.request_run(request_id=req.pk).status == "done"


def test_an_erasure_under_a_legal_hold_erases_nothing_and_says_why(_home: Path) -> None:
    """Art. 17(3)(e): a hold on the end user, or on their tenant, keeps every record (the
    usage rows, the log line, the audit key that decrypts the held events); the request
    is answered with a signed receipt saying why. Released, a new erasure erases."""
    from billing.models import UsageEvent
    from gdpr import retention, signing

    shop = Tenant.objects.create(name="heldshop")
    subject = subjects.end_user("heldshop", "bob-the-customer")
    for i in range(2):
        UsageEvent.objects.create(
            request_id=f"h{i}", tenant=shop, model="m", modality="chat", end_user=subject.end_user
        )
    audit.record("inference", actor="key:abc", tenant_id=shop.pk, subject=subject)
    line = f"request h0 tenant=heldshop user={subject.end_user}\n"
    (_home / "queen.log").write_text(line)

    def held_erasure() -> dict[str, Any]:
        req = services.request_create(kind="erase", subject=subject, requested_by="cli")
        req = services.request_run(request_id=req.pk)
        assert req.status == SubjectRequest.Status.DONE, req.error
        # Nothing was erased: the rows, the log line, the audit key (events decrypt).
        assert UsageEvent.objects.filter(end_user=subject.end_user).count() == 2
        assert (_home / "queen.log").read_text() == line
        assert [e["action"] for e in audit.events_for_subject(subject)][:1] == ["inference"]
        assert selectors.request_data(req)["outcome"] == "held"
        receipt = req.result
        assert signing.verify_document(receipt) and receipt["outcome"] == "held"
        assert "17(3)(e)" in receipt["not_erased"]["ground"]
        assert all(s.get("held") for s in receipt["stores"])
        assert "bob-the-customer" not in str(receipt)
        return receipt

    on_subject = retention.hold_place(reason="case 17", actor="cli", subject=subject)
    receipt = held_erasure()
    assert [(h["hold"], h["on"]) for h in receipt["not_erased"]["holds"]] == [
        (on_subject.pk, "subject")
    ]
    retention.hold_release(hold_id=on_subject.pk, actor="cli")
    on_tenant = retention.hold_place(
        reason="audit by the authority", actor="cli", tenant_id=shop.pk
    )
    receipt = held_erasure()
    assert [(h["hold"], h["on"]) for h in receipt["not_erased"]["holds"]] == [
        (on_tenant.pk, "tenant")
    ]
    # Another tenant's hold, or another end user's, holds nothing of this one.
    retention.hold_release(hold_id=on_tenant.pk, actor="cli")
    other = Tenant.objects.create(name="othershop")
    retention.hold_place(reason="x", actor="cli", tenant_id=other.pk)
    retention.hold_place(
        reason="y", actor="cli", subject=subjects.end_user("heldshop", "someone-else")
    )
    req = services.request_create(kind="erase", subject=subject, requested_by="cli")
    req = services.request_run(request_id=req.pk)
    assert req.status == SubjectRequest.Status.DONE and req.result["outcome"] == "erased"
    assert not UsageEvent.objects.filter(end_user=subject.end_user).exists()
    assert "bob-the-customer" not in (_home / "queen.log").read_text()
    assert audit.events_for_subject(subject) == []
