"""The proof by scan (issue 12, "Done when"): a subject is seeded with unique markers in
every store, exported (every marker is in the archive), erased, and then the whole
database (every table, every column, as bytes), RBEE_HOME, the log files, Redis and the
fake Stripe are scanned: no marker is left. The records the law makes us keep (invoices)
are still there, pseudonymised, and the receipt says on what ground and until when.

The files store is the log files rbee writes (*.log and rotated *.log.N under RBEE_HOME,
and RBEE_LOG_DIRS), nothing else: a marker in another file under RBEE_HOME stays, by
design (a requester chooses the search string: see tests/gdpr/test_stores.py).

Runs on the database of the run: SQLite by default, PostgreSQL with RBEE_DATABASE_URL."""

from __future__ import annotations

import io
import json
import logging
import os
import uuid
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth.models import User
from django.contrib.contenttypes.models import ContentType
from django.contrib.sessions.backends.db import SessionStore

from billing.invoices import invoice_build
from billing.models import Invoice, UsageEvent
from gdpr import audit, consent, exchanges, providers, services, signing, subjects
from gdpr.models import SubjectRequest
from kernel.logs import RedactSecrets
from tenants.models import Invitation, Membership, Tenant
from tenants.services import api_key_create
from tests.billing.fakestripe import API_KEY, FakeStripe
from tests.gdpr import scan

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings: Any) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("RBEE_HOME", str(home))
    logs = tmp_path / "var-log-rbee"
    logs.mkdir()
    settings.RBEE_LOG_DIRS = [str(logs)]
    settings.RBEE_BOOKS_JURISDICTION = "DE"
    audit._cache.clear()
    return home


@pytest.fixture
def fake(settings: Any) -> Iterator[FakeStripe]:
    with FakeStripe() as f:
        settings.RBEE_STRIPE_SECRET_KEY = API_KEY
        settings.RBEE_STRIPE_API_BASE = f.url
        yield f


def _log_to(path: Path) -> logging.Handler:
    """A file handler as an operator would configure one: rbee's secrets filter on it."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactSecrets())
    return handler


def _run(kind: str, subject: subjects.Subject) -> SubjectRequest:
    req = services.request_create(kind=kind, subject=subject, requested_by="test")
    return services.request_run(request_id=req.pk)


def _archive_text(req: SubjectRequest) -> tuple[dict[str, bytes], str]:
    data = services.archive_path(req).read_bytes()
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        files = {n: zf.read(n) for n in zf.namelist()}
    return files, b"\n".join(files.values()).decode().lower()


def _check_archive(files: dict[str, bytes]) -> dict[str, Any]:
    """The manifest is signed and covers every other file; every data file follows the
    schema; the Art. 15 information is there."""
    import hashlib

    manifest = json.loads(files["manifest.json"])
    assert signing.verify_document(manifest)
    tampered = {**manifest, "records": {**manifest["records"], "billing.usage": 999}}
    assert not signing.verify_document(tampered)
    assert set(manifest["files"]) == set(files) - {"manifest.json"}
    for name, digest in manifest["files"].items():
        assert hashlib.sha256(files[name]).hexdigest() == digest
    (schema_name,) = [n for n in files if n.startswith("schema/")]
    schema = json.loads(files[schema_name])
    data_files = [n for n in files if n.startswith("data/") and n.endswith(".json")]
    assert {n[5:-5] for n in data_files} == {p.name for p in providers.registered()}
    for n in data_files:
        jsonschema.validate(json.loads(files[n]), schema)
        assert n[:-5] + ".csv" in files
    info = json.loads(files["information.json"])
    assert "complaint" in info and info["stores"]
    stripe = next(s for s in info["stores"] if s["store"] == "billing.stripe")
    assert any("Stripe" in r for r in stripe["recipients"])
    return manifest


def test_a_person_is_exported_then_erased_from_every_store(
    fake: FakeStripe, _home: Path, settings: Any
) -> None:
    m = uuid.uuid4().hex[:12]  # one run's markers: m + a letter per store
    marks = {
        "email": f"mk{m}em@example.org",
        "username": f"mk{m}un",
        "first": f"Mk{m}fn",
        "last": f"Mk{m}ln",
        "key": f"mk{m}key",
        "ip": f"mk{m}ip",
        "file": f"mk{m}file",
    }
    subject = subjects.user(marks["email"])

    # --- seed every store ---------------------------------------------------------------
    person = User.objects.create_user(
        marks["username"],
        email=marks["email"],
        password="pw-x-123456",
        first_name=marks["first"],
        last_name=marks["last"],
    )
    other = User.objects.create_user("someone-else", email="else@example.org")
    acme = Tenant.objects.create(name=f"acme-{m[:6]}", billing_email=marks["email"])
    beta = Tenant.objects.create(name=f"beta-{m[:6]}")
    Membership.objects.create(user=person, tenant=acme, role=Membership.Role.OWNER)
    Membership.objects.create(user=other, tenant=acme, role=Membership.Role.OWNER)
    invitation = Invitation.objects.create(
        tenant=beta,
        email=marks["email"].upper(),
        role="member",
        token_hash=uuid.uuid4().hex,
        invited_by=other,
        expires_at=datetime(2030, 1, 1, tzinfo=UTC),
    )
    key, _ = api_key_create(tenant=acme, name=f"laptop {marks['key']}", created_by=person)
    other_key, _ = api_key_create(tenant=acme, name="ci", created_by=other)
    # Stripe: the tenant's customer, holding the person's e-mail and address.
    from billing.stripe_sync import customer_ensure

    cid = customer_ensure(acme)
    fake.customers[cid].update(email=marks["email"], address={"line1": f"{marks['last']} street 1"})
    # An invoice addressed to the person (January 2026, German books).
    UsageEvent.objects.create(
        request_id=f"r-{m}", tenant=acme, model="m", modality="chat", prompt_tokens=5
    )
    UsageEvent.objects.filter(request_id=f"r-{m}").update(
        created_at=datetime(2026, 1, 15, tzinfo=UTC)
    )
    invoice = invoice_build(tenant=acme, year=2026, month=1)
    assert invoice.customer_email == marks["email"]
    # Audit: sign-ins with the person's IP and name sealed under their key.
    audit.record(
        "login.success",
        actor=subject,
        subject=subject,
        personal={"ip": marks["ip"], "name": f"{marks['first']} {marks['last']}"},
    )
    # Consent: the person agreed to product e-mails in the portal, then withdrew.
    consent.consent_grant(
        subject=subject,
        purpose=consent.PRODUCT_EMAIL,
        text="Send me product news",
        mechanism="portal",
        recorded_by=subject,
    )
    consent.consent_withdraw(
        subject=subject, purpose=consent.PRODUCT_EMAIL, mechanism="portal", recorded_by=subject
    )
    # The admin's change log about the account, and a signed-in session.
    LogEntry.objects.create(
        user=other,
        content_type=ContentType.objects.get_for_model(User),
        object_id=str(person.pk),
        object_repr=marks["email"],
        action_flag=CHANGE,
        change_message=f"changed {marks['username']}",
    )
    LogEntry.objects.create(
        user=other,
        content_type=ContentType.objects.get_for_model(Invitation),
        object_id=str(invitation.pk),
        object_repr=str(invitation),
        action_flag=CHANGE,
        change_message="extended",
    )
    session = SessionStore()
    session["_auth_user_id"] = str(person.pk)
    session.create()
    # Logs: rbee's own log lines through a file handler in RBEE_LOG_DIRS, and a queen
    # log under RBEE_HOME (where testkit and `rbee up` put them).
    log_file = Path(settings.RBEE_LOG_DIRS[0]) / "rbee.log"
    handler = _log_to(log_file)
    logger = logging.getLogger("tenants.signin")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        logger.info("sign-in ok for %s (%s)", marks["username"], marks["email"])
        logger.info("an unrelated line that must survive")
    finally:
        logger.removeHandler(handler)
        handler.close()
    (_home / "queen.log").write_text(
        f"GET /portal 200 {marks['email']}\nGET /healthz 200\n"
        f"invitation sent to {marks['first']} {marks['last']}\n"
    )
    # A rotated log in a subdirectory of RBEE_HOME (the e-mail in another case).
    (_home / "logs").mkdir()
    (_home / "logs" / "queen.log.1").write_text(
        f"POST /portal/upload 201 {marks['email'].upper()} {marks['file']}\nGET /healthz 200\n"
    )
    # What is not a log is not the files store's: a file the subject's e-mail is in by
    # chance (an operator's note) is neither exported nor changed.
    (_home / "notes").mkdir()
    (_home / "notes" / "ops.txt").write_text(f"call back {marks['email']}\n")

    markers = list(marks.values())
    assert scan.database_hits(markers), "the seeding reached the database"

    # --- export: every marker is in the archive ------------------------------------------
    exported = _run("export", subject)
    assert exported.status == SubjectRequest.Status.DONE
    files, text = _archive_text(exported)
    manifest = _check_archive(files)
    missing = [k for k, v in marks.items() if v.lower() not in text]
    assert missing == [], f"not in the export: {missing}"
    assert cid.lower() in text
    logged = json.loads(files["data/gdpr.files.json"])["records"]
    assert sorted({r["file"] for r in logged}) == ["logs/queen.log.1", "queen.log", "rbee.log"]
    stripe_rec = json.loads(files["data/billing.stripe.json"])["records"][0]
    assert stripe_rec["email"] == marks["email"] and marks["last"] in str(stripe_rec["address"])
    assert manifest["records"]["tenants.account"] == 1
    assert manifest["records"]["billing.invoices"] == 1
    assert manifest["records"]["tenants.invitations"] == 1
    assert manifest["records"]["gdpr.audit"] >= 1
    assert manifest["records"]["gdpr.consents"] == 2
    keys = json.loads(files["data/tenants.api_keys.json"])["records"]
    assert [k["name"] for k in keys] == [f"laptop {marks['key']}"]  # not the other's key
    assert exported.archive and (_home / "gdpr" / "exports" / exported.archive).exists()

    # --- erase ---------------------------------------------------------------------------
    erased = _run("erase", subject)
    assert erased.status == SubjectRequest.Status.DONE, erased.error
    receipt = erased.result
    assert signing.verify_document(receipt)
    assert receipt["complete"] is True and receipt["failed"] == []
    stores = {s["store"]: s for s in receipt["stores"]}
    assert set(stores) == {p.name for p in providers.registered()}
    assert marks["email"] not in json.dumps(receipt).lower()
    (kept,) = stores["billing.invoices"]["kept"]
    assert kept["count"] == 1 and kept["until"] == "2034-12-31" and "AO" in kept["ground"]
    assert stores["billing.stripe"]["pseudonymised"] == 1
    assert stores["tenants.account"]["deleted"] >= 3  # log entry, session, user (+ cascade)
    assert stores["gdpr.audit"]["deleted"] == 1
    assert stores["gdpr.consents"]["deleted"] == 2

    # --- scan ----------------------------------------------------------------------------
    hits = scan.database_hits(markers)
    assert hits == [], f"markers left in the database: {hits}"
    assert scan.table_count() > 30
    left = scan.file_hits([_home, log_file.parent], markers)
    assert left == [(str(_home / "notes" / "ops.txt"), marks["email"])], left
    assert "GET /healthz 200" in (_home / "logs" / "queen.log.1").read_text()
    if os.environ.get("RBEE_REDIS_URL"):
        assert scan.redis_hits(os.environ["RBEE_REDIS_URL"], markers) == []
    customer = fake.customers[cid]
    assert not any(m_.lower() in json.dumps(customer).lower() for m_ in markers)
    assert customer["email"] is None and customer["address"] is None

    # What must stay, stayed: the invoice (pseudonymised), the other person, the keys.
    inv = Invoice.objects.get(pk=invoice.pk)
    assert inv.customer_name == services.pseudonym(subject) and inv.customer_email == ""
    assert inv.lines == invoice.lines and inv.total == invoice.total
    assert inv.pseudonymised_at is not None
    key.refresh_from_db()
    assert key.created_by_id is None and key.name == "" and key.revoked_at is None
    other_key.refresh_from_db()
    assert other_key.created_by_id == other.pk and other_key.name == "ci"
    assert User.objects.filter(pk=other.pk).exists()
    assert not User.objects.filter(pk=person.pk).exists()
    assert "an unrelated line that must survive" in log_file.read_text()
    assert "GET /healthz 200" in (_home / "queen.log").read_text()
    # The requests are kept, naming a pseudonym; the export's archive is gone.
    rows = SubjectRequest.objects.filter(subject_hash=services.subject_hash(subject))
    assert rows.count() == 2
    assert set(rows.values_list("subject_label", flat=True)) == {services.pseudonym(subject)}
    assert not list((_home / "gdpr" / "exports").iterdir())
    assert audit.events_for_subject(subject) == []
    # A second erasure finds nothing and still completes (idempotent).
    again = _run("erase", subject)
    assert again.status == SubjectRequest.Status.DONE
    assert scan.database_hits(markers) == []


def test_an_end_user_is_exported_then_erased(_home: Path) -> None:
    m = uuid.uuid4().hex[:12]
    uid = f"eu{m}"
    subject = subjects.end_user(f"shop-{m[:6]}", uid)
    shop = Tenant.objects.create(name=subject.tenant)
    other_shop = Tenant.objects.create(name=f"other-{m[:6]}")
    for i in range(3):
        UsageEvent.objects.create(
            request_id=f"a{i}-{m}",
            tenant=shop,
            model="m",
            modality="chat",
            end_user=uid,
            region="eu",
            prompt_tokens=7,
        )
    # The same id at another tenant is another person: untouched.
    UsageEvent.objects.create(
        request_id=f"b-{m}", tenant=other_shop, model="m", modality="chat", end_user=uid
    )
    audit.record(
        "inference", actor="key:abc", tenant_id=shop.pk, subject=subject, request_id=f"a0-{m}"
    )
    # The queen's log names the tenant on each request line; the same id at another
    # tenant is another person, whose line stays.
    (_home / "queen.log").write_text(
        f"request a0 tenant={shop.name} user={uid}\nrequest b tenant={other_shop.name} user={uid}\n"
    )
    consent.consent_grant(
        subject=subject,
        purpose=consent.PROMPT_RETENTION,
        text="Keep my chats for 30 days to debug",
        mechanism="api",
        recorded_by="key:abc",
        tenant_id=shop.pk,
    )
    exchanges.exchange_keep(
        tenant_id=shop.pk,
        tenant=shop.name,
        request_id=f"a1-{m}",
        end_user=uid,
        basis=exchanges.CONSENT,
        model="m",
        prompt=f"my name is {uid}-prompt",
        response="hello",
        days=30,
    )

    exported = _run("export", subject)
    files, _ = _archive_text(exported)
    _check_archive(files)
    usage = json.loads(files["data/billing.usage.json"])["records"]
    assert sorted(u["request_id"] for u in usage) == [f"a{i}-{m}" for i in range(3)]
    assert {u["region"] for u in usage} == {"eu"}
    assert json.loads(files["data/gdpr.audit.json"])["records"][0]["request_id"] == f"a0-{m}"
    lines = json.loads(files["data/gdpr.files.json"])["records"]
    assert [(r["file"], r["line"]) for r in lines] == [("queen.log", 1)]
    assert json.loads(files["data/gdpr.consents.json"])["records"][0]["purpose"] == (
        consent.PROMPT_RETENTION
    )
    (kept_exchange,) = json.loads(files["data/gdpr.exchanges.json"])["records"]
    assert kept_exchange["prompt"] == f"my name is {uid}-prompt"

    erased = _run("erase", subject)
    assert erased.status == SubjectRequest.Status.DONE, erased.error
    stores = {s["store"]: s for s in erased.result["stores"]}
    assert stores["billing.usage"]["pseudonymised"] == 3
    hits = scan.database_hits([uid])
    # Only the other tenant's end user of the same id is left, and nothing else.
    assert hits == [("billing_usageevent", "end_user", uid)]
    assert UsageEvent.objects.filter(end_user=uid).get().tenant_id == other_shop.pk
    assert UsageEvent.objects.filter(tenant=shop).count() == 3  # still billed
    assert scan.file_hits([_home], [uid]) == [(str(_home / "queen.log"), uid)]
    assert (_home / "queen.log").read_text().splitlines()[1] == (
        f"request b tenant={other_shop.name} user={uid}"
    )


def test_invoice_retention_follows_the_books_jurisdiction() -> None:
    from billing.gdpr import retention_for

    assert retention_for("FR")[0] == retention_for("IT")[0] == retention_for("BE")[0] == 10
    assert retention_for("DE")[0] == 8 and "10 years" in retention_for("DE")[1]
    assert retention_for("NL")[0] == 7
    assert retention_for("")[0] == 10 and "RBEE_BOOKS_JURISDICTION" in retention_for("")[1]
