"""The audit log as a Merkle tree: sequencing, signed checkpoints, verification, proofs.

* `sequence()`: events get ids from a sequence and commit in any order when many queens
  write at once, so one sequencer at a time (an advisory lock on PostgreSQL; on SQLite
  the database's single writer and the leaf table's primary key) gives each committed
  event the next tree index and its leaf hash, in the append-only `gdpr_audit_leaf`.
  It runs off the request path (gdpr.periodic: a thread on the embedded default, Celery
  beat with Redis).
* `checkpoint()`: signs (tree size, root, time) with the Ed25519 key in RBEE_HOME and
  writes it, with the leaf hashes added since the previous checkpoint, to a sink outside
  the database (gdpr.sinks): one file each, created exclusively, never rewritten.
* `verify()`: streams the log in tree order, recomputes every leaf hash from the stored
  row, and compares it with the hashes the sink recorded (so rewriting the stored hashes
  does not hide an edit), with the stored hash, and the roots with every signed
  checkpoint. It names the first index that does not match, or the checkpoint the log
  no longer extends.
* `proof()`: an inclusion proof of one event against the newest checkpoint that holds it.

The leaf data of an event is canonical JSON of the stored row, sealed bytes included
(base64), so erasing a subject (deleting their key) changes no leaf.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.db import IntegrityError, connection, transaction

from gdpr import crypto, merkle
from gdpr.models import AuditLeaf
from gdpr.sinks import Checkpoint, Sink, get_sink, signed_message

__all__ = [
    "LogBroken",
    "NotYetCheckpointed",
    "Verified",
    "checkpoint",
    "leaf_data",
    "proof",
    "sequence",
    "tick",
    "verify",
]

ADVISORY_LOCK = 0x72626565_61756474  # "rbeeaudt"
# Events commit out of id order; the sequencer looks this far back below the newest
# sequenced id for late commits (a transaction open across this many other events).
LATE_WINDOW = 100_000
BATCH = 20_000
_local_lock = threading.Lock()

_COLUMN_NAMES = (
    "id",
    "created_at",
    "action",
    "actor",
    "tenant_id",
    "request_id",
    "region",
    "outcome",
    "data",
    "actor_key",
    "actor_sealed",
    "subject_key",
    "subject_sealed",
)
# Constant SQL (no input is ever formatted into it): the columns a leaf hashes, in order.
_COLS = ", ".join(_COLUMN_NAMES)
_E_COLS = ", ".join("e." + c for c in _COLUMN_NAMES)
SQL_UNSEQUENCED = (
    f"SELECT {_E_COLS} FROM gdpr_audit_event e "  # noqa: S608
    "LEFT JOIN gdpr_audit_leaf l ON l.event_id = e.id "
    "WHERE e.id > %s AND l.event_id IS NULL ORDER BY e.id LIMIT %s"
)
SQL_TREE = (
    f'SELECT l."index", l.leaf_hash, {_E_COLS} FROM gdpr_audit_leaf l '  # noqa: S608
    'LEFT JOIN gdpr_audit_event e ON e.id = l.event_id ORDER BY l."index"'
)
SQL_EVENT = f"SELECT {_COLS} FROM gdpr_audit_event WHERE id = %s"  # noqa: S608


def _b64(raw: Any) -> str:
    return base64.b64encode(bytes(raw or b"")).decode()


def _when(value: Any) -> str:
    if isinstance(value, str):  # SQLite through a raw cursor
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return str(value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"))


def leaf_data(row: tuple[Any, ...]) -> bytes:
    """The bytes a leaf hashes: canonical JSON of the stored row (columns as `_COLUMN_NAMES`)."""
    (eid, created, action, actor, tenant, request_id, region, outcome, data) = row[:9]
    (actor_key, actor_sealed, subject_key, subject_sealed) = row[9:13]
    doc = {
        "v": 1,
        "id": int(eid),
        "created_at": _when(created),
        "action": action,
        "actor": actor,
        "tenant_id": tenant,
        "request_id": request_id,
        "region": region,
        "outcome": outcome,
        "data": data,
        "actor_key": actor_key,
        "actor_sealed": _b64(actor_sealed),
        "subject_key": subject_key,
        "subject_sealed": _b64(subject_sealed),
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


@transaction.atomic
def _sequence_locked(limit: int) -> int:
    with connection.cursor() as cur:
        if connection.vendor == "postgresql":
            cur.execute("SELECT pg_advisory_xact_lock(%s)", [ADVISORY_LOCK])
        cur.execute('SELECT MAX("index"), MAX(event_id) FROM gdpr_audit_leaf')
        top, newest = cur.fetchone()
        nxt = 0 if top is None else int(top) + 1
        floor = 0 if newest is None else max(0, int(newest) - LATE_WINDOW)
        cur.execute(SQL_UNSEQUENCED, [floor, limit])
        rows = cur.fetchall()
        leaves = [(nxt + i, row[0], merkle.leaf_hash(leaf_data(row))) for i, row in enumerate(rows)]
        if connection.vendor == "postgresql":
            with cur.cursor.copy(
                'COPY gdpr_audit_leaf ("index", event_id, leaf_hash) FROM STDIN'
            ) as cp:
                for leaf in leaves:
                    cp.write_row(leaf)
        else:
            cur.executemany(
                'INSERT INTO gdpr_audit_leaf ("index", event_id, leaf_hash) VALUES (%s, %s, %s)',
                leaves,
            )
    return len(leaves)


def sequence(*, limit: int = BATCH) -> int:
    """Give committed, unsequenced events their tree indexes. How many it placed."""
    if connection.vendor != "postgresql":
        limit = min(limit, 5000)  # SQLite's write lock is held while a batch is hashed
    placed = 0
    with _local_lock:
        while True:
            try:
                n = _sequence_locked(limit)
            except IntegrityError:  # SQLite: another process sequenced the same indexes
                return placed
            placed += n
            if n < limit:
                return placed


def _leaf_hashes(start: int, stop: int) -> Iterator[bytes]:
    with connection.cursor() as cur:
        cur.execute(
            'SELECT leaf_hash FROM gdpr_audit_leaf WHERE "index" >= %s AND "index" < %s '
            'ORDER BY "index"',
            [start, stop],
        )
        while chunk := cur.fetchmany(10_000):
            for (h,) in chunk:
                yield bytes(h)


def _chunks(cur: Any, sql: str, size: int = 10_000) -> Iterator[list[tuple[Any, ...]]]:
    """The rows of a query in chunks, without holding them all: a server-side cursor on
    PostgreSQL (inside the caller's transaction), SQLite's own stepping otherwise."""
    if connection.vendor == "postgresql":
        named = connection.connection.cursor(name=f"rbee_audit_{threading.get_ident()}")
        named.itersize = size
        try:
            named.execute(sql)
            while chunk := named.fetchmany(size):
                yield chunk
        finally:
            named.close()
        return
    cur.execute(sql)
    while chunk := cur.fetchmany(size):
        yield chunk


def tree_size() -> int:
    with connection.cursor() as cur:
        cur.execute('SELECT MAX("index") FROM gdpr_audit_leaf')
        (top,) = cur.fetchone()
    return 0 if top is None else int(top) + 1


def checkpoint(*, sink: Sink | None = None, force: bool = True) -> Checkpoint | None:
    """Sequence, then sign and write a checkpoint of the whole tree. With `force` False,
    only when the tree grew since the sink's latest checkpoint. The checkpoint written
    (None: nothing to do)."""
    sink = sink or get_sink()
    sequence()
    for _ in range(3):
        try:
            return _checkpoint(sink, force)
        except FileExistsError:  # another process wrote that number first: after it
            continue
    return _checkpoint(sink, force)


def _checkpoint(sink: Sink, force: bool) -> Checkpoint | None:
    # On PostgreSQL one checkpointer at a time (an advisory lock, in a transaction). On
    # SQLite a transaction would be the database's write lock for the whole computation;
    # the tree is append-only, so reading its size and then its hashes up to that size
    # needs none, and the sink's exclusive create settles a race between checkpointers.
    pg = connection.vendor == "postgresql"
    with transaction.atomic() if pg else nullcontext():
        if pg:
            with connection.cursor() as cur:  # one checkpointer at a time
                cur.execute("SELECT pg_advisory_xact_lock(%s)", [ADVISORY_LOCK + 1])
        latest = sink.latest()
        prev = latest.size if latest else 0
        size = tree_size()
        if size < prev:
            raise LogBroken(
                f"the log holds {size} events but checkpoint {latest.name if latest else ''} "
                f"recorded {prev}: run `rbee audit verify`",
                index=size,
            )
        if not force and latest and size == prev:
            return None
        stream = merkle.Stream()
        new = bytearray()
        for i, lh in enumerate(_leaf_hashes(0, size)):
            stream.append(lh)
            if i >= prev:
                new += lh
        root = stream.root()
        when = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        sig = crypto.signing_key().sign(signed_message(size, root, when))
        cp = Checkpoint(
            seq=(latest.seq + 1) if latest else 1,
            size=size,
            root=root,
            time=when,
            prev_size=prev,
            signature=sig,
            public_key=crypto.public_key_b64(),
        )
        sink.write(cp, bytes(new))
        return cp


def tick(*, checkpoint_every: float = 60.0, sink: Sink | None = None) -> None:
    """The periodic work: sequence, and a checkpoint when the tree grew and the latest
    is older than `checkpoint_every` seconds minus a little (the tick's own period)."""
    sequence()
    sink = sink or get_sink()
    latest = sink.latest()
    if latest is not None:
        age = (datetime.now(UTC) - datetime.fromisoformat(latest.time)).total_seconds()
        if age < checkpoint_every * 0.8:
            return
    checkpoint(sink=sink, force=False)


class LogBroken(Exception):
    """The log does not match its checkpoints (or itself)."""

    def __init__(self, message: str, *, index: int | None = None, checkpoint: str = "") -> None:
        super().__init__(message)
        self.index = index
        self.checkpoint = checkpoint


@dataclass(frozen=True)
class Verified:
    size: int
    root: bytes
    checkpoints: int
    pending: int  # events appended but not yet sequenced


def verify(*, sink: Sink | None = None) -> Verified:
    """Recompute the tree from the stored rows and check it against every checkpoint.
    Raises LogBroken naming the first index that does not match, or the checkpoint the
    log no longer extends."""
    sink = sink or get_sink()
    pub = crypto.public_key()
    cps = sink.all()
    expected = bytearray()
    roots: dict[int, Checkpoint] = {}
    for cp in cps:
        try:
            pub.verify(cp.signature, signed_message(cp.size, cp.root, cp.time))
        except Exception:
            raise LogBroken(
                f"checkpoint {cp.name}: the signature does not verify with this queen's public key",
                checkpoint=cp.name,
            ) from None
        if cp.prev_size != len(expected) // 32:
            raise LogBroken(
                f"checkpoint {cp.name} follows size {cp.prev_size}, but the checkpoints "
                f"before it reach {len(expected) // 32}",
                checkpoint=cp.name,
            )
        hashes = sink.leaves(cp)
        if len(hashes) != 32 * (cp.size - cp.prev_size):
            raise LogBroken(
                f"checkpoint {cp.name}: its leaf file holds {len(hashes) // 32} hashes, "
                f"not {cp.size - cp.prev_size}",
                checkpoint=cp.name,
            )
        expected += hashes
        same = roots.get(cp.size)
        if same is not None and same.root != cp.root:
            raise LogBroken(
                f"checkpoints {same.name} and {cp.name} sign different roots for size {cp.size}",
                checkpoint=cp.name,
            )
        roots[cp.size] = cp
    stream = merkle.Stream()
    i = 0
    # PostgreSQL's server-side cursor needs a transaction; SQLite's would be a write lock
    # (transaction_mode IMMEDIATE) held for the whole verify, stalling the queen's writes,
    # while a plain read there sees one WAL snapshot and blocks nobody.
    pg = connection.vendor == "postgresql"
    with transaction.atomic() if pg else nullcontext(), connection.cursor() as cur:
        for chunk in _chunks(cur, SQL_TREE):
            for row in chunk:
                idx, stored = row[0], bytes(row[1])
                if idx != i:
                    raise LogBroken(
                        f"index {i}: missing from the tree order (next is {idx})", index=i
                    )
                if row[2] is None:
                    raise LogBroken(f"index {i}: its event row is gone", index=i)
                lh = merkle.leaf_hash(leaf_data(row[2:]))
                if i < len(expected) // 32 and lh != expected[32 * i : 32 * i + 32]:
                    raise LogBroken(
                        f"index {i} (event {row[2]}): the stored row does not match the leaf "
                        f"hash recorded with the checkpoints",
                        index=i,
                    )
                if lh != stored:
                    raise LogBroken(
                        f"index {i} (event {row[2]}): the stored row does not match its leaf hash",
                        index=i,
                    )
                stream.append(lh)
                i += 1
                at = roots.get(i)
                if at is not None and stream.root() != at.root:
                    raise LogBroken(
                        f"checkpoint {at.name}: the root of the first {i} leaves differs from "
                        f"the signed one",
                        checkpoint=at.name,
                        index=i - 1,
                    )
        cur.execute(
            "SELECT COUNT(*) FROM gdpr_audit_event e LEFT JOIN gdpr_audit_leaf l "
            "ON l.event_id = e.id WHERE l.event_id IS NULL"
        )
        (pending,) = cur.fetchone()
    if any(cp.size > i for cp in cps):
        worst = min((cp for cp in cps if cp.size > i), key=lambda c: c.seq)
        raise LogBroken(
            f"checkpoint {worst.name} (size {worst.size}, {worst.time}) is no longer extended "
            f"by the log, which holds {i} events: index {i} onwards is missing",
            index=i,
            checkpoint=worst.name,
        )
    return Verified(size=i, root=stream.root(), checkpoints=len(cps), pending=int(pending))


class NotYetCheckpointed(Exception):
    """The event is not in a signed checkpoint yet: ask again after the next one."""


def proof(*, event_id: int, sink: Sink | None = None) -> dict[str, Any]:
    """An inclusion proof of one event against the newest checkpoint that holds it."""
    sink = sink or get_sink()
    leaf = AuditLeaf.objects.filter(event_id=event_id).values_list("index", flat=True).first()
    latest = sink.latest()
    if leaf is None or latest is None or latest.size <= leaf:
        raise NotYetCheckpointed(f"event {event_id} is not in a signed checkpoint yet")
    hashes = list(_leaf_hashes(0, latest.size))
    if merkle.root(hashes) != latest.root:
        raise LogBroken(f"the stored tree does not match checkpoint {latest.name}")
    with connection.cursor() as cur:
        cur.execute(SQL_EVENT, [event_id])
        row = cur.fetchone()
    data = leaf_data(row)
    if merkle.leaf_hash(data) != hashes[leaf]:
        raise LogBroken(f"event {event_id} does not match its leaf hash", index=leaf)
    path = merkle.inclusion_proof(leaf, hashes)
    return {
        "event": base64.b64encode(data).decode(),
        "leaf_index": leaf,
        "tree_size": latest.size,
        "audit_path": [base64.b64encode(p).decode() for p in path],
        "checkpoint": latest.as_json(),
        "public_key": crypto.public_key_b64(),
    }
