"""billing's stores for GDPR export and erasure (registered in BillingConfig.ready()).

* billing.usage: a tenant's end user (`enduser:T:U`) is on every usage row whose `user`
  field named them. Export: those rows. Erasure: the `end_user` (and client request id)
  fields are cleared; the rows stay (they are what the tenant's invoices were built
  from) and no longer name anyone.
* billing.invoices: a person is an invoice's customer when it is addressed to their
  e-mail (the tenant's billing e-mail when it was built). Bookkeeping law keeps invoices
  for years, so an erasure keeps them, with the addressee replaced by a pseudonym, and
  writes the legal ground and the date they may go into the receipt.
* billing.stripe: the Stripe customer of a tenant billed to the person's e-mail: its
  name, e-mail, phone, address, shipping and description are cleared at Stripe through
  billing's Stripe client (the customer itself stays: Stripe keeps its own invoices
  under its own legal obligations).
"""

from __future__ import annotations

from datetime import date
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from billing.errors import StripeNotConfigured
from billing.models import Invoice, UsageEvent
from gdpr import subjects
from gdpr.providers import Erased, Kept, Provider, register
from tenants.models import Tenant

# How long invoices are kept, by the jurisdiction whose books they are in: (years,
# ground). The period runs from the end of the calendar year of the invoice.
INVOICE_RETENTION: dict[str, tuple[int, str]] = {
    "FR": (10, "Art. 17(3)(b) GDPR; Code de commerce art. L123-22 (10 years)"),
    "IT": (10, "Art. 17(3)(b) GDPR; Codice civile art. 2220 (10 years)"),
    "BE": (10, "Art. 17(3)(b) GDPR; Code de droit économique art. III.88 (10 years)"),
    "DE": (
        8,
        "Art. 17(3)(b) GDPR; § 147(1) Nr. 4, (3) AO, § 14b UStG: invoices 8 years "
        "(German books and annual accounts: 10 years)",
    ),
    "NL": (7, "Art. 17(3)(b) GDPR; art. 52 AWR, art. 2:10 BW (7 years)"),
}
# No jurisdiction configured: keep for the longest of the periods above, and say so.
DEFAULT_RETENTION = (
    10,
    "Art. 17(3)(b) GDPR; RBEE_BOOKS_JURISDICTION is not set: the longest EU bookkeeping "
    "period rbee knows (10 years) applies",
)


def retention_for(jurisdiction: str) -> tuple[int, str]:
    return INVOICE_RETENTION.get(jurisdiction.upper(), DEFAULT_RETENTION)


def _end_user_rows(subject: subjects.Subject) -> Any:
    if subject.kind != subjects.END_USER:
        return UsageEvent.objects.none()
    return UsageEvent.objects.filter(tenant__name=subject.tenant, end_user=subject.end_user)


def usage_export(subject: subjects.Subject) -> list[dict[str, Any]]:
    return [
        {
            "request_id": u.request_id,
            "client_request_id": u.client_request_id,
            "tenant": subject.tenant,
            "user": u.end_user,
            "at": u.created_at.isoformat(),
            "model": u.model,
            "modality": u.modality,
            "prompt_tokens": u.prompt_tokens,
            "completion_tokens": u.completion_tokens,
            "images": u.images,
            "audio_seconds": u.audio_seconds,
            "characters": u.characters,
            "video_seconds": u.video_seconds,
            "region": u.region,
            "outcome": u.outcome,
        }
        for u in _end_user_rows(subject).order_by("created_at", "pk")
    ]


def usage_erase(subject: subjects.Subject) -> Erased:
    # The client's request id too: its text is the client's, and may name the person.
    rows = _end_user_rows(subject)
    return Erased(
        store="billing.usage", pseudonymised=rows.update(end_user="", client_request_id="")
    )


def _invoices(subject: subjects.Subject) -> Any:
    if subject.kind != subjects.USER:
        return Invoice.objects.none()
    return Invoice.objects.filter(customer_email__iexact=subject.email)


def invoices_export(subject: subjects.Subject) -> list[dict[str, Any]]:
    return [
        {
            "tenant": i.customer_name,
            "addressed_to": i.customer_email,
            "period_start": i.period_start.isoformat(),
            "period_end": i.period_end.isoformat(),
            "status": i.status,
            "currency": i.currency,
            "total": str(i.total),
            "lines": i.lines,
        }
        for i in _invoices(subject).order_by("period_start", "pk")
    ]


def invoices_erase(subject: subjects.Subject) -> Erased:
    from gdpr.services import pseudonym

    out = Erased(store="billing.invoices")
    kept: dict[tuple[str, date], Kept] = {}
    with transaction.atomic():
        for inv in _invoices(subject).select_for_update():
            years, ground = retention_for(inv.jurisdiction)
            until = date(inv.period_end.year + years, 12, 31)
            k = kept.setdefault((ground, until), Kept(count=0, ground=ground, until=until))
            k.count += 1
            inv.customer_email = ""
            inv.customer_name = pseudonym(subject)
            inv.pseudonymised_at = timezone.now()
            inv.save(update_fields=["customer_email", "customer_name", "pseudonymised_at"])
            out.pseudonymised += 1
    out.kept = sorted(kept.values(), key=lambda k: k.until)
    return out


def _stripe_customers(subject: subjects.Subject) -> list[str]:
    if subject.kind != subjects.USER:
        return []
    billed = Invoice.objects.filter(customer_email__iexact=subject.email).values("tenant_id")
    rows = Tenant.objects.filter(Q(billing_email__iexact=subject.email) | Q(pk__in=billed)).exclude(
        stripe_customer_id=""
    )
    return sorted(set(rows.values_list("stripe_customer_id", flat=True)))


def stripe_export(subject: subjects.Subject) -> list[dict[str, Any]]:
    """The customer ids, and what Stripe holds of the person on each (read from Stripe,
    our processor, when it is configured)."""
    from billing.stripe_sync import stripe_client

    client = stripe_client()
    out: list[dict[str, Any]] = []
    for cid in _stripe_customers(subject):
        record: dict[str, Any] = {"stripe_customer": cid}
        if client is not None:
            customer = client.v1.customers.retrieve(cid).to_dict()
            record.update({f: customer.get(f) for f in STRIPE_PERSONAL_FIELDS})
        out.append(record)
    return out


# What Stripe holds of a person on a customer; "" unsets a field in Stripe's API.
STRIPE_PERSONAL_FIELDS = ("name", "email", "phone", "description", "address", "shipping")


def stripe_erase(subject: subjects.Subject) -> Erased:
    from billing.stripe_sync import stripe_client

    out = Erased(store="billing.stripe")
    customers = _stripe_customers(subject)
    if not customers:
        return out
    client = stripe_client()
    if client is None:
        raise StripeNotConfigured(
            "Stripe is off (no RBEE_STRIPE_SECRET_KEY) but the subject has Stripe customers"
        )
    for cid in customers:
        client.v1.customers.update(
            cid,
            params={f: "" for f in STRIPE_PERSONAL_FIELDS},  # type: ignore[arg-type]
            options={"idempotency_key": f"rbee-gdpr-redact-{cid}"},
        )
        out.pseudonymised += 1
    out.notes.append(
        "Stripe customers' name, e-mail, phone, address, shipping and description "
        "cleared; Stripe keeps its own records under its legal obligations"
    )
    return out


def register_providers() -> None:
    register(
        Provider(
            name="billing.usage",
            title="Usage of a tenant's service by its end users",
            categories=("end user: the tenant's user id, with each request's metadata",),
            purposes=(
                "metering and billing the tenant (contract, Art. 6(1)(b))",
                "abuse prevention and capacity planning (Art. 6(1)(f))",
            ),
            retention="per the tenant's jurisdiction; the end-user id is cleared on erasure",
            data_subjects=("tenants' end users",),
            export=usage_export,
            erase=usage_erase,
        )
    )
    register(
        Provider(
            name="billing.invoices",
            title="Invoices addressed to you",
            categories=("customer: name and billing e-mail, amounts",),
            purposes=("invoicing and bookkeeping (legal obligation, Art. 6(1)(c))",),
            retention="10 years (FR, IT, BE, German books), 8 years (German invoices), "
            "7 years (NL) from the end of the invoice's year; pseudonymised on erasure",
            export=invoices_export,
            erase=invoices_erase,
            phase=40,  # before billing.stripe, which finds customers through invoices too
        )
    )
    register(
        Provider(
            name="billing.stripe",
            title="Payments (Stripe)",
            categories=("customer: Stripe customer id; name, e-mail, address held by Stripe",),
            purposes=("taking payments (contract, Art. 6(1)(b))",),
            retention="while the tenant is a customer; cleared at Stripe on erasure",
            recipients=("Stripe Payments Europe, Ltd. (payments; Ireland)", "Stripe, Inc. (USA)"),
            regions=("EU (Ireland)", "USA"),
            transfers=("USA: EU-US Data Privacy Framework / Standard Contractual Clauses",),
            export=stripe_export,
            erase=stripe_erase,
            phase=30,  # before the invoices and billing contact that lead to the customer
        )
    )
