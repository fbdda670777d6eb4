"""The audit API every app calls: record, events_for_subject, shred, and the append-only
triggers, on whichever database the run uses (SQLite, or PostgreSQL in CI)."""

from __future__ import annotations

import pytest
from django.db import DatabaseError, connection, transaction

from gdpr import audit, subjects
from gdpr.models import AuditEvent, AuditKey, AuditLeaf

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("RBEE_HOME", str(tmp_path))
    audit._cache.clear()


def test_record_seals_personal_fields_and_export_opens_them() -> None:
    alice = subjects.user("Alice@Example.com")
    eid = audit.record(
        "login.success",
        actor=alice,
        subject=alice,
        personal={"ip": "203.0.113.7"},
        tenant_id=3,
        data={"method": "password"},
        request_id="r1",
    )
    audit.record("key.create", actor="cli", tenant_id=3, data={"prefix": "abc"})
    row = AuditEvent.objects.get(pk=eid)
    stored = b"".join(
        bytes(v) if isinstance(v, bytes | memoryview) else str(v).encode()
        for v in AuditEvent.objects.filter(pk=eid).values_list().get()
    )
    assert b"alice" not in stored.lower() and b"203.0.113.7" not in stored
    assert row.actor == "" and row.actor_key and row.subject_key == row.actor_key
    (ev,) = audit.events_for_subject(alice)
    assert ev["id"] == eid
    assert ev["actor"] == "user:alice@example.com"
    assert ev["subject"] == "user:alice@example.com"
    assert ev["personal"] == {"ip": "203.0.113.7"}
    assert ev["data"] == {"method": "password"}
    assert audit.events_for_subject(subjects.user("bob@example.com")) == []


def test_shred_makes_sealed_fields_unreadable_and_unlinkable() -> None:
    end = subjects.end_user("acme", "u-42")
    op = subjects.user("op@example.com")
    audit.record("inference", actor="key:abc", subject=end, tenant_id=1, personal={"user": "u-42"})
    audit.record("gdpr.erase", actor=op, subject=end, tenant_id=1)
    assert len(audit.events_for_subject(end)) == 2
    assert audit.shred(end) is True
    assert audit.shred(end) is False
    assert audit.events_for_subject(end) == []
    # The operator's own view of their event still opens their part, not the subject's.
    (ev,) = audit.events_for_subject(op)
    assert ev["actor"] == "user:op@example.com" and ev["subject"] == "[erased]"
    assert AuditKey.objects.count() == 1
    # A new event for the same person gets a new, unrelated key.
    audit.record("inference", actor="key:abc", subject=end, tenant_id=1)
    (again,) = audit.events_for_subject(end)
    assert again["subject"] == "enduser:acme:u-42"


def test_personal_without_an_owner_is_refused() -> None:
    with pytest.raises(ValueError, match="personal fields need a subject"):
        audit.record("login.failure", actor="system", personal={"ip": "198.51.100.1"})
    assert AuditEvent.objects.count() == 0


def test_record_many_appends_in_one_go() -> None:
    n = audit.record_many(
        audit.Event("inference", actor="key:k", tenant_id=1, request_id=f"r{i}") for i in range(25)
    )
    assert n == 25 == AuditEvent.objects.count()


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE gdpr_audit_event SET action = 'x'",
        "DELETE FROM gdpr_audit_event",
        "UPDATE gdpr_audit_leaf SET event_id = 0",
        "DELETE FROM gdpr_audit_leaf",
    ],
)
def test_triggers_refuse_edits(sql: str) -> None:
    from gdpr import ledger

    audit.record("key.create", actor="cli", tenant_id=1)
    ledger.sequence()
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        with connection.cursor() as cur:
            cur.execute(sql)
    assert AuditEvent.objects.filter(action="key.create").count() == 1


@pytest.mark.parametrize("table", ["gdpr_audit_event", "gdpr_audit_leaf"])
def test_truncate_refused(table: str) -> None:
    """TRUNCATE on PostgreSQL; on SQLite its equivalent, an unqualified DELETE (which
    SQLite runs as a truncate unless a trigger is there, as ours is)."""
    from gdpr import ledger

    audit.record("key.create", actor="cli", tenant_id=1)
    ledger.sequence()  # a leaf row too
    if connection.vendor == "postgresql":
        sql = f"TRUNCATE {table}"
    else:
        sql = f"DELETE FROM {table}"
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        with connection.cursor() as cur:
            cur.execute(sql)
    assert AuditEvent.objects.count() == 1
    assert AuditLeaf.objects.count() == 1


def test_a_key_made_in_a_rolled_back_transaction_is_not_reused() -> None:
    alice = subjects.user("alice@example.com")
    with pytest.raises(RuntimeError), transaction.atomic():
        audit.record("login.success", actor=alice, subject=alice)
        raise RuntimeError("the caller's transaction fails")
    assert AuditKey.objects.count() == 0 and AuditEvent.objects.count() == 0
    audit.record("login.success", actor=alice, subject=alice)
    (ev,) = audit.events_for_subject(alice)
    assert ev["actor"] == "user:alice@example.com"


def test_arecord_from_async_code() -> None:
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connections

    bob = subjects.user("bob@example.com")

    async def go() -> int:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(1))  # one thread: closed below
        eid = await audit.arecord(
            "login.failure",
            actor="system",
            subject=bob,
            personal={"ip": "198.51.100.9"},
            outcome="denied",
        )
        await loop.run_in_executor(None, connections.close_all)
        return eid

    eid = asyncio.run(go())
    (ev,) = audit.events_for_subject(bob)
    assert ev["id"] == eid and ev["outcome"] == "denied"
    assert ev["personal"] == {"ip": "198.51.100.9"}


def test_a_lost_master_key_is_refused_not_silently_replaced(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Subject keys are wrapped by RBEE_HOME's master key: if that file goes missing, a
    new one would wrap nothing that exists. Recording about a person then fails with a
    clear error naming the file, rather than losing their sealed fields for good."""
    from gdpr import crypto

    alice = subjects.user("alice@example.com")
    audit.record("login.success", actor=alice, subject=alice)
    (tmp_path / crypto.MASTER_FILE).unlink()
    crypto._master.cache_clear()
    crypto._derived_cached.cache_clear()
    audit._cache.clear()
    with pytest.raises(crypto.MissingKey, match="restore it from your backup"):
        audit.record("login.success", actor=alice, subject=alice)
    assert not (tmp_path / crypto.MASTER_FILE).exists()
