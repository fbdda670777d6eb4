"""/gdpr/...: who may ask for whom, the download link (requester only, expiring), the
erasure receipt link, operators' list with overdue flags and extensions, the Art. 30
record, and the overdue gauge in /metrics."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from billing.models import UsageEvent
from gdpr import audit, services, signing, subjects
from gdpr.models import SubjectRequest
from tenants.models import Membership, Tenant
from tenants.services import operator_create

pytestmark = pytest.mark.django_db(transaction=True)
PASSWORD = "pw-0123456789"


@pytest.fixture(autouse=True)
def _env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A fresh RBEE_HOME, and jobs run in this process, as on the embedded default,
    whatever the broker of the run (with Redis a Celery worker would run them)."""
    from rbee.celery import app

    monkeypatch.setenv("RBEE_HOME", str(tmp_path))
    audit._cache.clear()
    eager = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = eager


@dataclass
class World:
    owner: User
    member: User
    outsider: User
    ops: User
    fleet_ops: User
    acme: Tenant
    bolt: Tenant


@pytest.fixture
def world() -> World:
    acme = Tenant.objects.create(name="acme")
    bolt = Tenant.objects.create(name="bolt")
    owner = User.objects.create_user("olga", "olga@acme.example", PASSWORD)
    member = User.objects.create_user("max", "max@acme.example", PASSWORD)
    outsider = User.objects.create_user("eve", "eve@else.example", PASSWORD)
    Membership.objects.create(user=owner, tenant=acme, role="owner")
    Membership.objects.create(user=member, tenant=acme, role="member")
    for i, t in enumerate((acme, bolt)):
        UsageEvent.objects.create(
            request_id=f"u{i}", tenant=t, model="m", modality="chat", end_user="cust-7"
        )
    return World(
        owner=owner,
        member=member,
        outsider=outsider,
        ops=operator_create(username="dpo", password=PASSWORD, areas=["audit"]),
        fleet_ops=operator_create(username="fleet", password=PASSWORD, areas=["fleet"]),
        acme=acme,
        bolt=bolt,
    )


def as_(user: User | None) -> Client:
    c = Client()
    if user is not None:
        c.force_login(user)
    return c


def post(c: Client, url: str, body: dict[str, Any] | None = None) -> Any:
    return c.post(url, json.dumps(body or {}), content_type="application/json")


def test_a_person_exports_themself_and_only_they_can_download(world: World) -> None:
    r = post(as_(world.member), "/gdpr/export")
    assert r.status_code == 202, r.content
    rid = r.json()["id"]
    assert r["Location"] == f"/gdpr/requests/{rid}"
    status = as_(world.member).get(f"/gdpr/requests/{rid}").json()
    assert status["status"] == "done" and status["overdue"] is False
    assert "subject" not in status  # only operators see whom a request is about
    link = status["download"]
    assert link.startswith("http://testserver/gdpr/requests/")
    got = as_(world.member).get(link)
    assert got.status_code == 200 and got["Content-Type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(b"".join(got.streaming_content))) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        account = json.loads(zf.read("data/tenants.account.json"))
    assert signing.verify_document(manifest)
    assert manifest["subject"] == "user:max@acme.example"
    assert [a["username"] for a in account["records"]] == ["max"]
    # The request and its outcome are audit events, sealed under the person's key.
    events = audit.events_for_subject(subjects.user("max@acme.example"))
    assert [(e["action"], e["outcome"]) for e in events] == [
        ("gdpr.request.export", "received"),
        ("gdpr.request.export", "done"),
    ]
    assert events[0]["actor"] == "user:max@acme.example"
    # Someone else, with the very link: as if it did not exist. An operator: no link.
    assert as_(world.outsider).get(link).status_code == 404
    assert as_(world.outsider).get(f"/gdpr/requests/{rid}").status_code == 404
    assert as_(world.ops).get(f"/gdpr/requests/{rid}").json()["download"] is None
    assert as_(world.ops).get(link).status_code == 404
    assert as_(None).get(link).status_code in (401, 403)
    forged = link.replace(f"/requests/{rid}/", f"/requests/{rid + 1}/")
    assert as_(world.member).get(forged).status_code == 404


def test_the_download_link_expires(world: World, settings: Any) -> None:
    settings.RBEE_GDPR_LINK_SECONDS = -1
    rid = post(as_(world.member), "/gdpr/export").json()["id"]
    link = as_(world.member).get(f"/gdpr/requests/{rid}").json()["download"]
    r = as_(world.member).get(link)
    assert r.status_code == 410
    assert r.json() == {
        "error": {"message": "this download link has expired", "code": "link_expired"}
    }


def _backdate(rid: int, days: int) -> None:
    SubjectRequest.objects.filter(pk=rid).update(completed_at=timezone.now() - timedelta(days=days))


def test_an_export_archive_expires_after_its_days(world: World) -> None:
    """RBEE_GDPR_EXPORT_DAYS (30): past it a fresh link is not minted, a link already
    given answers 410 and the archive is deleted; the periodic retention run deletes
    the archives nobody asked for again."""
    from gdpr import retention

    rid = post(as_(world.member), "/gdpr/export").json()["id"]
    link = as_(world.member).get(f"/gdpr/requests/{rid}").json()["download"]
    archive = services.archive_path(SubjectRequest.objects.get(pk=rid))
    _backdate(rid, 29)
    assert as_(world.member).get(link).status_code == 200
    _backdate(rid, 31)
    assert as_(world.member).get(f"/gdpr/requests/{rid}").json()["download"] is None
    r = as_(world.member).get(link)
    assert r.status_code == 410 and r.json()["error"]["code"] == "link_expired"
    assert not archive.exists()
    assert as_(world.member).get(f"/gdpr/requests/{rid}").json()["archive_deleted"] == "expired"

    # Nobody downloads: the retention run deletes it.
    rid2 = post(as_(world.owner), "/gdpr/export").json()["id"]
    link2 = as_(world.owner).get(f"/gdpr/requests/{rid2}").json()["download"]
    archive2 = services.archive_path(SubjectRequest.objects.get(pk=rid2))
    assert retention.run().results["gdpr.exports"].deleted == 0
    assert archive2.exists()
    _backdate(rid2, 31)
    assert retention.run().results["gdpr.exports"].deleted == 1
    assert not archive2.exists() and not list(archive2.parent.iterdir())
    assert as_(world.owner).get(link2).status_code == 410


def test_a_tenant_admin_removed_from_the_tenant_loses_the_export(world: World) -> None:
    """The link is for a tenant's admin acting for its end user: checked again at every
    download, not only when the export was asked for."""
    rid = post(as_(world.owner), "/gdpr/export", {"subject": "acme:cust-7"}).json()["id"]
    link = as_(world.owner).get(f"/gdpr/requests/{rid}").json()["download"]
    assert as_(world.owner).get(link).status_code == 200
    Membership.objects.filter(user=world.owner, tenant=world.acme).update(role="member")
    assert as_(world.owner).get(link).status_code == 404
    assert as_(world.owner).get(f"/gdpr/requests/{rid}").json()["download"] is None
    Membership.objects.filter(user=world.owner, tenant=world.acme).delete()
    assert as_(world.owner).get(link).status_code == 404
    # Made admin again: the link works again (it is theirs, and the tenant's again).
    Membership.objects.create(user=world.owner, tenant=world.acme, role="admin")
    assert as_(world.owner).get(link).status_code == 200


def test_who_may_ask_for_whom(world: World) -> None:
    # A tenant's owner, for one of its end users: only that tenant's records.
    r = post(as_(world.owner), "/gdpr/export", {"subject": "acme:cust-7"})
    assert r.status_code == 202
    req = SubjectRequest.objects.get(pk=r.json()["id"])
    assert req.result["records"]["billing.usage"] == 1
    # Another tenant's end user: 404 whether or not that tenant exists.
    for subject in ("bolt:cust-7", "nosuch:cust-7"):
        r = post(as_(world.owner), "/gdpr/export", {"subject": subject})
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    # A member who is no admin: as if the tenant did not exist for them.
    assert post(as_(world.member), "/gdpr/export", {"subject": "acme:cust-7"}).status_code == 404
    # Another person: 403, the same for an e-mail that exists and one that does not.
    for other in ("eve@else.example", "nobody@else.example"):
        r = post(as_(world.owner), "/gdpr/delete", {"subject": other})
        assert r.status_code == 403
    assert (
        post(as_(world.owner), "/gdpr/export", {"subject": "olga@acme.example"}).status_code == 202
    )
    assert post(as_(world.owner), "/gdpr/export", {"subject": "not a subject"}).status_code == 400
    assert post(as_(None), "/gdpr/export").status_code in (401, 403)
    # An operator of another area (and no e-mail) is nobody here; the audit operator is.
    assert post(as_(world.fleet_ops), "/gdpr/export", {"subject": "bolt:cust-7"}).status_code == 403
    # The audit operator has no e-mail: no "self" to export.
    assert post(as_(world.ops), "/gdpr/export").status_code == 400
    r = post(as_(world.ops), "/gdpr/export", {"subject": "bolt:cust-7"})
    assert r.status_code == 202
    assert SubjectRequest.objects.filter(kind="erase").count() == 0  # nothing was started


def test_erasure_over_http_with_its_receipt_link(world: World) -> None:
    r = post(as_(world.outsider), "/gdpr/delete")
    assert r.status_code == 202
    body = r.json()
    assert not User.objects.filter(pk=world.outsider.pk).exists()
    receipt = as_(None).get(body["receipt"])
    assert receipt.status_code == 200
    doc = receipt.json()
    assert signing.verify_document(doc) and doc["complete"] is True
    assert "eve@else.example" not in json.dumps(doc)
    assert as_(None).get(body["receipt"] + "x").status_code == 404


def test_operators_list_extend_and_see_overdue_in_metrics(world: World) -> None:
    old = services.request_create(
        kind="export",
        subject=subjects.user("late@else.example"),
        requested_by="cli",
        received_at=timezone.now() - timedelta(days=40),
    )
    fresh = services.request_create(
        kind="erase", subject=subjects.user("new@else.example"), requested_by="cli"
    )
    assert as_(world.member).get("/gdpr/requests").status_code == 403
    assert as_(world.fleet_ops).get("/gdpr/requests").status_code == 403
    rows = {r["id"]: r for r in as_(world.ops).get("/gdpr/requests").json()["requests"]}
    assert rows[old.pk]["overdue"] is True and rows[fresh.pk]["overdue"] is False
    assert rows[old.pk]["subject"] == "user:late@else.example"
    only = as_(world.ops).get("/gdpr/requests?overdue=1").json()["requests"]
    assert [r["id"] for r in only] == [old.pk]
    metrics = as_(None).get("/metrics").content.decode()
    assert 'rbee_gdpr_requests_overdue{kind="export"} 1.0' in metrics
    assert 'rbee_gdpr_requests_overdue{kind="erase"} 0.0' in metrics

    url = f"/gdpr/requests/{old.pk}/extend"
    assert post(as_(world.member), url, {"months": 1, "reason": "x"}).status_code == 403
    notified = (old.received_at + timedelta(days=10)).isoformat()
    r = post(as_(world.ops), url, {"months": 2, "reason": " ", "notified_at": notified})
    assert r.status_code == 400
    late = (old.due_at + timedelta(days=1)).isoformat()
    r = post(as_(world.ops), url, {"months": 2, "reason": "many stores", "notified_at": late})
    assert r.status_code == 400 and "first month" in r.json()["error"]["message"]
    r = post(as_(world.ops), url, {"months": 2, "reason": "many stores", "notified_at": notified})
    assert r.status_code == 200, r.content
    assert r.json()["overdue"] is False and r.json()["extension_reason"] == "many stores"
    r = post(as_(world.ops), url, {"months": 1, "reason": "more", "notified_at": notified})
    assert r.status_code == 400  # three months in all at most
    metrics = as_(None).get("/metrics").content.decode()
    assert 'rbee_gdpr_requests_overdue{kind="export"} 0.0' in metrics


def test_the_record_of_processing(world: World) -> None:
    assert as_(world.member).get("/gdpr/processing").status_code == 403
    doc = as_(world.ops).get("/gdpr/processing").json()
    stores = {a["store"]: a for a in doc["activities"]}
    assert {"tenants.account", "billing.usage", "billing.stripe", "gdpr.audit"} <= set(stores)
    assert any("Stripe" in r for r in stores["billing.stripe"]["recipients"])
    assert stores["billing.usage"]["categories_of_subjects"] == ["tenants' end users"]
    md = as_(world.ops).get("/gdpr/processing?as=markdown")
    assert md["Content-Type"].startswith("text/markdown")
    assert "## Payments (Stripe) (`billing.stripe`)" in md.content.decode()


def test_a_flood_of_requests_is_refused_as_excessive(world: World, settings: Any) -> None:
    """Each request scans every store: a person's requests beyond the day's cap get 429
    (Art. 12(5)), in the API's error format, and make no request row."""
    settings.RBEE_GDPR_REQUESTS_PER_DAY = 3
    c = as_(world.owner)
    for _ in range(3):
        assert post(c, "/gdpr/export", {"subject": "acme:cust-7"}).status_code == 202
    r = post(c, "/gdpr/delete", {"subject": "acme:cust-7"})
    assert r.status_code == 429, r.content
    assert r.json()["error"]["code"] == "too_many_requests"
    assert SubjectRequest.objects.filter(requested_by_user_id=world.owner.pk).count() == 3
    # Someone else is not affected.
    assert post(as_(world.member), "/gdpr/export").status_code == 202
