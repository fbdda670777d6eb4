"""The audit log's interface for every app (gdpr imports no app; apps call this).

    from gdpr import audit, subjects
    audit.record("key.create", actor=subjects.user(op_email), tenant_id=t.pk,
                 data={"prefix": key.prefix})
    await audit.arecord(...)

An event: `action` (dotted, e.g. "login.failure", "key.revoke", "inference"), `actor` (a
Subject when a person acted, else a plain name such as "system", "stripe", "cli",
"hive:gpu-1", "key:rb_ab12"), `tenant_id`, `subject` (the person the event is about, a
Subject), `personal` (fields that are personal data: e-mail, IP, names, end-user ids),
`data` (everything else; never a prompt, an output or a secret), `request_id`, `region`,
`outcome`. Persons' fields (`actor` when a Subject, `subject`, `personal`) are sealed per
data subject before hashing, so erasure (`shred`) destroys a key and the Merkle tree
still verifies.

`personal` belongs to `subject`; with no subject it is sealed under the actor when the
actor is a person, and refused otherwise (personal data must always have an owner who
can have it erased).

Appending is one INSERT (plus, the first time a subject is seen, its key row). Tree
order, leaf hashes and checkpoints are computed later, off the request path, by the
sequencer (gdpr.ledger).
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from gdpr import crypto
from gdpr.models import EVENT_COLUMNS, AuditCursor, AuditEvent, AuditKey
from gdpr.subjects import Subject, parse

__all__ = [
    "Event",
    "arecord",
    "arecord_many",
    "canonical_json",
    "events_for_subject",
    "feed_append",
    "feed_position",
    "record",
    "record_many",
    "shred",
]

# How long a process reuses a subject's key without asking the database again. A key
# shredded by another process may still seal that process's events for this long; those
# fields are then unreadable by anyone (the key is gone), which is erasure too.
KEY_CACHE_SECONDS = 60.0
_cache: dict[str, tuple[float, str, bytes]] = {}
_cache_lock = threading.Lock()


def canonical_json(value: Any) -> str:
    """One spelling per value: sorted keys, no spaces, ASCII only. What is hashed is
    what is stored, byte for byte."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


@dataclass
class Event:
    """One event to append (record_many); the same fields as `record`."""

    action: str
    actor: Subject | str = "system"
    tenant_id: int | None = None
    subject: Subject | None = None
    personal: Mapping[str, str] | None = None
    data: Mapping[str, Any] | None = None
    request_id: str = ""
    region: str = ""
    outcome: str = "ok"
    created_at: Any = field(default=None)  # datetime; now when None


def _key_for(
    subject: Subject, *, create: bool, known_missing: bool = False
) -> tuple[str, bytes] | None:
    """(key id, key) of the subject, made on first use when `create` (`known_missing`:
    the caller just looked and found none)."""
    name = str(subject)
    now = time.monotonic()
    with _cache_lock:
        hit = _cache.get(name)
    if hit and hit[0] > now:
        return hit[1], hit[2]
    lookup = crypto.subject_lookup(name)
    row = (
        None
        if known_missing
        else AuditKey.objects.filter(lookup=lookup).values_list("id", "wrapped").first()
    )
    if row is None:
        if not create:
            return None
        key_id = secrets.token_hex(16)
        dek = secrets.token_bytes(32)
        try:
            with transaction.atomic():
                AuditKey.objects.create(id=key_id, lookup=lookup, wrapped=crypto.wrap(dek, key_id))
        except IntegrityError:  # another process made it first: use theirs
            row = AuditKey.objects.filter(lookup=lookup).values_list("id", "wrapped").get()
            key_id, dek = row[0], crypto.unwrap(bytes(row[1]), row[0])
    else:
        key_id, dek = row[0], crypto.unwrap(bytes(row[1]), row[0])

    def remember() -> None:
        with _cache_lock:
            _cache[name] = (now + KEY_CACHE_SECONDS, key_id, dek)

    # Only a committed key is remembered: were the caller's transaction rolled back with
    # a key it made, later events would be sealed under a key that exists nowhere.
    transaction.on_commit(remember)
    return key_id, dek


def _seal(
    subject: Subject,
    role: str,
    payload: Mapping[str, Any],
    batch: dict[Subject, tuple[str, bytes]] | None = None,
) -> tuple[str, bytes]:
    found = batch.get(subject) if batch is not None else None
    if found is None:
        found = _key_for(subject, create=True, known_missing=batch is not None)
        assert found is not None
        if batch is not None:
            batch[subject] = found
    key_id, dek = found
    aad = f"{role}:{key_id}".encode()
    return key_id, crypto.seal(dek, canonical_json(payload).encode(), aad)


# The columns an append writes, in order (the id comes from the sequence).
COLUMNS = EVENT_COLUMNS[1:]


def _values(ev: Event, batch: dict[Subject, tuple[str, bytes]] | None = None) -> tuple[Any, ...]:
    """One event's column values (COLUMNS), persons' fields sealed. `batch`: the keys
    already found for this batch (the process cache only learns keys once committed)."""
    if not ev.action or len(ev.action) > 64:
        raise ValueError("an audit action is 1 to 64 characters")
    personal = dict(ev.personal or {})
    actor, actor_key, actor_sealed = "", "", b""
    subject_key, subject_sealed = "", b""
    if isinstance(ev.actor, Subject):
        actor_payload: dict[str, Any] = {"actor": str(ev.actor)}
        if ev.subject is None and personal:
            actor_payload["personal"] = personal
            personal = {}
        actor_key, actor_sealed = _seal(ev.actor, "actor", actor_payload, batch)
    else:
        actor = str(ev.actor)[:200]
    if ev.subject is not None:
        subject_key, subject_sealed = _seal(
            ev.subject, "subject", {"subject": str(ev.subject), "personal": personal}, batch
        )
    elif personal:
        raise ValueError(
            f"audit event {ev.action!r}: personal fields need a subject (or a person as actor)"
        )
    return (
        ev.created_at or timezone.now(),
        ev.action,
        actor,
        ev.tenant_id,
        ev.request_id[:64],
        ev.region[:32],
        ev.outcome[:32],
        canonical_json(dict(ev.data or {})),
        actor_key,
        actor_sealed,
        subject_key,
        subject_sealed,
    )


_INSERT = (
    f"INSERT INTO gdpr_audit_event ({', '.join(COLUMNS)}) "  # noqa: S608 (constant)
    f"VALUES ({', '.join(['%s'] * len(COLUMNS))})"
)


def _insert_many(rows: list[tuple[Any, ...]], *, skip_recorded: bool) -> None:
    """Plain rows straight to the database: COPY on PostgreSQL (no ORM object per row),
    one prepared INSERT for all rows on SQLite."""
    if not rows:
        return
    with connection.cursor() as cur:
        if connection.vendor == "postgresql" and not skip_recorded:
            raw = cur.cursor  # psycopg's own cursor
            with raw.copy(f"COPY gdpr_audit_event ({', '.join(COLUMNS)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        elif connection.vendor == "postgresql":
            # Multi-row INSERTs (one round trip per 500 rows) that skip recorded ones.
            one = f"({', '.join(['%s'] * len(COLUMNS))})"
            head = _INSERT.split(" VALUES ", 1)[0]
            for k in range(0, len(rows), 500):
                chunk = rows[k : k + 500]
                cur.execute(
                    f"{head} VALUES {', '.join([one] * len(chunk))} ON CONFLICT DO NOTHING",
                    [v for row in chunk for v in row],
                )
        else:
            verb = "INSERT OR IGNORE" if skip_recorded else "INSERT"
            cur.executemany(_INSERT.replace("INSERT", verb, 1), rows)


def record(
    action: str,
    *,
    actor: Subject | str = "system",
    tenant_id: int | None = None,
    subject: Subject | None = None,
    personal: Mapping[str, str] | None = None,
    data: Mapping[str, Any] | None = None,
    request_id: str = "",
    region: str = "",
    outcome: str = "ok",
) -> int:
    """Append one event (in the caller's transaction when there is one). Its id."""
    values = _values(
        Event(
            action,
            actor=actor,
            tenant_id=tenant_id,
            subject=subject,
            personal=personal,
            data=data,
            request_id=request_id,
            region=region,
            outcome=outcome,
        )
    )
    row = AuditEvent(**dict(zip(COLUMNS, values, strict=True)))
    row.save(force_insert=True)
    return int(row.pk)


def _prefetch(events: list[Event]) -> dict[Subject, tuple[str, bytes]]:
    """The existing keys of a batch's persons, in one query."""
    wanted: dict[str, Subject] = {}
    for ev in events:
        for who in (ev.actor, ev.subject):
            if isinstance(who, Subject):
                wanted.setdefault(crypto.subject_lookup(str(who)), who)
    found: dict[Subject, tuple[str, bytes]] = {}
    lookups = list(wanted)
    for k in range(0, len(lookups), 900):  # within SQLite's limit on query parameters
        rows = AuditKey.objects.filter(lookup__in=lookups[k : k + 900]).values_list(
            "lookup", "id", "wrapped"
        )
        for lookup, key_id, wrapped in rows:
            found[wanted[lookup]] = (key_id, crypto.unwrap(bytes(wrapped), key_id))
    return found


def record_many(events: Iterable[Event], *, skip_recorded: bool = False) -> int:
    """Append many events at once (COPY on PostgreSQL; batch appenders, imports). How many
    were given. With `skip_recorded`, an inference event whose request id is already in
    the log is left out (appenders that may retry a batch)."""
    events = list(events)
    with transaction.atomic():
        batch = _prefetch(events)
        rows = [_values(ev, batch) for ev in events]
        _insert_many(rows, skip_recorded=skip_recorded)
    return len(rows)


def feed_position(name: str) -> int:
    """Where the batch appender `name` stopped (0: it never ran)."""
    pos = AuditCursor.objects.filter(name=name).values_list("position", flat=True).first()
    return int(pos or 0)


def feed_append(name: str, events: Iterable[Event], *, position: int) -> int:
    """Append a batch (inference events are idempotent per request id) and move the
    appender's durable cursor to `position`, in one transaction: a crash between the two
    cannot lose or double a batch."""
    with transaction.atomic():
        n = record_many(events, skip_recorded=True)
        AuditCursor.objects.update_or_create(name=name, defaults={"position": position})
    return n


async def arecord(action: str, **kwargs: Any) -> int:
    """`record` from async code."""
    from kernel.aio import db

    return await db(lambda: record(action, **kwargs))


async def arecord_many(events: Iterable[Event]) -> int:
    from kernel.aio import db

    batch = list(events)
    return await db(lambda: record_many(batch))


def _open(dek: bytes | None, blob: bytes, role: str, key_id: str) -> dict[str, Any] | None:
    if dek is None or not blob:
        return None
    try:
        raw = crypto.open_sealed(dek, bytes(blob), f"{role}:{key_id}".encode())
    except Exception:  # InvalidTag: not this key, or tampered with
        return None
    value: dict[str, Any] = json.loads(raw)
    return value


def event_view(
    row: Mapping[str, Any], keys: Mapping[str, bytes], *, leaf_index: int | None = None
) -> dict[str, Any]:
    """An event as people read it: persons' fields opened where their key still exists
    (`keys`: key id -> key), else marked "[erased]"."""
    actor: Any = row["actor"]
    personal: dict[str, Any] = {}
    subject: Any = None
    if row["actor_key"]:
        opened = _open(keys.get(row["actor_key"]), row["actor_sealed"], "actor", row["actor_key"])
        actor = opened["actor"] if opened else "[erased]"
        if opened:
            personal.update(opened.get("personal", {}))
    if row["subject_key"]:
        opened = _open(
            keys.get(row["subject_key"]), row["subject_sealed"], "subject", row["subject_key"]
        )
        subject = opened["subject"] if opened else "[erased]"
        if opened:
            personal.update(opened.get("personal", {}))
    return {
        "id": row["id"],
        "leaf_index": leaf_index,
        "created_at": row["created_at"].isoformat(),
        "action": row["action"],
        "actor": actor,
        "tenant_id": row["tenant_id"],
        "subject": subject,
        "personal": personal,
        "data": json.loads(row["data"]),
        "request_id": row["request_id"],
        "region": row["region"],
        "outcome": row["outcome"],
    }


def events_for_subject(subject: Subject | str) -> list[dict[str, Any]]:
    """Every event about (or by) the subject, decrypted, oldest first (for an export).
    None once the subject's key is shredded: nothing links them any more."""
    if isinstance(subject, str):
        subject = parse(subject)
    found = _key_for(subject, create=False)
    if found is None:
        return []
    key_id, dek = found
    from django.db.models import Q

    rows = (
        AuditEvent.objects.filter(Q(actor_key=key_id) | Q(subject_key=key_id))
        .order_by("id")
        .values(*EVENT_COLUMNS)
    )
    return [event_view(r, {key_id: dek}) for r in rows]


def shred(subject: Subject | str) -> bool:
    """Destroy the subject's key: their sealed fields no longer decrypt; the log still
    verifies. True when a key existed."""
    if isinstance(subject, str):
        subject = parse(subject)
    with _cache_lock:
        _cache.pop(str(subject), None)
    deleted, _ = AuditKey.objects.filter(lookup=crypto.subject_lookup(str(subject))).delete()
    return deleted > 0
