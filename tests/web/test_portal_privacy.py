"""/portal/t/<t>/privacy: the person's export, erasure and consents, through gdpr's
services as the rights API uses them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from django.contrib.auth.models import User

from gdpr import audit, consent, retention, services, subjects
from gdpr.models import ConsentRecord, SubjectRequest
from tests.web.test_portal import member, signed_in, tenant

pytestmark = pytest.mark.django_db

EMAIL = "m@example.com"
SUBJECT = subjects.user(EMAIL)


@pytest.fixture(autouse=True)
def _env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A fresh RBEE_HOME (archives, receipts), and jobs run in this process, as on the
    embedded default, whatever the broker of the run."""
    from rbee.celery import app

    monkeypatch.setenv("RBEE_HOME", str(tmp_path))
    audit._cache.clear()
    eager = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = eager


@pytest.fixture
def client():  # type: ignore[no-untyped-def]
    acme = tenant("acme")
    return signed_in(member(acme, EMAIL, "member"))


def test_an_export_is_requested_and_its_archive_downloaded_when_ready(client) -> None:  # type: ignore[no-untyped-def]
    response = client.post("/portal/t/acme/privacy/export")
    assert response.status_code == 302 and response["Location"] == "/portal/t/acme/privacy"
    req = SubjectRequest.objects.get()
    user_id = int(client.session["_auth_user_id"])
    assert (req.kind, req.status, req.subject_label) == ("export", "received", f"user:{EMAIL}")
    assert (req.requested_by, req.requested_by_user_id) == (f"account:{user_id}", user_id)
    page = client.get("/portal/t/acme/privacy").content.decode()
    assert f'data-request="{req.pk}" data-kind="export"' in page
    assert "being prepared" in page and "/download?token=" not in page
    services.request_run(request_id=req.pk)
    page = client.get("/portal/t/acme/privacy").content.decode()
    link = page.split(f'href="/gdpr/requests/{req.pk}/download?token=')[1].split('"')[0]
    archive = client.get(f"/gdpr/requests/{req.pk}/download?token={link}")
    assert archive.status_code == 200
    assert archive["Content-Type"] == "application/zip"
    assert b"".join(archive.streaming_content)[:2] == b"PK"


def test_erasure_needs_the_confirmation_and_then_records_the_request(client) -> None:  # type: ignore[no-untyped-def]
    wrong = client.post(
        "/portal/t/acme/privacy/delete", {"email": "x@example.com", "understood": "on"}
    )
    assert wrong.status_code == 400 and b"This is not the e-mail of your account." in wrong.content
    unticked = client.post("/portal/t/acme/privacy/delete", {"email": EMAIL})
    assert unticked.status_code == 400 and b"This field is required." in unticked.content
    assert not SubjectRequest.objects.exists()
    response = client.post(
        "/portal/t/acme/privacy/delete", {"email": EMAIL.upper(), "understood": "on"}
    )
    assert response.status_code == 302
    req = SubjectRequest.objects.get()
    assert (req.kind, req.subject_label) == ("erase", f"user:{EMAIL}")
    page = client.get("/portal/t/acme/privacy").content.decode()
    assert "/receipt?token=" in page  # the message keeps the receipt's link


def test_an_erasure_under_a_legal_hold_says_nothing_was_erased_and_why(client) -> None:  # type: ignore[no-untyped-def]
    retention.hold_place(reason="case 12", actor="cli", subject=SUBJECT)
    client.post("/portal/t/acme/privacy/delete", {"email": EMAIL, "understood": "on"})
    req = SubjectRequest.objects.get()
    services.request_run(request_id=req.pk)
    page = client.get("/portal/t/acme/privacy").content.decode()
    assert "Nothing was erased: a legal hold." in page
    assert "Art. 17(3)(e) GDPR" in page
    assert "Nothing was erased; ask again once the hold is released." in page


def test_consents_are_granted_and_withdrawn_with_the_text_shown(client) -> None:  # type: ignore[no-untyped-def]
    page = client.get("/portal/t/acme/privacy").content.decode()
    text = f"I agree to {consent.PURPOSES[consent.PRODUCT_EMAIL]}."
    assert text in page
    granted = client.post(
        "/portal/t/acme/privacy/consents", {"purpose": "product_email", "action": "grant"}
    )
    assert granted.status_code == 302
    row = ConsentRecord.objects.get()
    assert (row.subject, row.purpose, row.action, row.mechanism) == (
        f"user:{EMAIL}",
        "product_email",
        "grant",
        "portal",
    )
    assert row.text_sha256 == consent.text_digest(text)
    assert consent.consent_given(subject=SUBJECT, purpose="product_email")
    withdrawn = client.post(
        "/portal/t/acme/privacy/consents", {"purpose": "product_email", "action": "withdraw"}
    )
    assert withdrawn.status_code == 302
    assert not consent.consent_given(subject=SUBJECT, purpose="product_email")
    bogus = client.post(
        "/portal/t/acme/privacy/consents", {"purpose": "selling_data", "action": "grant"}
    )
    assert bogus.status_code == 400
    assert ConsentRecord.objects.count() == 2


@pytest.mark.django_db(transaction=True)
def test_an_erasure_run_inside_the_request_signs_out_and_links_the_receipt(client) -> None:  # type: ignore[no-untyped-def]
    # Committed as it goes, as on the embedded default: the job runs inside the POST.
    response = client.post("/portal/t/acme/privacy/delete", {"email": EMAIL, "understood": "on"})
    assert response.status_code == 200
    assert b"Your account was erased" in response.content
    req = SubjectRequest.objects.get()
    assert (req.kind, req.status) == ("erase", "done")
    assert f"http://testserver/gdpr/requests/{req.pk}/receipt?token=".encode() in response.content
    assert not User.objects.filter(email=EMAIL).exists()
    assert client.get("/portal/t/acme/").status_code == 302  # signed out


def test_too_many_requests_in_a_day_is_a_429(client, settings) -> None:  # type: ignore[no-untyped-def]
    settings.RBEE_GDPR_REQUESTS_PER_DAY = 1
    assert client.post("/portal/t/acme/privacy/export").status_code == 302
    refused = client.post("/portal/t/acme/privacy/export")
    assert refused.status_code == 429 and b"At most 1 requests in 24 hours" in refused.content
    assert SubjectRequest.objects.count() == 1
