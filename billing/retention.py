"""Billing's record classes for gdpr's retention (registered in BillingConfig.ready()):
usage records are books and invoices are invoices, each kept for the tenant's
jurisdiction's period; handled Stripe webhook ids are kept a bounded time.

A tenant under a legal hold, or one of its end users under one, keeps every record past
its period until the hold is released."""

from __future__ import annotations

from django.conf import settings
from django.db import transaction
from django.db.models import Q

from billing.models import Invoice, StripeEvent, UsageEvent
from billing.services import usage_day, usage_rollup_rebuild
from gdpr import retention, subjects
from tenants.models import Tenant


def _held(p: retention.Purge) -> Q:
    """Usage rows under a hold: the held tenants', and held end users' of their tenant."""
    q = Q(tenant_id__in=sorted(p.holds.tenants))
    for text in p.holds.subjects:
        s = subjects.parse(text)
        if s.kind == subjects.END_USER:
            q |= Q(tenant__name=s.tenant, end_user=s.end_user)
    return q


def _jurisdictions() -> list[str]:
    return sorted(set(Tenant.objects.values_list("jurisdiction", flat=True)))


def usage_purge(p: retention.Purge) -> retention.Purged:
    """Usage rows are books: kept for the tenant's jurisdiction's period, counted from the
    end of the calendar year they belong to. The daily roll-up of the days purged is
    rebuilt from what is left (held rows) in the same transaction."""
    out = retention.Purged()
    held = _held(p)
    for jurisdiction in _jurisdictions():
        cutoff = p.year_end_cutoff(jurisdiction)
        old = UsageEvent.objects.filter(
            tenant__jurisdiction=jurisdiction, created_at__lt=cutoff
        ).exclude(outcome=UsageEvent.Outcome.PROVISIONAL)
        with transaction.atomic():
            out.held += old.filter(held).count()
            tenants = set(old.exclude(held).values_list("tenant_id", flat=True).distinct())
            _, per_model = old.exclude(held).delete()
            deleted = per_model.get(UsageEvent._meta.label, 0)
            out.deleted += deleted
            if deleted:
                usage_rollup_rebuild(tenant_ids=tenants, end=usage_day(cutoff))
    return out


def _invoice_held(p: retention.Purge) -> Q:
    """Invoices under a hold: the held tenants', and those addressed to a held person."""
    q = Q(tenant_id__in=sorted(p.holds.tenants))
    for text in p.holds.subjects:
        s = subjects.parse(text)
        if s.kind == subjects.USER:
            q |= Q(customer_email__iexact=s.email)
    return q


def invoice_purge(p: retention.Purge) -> retention.Purged:
    """Invoices are kept for the period of the jurisdiction they were issued under (the
    invoice's own, else its tenant's), from the end of the year of their period."""
    out = retention.Purged()
    held = _invoice_held(p)
    issued = set(Invoice.objects.values_list("jurisdiction", flat=True))
    for jurisdiction in sorted(issued | set(_jurisdictions())):
        cutoff = p.year_end_cutoff(jurisdiction).date()
        own = Q(jurisdiction=jurisdiction) & ~Q(jurisdiction="")
        tenants = Q(jurisdiction="") & Q(tenant__jurisdiction=jurisdiction)
        old = Invoice.objects.filter(own | tenants, period_end__lt=cutoff)
        out.held += old.filter(held).count()
        _, per_model = old.exclude(held).delete()
        out.deleted += per_model.get(Invoice._meta.label, 0)
    return out


def stripe_event_purge(p: retention.Purge) -> retention.Purged:
    """Handled webhook ids (no personal data): kept long enough that Stripe's retries (3
    days) and replays find them; older ones would be refused by their signature's age."""
    n, _ = StripeEvent.objects.filter(received_at__lt=p.cutoff()).delete()
    return retention.Purged(deleted=n)


def register() -> None:
    retention.register(
        retention.RecordClass(
            name="billing.usage",
            title="Usage records (books)",
            purge=usage_purge,
            rule=retention.BOOKS,
        )
    )
    retention.register(
        retention.RecordClass(
            name="billing.invoices",
            title="Invoices",
            purge=invoice_purge,
            rule=retention.INVOICES,
        )
    )
    retention.register(
        retention.RecordClass(
            name="billing.stripe_events",
            title="Handled Stripe webhook events",
            purge=stripe_event_purge,
            days=int(getattr(settings, "RBEE_RETENTION_STRIPE_EVENTS_DAYS", 90)),
        )
    )
