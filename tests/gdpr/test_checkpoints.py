"""gdpr.ledger's checkpoints sign only extensions of the previous signed checkpoint, and
proofs no longer cost O(log size): the checkpointer refuses (LogBroken, nothing signed)
a stored tree that was edited under a signed checkpoint, whether in the chunk still
growing or in a complete, cached chunk; proofs read the cached chunk roots and at most
two chunks of leaves, agree with proofs over every leaf, and refuse a forged event;
consistency proofs between checkpoints verify (and the standalone verifier checks them,
and refuses a fork); and the proof endpoints are throttled per user."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.cache import cache
from django.db import connection
from django.test import Client

from gdpr import audit, crypto, ledger, merkle, subjects
from gdpr.models import AuditLeaf, AuditSubtree
from gdpr.sinks import MAGIC, Checkpoint, get_sink, signed_message
from tenants.services import membership_add, operator_create, tenant_create
from testkit.auditdb import superuser_sql

pytestmark = pytest.mark.django_db

TOOL = Path(__file__).resolve().parents[2] / "tools" / "rbee-verify-proof"
C = ledger.CHUNK


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings: Any) -> None:
    monkeypatch.setenv("RBEE_HOME", str(tmp_path))
    monkeypatch.delenv("RBEE_AUDIT_CHECKPOINT_DIR", raising=False)
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    audit._cache.clear()
    cache.clear()


def append(n: int, tenant: int | None = None) -> None:
    audit.record_many(
        audit.Event("key.create", actor="cli", tenant_id=tenant, data={"n": i}) for i in range(n)
    )


def leaves() -> list[bytes]:
    return [
        bytes(h) for h in AuditLeaf.objects.order_by("index").values_list("leaf_hash", flat=True)
    ]


def tamper(*statements: tuple[str, list[Any]]) -> None:
    """As a database superuser: the triggers off, the statements, the triggers back on."""
    before, after = superuser_sql(connection.vendor)
    with connection.cursor() as cur:
        for sql in before:
            cur.execute(sql)
        for sql, params in statements:
            cur.execute(sql, params)
        for sql in after:
            cur.execute(sql)


def forge(index: int) -> int:
    """Edit the event at `index` and rewrite its stored leaf hash to match (the review's
    attack). Its event id."""
    eid = AuditLeaf.objects.get(index=index).event_id
    tamper(("UPDATE gdpr_audit_event SET data = %s WHERE id = %s", ['{"n":"evil"}', eid]))
    with connection.cursor() as cur:
        cur.execute(ledger.SQL_EVENT, [eid])
        lh = merkle.leaf_hash(ledger.leaf_data(cur.fetchone()))
    tamper(('UPDATE gdpr_audit_leaf SET leaf_hash = %s WHERE "index" = %s', [lh, index]))
    return int(eid)


def test_an_edit_in_the_growing_chunk_is_refused_not_signed() -> None:
    append(30)
    first = ledger.checkpoint()
    assert first is not None and first.size == 30 and first.frontier
    forge(7)
    append(5)
    with pytest.raises(ledger.LogBroken, match="root of the first 30 stored events differs"):
        ledger.checkpoint()
    assert [cp.seq for cp in get_sink().all()] == [1]  # nothing signed


def test_an_edit_in_a_complete_cached_chunk_is_refused_not_signed() -> None:
    append(2 * C + 100)
    ledger.checkpoint()
    assert set(AuditSubtree.objects.values_list("chunk", flat=True)) == {0, 1}
    forged = forge(C + 5)  # chunk 1: its cached root still the signed one
    append(3)
    with pytest.raises(ledger.LogBroken, match=rf"indexes {C}\.\.{2 * C - 1}: the stored leaf"):
        ledger.checkpoint()
    assert len(get_sink().all()) == 1
    # The proof endpoint's path will not serve the forged event either.
    with pytest.raises(ledger.LogBroken, match="does not match checkpoint #1"):
        ledger.proof(event_id=forged)


def test_a_rewritten_cached_root_is_refused() -> None:
    append(C + 10)
    ledger.checkpoint()
    forge(3)
    tamper(("UPDATE gdpr_audit_subtree SET hash = %s WHERE chunk = 0", [merkle.root(leaves()[:C])]))
    append(1)
    with pytest.raises(ledger.LogBroken, match="differs from the signed one"):
        ledger.checkpoint()


def test_checkpoints_extend_the_signed_frontier_and_fill_the_cache() -> None:
    append(C - 1)
    a = ledger.checkpoint()
    append(2)  # completes chunk 0
    b = ledger.checkpoint()
    append(3 * C)
    c = ledger.checkpoint()
    assert a and b and c
    hashes = leaves()
    for cp in (a, b, c):
        assert cp.root == merkle.root(hashes[: cp.size])
        assert cp.frontier == tuple(merkle.Stream.from_frontier(cp.size, cp.frontier).frontier())
    cached = dict(AuditSubtree.objects.values_list("chunk", "hash"))
    assert sorted(cached) == list(range((C + 1 + 3 * C) // C))
    for k, h in cached.items():
        assert bytes(h) == merkle.root(hashes[k * C : (k + 1) * C])
    assert ledger.verify().checkpoints == 3


def test_a_checkpoint_whose_frontier_was_altered_is_refused(tmp_path: Path) -> None:
    append(12)
    cp = ledger.checkpoint()
    assert cp is not None
    path = get_sink().path / f"{cp.seq:010d}.json"  # type: ignore[attr-defined]
    doc = json.loads(path.read_text())
    doc["frontier"][0] = "00" * 32
    path.chmod(0o600)
    path.write_text(json.dumps(doc))
    append(1)
    with pytest.raises(ledger.LogBroken, match="frontier or leaf files do not make"):
        ledger.checkpoint()


def test_proofs_read_two_chunks_and_agree_with_the_full_tree(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    append(3 * C + 17)
    ledger.checkpoint()
    hashes = leaves()
    reads: list[tuple[int, int]] = []
    real = ledger._leaf_hashes

    def counted(start: int, stop: int):  # type: ignore[no-untyped-def]
        reads.append((start, stop))
        return real(start, stop)

    monkeypatch.setattr(ledger, "_leaf_hashes", counted)
    n = len(hashes)
    for index in (0, 5, C - 1, C, 2 * C + 3, 3 * C, n - 1):
        reads.clear()
        eid = AuditLeaf.objects.get(index=index).event_id
        p = ledger.proof(event_id=eid)
        path = [base64.b64decode(x) for x in p["audit_path"]]
        assert path == merkle.inclusion_proof(index, hashes)
        assert sum(b - a for a, b in reads) <= 2 * C, reads
    for old in (1, 2, C - 1, C, C + 1, 2 * C, n - 1, n):
        reads.clear()
        body = ledger.consistency(old=old)
        assert [base64.b64decode(x) for x in body["consistency_path"]] == (
            merkle.consistency_proof(old, hashes)
        )
        assert bytes.fromhex(body["old_root"]) == merkle.root(hashes[:old])
        assert sum(b - a for a, b in reads) <= 2 * C, reads


def verifier(tmp: Path, doc: dict[str, Any], *extra: str) -> subprocess.CompletedProcess[str]:
    f = tmp / "answer.json"
    f.write_text(json.dumps(doc))
    return subprocess.run(
        [sys.executable, "-I", str(TOOL), str(f), *extra],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp,
    )


def test_consistency_endpoint_and_the_verifier(tmp_path: Path, settings: Any) -> None:
    acme = tenant_create(name="acme")
    alice = User.objects.create_user("alice", "alice@acme.example", "pw")
    membership_add(tenant=acme, user=alice, role="member")
    loner = User.objects.create_user("loner", "loner@x.example", "pw")
    auditor = operator_create(username="aud", password="pw", areas=["audit"], email="a@o.example")
    fleet = operator_create(username="flt", password="pw", areas=["fleet"], email="f@o.example")
    c_alice, c_aud = Client(), Client()
    c_alice.force_login(alice)
    c_aud.force_login(auditor)

    assert c_alice.get("/gdpr/audit/consistency?from=1").status_code == 409  # none yet
    append(40, acme.pk)
    kept = ledger.checkpoint()
    assert kept is not None
    append(C, acme.pk)
    ledger.checkpoint()

    r = c_alice.get(f"/gdpr/audit/consistency?from={kept.size}")
    assert r.status_code == 200, r.content
    body = r.json()
    assert body["old_size"] == kept.size and body["old_root"] == kept.root.hex()
    (tmp_path / "kept.json").write_text(json.dumps(kept.as_json()))
    ok = verifier(
        tmp_path, body, "--since", str(tmp_path / "kept.json"), "--pubkey", crypto.public_key_b64()
    )
    assert ok.returncode == 0, ok.stderr
    assert f"extends the one of {kept.size} events you kept" in ok.stdout
    # A customer who kept a checkpoint of another (forked) log of that size, signed by
    # the same key: refused.
    fork_root = bytes(32)
    when = kept.time
    fork = Checkpoint(
        seq=kept.seq,
        size=kept.size,
        root=fork_root,
        time=when,
        prev_size=0,
        signature=crypto.signing_key().sign(signed_message(kept.size, fork_root, when)),
        public_key=crypto.public_key_b64(),
    )
    (tmp_path / "fork.json").write_text(json.dumps(fork.as_json()))
    bad = verifier(tmp_path, body, "--since", str(tmp_path / "fork.json"))
    assert bad.returncode == 1 and "forked or rewritten" in bad.stderr, bad.stderr
    # A flipped path entry, or no kept checkpoint: refused.
    flipped = {
        **body,
        "consistency_path": [base64.b64encode(bytes(32)).decode(), *body["consistency_path"][1:]],
    }
    bad = verifier(tmp_path, flipped, "--since", str(tmp_path / "kept.json"))
    assert bad.returncode == 1 and "forked or rewritten" in bad.stderr, bad.stderr
    assert "pass it with --since" in verifier(tmp_path, body).stderr
    assert json.loads((tmp_path / "kept.json").read_text())["format"] == MAGIC

    # to= an earlier checkpoint; who may ask; bad input.
    r = c_aud.get(f"/gdpr/audit/consistency?from=3&to={kept.size}")
    assert r.status_code == 200 and r.json()["tree_size"] == kept.size
    for who in (loner, fleet):
        c = Client()
        c.force_login(who)
        assert c.get("/gdpr/audit/consistency?from=1").status_code == 404
    assert Client().get("/gdpr/audit/consistency?from=1").status_code in (401, 403)
    for q in (
        "",
        "?from=0",
        "?from=x",
        "?from=-1",
        f"?from={2**70}",
        "?from=1&to=7",
        f"?from={kept.size + C + 1}",
    ):
        r = c_alice.get(f"/gdpr/audit/consistency{q}")
        assert r.status_code == 400, (q, r.status_code, r.content)


def test_proofs_are_throttled_per_user(settings: Any) -> None:
    settings.RBEE_AUDIT_PROOF_RATE = "3/min"
    acme = tenant_create(name="acme")
    alice = User.objects.create_user("alice", "alice@acme.example", "pw")
    membership_add(tenant=acme, user=alice, role="member")
    bob = User.objects.create_user("bob", "bob@acme.example", "pw")
    membership_add(tenant=acme, user=bob, role="member")
    eid = audit.record("key.create", actor=subjects.user("alice@acme.example"), tenant_id=acme.pk)
    ledger.checkpoint()
    a, b = Client(), Client()
    a.force_login(alice)
    b.force_login(bob)
    codes = [a.get(f"/gdpr/audit/{eid}/proof").status_code for _ in range(3)]
    assert codes == [200, 200, 200]
    r = a.get("/gdpr/audit/consistency?from=1")
    assert r.status_code == 429 and int(r["Retry-After"]) > 0, r.content
    assert a.get(f"/gdpr/audit/{eid}/proof").status_code == 429
    assert b.get(f"/gdpr/audit/{eid}/proof").status_code == 200  # per user


def test_a_checkpoint_from_before_frontiers_and_an_empty_cache_are_rebuilt() -> None:
    """Upgrading: the latest checkpoint has no frontier (rebuilt from the sink's leaf files)
    and no chunk roots are cached (computed once, checked against the signed root, stored)."""
    append(C + 50)
    cp = ledger.checkpoint()
    assert cp is not None
    path = get_sink().path / f"{cp.seq:010d}.json"  # type: ignore[attr-defined]
    doc = json.loads(path.read_text())
    del doc["frontier"]
    path.chmod(0o600)
    path.write_text(json.dumps(doc))
    AuditSubtree.objects.all().delete()
    append(C)
    nxt = ledger.checkpoint()
    assert nxt is not None and nxt.root == merkle.root(leaves())
    assert sorted(AuditSubtree.objects.values_list("chunk", flat=True)) == [0, 1]
    # And an edit is still refused on that path.
    forge(C + 10)
    append(1)
    AuditSubtree.objects.all().delete()
    with pytest.raises(ledger.LogBroken, match="differs from the signed one"):
        ledger.checkpoint()
