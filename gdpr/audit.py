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
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gdpr.subjects import Subject


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
) -> None:
    """Append one event (in the caller's transaction when there is one)."""
    raise NotImplementedError  # issue 12: the audit helper builds this


async def arecord(action: str, **kwargs: Any) -> None:
    """`record` from async code."""
    raise NotImplementedError


def events_for_subject(subject: Subject) -> list[dict[str, Any]]:
    """Every event about (or by) the subject, decrypted, oldest first (for an export)."""
    raise NotImplementedError


def shred(subject: Subject) -> bool:
    """Destroy the subject's key: their sealed fields no longer decrypt; the log still
    verifies. True when a key existed."""
    raise NotImplementedError
