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
* `proof()`: an inclusion proof of one event against the newest checkpoint that holds it;
  `consistency()`: a proof that an older tree is a prefix of a signed one.

A checkpoint signs only an extension of the one before: it starts from that checkpoint's
frontier (the roots of the perfect subtrees making up its tree, kept in the sink beside
it and checked against its signed root) and first checks that the stored tree still has
the signed root at the old size, refusing (LogBroken) otherwise. Complete, aligned chunks
of CHUNK leaves never change, so their roots are cached (`AuditSubtree`) once signed:
a checkpoint or a proof reads O(CHUNK + size / CHUNK) rows, not the whole log.

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
from gdpr.models import EVENT_COLUMNS, AuditLeaf, AuditSubtree
from gdpr.sinks import Checkpoint, Sink, get_sink, signed_message

__all__ = [
    "LogBroken",
    "NotYetCheckpointed",
    "Verified",
    "checkpoint",
    "consistency",
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
# Leaves per cached subtree (AuditSubtree rows are numbered in these: never change it).
CHUNK = 1024
# Cached chunks each checkpoint re-hashes from their leaves (a moving window).
SCRUB = 16
_local_lock = threading.Lock()

_COLUMN_NAMES = EVENT_COLUMNS
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
    (None: nothing to do). Raises LogBroken, signing nothing, when the stored tree no
    longer extends the latest signed checkpoint (a row and its leaf hash edited, an older
    copy restored and grown past it)."""
    sink = sink or get_sink()
    sequence()
    for _ in range(3):
        try:
            return _checkpoint(sink, force)
        except FileExistsError:  # another process wrote that number first: after it
            continue
    return _checkpoint(sink, force)


class _Tree:
    """Roots of ranges of the stored tree's first `size` leaves: a complete aligned chunk
    from the AuditSubtree cache, anything smaller from its leaf hashes (read a chunk at a
    time, only the chunks asked for). So a root or a proof costs O(CHUNK + size / CHUNK)
    rows and hashes, not O(size). Nothing here is trusted: callers compare what it gives
    with a signed root."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.cached: dict[int, bytes] = {
            int(k): bytes(h)
            for k, h in AuditSubtree.objects.filter(chunk__lt=size // CHUNK).values_list(
                "chunk", "hash"
            )
        }
        self.computed: dict[int, bytes] = {}  # complete chunks not in the cache
        self._leaves: dict[int, list[bytes]] = {}
        self._memo: dict[tuple[int, int], bytes] = {}

    def leaves(self, k: int) -> list[bytes]:
        """The leaf hashes of chunk k (up to `size`)."""
        got = self._leaves.get(k)
        if got is None:
            lo, hi = k * CHUNK, min((k + 1) * CHUNK, self.size)
            got = list(_leaf_hashes(lo, hi))
            if len(got) != hi - lo:
                raise LogBroken(
                    f"indexes {lo}..{hi - 1}: {hi - lo - len(got)} missing from the tree order",
                    index=lo,
                )
            self._leaves[k] = got
        return got

    def leaf(self, i: int) -> bytes:
        return self.leaves(i // CHUNK)[i % CHUNK]

    def chunk_root(self, k: int) -> bytes:
        h = self.cached.get(k)
        if h is None:
            h = self.computed.get(k)
            if h is None:
                h = self.computed[k] = merkle.root(self.leaves(k))
        return h

    def mth(self, lo: int, hi: int) -> bytes:
        """The root of leaves [lo, hi) (RFC 9162's MTH)."""
        n = hi - lo
        if n == 1:
            return self.leaf(lo)
        if n == CHUNK and lo % CHUNK == 0:
            return self.chunk_root(lo // CHUNK)
        if n < CHUNK and lo // CHUNK == (hi - 1) // CHUNK:
            chunk = self.leaves(lo // CHUNK)
            return merkle.root(chunk[lo % CHUNK : lo % CHUNK + n])
        got = self._memo.get((lo, hi))
        if got is None:
            k = merkle.split(n)
            got = merkle.node_hash(self.mth(lo, lo + k), self.mth(lo + k, hi))
            self._memo[(lo, hi)] = got
        return got


def _signed_stream(sink: Sink, latest: Checkpoint) -> merkle.Stream:
    """The tree of the latest checkpoint as the sink signed it: its frontier, checked
    against its signature and root (checkpoints from before frontiers: rebuilt once from
    the leaf hashes the sink holds)."""
    try:
        crypto.public_key().verify(
            latest.signature, signed_message(latest.size, latest.root, latest.time)
        )
    except Exception:
        raise LogBroken(
            f"checkpoint {latest.name}: the signature does not verify with this queen's key",
            checkpoint=latest.name,
        ) from None
    if latest.frontier:
        try:
            stream = merkle.Stream.from_frontier(latest.size, latest.frontier)
        except ValueError:
            stream = None
    else:
        stream = merkle.Stream()
        for cp in sink.all():
            if cp.seq > latest.seq:
                break
            raw = sink.leaves(cp)
            for at in range(0, len(raw), 32):
                stream.append(raw[at : at + 32])
    if stream is None or stream.size != latest.size or stream.root() != latest.root:
        raise LogBroken(
            f"checkpoint {latest.name}: its frontier or leaf files do not make its signed "
            "root: run `rbee audit verify`",
            checkpoint=latest.name,
        )
    return stream


def _scrub(tree: _Tree, seq: int, chunks: int) -> None:
    """Re-hash SCRUB cached chunks (a window that moves on with each checkpoint, so the
    whole signed tree is swept every `chunks / SCRUB` checkpoints) from their stored leaf
    hashes: a superuser who rewrote rows and their leaf hashes in a complete chunk, but
    not the cached root, is caught here as well as by the proofs of those events."""
    for j in range(min(SCRUB, chunks)):
        k = (seq * SCRUB + j) % chunks
        cached = tree.cached.get(k)
        if cached is not None and merkle.root(tree.leaves(k)) != cached:
            raise LogBroken(
                f"indexes {k * CHUNK}..{(k + 1) * CHUNK - 1}: the stored leaf hashes no "
                "longer make the signed root of their chunk (edited): nothing signed; run "
                "`rbee audit verify`",
                index=k * CHUNK,
            )


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
        tree = _Tree(size)
        stream = merkle.Stream()
        if latest is not None:
            # Sign only an extension of what was signed: start from the signed frontier,
            # and first prove the stored tree still has the signed root at `prev` (cached
            # chunk roots plus the leaves of the one partial chunk).
            stream = _signed_stream(sink, latest)
            if prev and tree.mth(0, prev) != latest.root:
                raise LogBroken(
                    f"checkpoint {latest.name}: the root of the first {prev} stored events "
                    "differs from the signed one (edited, or restored from an older copy): "
                    "nothing signed; run `rbee audit verify`",
                    checkpoint=latest.name,
                )
            _scrub(tree, latest.seq, prev // CHUNK)
        new = bytearray()
        for i in range(prev, size):
            lh = tree.leaf(i)
            stream.append(lh)
            new += lh
        # Complete chunks the new leaves finish: computed from their leaves, and a cached
        # root already there for one (written by nobody honest) must agree.
        fresh = {k: merkle.root(tree.leaves(k)) for k in range(prev // CHUNK, size // CHUNK)}
        for k, h in fresh.items():
            if tree.cached.get(k, h) != h:
                raise LogBroken(
                    f"the cached root of leaves {k * CHUNK}..{(k + 1) * CHUNK - 1} does not "
                    "match them: nothing signed; run `rbee audit verify`",
                    index=k * CHUNK,
                )
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
            frontier=tuple(stream.frontier()),
        )
        sink.write(cp, bytes(new))
        # Only now, inside signed checkpoints (those below `prev` were just checked
        # against the signed root), do complete chunks enter the cache.
        rows = {**{k: h for k, h in tree.computed.items() if k < prev // CHUNK}, **fresh}
        AuditSubtree.objects.bulk_create(
            [AuditSubtree(chunk=k, hash=h) for k, h in rows.items() if k not in tree.cached],
            ignore_conflicts=True,
        )
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
    """An inclusion proof of one event against the newest checkpoint that holds it,
    built from cached chunk roots and two chunks of leaves, and checked against the
    signed root before it is served."""
    sink = sink or get_sink()
    leaf = AuditLeaf.objects.filter(event_id=event_id).values_list("index", flat=True).first()
    latest = sink.latest()
    if leaf is None or latest is None or latest.size <= leaf:
        raise NotYetCheckpointed(f"event {event_id} is not in a signed checkpoint yet")
    tree = _Tree(latest.size)
    with connection.cursor() as cur:
        cur.execute(SQL_EVENT, [event_id])
        row = cur.fetchone()
    data = leaf_data(row)
    lh = merkle.leaf_hash(data)
    if lh != tree.leaf(leaf):
        raise LogBroken(f"event {event_id} does not match its leaf hash", index=leaf)
    path = merkle.inclusion_path(leaf, latest.size, tree.mth)
    if not merkle.verify_inclusion(leaf, latest.size, lh, path, latest.root):
        raise LogBroken(f"the stored tree does not match checkpoint {latest.name}", index=leaf)
    return {
        "event": base64.b64encode(data).decode(),
        "leaf_index": leaf,
        "tree_size": latest.size,
        "audit_path": [base64.b64encode(p).decode() for p in path],
        "checkpoint": latest.as_json(),
        "public_key": crypto.public_key_b64(),
    }


def consistency(*, old: int, new: int | None = None, sink: Sink | None = None) -> dict[str, Any]:
    """A consistency proof (RFC 9162 2.1.4) that the log of `old` events is a prefix of the
    signed checkpoint of `new` events (default: the newest). A customer who kept the
    checkpoint they last saw checks with it that the log was never forked or rewritten
    since. ValueError for sizes no proof exists for; NotYetCheckpointed before any."""
    sink = sink or get_sink()
    latest = sink.latest()
    if latest is None:
        raise NotYetCheckpointed("no signed checkpoint yet")
    target: Checkpoint | None = latest
    if new is not None and new != latest.size:
        target = next((cp for cp in sink.all() if cp.size == new), None)
        if target is None:
            raise ValueError(f"no signed checkpoint has {new} events")
    assert target is not None
    if not 0 < old <= target.size:
        raise ValueError(f"no consistency proof from {old} to {target.size} events")
    tree = _Tree(target.size)
    path = merkle.consistency_path(old, target.size, tree.mth)
    old_root = tree.mth(0, old)
    if not merkle.verify_consistency(old, target.size, old_root, target.root, path):
        raise LogBroken(f"the stored tree does not match checkpoint {target.name}")
    return {
        "old_size": old,
        "old_root": old_root.hex(),
        "tree_size": target.size,
        "consistency_path": [base64.b64encode(p).decode() for p in path],
        "checkpoint": target.as_json(),
        "public_key": crypto.public_key_b64(),
    }
