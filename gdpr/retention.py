"""Retention by record class and jurisdiction, with legal hold.

    from gdpr import retention
    retention.register(retention.RecordClass(
        name="billing.usage", title="Usage records", rule=retention.BOOKS,
        purge=usage_purge))

Like the export and erasure providers, every app registers its record classes in its
AppConfig.ready() and gdpr imports no app. A class says how long its records are kept
(a fixed period, or a rule that depends on the tenant's jurisdiction: books, invoices)
and how to purge what is older; gdpr hands its purge callable a `Purge` that knows the
cutoff per jurisdiction and the legal holds, so a held tenant's or subject's records are
never purged. `run()` purges every class (periodic: Celery beat with Redis, a thread of
the queen on the embedded default; `rbee gdpr retention run`) and records the run as an
audit event; changing a setting or a hold is an audit event too.

The audit log itself is kept 7 years and never purged by the application: its table
refuses deletes, and its class reports how many events are past their period.

The periods in force are the operator's setting (RetentionSetting) for the class and
the tenant's jurisdiction, else for the class, else the statutory period of the
jurisdiction, else the class's default (RBEE_RETENTION_DEFAULT_DAYS for books and
invoices). A setting for books or invoices may not be shorter than the law's period.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from gdpr import audit, subjects
from gdpr.actions import AuditAction
from gdpr.models import LegalHold, RetentionSetting

logger = logging.getLogger("gdpr.retention")

YEAR = 365  # days; a year's period is counted generously (see `years`)


def years(n: int) -> int:
    """n years in days, counting every leap day they could hold (never a day short)."""
    return n * YEAR + (n + 3) // 4


# Rules: what a class's period depends on.
FIXED = "fixed"  # the class's own `days`
BOOKS = "books"  # accounting records (usage): the tenant's jurisdiction's books period
INVOICES = "invoices"  # invoices: the tenant's jurisdiction's invoice period

# Statutory minimum periods (days) by ISO country code. Sources: DE § 147 AO / § 257 HGB
# (books 10 years; invoices 8 years since 2025), FR Code de commerce L123-22 (10), IT
# Codice civile art. 2220 (10), BE (10, since 2019), NL Algemene wet inzake rijksbelastingen
# art. 52 (7).
STATUTORY: dict[str, dict[str, int]] = {
    BOOKS: {"DE": years(10), "FR": years(10), "IT": years(10), "BE": years(10), "NL": years(7)},
    INVOICES: {"DE": years(8), "FR": years(10), "IT": years(10), "BE": years(10), "NL": years(7)},
}
AUDIT_DAYS = years(7)  # the seed's promise


class RetentionError(ValueError):
    """A setting or hold that cannot be: an unknown class, a period shorter than the law's."""


@dataclass(frozen=True)
class Holds:
    tenants: frozenset[int] = frozenset()
    subjects: frozenset[str] = frozenset()  # canonical subject strings

    def held(self, *, tenant_id: int | None = None, subject: str = "") -> bool:
        return (tenant_id is not None and tenant_id in self.tenants) or (
            bool(subject) and subject in self.subjects
        )

    def end_users(self, tenant_name: str) -> list[str]:
        """The held end users of one tenant (their `user` field values)."""
        prefix = f"{subjects.END_USER}:{tenant_name}:"
        return [s[len(prefix) :] for s in self.subjects if s.startswith(prefix)]


@dataclass(frozen=True)
class Purge:
    """What a class's purge callable is given: the time of the run, the cutoff to use
    per jurisdiction (records created before it are past their period) and the holds."""

    record_class: str
    now: datetime
    holds: Holds
    days_for: Callable[[str], int]  # jurisdiction -> days

    def cutoff(self, jurisdiction: str = "") -> datetime:
        return self.now - timedelta(days=self.days_for(jurisdiction))

    def year_end_cutoff(self, jurisdiction: str = "") -> datetime:
        """For books and invoices: the legal period starts at the end of the calendar year
        the record belongs to (e.g. § 147(4) AO, art. L123-22 code de commerce), so a record
        of year Y may go once Y's last day plus the period has passed. Records dated before
        the returned moment (1 January of the cutoff's year) are past their period."""
        c = self.cutoff(jurisdiction)
        return c.replace(month=1, day=1, hour=0, minute=0, second=0, microsecond=0)


@dataclass
class Purged:
    """What one class's purge did."""

    deleted: int = 0
    held: int = 0  # past their period but kept under a legal hold
    kept: int = 0  # past their period but kept for another reason (notes say which)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RecordClass:
    name: str  # "<app>.<records>", e.g. "billing.usage"
    title: str
    purge: Callable[[Purge], Purged]  # delete what is past its period; idempotent
    rule: str = FIXED
    days: int = 0  # FIXED: the period; BOOKS/INVOICES: unused (the default setting)
    floor: int = 0  # a setting may not be shorter (the audit log: 7 years)


_classes: dict[str, RecordClass] = {}


def register(record_class: RecordClass) -> None:
    """Register (or replace, by name) a record class."""
    _classes[record_class.name] = record_class


def registered() -> list[RecordClass]:
    return [_classes[k] for k in sorted(_classes)]


def get(name: str) -> RecordClass:
    """A registered class by name (RetentionError if none)."""
    return _get(name)


def _get(name: str) -> RecordClass:
    try:
        return _classes[name]
    except KeyError:
        known = ", ".join(sorted(_classes)) or "none"
        raise RetentionError(f"no record class {name!r} (registered: {known})") from None


def _default_days(rc: RecordClass) -> int:
    if rc.rule in (BOOKS, INVOICES):
        return int(getattr(settings, "RBEE_RETENTION_DEFAULT_DAYS", years(10)))
    return rc.days


def _statutory(rc: RecordClass, jurisdiction: str) -> int:
    return STATUTORY.get(rc.rule, {}).get(jurisdiction, 0)


def period_days(
    rc: RecordClass, jurisdiction: str, overrides: Mapping[tuple[str, str], int] | None = None
) -> int:
    """The days that `rc`'s records of a tenant under `jurisdiction` are kept."""
    if overrides is None:
        overrides = _settings()
    for key in ((rc.name, jurisdiction), (rc.name, "")):
        if key in overrides:
            # A general setting never cuts below a jurisdiction's statutory period.
            return max(overrides[key], _statutory(rc, jurisdiction), rc.floor)
    return max(_statutory(rc, jurisdiction) or _default_days(rc), rc.floor)


def _settings() -> dict[tuple[str, str], int]:
    return {
        (s.record_class, s.jurisdiction): s.days
        for s in RetentionSetting.objects.all().only("record_class", "jurisdiction", "days")
    }


# --- selectors -------------------------------------------------------------------------


def holds_active() -> Holds:
    rows = LegalHold.objects.filter(released_at__isnull=True).values_list("tenant_id", "subject")
    return Holds(
        tenants=frozenset(t for t, s in rows if t is not None and not s),
        subjects=frozenset(s for _, s in rows if s),
    )


# How gdpr learns a tenant's id from its name (an end user is `enduser:<tenant name>:..`,
# a hold is on a tenant's id) without importing the tenants app: it registers this.
_tenant_id_of: Callable[[str], int | None] | None = None


def register_tenant_lookup(lookup: Callable[[str], int | None]) -> None:
    """Register how a tenant's name becomes its id (tenants does, in its ready())."""
    global _tenant_id_of
    _tenant_id_of = lookup


def holds_on(*, subject: subjects.Subject) -> list[LegalHold]:
    """The active holds that keep a subject's records: on the subject itself and, for a
    tenant's end user, on their tenant. An erasure keeps what they hold (Art. 17(3)(e))."""
    from django.db.models import Q

    q = Q(subject=str(subject))
    if subject.kind == subjects.END_USER and _tenant_id_of is not None:
        tenant_id = _tenant_id_of(subject.tenant)
        if tenant_id is not None:
            q |= Q(tenant_id=tenant_id, subject="")
    return list(LegalHold.objects.filter(q, released_at__isnull=True).order_by("placed_at", "id"))


def hold_list(*, include_released: bool = False) -> list[LegalHold]:
    qs = LegalHold.objects.order_by("placed_at", "id")
    if not include_released:
        qs = qs.filter(released_at__isnull=True)
    return list(qs)


def policy_table() -> list[dict[str, Any]]:
    """Every class with its period per jurisdiction that has a rule or a setting."""
    overrides = _settings()
    out = []
    for rc in registered():
        codes = sorted(
            {*STATUTORY.get(rc.rule, {}), *(j for (c, j) in overrides if c == rc.name and j)}
        )
        out.append(
            {
                "class": rc.name,
                "title": rc.title,
                "rule": rc.rule,
                "default_days": period_days(rc, "", overrides),
                "by_jurisdiction": {j: period_days(rc, j, overrides) for j in codes},
            }
        )
    return out


# --- services --------------------------------------------------------------------------


def retention_set(
    *, record_class: str, days: int, jurisdiction: str = "", actor: subjects.Subject | str
) -> RetentionSetting:
    """Set a class's period (for one jurisdiction, or "" for the rest). Refused when it
    is shorter than the law's period for that jurisdiction or the class's floor."""
    rc = _get(record_class)
    jurisdiction = jurisdiction.strip().upper()
    if jurisdiction and not (len(jurisdiction) == 2 and jurisdiction.isalpha()):
        raise RetentionError(f"not a country code: {jurisdiction!r}")
    minimum = max(_statutory(rc, jurisdiction), rc.floor)
    if days < 1 or days < minimum:
        raise RetentionError(
            f"{record_class} must be kept at least {max(minimum, 1)} days"
            + (f" in {jurisdiction}" if jurisdiction else "")
        )
    with transaction.atomic():
        old = (
            RetentionSetting.objects.filter(record_class=rc.name, jurisdiction=jurisdiction)
            .values_list("days", flat=True)
            .first()
        )
        row, _ = RetentionSetting.objects.update_or_create(
            record_class=rc.name,
            jurisdiction=jurisdiction,
            defaults={"days": days, "updated_by": str(actor)},
        )
        audit.record(
            AuditAction.RETENTION_SETTING,
            actor=actor,
            data={"class": rc.name, "jurisdiction": jurisdiction, "days": days, "was": old},
        )
    return row


def hold_place(
    *,
    reason: str,
    actor: subjects.Subject | str,
    tenant_id: int | None = None,
    subject: subjects.Subject | None = None,
) -> LegalHold:
    """Hold a tenant's records, or one subject's: no purge touches them until released."""
    if (tenant_id is None) == (subject is None):
        raise RetentionError("a hold is on a tenant or on a subject (one of them)")
    reason = reason.strip()
    if not reason:
        raise RetentionError("a hold needs a reason (e.g. the case or the authority)")
    with transaction.atomic():
        hold = LegalHold.objects.create(
            tenant_id=tenant_id,
            subject=str(subject) if subject is not None else "",
            reason=reason[:500],
            placed_by=str(actor),
        )
        audit.record(
            AuditAction.RETENTION_HOLD_PLACE,
            actor=actor,
            tenant_id=tenant_id,
            subject=subject,
            data={"hold": hold.pk, "reason": hold.reason},
        )
    return hold


def hold_release(*, hold_id: int, actor: subjects.Subject | str) -> LegalHold:
    with transaction.atomic():
        hold = LegalHold.objects.select_for_update().filter(pk=hold_id).first()
        if hold is None:
            raise RetentionError(f"no legal hold {hold_id}")
        if hold.released_at is not None:
            raise RetentionError(f"legal hold {hold_id} was already released")
        hold.released_at = timezone.now()
        hold.released_by = str(actor)
        hold.save(update_fields=["released_at", "released_by"])
        audit.record(
            AuditAction.RETENTION_HOLD_RELEASE,
            actor=actor,
            tenant_id=hold.tenant_id,
            subject=subjects.parse(hold.subject) if hold.subject else None,
            data={"hold": hold.pk},
        )
    return hold


@dataclass
class Run:
    at: datetime
    results: dict[str, Purged]
    errors: dict[str, str]

    @property
    def deleted(self) -> int:
        return sum(r.deleted for r in self.results.values())


def run(*, now: datetime | None = None, actor: subjects.Subject | str = "system") -> Run:
    """Purge every registered class once and record the run as one audit event. A class
    that fails is logged and named in the event; the others still run. Idempotent."""
    now = now or timezone.now()
    holds = holds_active()
    overrides = _settings()
    report = Run(at=now, results={}, errors={})
    for rc in registered():

        def days_for(jurisdiction: str, rc: RecordClass = rc) -> int:
            return period_days(rc, jurisdiction, overrides)

        try:
            with transaction.atomic():
                report.results[rc.name] = rc.purge(Purge(rc.name, now, holds, days_for))
        except Exception as exc:
            logger.exception("retention purge of %s failed", rc.name)
            report.errors[rc.name] = type(exc).__name__
    audit.record(
        AuditAction.RETENTION_RUN,
        actor=actor,
        outcome="error" if report.errors else "ok",
        data={
            "at": now.isoformat(),
            "classes": {
                name: {"deleted": r.deleted, "held": r.held, "kept": r.kept, "notes": r.notes}
                for name, r in report.results.items()
            },
            "errors": report.errors,
            "holds": {"tenants": len(holds.tenants), "subjects": len(holds.subjects)},
        },
    )
    logger.info("retention run: %s records purged", report.deleted)
    return report


# --- gdpr's own classes ----------------------------------------------------------------


def _audit_purge(p: Purge) -> Purged:
    """The audit log is never purged by the application: its table refuses deletes and
    its Merkle tree is the proof. Reported: how many events are past their 7 years."""
    from gdpr.models import AuditEvent

    past = AuditEvent.objects.filter(created_at__lt=p.cutoff()).count()
    notes = ["append-only: never purged by the application"] if past else []
    return Purged(kept=past, notes=notes)


def register_own() -> None:
    """gdpr's own record classes (called from gdpr's AppConfig.ready())."""
    register(
        RecordClass(
            name="gdpr.audit",
            title="Audit log",
            purge=_audit_purge,
            days=AUDIT_DAYS,
            floor=AUDIT_DAYS,
        )
    )
