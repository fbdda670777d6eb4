"""billing/audit_feed.py: every finished request becomes one inference audit event, off
the request path, with the end user sealed under their own subject and no key, prompt or
output in the log; idempotent, and waiting for requests still running."""

from __future__ import annotations

import json

import pytest

from billing.audit_feed import usage_audit_append
from billing.services import Usage, usage_begin, usage_record
from gdpr import audit, ledger, subjects
from gdpr.models import AuditEvent
from tenants.services import api_key_create, tenant_create

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("RBEE_HOME", str(tmp_path))
    audit._cache.clear()


def test_finished_requests_become_inference_events_once() -> None:
    t = tenant_create(name="acme")
    key, plaintext = api_key_create(tenant=t)
    for i, user in enumerate(["alice-42", "", "alice-42"]):
        usage_record(
            request_id=f"req-{i}",
            tenant_id=t.pk,
            api_key_id=key.pk,
            model="smollm2",
            modality="chat",
            usage=Usage(prompt_tokens=10 + i, completion_tokens=5),
            worker="hive-a/cpu0",
            region="eu",
            end_user=user,
        )
    # A request still running holds the cursor; the one after it is appended anyway.
    usage_begin(
        request_id="req-3",
        tenant_id=t.pk,
        api_key_id=key.pk,
        model="smollm2",
        modality="chat",
        queen="q",
        end_user="bob",
    )
    usage_record(
        request_id="req-4",
        tenant_id=t.pk,
        api_key_id=key.pk,
        model="smollm2",
        modality="chat",
        usage=Usage(prompt_tokens=1),
        worker="hive-b/0",
        region="us",
    )
    assert usage_audit_append() == 5
    assert usage_audit_append() == 2  # looked at again from the running one: nothing new
    events = list(AuditEvent.objects.filter(action="inference").order_by("request_id"))
    assert [e.request_id for e in events] == ["req-0", "req-1", "req-2", "req-4"]
    e0 = events[0]
    assert e0.tenant_id == t.pk and e0.region == "eu" and e0.outcome == "ok"
    assert e0.actor == f"key:{key.prefix}"
    data = json.loads(e0.data)
    assert data["model"] == "smollm2" and data["hive"] == "hive-a" and data["device"] == "cpu0"
    assert data["units"] == {"prompt_tokens": 10, "completion_tokens": 5}
    stored = AuditEvent.objects.filter(action="inference").values_list()
    blob = repr(list(stored)).encode()
    assert b"alice-42" not in blob and plaintext.encode() not in blob
    assert events[1].subject_key == ""  # no end user: nothing personal
    mine = audit.events_for_subject(subjects.end_user("acme", "alice-42"))
    assert [e["request_id"] for e in mine] == ["req-0", "req-2"]
    assert mine[0]["personal"] == {"end_user": "alice-42"}
    # The running request finishes: appended next time, and the cursor moves past it.
    usage_record(
        request_id="req-3",
        tenant_id=t.pk,
        api_key_id=key.pk,
        model="smollm2",
        modality="chat",
        usage=Usage(prompt_tokens=2),
        end_user="bob",
    )
    assert usage_audit_append() == 2
    assert usage_audit_append() == 0
    assert AuditEvent.objects.filter(action="inference").count() == 5
    assert ledger.sequence() == 5
