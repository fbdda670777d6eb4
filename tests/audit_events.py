"""Reading the audit log back in tests of the apps that write it (tests/<app>/
test_audit_events.py): every event opened with every key (as an auditor holding the
master key would), and the raw bytes of every stored row, to prove that no secret or
e-mail is kept in the clear."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection

from gdpr import audit, crypto
from gdpr.models import EVENT_COLUMNS, AuditEvent, AuditKey

FIELDS = EVENT_COLUMNS


@pytest.fixture
def audit_home(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A master key of this test's own (RBEE_HOME), and no subject keys cached from
    another test's database."""
    monkeypatch.setenv("RBEE_HOME", str(tmp_path))
    audit._cache.clear()


def events(action: str | None = None, *, prefix: str = "") -> list[dict[str, Any]]:
    """The events (oldest first), persons' fields opened; only `action`, or only the
    actions starting with `prefix`."""
    keys = {k.id: crypto.unwrap(bytes(k.wrapped), k.id) for k in AuditKey.objects.all()}
    rows = AuditEvent.objects.order_by("id")
    if action is not None:
        rows = rows.filter(action=action)
    elif prefix:
        rows = rows.filter(action__startswith=prefix)
    return [audit.event_view(r, keys) for r in rows.values(*FIELDS)]


def one(action: str) -> dict[str, Any]:
    """The single event of `action` (fails when there are none or several)."""
    found = events(action)
    assert len(found) == 1, f"{action}: {len(found)} events: {found}"
    return found[0]


def actions() -> list[str]:
    return list(AuditEvent.objects.order_by("id").values_list("action", flat=True))


def raw_rows() -> bytes:
    """Every column of every audit event as the database returns it, as bytes (lower
    case), read with SQL so no model field decodes anything first."""
    table = connection.ops.quote_name(AuditEvent._meta.db_table)
    with connection.cursor() as cur:
        cur.execute(f"SELECT * FROM {table}")
        rows = cur.fetchall()
    out = bytearray()
    for row in rows:
        for value in row:
            if isinstance(value, bytes | bytearray | memoryview):
                out += bytes(value)
            else:
                out += str(value).encode()
            out += b"\x1f"
    return bytes(out).lower()


def assert_not_in_clear(*secrets: str) -> None:
    """None of `secrets` (keys, passwords, tokens, e-mails, usernames) appears in any
    stored audit row, in any case."""
    raw = raw_rows()
    assert raw, "no audit rows at all: the check would prove nothing"
    for secret in secrets:
        assert secret, "an empty secret proves nothing"
        assert secret.lower().encode() not in raw, f"{secret!r} stored in the clear"
