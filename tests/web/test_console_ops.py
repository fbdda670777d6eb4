"""The operators' console, operations side: hives (tokens shown once, revoke, disable,
region, approvals; area fleet), the audit log (search, export, verification; area
audit) and the GDPR request queue (deadlines, extend, run again; area audit)."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.utils import timezone

from gdpr import audit, services, subjects
from gdpr.models import AuditEvent, SubjectRequest
from hives.models import Hive, ModelApproval
from hives.services import hive_token_create
from tenants.services import tenant_create

pytestmark = pytest.mark.django_db

PW = "pw-123456789"
CODENAMES = {"fleet": "operate_fleet", "tenants": "operate_tenants", "audit": "read_audit"}


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RBEE_HOME", str(tmp_path))
    audit._cache.clear()
    from django.core.cache import cache

    cache.clear()


def operator(username: str, *areas: str) -> Client:
    user = User.objects.create_user(username, f"{username}@example.com", PW, is_staff=True)
    for area in areas:
        user.user_permissions.add(Permission.objects.get(codename=CODENAMES[area]))
    client = Client()
    client.force_login(user)
    return client


def events(action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action).order_by("id"))


# Hives ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("get", "/console/hives"),
        ("post", "/console/hives/token"),
        ("post", "/console/hives/h1/revoke"),
        ("post", "/console/hives/h1/disable"),
        ("post", "/console/hives/h1/approve"),
    ],
)
def test_hives_need_the_fleet_area(method: str, url: str) -> None:
    hive_token_create(name="h1")
    before = AuditEvent.objects.count()
    client = operator("money", "tenants", "audit")
    response = getattr(client, method)(url, {"name": "h2", "disabled": "true", "model": "m"})
    assert response.status_code == 403
    hive = Hive.objects.get(name="h1")
    assert not hive.token_revoked and not hive.disabled and not Hive.objects.filter(name="h2")
    assert AuditEvent.objects.count() == before


def test_a_hive_token_is_shown_once_and_never_logged() -> None:
    client = operator("ops", "fleet")
    response = client.post("/console/hives/token", {"name": "gpu-1", "region": "eu-west"})
    assert response.status_code == 200 and "no-store" in response["Cache-Control"]
    html = response.content.decode()
    hive = Hive.objects.get(name="gpu-1")
    token = html.split('<code id="new-token" class="mono">', 1)[1].split("</code>", 1)[0]
    assert token.startswith(f"{Hive.TOKEN_KIND}-{hive.token_prefix}-")
    assert hive.region == "eu-west" and not hive.trust_models
    again = client.get("/console/hives").content.decode()
    assert token not in again and "gpu-1" in again and f"{hive.token_prefix}…" in again
    (event,) = events("hive.token")
    assert token not in event.data and json.loads(event.data)["token_prefix"] == hive.token_prefix


def test_a_new_token_replaces_the_old_and_keeps_trust_unless_asked() -> None:
    hive, old = hive_token_create(name="gpu-1", trust_models=True)
    client = operator("ops", "fleet")
    html = client.post("/console/hives/token", {"name": "gpu-1"}).content.decode()
    hive.refresh_from_db()
    assert old not in html and hive.trust_models and not hive.token_revoked


@pytest.mark.parametrize(
    ("data", "message"),
    [({"name": "Bad Name"}, "invalid hive name"), ({"name": "ok", "region": "x" * 40}, "region")],
)
def test_an_invalid_hive_token_request_is_a_400(data: dict[str, str], message: str) -> None:
    response = operator("ops", "fleet").post("/console/hives/token", data)
    assert response.status_code == 400 and message in response.content.decode()
    assert Hive.objects.count() == 0 and "new-token" not in response.content.decode()


def test_revoke_disable_enable_region_and_approve_are_audited() -> None:
    hive, _ = hive_token_create(name="h1")
    ModelApproval.objects.create(hive=hive, model_name="claimed", engine="echo", reason="r")
    client = operator("ops", "fleet")
    assert "claimed" in client.get("/console/hives").content.decode()
    assert client.post("/console/hives/h1/disable", {"disabled": "true"}).status_code == 302
    assert Hive.objects.get(pk=hive.pk).disabled
    assert client.post("/console/hives/h1/disable", {"disabled": "false"}).status_code == 302
    assert client.post("/console/hives/h1/region", {"region": "us"}).status_code == 302
    assert client.post("/console/hives/h1/approve", {"model": "claimed"}).status_code == 302
    assert client.post("/console/hives/h1/revoke").status_code == 302
    hive.refresh_from_db()
    assert not hive.disabled and hive.region == "us" and hive.token_revoked
    assert ModelApproval.objects.get(hive=hive, model_name="claimed").approved
    for action in ("hive.disable", "hive.enable", "hive.region", "model.approve", "hive.revoke"):
        (event,) = events(action)
        assert json.loads(event.data)["hive"] == "h1"
    assert client.post("/console/hives/nope/revoke").status_code == 404
    response = client.post("/console/hives/h1/region", {"region": "Not A Region!"})
    assert response.status_code == 400 and Hive.objects.get(pk=hive.pk).region == "us"


# Audit log -----------------------------------------------------------------------------


def test_the_audit_log_needs_the_audit_area() -> None:
    client = operator("ops", "fleet", "tenants")
    for url in ("/console/audit", "/console/audit/export?format=csv", "/console/gdpr"):
        assert client.get(url).status_code == 403
    assert client.post("/console/audit/verify").status_code == 403


def test_search_filters_by_action_actor_tenant_and_time() -> None:
    acme = tenant_create(name="acme", actor=subjects.user("alice@example.com"))
    tenant_create(name="bravo", actor="cli:root")
    old = AuditEvent.objects.get(action="tenant.create", tenant_id=acme.pk)
    client = operator("auditor", "audit")
    html = client.get("/console/audit?actor=alice@example.com").content.decode()
    assert "alice@example.com" in html and "cli:root" not in html and "1 in all" in html
    html = client.get("/console/audit?actor=cli:root").content.decode()
    assert "cli:root" in html and "alice@example.com" not in html
    html = client.get("/console/audit?tenant=acme&action=tenant.").content.decode()
    assert f">{old.id}</td>" in html and "1 in all" in html
    html = client.get("/console/audit?actor=nobody@example.com").content.decode()
    assert "No event matches" in html
    tomorrow = (timezone.now() + timedelta(days=1)).date().isoformat()
    html = client.get(f"/console/audit?since={tomorrow}").content.decode()
    assert "No event matches" in html
    response = client.get("/console/audit?since=yesterday")
    assert response.status_code == 400 and "use YYYY-MM-DD" in response.content.decode()
    assert client.get("/console/audit?tenant=no-such").status_code == 400


def test_export_streams_the_filtered_rows_as_csv_and_jsonl() -> None:
    tenant_create(name="acme", actor=subjects.user("alice@example.com"))
    tenant_create(name="bravo", actor="cli:root")
    client = operator("auditor", "audit")
    response = client.get("/console/audit/export?format=csv&action=tenant.create")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    body = b"".join(response.streaming_content)  # type: ignore[attr-defined]
    rows = list(csv.DictReader(io.StringIO(body.decode())))
    assert [(r["action"], r["actor"]) for r in rows] == [
        ("tenant.create", "cli:root"),
        ("tenant.create", "user:alice@example.com"),
    ]
    response = client.get("/console/audit/export?format=jsonl&actor=cli:root")
    body = b"".join(response.streaming_content)  # type: ignore[attr-defined]
    lines = body.decode().splitlines()
    assert [json.loads(line)["data"]["name"] for line in lines] == ["bravo"]
    assert client.get("/console/audit/export?format=xml").status_code == 400


def test_verify_runs_the_ledgers_verification_and_keeps_its_result() -> None:
    tenant_create(name="acme")
    client = operator("auditor", "audit")
    assert "not run since the queen started" in client.get("/console/audit").content.decode()
    response = client.post("/console/audit/verify")
    assert response.status_code == 200
    assert "ok: " in response.content.decode() and "verified" in response.content.decode()
    assert "verified" in client.get("/console/").content.decode()
    assert client.get("/console/audit/verify").status_code == 405


# GDPR ----------------------------------------------------------------------------------


def _request(days_ago: int, kind: str = "export") -> SubjectRequest:
    return services.request_create(
        kind=kind,
        subject=subjects.user(f"p{days_ago}@example.com"),
        requested_by="cli",
        received_at=datetime.now(UTC) - timedelta(days=days_ago),
    )


def test_the_queue_shows_deadlines_and_highlights_overdue_ones() -> None:
    overdue, near, fresh = _request(40), _request(27), _request(1, "erase")
    client = operator("auditor", "audit")
    html = client.get("/console/gdpr").content.decode()
    assert '<tr class="overdue">' in html and '<tr class="near">' in html
    assert "p40@example.com" in html and "p1@example.com" in html
    assert (
        html.index("p40@example.com") < html.index("p27@example.com") < html.index("p1@example.com")
    )
    assert "1 overdue" in html
    html = client.get("/console/gdpr?state=overdue").content.decode()
    assert "p40@example.com" in html and "p27@example.com" not in html
    home = client.get("/console/").content.decode()
    assert f"#{overdue.pk} export" in home and f"#{near.pk} export" in home
    assert f"#{fresh.pk} erase" not in home


def test_extend_is_validated_like_the_api_and_audited() -> None:
    req = _request(5)
    client = operator("auditor", "audit")
    notified = (req.received_at + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M")
    response = client.post(f"/console/gdpr/{req.pk}/extend", {"months": "1", "reason": ""})
    assert response.status_code == 400 and "reason" in response.content.decode()
    assert SubjectRequest.objects.get(pk=req.pk).extended_until is None
    response = client.post(
        f"/console/gdpr/{req.pk}/extend",
        {"months": "2", "reason": "complex request", "notified_at": notified},
    )
    assert response.status_code == 302
    req.refresh_from_db()
    assert req.extended_until is not None and req.extension_reason == "complex request"
    (event,) = events("gdpr.request.extend")
    assert json.loads(event.data)["request"] == req.pk
    response = client.post(
        f"/console/gdpr/{req.pk}/extend",
        {"months": "1", "reason": "more", "notified_at": notified},
    )
    assert response.status_code == 400 and "at most two further months" in response.content.decode()
    assert client.post("/console/gdpr/999999/extend", {}).status_code == 404


def test_run_again_is_audited_and_refused_for_a_done_request() -> None:
    req = _request(3)
    client = operator("auditor", "audit")
    response = client.post(f"/console/gdpr/{req.pk}/retry")
    assert response.status_code == 302
    (event,) = events("gdpr.request.retry")
    assert json.loads(event.data) == {"request": req.pk, "kind": "export", "status": "received"}
    SubjectRequest.objects.filter(pk=req.pk).update(status="done")
    response = client.post(f"/console/gdpr/{req.pk}/retry")
    assert (
        response.status_code == 400 and "only a waiting or failed one" in response.content.decode()
    )
    assert len(events("gdpr.request.retry")) == 1


def test_an_erased_person_is_neither_shown_nor_found_in_the_audit_log() -> None:
    tenant_create(name="acme", actor=subjects.user("alice@example.com"))
    client = operator("auditor", "audit")
    assert "alice@example.com" in client.get("/console/audit?tenant=acme").content.decode()
    audit.shred(subjects.user("alice@example.com"))
    html = client.get("/console/audit?tenant=acme").content.decode()
    assert "alice@example.com" not in html and "[erased]" in html
    html = client.get("/console/audit?actor=alice@example.com").content.decode()
    assert "No event matches" in html


def test_verify_names_an_edited_event_and_the_home_page_says_broken() -> None:
    from django.db import connection

    from gdpr import ledger
    from testkit.auditdb import superuser_sql

    for name in ("a1", "a2", "a3"):
        tenant_create(name=name)
    ledger.sequence()
    assert ledger.checkpoint(force=True) is not None
    first = AuditEvent.objects.order_by("id").first()
    assert first is not None
    before, after = superuser_sql(connection.vendor)
    with connection.cursor() as cur:
        for sql in before:
            cur.execute(sql)
        cur.execute("UPDATE gdpr_audit_event SET data = %s WHERE id = %s", ['{"x":1}', first.pk])
        for sql in after:
            cur.execute(sql)
    client = operator("auditor", "audit")
    response = client.post("/console/audit/verify")
    assert response.status_code == 409
    html = response.content.decode()
    assert "broken" in html and "index 0" in html
    home = client.get("/console/").content.decode()
    assert "badge-bad" in home and "broken" in home
