"""Data-subject requests: receive, extend, run (export or erasure), and the documents
they produce (the archive with its signed manifest, the signed erasure receipt).

A request is a row (gdpr.models.SubjectRequest) and a job (gdpr.tasks.request_run: Celery
with Redis, in-process on the embedded default). The job runs every registered
provider (gdpr.providers); gdpr imports no app, so what an export holds and what an
erasure touches is what the apps registered.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import logging
import os
import secrets
import zipfile
from dataclasses import asdict
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from gdpr import audit, deadlines, information, providers, retention, signing
from gdpr.actions import AuditAction
from gdpr.errors import GdprError, GdprErrorCode
from gdpr.models import LegalHold, SubjectRequest
from gdpr.subjects import Subject
from gdpr.subjects import parse as parse_subject
from kernel.paths import rbee_home

log = logging.getLogger(__name__)

SCHEMA_VERSION = "1.0.0"
# A run that started less than this long ago is taken to be still running elsewhere.
RUNNING_LEASE = timedelta(minutes=10)
SCHEMA_ID = "https://rbee.dev/schemas/gdpr-export/1.0.0.json"


class ErasureIncomplete(RuntimeError):
    """A store failed: the request stays open (failed) and is run again."""


# --- who ---------------------------------------------------------------------------------


def subject_hash(subject: Subject) -> str:
    """A keyed hash of the subject's canonical form: finds a person's requests without
    naming them (keyed, so a dump cannot be searched with a list of e-mails)."""
    key = hashlib.sha256(b"rbee-gdpr-subject/" + settings.SECRET_KEY.encode()).digest()
    return hmac.new(key, str(subject).encode(), hashlib.sha256).hexdigest()


def pseudonym(subject: Subject) -> str:
    """What replaces the subject's name in records kept after an erasure."""
    return f"erased-{subject_hash(subject)[:20]}"


def exports_dir() -> Path:
    path = rbee_home() / "gdpr" / "exports"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def receipts_dir() -> Path:
    path = rbee_home() / "gdpr" / "receipts"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


# --- requests ------------------------------------------------------------------------------


def request_create(
    *,
    kind: str,
    subject: Subject,
    requested_by: str,
    requested_by_user_id: int | None = None,
    received_at: datetime | None = None,
    actor: Subject | str | None = None,
) -> SubjectRequest:
    """Record a request with its Art. 12(3) deadline (and its audit event, whose actor is
    the person who asked, sealed under their key, or `requested_by`). The job is sent
    once the row is committed (gdpr.tasks.request_run)."""
    if kind not in SubjectRequest.Kind.values:
        raise GdprError(GdprErrorCode.INVALID, f"kind is export or erase, not {kind!r}")
    received = received_at or timezone.now()
    if requested_by_user_id is not None:
        _within_daily_cap(requested_by_user_id)
    with transaction.atomic():
        req = SubjectRequest.objects.create(
            kind=kind,
            subject_hash=subject_hash(subject),
            subject_label=str(subject),
            requested_by=requested_by,
            requested_by_user_id=requested_by_user_id,
            received_at=received,
            due_at=deadlines.due(received),
        )
        audit.record(
            f"gdpr.request.{kind}",
            actor=actor or requested_by,
            subject=subject,
            data={"request": req.pk, "due_at": req.due_at.isoformat()},
            outcome="received",
        )
    return req


def _within_daily_cap(user_id: int) -> None:
    """A person may make RBEE_GDPR_REQUESTS_PER_DAY requests in 24 hours: each one scans
    every store (and on the embedded default runs inside the request), so a flood of them
    is refused as manifestly excessive (Art. 12(5)) instead of stalling the queen."""
    cap = int(getattr(settings, "RBEE_GDPR_REQUESTS_PER_DAY", 20))
    since = timezone.now() - timedelta(days=1)
    made = SubjectRequest.objects.filter(
        requested_by_user_id=user_id, received_at__gte=since
    ).count()
    if made >= cap:
        raise GdprError(
            GdprErrorCode.TOO_MANY,
            f"at most {cap} requests in 24 hours; try again later or ask the operator",
        )


def request_extend(
    *,
    request: SubjectRequest,
    months: int,
    reason: str,
    notified_at: datetime,
    actor: Subject | str = "cli",
) -> SubjectRequest:
    """Extend the deadline by one or two months (Art. 12(3)): only with a reason, told to
    the subject within the first month, never past three months after receipt."""
    reason = reason.strip()
    if not reason:
        raise GdprError(GdprErrorCode.INVALID, "an extension needs its reason", param="reason")
    if months not in (1, 2):
        raise GdprError(GdprErrorCode.INVALID, "extend by 1 or 2 months", param="months")
    if notified_at > request.due_at:
        raise GdprError(
            GdprErrorCode.INVALID,
            "the subject must be told of the extension within the first month",
            param="notified_at",
        )
    until = deadlines.add_months(request.deadline, months)
    if until > deadlines.latest_extension(request.received_at):
        raise GdprError(GdprErrorCode.INVALID, "at most two further months in all", param="months")
    with transaction.atomic():
        request.extended_until = until
        request.extension_reason = reason
        request.extension_notified_at = notified_at
        request.save(update_fields=["extended_until", "extension_reason", "extension_notified_at"])
        audit.record(
            "gdpr.request.extend",
            actor=actor,
            data={"request": request.pk, "until": until.isoformat(), "reason": reason},
        )
    return request


def request_retry(*, request: SubjectRequest, actor: Subject | str) -> SubjectRequest:
    """An operator's word to run a request again: one that failed, one still waiting to
    be received by a worker, or one whose worker went silent past its lease. Recorded in
    the audit log; the caller sends the job once this commits (gdpr.tasks.request_enqueue).
    A done request, or one a worker is running now, is refused."""
    with transaction.atomic():
        req = SubjectRequest.objects.select_for_update().get(pk=request.pk)
        running = (
            req.status == SubjectRequest.Status.RUNNING
            and req.started_at is not None
            and timezone.now() - req.started_at < RUNNING_LEASE
        )
        if req.status == SubjectRequest.Status.DONE or running:
            raise GdprError(
                GdprErrorCode.INVALID,
                f"request {req.pk} is {req.status}: only a waiting or failed one is run again",
            )
        audit.record(
            AuditAction.GDPR_REQUEST_RETRY,
            actor=actor,
            data={"request": req.pk, "kind": req.kind, "status": req.status},
        )
    return req


def request_run(*, request_id: int) -> SubjectRequest:
    """Run a request's job; idempotent (a done request is left as it is, a failed one is
    run again: every provider's export is a read and every erasure is idempotent)."""
    with transaction.atomic():
        req = SubjectRequest.objects.select_for_update().get(pk=request_id)
        if req.status == SubjectRequest.Status.DONE:
            return req
        if (
            req.status == SubjectRequest.Status.RUNNING
            and req.started_at is not None
            and timezone.now() - req.started_at < RUNNING_LEASE
        ):
            return req  # another worker runs it (a broker delivered it twice)
        if req.subject_label.startswith("erased-"):
            # The subject was erased while this request waited: nothing is left to do.
            req.status = SubjectRequest.Status.DONE
            req.completed_at = timezone.now()
            req.result = {"note": "the subject was erased before this request ran"}
            req.save(update_fields=["status", "completed_at", "result"])
            return req
        req.status = SubjectRequest.Status.RUNNING
        req.started_at = timezone.now()
        req.save(update_fields=["status", "started_at"])
    subject = parse_subject(req.subject_label)
    try:
        if req.kind == SubjectRequest.Kind.EXPORT:
            _export(req, subject)
        else:
            _erase(req, subject)
    except ErasureIncomplete:
        raise  # recorded by _erase: status, error, receipt and audit event
    except Exception as exc:
        log.exception("gdpr request %s failed", req.pk)
        req.status = SubjectRequest.Status.FAILED
        req.error = f"{type(exc).__name__}"[:500]
        req.save(update_fields=["status", "error"])
        audit.record(
            f"gdpr.request.{req.kind}",
            actor="system",
            data={"request": req.pk, "error": req.error},
            outcome="failed",
        )
        raise
    return req


# --- export --------------------------------------------------------------------------------


def _csv(records: list[dict[str, Any]]) -> str:
    columns: list[str] = []
    for r in records:
        columns += [k for k in r if k not in columns]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(columns)
    for r in records:
        writer.writerow(
            [
                v if isinstance(v, str) else json.dumps(v, default=str, ensure_ascii=False)
                for v in (r.get(c, "") for c in columns)
            ]
        )
    return out.getvalue()


def json_schema() -> dict[str, Any]:
    """The versioned JSON Schema of every data/<provider>.json in an archive."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "rbee personal data export: one store",
        "type": "object",
        "required": ["schema", "provider", "title", "categories", "records"],
        "properties": {
            "schema": {"const": SCHEMA_ID},
            "provider": {"type": "string", "pattern": "^[a-z_]+\\.[a-z_]+$"},
            "title": {"type": "string"},
            "categories": {"type": "array", "items": {"type": "string"}},
            "records": {"type": "array", "items": {"type": "object"}},
        },
        "additionalProperties": False,
    }


def export_build(
    *, subject: Subject, request_id: int | None = None
) -> tuple[bytes, dict[str, Any]]:
    """The archive (zip bytes) and its signed manifest: data/<store>.json and .csv for
    every registered provider, the JSON Schema, the Art. 15(1) information and the
    manifest (Ed25519 over the SHA-256 of every other file)."""
    files: dict[str, bytes] = {}
    counts: dict[str, int] = {}
    with providers.run_for(subject):
        for p in providers.registered():
            records = json.loads(json.dumps(p.export(subject), default=str))
            counts[p.name] = len(records)
            doc = {
                "schema": SCHEMA_ID,
                "provider": p.name,
                "title": p.title,
                "categories": list(p.categories),
                "records": records,
            }
            files[f"data/{p.name}.json"] = json.dumps(doc, indent=2, ensure_ascii=False).encode()
            files[f"data/{p.name}.csv"] = _csv(records).encode()
    files[f"schema/export-{SCHEMA_VERSION}.schema.json"] = json.dumps(
        json_schema(), indent=2
    ).encode()
    files["information.json"] = json.dumps(
        information.art15(), indent=2, ensure_ascii=False
    ).encode()
    files["README.txt"] = information.readme().encode()
    manifest = signing.sign_document(
        {
            "kind": "rbee.gdpr.export",
            "schema_version": SCHEMA_VERSION,
            "request": request_id,
            "subject": str(subject),
            "generated_at": timezone.now().isoformat(),
            "records": counts,
            "files": {
                name: hashlib.sha256(data).hexdigest() for name, data in sorted(files.items())
            },
        }
    )
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in sorted(files.items()):
            zf.writestr(name, data)
        zf.writestr("manifest.json", json.dumps(manifest, indent=2, ensure_ascii=False))
    return buf.getvalue(), manifest


def _export(req: SubjectRequest, subject: Subject) -> None:
    data, manifest = export_build(subject=subject, request_id=req.pk)
    name = f"export-{req.pk}-{secrets.token_hex(8)}.zip"
    path = exports_dir() / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    with transaction.atomic():
        req.status = SubjectRequest.Status.DONE
        req.completed_at = timezone.now()
        req.archive = name
        req.error = ""
        req.result = {"records": manifest["records"], "sha256": hashlib.sha256(data).hexdigest()}
        req.save(update_fields=["status", "completed_at", "archive", "error", "result"])
        audit.record(
            "gdpr.request.export",
            actor="system",
            subject=subject,  # sealed under the subject's key
            data={"request": req.pk, "records": sum(manifest["records"].values())},
            outcome="done",
        )


EXPORTS_CLASS = "gdpr.exports"


def export_days() -> int:
    """How long an export archive is kept: RBEE_GDPR_EXPORT_DAYS (30), or the operator's
    retention setting for the gdpr.exports class."""
    try:
        rc = retention.get(EXPORTS_CLASS)
    except retention.RetentionError:
        return int(getattr(settings, "RBEE_GDPR_EXPORT_DAYS", 30))
    return retention.period_days(rc, "")


def export_expires_at(req: SubjectRequest) -> datetime | None:
    if req.kind != SubjectRequest.Kind.EXPORT or req.completed_at is None:
        return None
    return req.completed_at + timedelta(days=export_days())


def _archive_delete(req: SubjectRequest, *, why: str) -> bool:
    """Delete an export's archive and record when and why (a later download is 410)."""
    removed = False
    if req.archive:
        path = exports_dir() / Path(req.archive).name
        if path.exists():
            path.unlink()
            removed = True
    req.archive = ""
    req.result = {
        **(req.result or {}),
        "archive_deleted_at": timezone.now().isoformat(),
        "archive_deleted": why,
    }
    req.save(update_fields=["archive", "result"])
    return removed


def archive_path(req: SubjectRequest) -> Path:
    """The archive of a done export, while it has not expired: past its days (or once
    deleted by the retention run or an erasure) it is gone, 410."""
    if req.kind == SubjectRequest.Kind.EXPORT and (req.result or {}).get("archive_deleted_at"):
        raise GdprError(GdprErrorCode.LINK_EXPIRED, "this export has expired and was deleted")
    if req.kind != SubjectRequest.Kind.EXPORT or not req.archive:
        raise GdprError(GdprErrorCode.NOT_READY, "the archive is not ready yet")
    expires = export_expires_at(req)
    if expires is not None and expires <= timezone.now():
        _archive_delete(req, why="expired")
        raise GdprError(GdprErrorCode.LINK_EXPIRED, "this export has expired and was deleted")
    path = exports_dir() / Path(req.archive).name
    if not path.is_file():
        raise GdprError(GdprErrorCode.NOT_FOUND, "not found")
    return path


def exports_purge(p: retention.Purge) -> retention.Purged:
    """Delete the export archives older than their days (gdpr.exports). A legal hold
    does not keep them: an archive is a copy handed to the requester, the records it
    copies stay where they are (and are held there)."""
    out = retention.Purged()
    rows = SubjectRequest.objects.filter(
        kind=SubjectRequest.Kind.EXPORT, completed_at__lt=p.cutoff()
    ).exclude(archive="")
    for req in rows:
        _archive_delete(req, why="expired")
        out.deleted += 1
    return out


def register_exports_class() -> None:
    """The export archives as a retention class (called from gdpr's ready())."""
    retention.register(
        retention.RecordClass(
            name=EXPORTS_CLASS,
            title="Export archives",
            purge=exports_purge,
            days=int(getattr(settings, "RBEE_GDPR_EXPORT_DAYS", 30)),
        )
    )


# --- erasure -------------------------------------------------------------------------------


def erase_run(*, subject: Subject, request_id: int | None = None) -> dict[str, Any]:
    """Erase the subject from every registered store, in erasure order (phase, name),
    and return the signed receipt. At the first store that fails the run stops: that
    store and the later ones are listed (failed, deferred), the request stays open,
    and running it again (idempotent) goes on from there."""
    holds = retention.holds_on(subject=subject)
    if holds:
        return _held_receipt(subject=subject, request_id=request_id, holds=holds)
    stores: list[dict[str, Any]] = []
    failed: list[str] = []
    with providers.run_for(subject):
        for p in providers.erase_order():
            if failed:
                # A later store may be how an earlier one finds the subject (the billing
                # e-mail leads to the Stripe customer; the request row says whom to run
                # for): after a failure nothing more is erased until the run is repeated.
                stores.append({"store": p.name, "title": p.title, "deferred": True})
                continue
            try:
                erased = p.erase(subject)
            except Exception as exc:
                log.exception("erasure provider %s failed", p.name)
                failed.append(p.name)
                stores.append({"store": p.name, "error": type(exc).__name__})
                continue
            entry = asdict(erased)
            entry["title"] = p.title
            entry["kept"] = [
                {"count": k.count, "ground": k.ground, "until": k.until.isoformat()}
                for k in erased.kept
            ]
            stores.append(entry)
    return signing.sign_document(
        {
            "kind": "rbee.gdpr.erasure-receipt",
            "request": request_id,
            "subject": pseudonym(subject),
            "erased_at": timezone.now().isoformat(),
            "outcome": "erased" if not failed else "incomplete",
            "complete": not failed,
            "failed": failed,
            "stores": stores,
        }
    )


HELD_GROUND = (
    "Art. 17(3)(e) GDPR: the records are needed for the establishment, exercise or "
    "defence of legal claims and are under a legal hold"
)


def _held_receipt(
    *, subject: Subject, request_id: int | None, holds: list[LegalHold]
) -> dict[str, Any]:
    """The signed answer to an erasure that a legal hold stops: nothing is erased, and
    it says why (Art. 12(4)). A hold is on every record of the subject (or of their
    tenant), not on some stores: which records are evidence is the hold's to say, and
    erasing the rest would cut the links between held records (a usage row's end user,
    the audit key that decrypts the held events). The holds are named by number and
    date, not by their reason (which may name a case or other people). Once every hold
    is released the subject can ask again."""
    return signing.sign_document(
        {
            "kind": "rbee.gdpr.erasure-receipt",
            "request": request_id,
            "subject": pseudonym(subject),
            "erased_at": None,
            "outcome": "held",
            "complete": True,  # the request is answered: nothing more will be done
            "failed": [],
            "not_erased": {
                "reason": "legal hold",
                "ground": HELD_GROUND,
                "holds": [
                    {
                        "hold": h.pk,
                        "on": "subject" if h.subject else "tenant",
                        "placed_at": h.placed_at.isoformat(),
                    }
                    for h in holds
                ],
                "then": "nothing was erased; ask again once the hold is released",
            },
            "stores": [
                {"store": p.name, "title": p.title, "held": True} for p in providers.erase_order()
            ],
        }
    )


def _erase(req: SubjectRequest, subject: Subject) -> None:
    receipt = erase_run(subject=subject, request_id=req.pk)
    name = f"receipt-{req.pk}.json"
    (receipts_dir() / name).write_text(json.dumps(receipt, indent=2, ensure_ascii=False))
    with transaction.atomic():
        req.refresh_from_db()
        req.archive = name
        req.result = receipt
        req.completed_at = timezone.now()
        if receipt["complete"]:
            req.status = SubjectRequest.Status.DONE
            req.error = ""
        else:
            req.status = SubjectRequest.Status.FAILED
            req.error = "stores failed: " + ", ".join(receipt["failed"])
        req.save(update_fields=["archive", "result", "completed_at", "status", "error"])
        # Names no one: the subject's key is gone (a subject here would make a new one).
        audit.record(
            "gdpr.request.erase",
            actor="system",
            data={
                "request": req.pk,
                "subject": receipt["subject"],
                "stores": len(receipt["stores"]),
                "failed": receipt["failed"],
                "outcome": receipt["outcome"],
            },
            outcome=(
                "held"
                if receipt["outcome"] == "held"
                else "done"
                if receipt["complete"]
                else "failed"
            ),
        )
    if not receipt["complete"]:
        raise ErasureIncomplete(req.error)


def requests_pseudonymise(*, subject: Subject) -> tuple[int, int]:
    """The subject's requests keep their rows (proof of compliance) but no longer name
    them; their export archives are deleted."""
    rows = SubjectRequest.objects.filter(subject_hash=subject_hash(subject))
    removed = 0
    for req in rows.exclude(archive="").filter(kind=SubjectRequest.Kind.EXPORT):
        removed += _archive_delete(req, why="erased")
    n = rows.exclude(subject_label=pseudonym(subject)).update(subject_label=pseudonym(subject))
    return n, removed


def link_token(*, request: SubjectRequest, user_id: int) -> str:
    """A download token for this requester only, valid RBEE_GDPR_LINK_SECONDS."""
    from django.core import signing as dj_signing

    return dj_signing.TimestampSigner(salt="rbee.gdpr.download").sign_object(
        {"r": request.pk, "u": user_id}
    )


RECEIPT_LINK_DAYS = 90


def receipt_token(*, request: SubjectRequest) -> str:
    """A token for an erasure's receipt, bound to the request and not to an account:
    whoever erased themself has no account left to sign in with. The receipt names only
    a pseudonym."""
    from django.core import signing as dj_signing

    return dj_signing.TimestampSigner(salt="rbee.gdpr.receipt").sign(str(request.pk))


def receipt_check(*, token: str) -> int:
    from django.core import signing as dj_signing

    try:
        return int(
            dj_signing.TimestampSigner(salt="rbee.gdpr.receipt").unsign(
                token, max_age=timedelta(days=RECEIPT_LINK_DAYS)
            )
        )
    except dj_signing.SignatureExpired as exc:
        raise GdprError(GdprErrorCode.LINK_EXPIRED, "this receipt link has expired") from exc
    except (dj_signing.BadSignature, ValueError) as exc:
        raise GdprError(GdprErrorCode.NOT_FOUND, "not found") from exc


def link_check(*, token: str, user_id: int) -> int:
    """The request id a download token names, if it is this user's and not expired."""
    from django.core import signing as dj_signing

    max_age = timedelta(seconds=getattr(settings, "RBEE_GDPR_LINK_SECONDS", 3600))
    try:
        body = dj_signing.TimestampSigner(salt="rbee.gdpr.download").unsign_object(
            token, max_age=max_age
        )
    except dj_signing.SignatureExpired as exc:
        raise GdprError(GdprErrorCode.LINK_EXPIRED, "this download link has expired") from exc
    except dj_signing.BadSignature as exc:
        raise GdprError(GdprErrorCode.NOT_FOUND, "not found") from exc
    if not isinstance(body, dict) or not hmac.compare_digest(str(body.get("u")), str(user_id)):
        raise GdprError(GdprErrorCode.NOT_FOUND, "not found")
    return int(body["r"])
