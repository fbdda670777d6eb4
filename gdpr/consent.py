"""The consent ledger (Art. 7 GDPR): grants and withdrawals, append-only.

Each record names the subject, the purpose, the SHA-256 of the exact text the subject
was shown (so the text can be proved later, and a changed text asks again), how it was
given (portal, API, CLI), who recorded it and when. Granting and withdrawing are one
call each (Art. 7(3): withdrawing is as easy as giving). The state at any past moment is
rebuilt from the ledger (`consent_state(at=...)`): the newest record per purpose at or
before that moment decides.

Subjects are portal users (`user:<e-mail>`, who record their own) and a tenant's end
users (`enduser:<tenant>:<id>`, whose consent the tenant records through the API).

Prompt and response retention is off by default: `prompt_retention_allowed` says yes
only under a recorded consent of the end user, or a tenant's contract setting.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from gdpr import audit, subjects
from gdpr.models import ConsentRecord
from gdpr.providers import Erased

PROMPT_RETENTION = "prompt_retention"
PRODUCT_EMAIL = "product_email"

# purpose -> what it is for (shown in exports and the record of processing)
PURPOSES: dict[str, str] = {
    PROMPT_RETENTION: "keeping prompts and responses for debugging, for a limited time",
    PRODUCT_EMAIL: "product news and offers by e-mail",
}

MECHANISMS = tuple(ConsentRecord.Mechanism.values)


class ConsentError(ValueError):
    """An unknown purpose or mechanism, or a grant without its text."""


def register_purpose(name: str, description: str) -> None:
    """Apps add their purposes (in their AppConfig.ready())."""
    PURPOSES[name] = description


def text_digest(text: str) -> str:
    """SHA-256 of the exact text shown, as UTF-8 (line endings as given)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class State:
    purpose: str
    granted: bool
    since: datetime | None  # the deciding record's time (None: never asked)
    text_sha256: str
    mechanism: str


def _check(purpose: str, mechanism: str) -> None:
    if purpose not in PURPOSES:
        raise ConsentError(f"unknown purpose {purpose!r} (known: {', '.join(sorted(PURPOSES))})")
    if mechanism not in MECHANISMS:
        raise ConsentError(f"unknown mechanism {mechanism!r} (one of {', '.join(MECHANISMS)})")


def _append(
    action: str,
    *,
    subject: subjects.Subject,
    purpose: str,
    mechanism: str,
    recorded_by: subjects.Subject | str,
    tenant_id: int | None,
    digest: str,
) -> ConsentRecord:
    _check(purpose, mechanism)
    with transaction.atomic():
        row = ConsentRecord.objects.create(
            subject=str(subject),
            tenant_id=tenant_id,
            purpose=purpose,
            action=action,
            text_sha256=digest,
            mechanism=mechanism,
            recorded_by=str(recorded_by),
            at=timezone.now(),
        )
        audit.record(
            f"consent.{action}",
            actor=recorded_by,
            tenant_id=tenant_id,
            subject=subject,
            data={"purpose": purpose, "mechanism": mechanism, "text_sha256": digest,
                  "record": row.pk},
        )  # fmt: skip
    return row


def consent_grant(
    *,
    subject: subjects.Subject,
    purpose: str,
    text: str,
    mechanism: str,
    recorded_by: subjects.Subject | str,
    tenant_id: int | None = None,
) -> ConsentRecord:
    """Record that `subject` consented to `purpose`, having been shown `text`."""
    if not text.strip():
        raise ConsentError("a grant records the exact text the subject agreed to")
    return _append(
        ConsentRecord.Action.GRANT,
        subject=subject,
        purpose=purpose,
        mechanism=mechanism,
        recorded_by=recorded_by,
        tenant_id=tenant_id,
        digest=text_digest(text),
    )


def consent_withdraw(
    *,
    subject: subjects.Subject,
    purpose: str,
    mechanism: str,
    recorded_by: subjects.Subject | str,
    tenant_id: int | None = None,
) -> ConsentRecord:
    """Record that `subject` withdrew consent to `purpose` (one call, no text needed)."""
    return _append(
        ConsentRecord.Action.WITHDRAW,
        subject=subject,
        purpose=purpose,
        mechanism=mechanism,
        recorded_by=recorded_by,
        tenant_id=tenant_id,
        digest="",
    )


def consent_history(*, subject: subjects.Subject) -> list[ConsentRecord]:
    return list(ConsentRecord.objects.filter(subject=str(subject)).order_by("at", "id"))


def consent_state(*, subject: subjects.Subject, at: datetime | None = None) -> dict[str, State]:
    """Every known purpose's state for `subject` at `at` (now by default)."""
    rows = ConsentRecord.objects.filter(subject=str(subject))
    if at is not None:
        rows = rows.filter(at__lte=at)
    latest: dict[str, ConsentRecord] = {}
    for r in rows.order_by("at", "id"):
        latest[r.purpose] = r
    out = {}
    for purpose in sorted({*PURPOSES, *latest}):
        last = latest.get(purpose)
        out[purpose] = State(
            purpose=purpose,
            granted=last is not None and last.action == ConsentRecord.Action.GRANT,
            since=last.at if last is not None else None,
            text_sha256=last.text_sha256 if last is not None else "",
            mechanism=last.mechanism if last is not None else "",
        )
    return out


def consent_given(*, subject: subjects.Subject, purpose: str, at: datetime | None = None) -> bool:
    state = consent_state(subject=subject, at=at).get(purpose)
    return state is not None and state.granted


def prompt_retention_allowed(
    *, tenant_contract: bool, end_user: subjects.Subject | None, at: datetime | None = None
) -> bool:
    """Whether a request's prompt and response may be kept: only under the tenant's
    contract setting (`tenant_contract`, the tenant's own choice as controller), or the
    end user's recorded consent to prompt_retention. Off by default: no end user named
    and no contract means no."""
    if tenant_contract:
        return True
    if end_user is None:
        return False
    return consent_given(subject=end_user, purpose=PROMPT_RETENTION, at=at)


# --- export and erasure providers (registered in gdpr's AppConfig.ready()) ---------------


def consents_export(subject: subjects.Subject) -> list[dict[str, Any]]:
    return [
        {
            "purpose": r.purpose,
            "purpose_description": PURPOSES.get(r.purpose, ""),
            "action": r.action,
            "text_sha256": r.text_sha256,
            "mechanism": r.mechanism,
            "recorded_by": r.recorded_by,
            "at": r.at.isoformat(),
        }
        for r in consent_history(subject=subject)
    ]


def consents_erase(subject: subjects.Subject) -> Erased:
    """Delete the subject's consent records; the audit events of each grant and
    withdrawal stay, their personal fields crypto-shredded with the subject's key."""
    with transaction.atomic():
        n, _ = ConsentRecord.objects.filter(subject=str(subject)).delete()
        # Records a subject made about others (a tenant admin's) name them as recorder.
        m = ConsentRecord.objects.filter(recorded_by=str(subject)).update(
            recorded_by="erased-subject"
        )
    return Erased(store="gdpr.consents", deleted=n, pseudonymised=m)


def register_provider() -> None:
    from gdpr import providers

    providers.register(
        providers.Provider(
            name="gdpr.consents",
            title="Consent records",
            categories=("consent decisions", "identifiers (e-mail or end-user id)"),
            purposes=("demonstrating consent (Art. 7(1) GDPR)",),
            retention="until erasure is requested or the account is closed",
            export=consents_export,
            erase=consents_erase,
        )
    )
