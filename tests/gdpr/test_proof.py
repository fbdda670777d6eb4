"""GET /gdpr/audit/<id>/proof and tools/rbee-verify-proof: a member of the event's tenant
(or an audit operator) gets an inclusion proof that the standalone verifier accepts, and
one flipped byte anywhere in it makes the verifier fail; anyone else gets 404; an event
not yet checkpointed gets 409 with Retry-After."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from gdpr import audit, crypto, ledger, subjects
from tenants.services import membership_add, operator_create, tenant_create

pytestmark = pytest.mark.django_db

TOOL = Path(__file__).resolve().parents[2] / "tools" / "rbee-verify-proof"


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings: Any) -> None:
    monkeypatch.setenv("RBEE_HOME", str(tmp_path))
    monkeypatch.delenv("RBEE_AUDIT_CHECKPOINT_DIR", raising=False)
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    audit._cache.clear()


def login(user: User) -> Client:
    c = Client()
    c.force_login(user)
    return c


def verifier(proof: dict[str, Any], tmp: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    f = tmp / "proof.json"
    f.write_text(json.dumps(proof))
    # No rbee on the path and no Django settings: the tool stands alone.
    return subprocess.run(
        [sys.executable, "-I", str(TOOL), str(f), *extra],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp,
    )


def flip(b64: str, at: int) -> str:
    raw = bytearray(base64.b64decode(b64))
    raw[at % len(raw)] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


def test_members_get_proofs_the_standalone_verifier_checks(tmp_path: Path) -> None:
    acme, bolt = tenant_create(name="acme"), tenant_create(name="bolt")
    alice = User.objects.create_user("alice", "alice@acme.example", "pw")
    membership_add(tenant=acme, user=alice, role="member")
    bob = User.objects.create_user("bob", "bob@bolt.example", "pw")
    membership_add(tenant=bolt, user=bob, role="owner")
    auditor = operator_create(username="aud", password="pw", areas=["audit"], email="a@ops.example")
    fleet = operator_create(username="flt", password="pw", areas=["fleet"], email="f@ops.example")
    ids = [
        audit.record(
            "key.create",
            actor=subjects.user("alice@acme.example"),
            tenant_id=acme.pk if i % 2 else bolt.pk,
            data={"n": i},
        )
        for i in range(11)
    ]
    ledger.checkpoint()
    late = audit.record("key.revoke", actor="cli", tenant_id=acme.pk)
    mine = ids[7]  # acme's

    r = login(alice).get(f"/gdpr/audit/{mine}/proof")
    assert r.status_code == 200, r.content
    proof = r.json()
    assert proof["leaf_index"] == 7 and proof["tree_size"] == 11
    assert proof["public_key"] == crypto.public_key_b64()
    assert json.loads(base64.b64decode(proof["event"]))["id"] == mine

    ok = verifier(proof, tmp_path, "--pubkey", crypto.public_key_b64())
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith(f"OK: event {mine} (key.create, ") and "leaf 7 of" in ok.stdout

    # One flipped byte, anywhere that matters, and it fails.
    bad_event = {**proof, "event": flip(proof["event"], 40)}
    bad_path = {**proof, "audit_path": [flip(proof["audit_path"][1], 3), *proof["audit_path"][2:]]}
    bad_path["audit_path"].insert(0, proof["audit_path"][0])
    cp = proof["checkpoint"]
    bad_sig = {**proof, "checkpoint": {**cp, "signature": flip(cp["signature"], 9)}}
    bad_root = {
        **proof,
        "checkpoint": {**cp, "root": ("0" if cp["root"][0] != "0" else "1") + cp["root"][1:]},
    }
    bad_index = {**proof, "leaf_index": 6}
    for broken, why in [
        (bad_event, "do not lead to the signed root"),
        (bad_path, "do not lead to the signed root"),
        (bad_sig, "signature does not verify"),
        (bad_root, "signature does not verify"),
        (bad_index, "do not lead to the signed root"),
    ]:
        res = verifier(broken, tmp_path)
        assert res.returncode == 1 and why in res.stderr, (why, res.stderr)
    other_key = verifier(proof, tmp_path, "--pubkey", base64.b64encode(b"k" * 32).decode())
    assert other_key.returncode == 1 and "another key" in other_key.stderr

    # Who may ask.
    assert login(auditor).get(f"/gdpr/audit/{mine}/proof").status_code == 200
    assert login(bob).get(f"/gdpr/audit/{ids[8]}/proof").status_code == 200  # bolt's own
    for who in (bob, fleet):
        r = login(who).get(f"/gdpr/audit/{mine}/proof")
        assert r.status_code == 404, (who, r.content)
    gone = login(alice).get("/gdpr/audit/999999/proof")
    assert gone.status_code == 404
    assert login(alice).get(f"/gdpr/audit/{2**63}/proof").status_code == 404
    assert Client().get(f"/gdpr/audit/{mine}/proof").status_code in (401, 403)

    # Not in a checkpoint yet.
    r = login(alice).get(f"/gdpr/audit/{late}/proof")
    assert r.status_code == 409 and int(r["Retry-After"]) > 0
    assert "not in a signed checkpoint yet" in r.json()["detail"]
    ledger.checkpoint()
    r = login(alice).get(f"/gdpr/audit/{late}/proof")
    assert r.status_code == 200 and r.json()["tree_size"] == 12
    assert verifier(r.json(), tmp_path).returncode == 0
