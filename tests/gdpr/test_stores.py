"""The files store (gdpr.files) reaches only the log files rbee writes, and only the
lines that name the subject as whole tokens: the security review's attacks (C1) are
replayed here. A tenant admin chooses the end-user id they export or erase, so the id
is attacker-controlled: another tenant's log line, the operator's default API key, a
signed audit checkpoint must be neither exported nor changed, and `rbee audit verify`
(gdpr.ledger.verify, what the command runs) still passes after the erasure."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from gdpr import audit, ledger, services, sinks, stores, subjects
from gdpr.models import SubjectRequest

pytestmark = pytest.mark.django_db(transaction=True)

DEFAULT_KEY = "sk-rbee-0a1b2c3d4e5f60718293a4b5c6d7e8f9"


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings: Any) -> Path:
    """RBEE_HOME as `rbee up` leaves it (the operator key, the queen's log), with the
    operator's log directory, which (carelessly) also names RBEE_HOME itself."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("RBEE_HOME", str(home))
    monkeypatch.delenv("RBEE_AUDIT_CHECKPOINT_DIR", raising=False)
    logs = tmp_path / "var-log-rbee"
    logs.mkdir()
    settings.RBEE_LOG_DIRS = [str(logs), str(home)]
    audit._cache.clear()
    (home / "default-api-key").write_text(DEFAULT_KEY + "\n")
    return home


def _logs(home: Path, settings: Any) -> Path:
    return Path(settings.RBEE_LOG_DIRS[0])


def _digests(*roots: Path) -> dict[str, str]:
    return {
        str(p): hashlib.sha256(p.read_bytes()).hexdigest()
        for root in roots
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _run(kind: str, subject: subjects.Subject) -> SubjectRequest:
    req = services.request_create(kind=kind, subject=subject, requested_by="test")
    return services.request_run(request_id=req.pk)


def _erase(subject: subjects.Subject) -> dict[str, Any]:
    req = _run("erase", subject)
    assert req.status == SubjectRequest.Status.DONE, req.error
    return {s["store"]: s for s in req.result["stores"]}["gdpr.files"]


def test_another_tenants_line_is_not_an_end_user_of_mine(home: Path, settings: Any) -> None:
    """Mallory, admin of acme, asks for `acme:globex`: globex's lines are not hers."""
    other = "2026-12-05 INFO inference: tenant=globex user=alice model=m tokens=12\n"
    mine = "2026-12-05 INFO inference: tenant=acme user=globex model=m tokens=3\n"
    (home / "queen.log").write_text(other + mine)
    (_logs(home, settings) / "rbee.log").write_text(other)
    subject = subjects.parse("acme:globex")

    lines = stores.files_export(subject)
    assert [(r["file"], r["text"]) for r in lines] == [("queen.log", mine.rstrip("\n"))]

    erased = _erase(subject)
    assert erased["pseudonymised"] == 1
    text = (home / "queen.log").read_text()
    assert text.startswith(other) and "user=globex" not in text
    assert (_logs(home, settings) / "rbee.log").read_text() == other


def test_the_default_api_key_is_neither_exported_nor_erased(home: Path, settings: Any) -> None:
    """`acme:sk-rbee` once returned RBEE_HOME/default-api-key and then wiped it."""
    (home / "queen.log").write_text(f"tenant=acme created key {DEFAULT_KEY[:14]}...\n")
    before = _digests(home, _logs(home, settings))
    subject = subjects.parse("acme:sk-rbee")

    assert stores.files_export(subject) == []
    exported = _run("export", subject)
    archive = services.archive_path(exported).read_bytes()
    assert DEFAULT_KEY.encode() not in archive
    assert _erase(subject)["pseudonymised"] == 0
    after = _digests(home, _logs(home, settings))
    assert {k: after.get(k) for k in before} == before  # (the run adds its own keys)
    assert (home / "default-api-key").read_text() == DEFAULT_KEY + "\n"


def test_a_checkpoint_is_neither_exported_nor_erased_and_the_log_verifies(
    home: Path, settings: Any
) -> None:
    for i in range(5):
        audit.record("login.success", actor=f"account:{i}")
    ledger.sequence()
    cp = ledger.checkpoint()
    assert cp is not None
    cp_dir = sinks.default_dir()
    assert cp_dir.is_relative_to(home) and any(cp_dir.iterdir())
    before = _digests(cp_dir)
    piece = cp.root.hex()[:6]
    sig_piece = json.loads((cp_dir / f"{cp.seq:010d}.json").read_text())["signature"][:8]
    # Even a log line that names the checkpoint as a whole token stays: it does not
    # name the tenant.
    (home / "queen.log").write_text(f"checkpoint {cp.root.hex()} written\n")

    for uid in (piece, cp.root.hex(), sig_piece):
        subject = subjects.end_user("acme", uid)
        assert stores.files_export(subject) == []
        _erase(subject)

    assert _digests(cp_dir) == before
    assert (home / "queen.log").read_text() == f"checkpoint {cp.root.hex()} written\n"
    verified = ledger.verify()
    assert verified.checkpoints == 1 and verified.size >= 5


def test_identifiers_match_as_whole_tokens_and_emails_in_any_case(
    home: Path, settings: Any
) -> None:
    (home / "queen.log").write_text(
        "tenant=acme user=robert asked\n"  # 1: robert
        "tenant=acme user=roberta asked\n"  # no: a longer id
        "tenant=acme user=robert-2 asked\n"  # no: another id
        "tenant=acme user=xrobert asked\n"  # no
        "tenant=acmeco user=robert asked\n"  # no: another tenant whose name contains acme
        "user=robert asked, tenant unknown\n"  # no: the tenant is not named
        "acme:robert. done\n"  # 7: robert, the sentence's full stop is not part of it
    )
    rotated = home / "logs"
    rotated.mkdir()
    (rotated / "queen.log.1").write_text(
        "invited Pat.Smith@Example.ORG to acme\n"  # the e-mail, another case
        "invited xpat.smith@example.org\n"  # no: another address
        "invited pat.smith@example.org.evil\n"  # no: another domain
    )
    (rotated / "notes.txt").write_text("pat.smith@example.org\n")  # not a log: never read

    robert = stores.files_export(subjects.end_user("acme", "robert"))
    assert [(r["file"], r["line"]) for r in robert] == [("queen.log", 1), ("queen.log", 7)]
    pat = stores.files_export(subjects.user("pat.smith@example.org"))
    assert [(r["file"], r["line"]) for r in pat] == [("logs/queen.log.1", 1)]

    assert _erase(subjects.user("pat.smith@example.org"))["pseudonymised"] == 1
    assert (rotated / "notes.txt").read_text() == "pat.smith@example.org\n"
    assert "xpat.smith@example.org" in (rotated / "queen.log.1").read_text()


def test_ids_too_short_or_generic_are_skipped_and_the_receipt_says_so(
    home: Path, settings: Any
) -> None:
    text = "tenant=acme took 1234 ms\ntenant=acme user=admin signed in\ntenant=acme user=ab\n"
    (home / "queen.log").write_text(text)
    for uid in ("1234", "admin", "ab"):
        subject = subjects.end_user("acme", uid)
        assert stores.files_export(subject) == []
        erased = _erase(subject)
        assert erased["pseudonymised"] == 0
        assert any("not searched" in n for n in erased["notes"]), erased["notes"]
    assert (home / "queen.log").read_text() == text
    # A long enough all-digit id is searched.
    (home / "queen.log").write_text("tenant=acme user=12345678 ok\n")
    assert len(stores.files_export(subjects.end_user("acme", "12345678"))) == 1
