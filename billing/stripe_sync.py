"""What rbee tells Stripe, and what Stripe's answers change here.

Usage reaches Stripe as Billing Meter events (POST /v1/billing/meter_events), sent from
the MeterEvent outbox that `billing.services.usage_record` fills. Each row carries its
own `identifier`, which Stripe keeps unique for at least 24 hours: sending a row twice
never counts twice, and Stripe answering "an event already exists with identifier ..."
proves the row was delivered earlier (its answer was lost), so it counts as sent.

Idempotency keys: Stripe (API v1) stores the first answer to a key once the endpoint
started, 500s included, and replays it for 24 hours. A key that is reused after a 500
would therefore fail for a day, so each attempt of a row gets its own key
(`rbee-meter-{identifier}-{attempt}`); the identifier is what makes a retry safe.

Stripe is optional: without RBEE_STRIPE_SECRET_KEY, `stripe_client()` is None and
nothing is sent.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta
from decimal import Decimal

import stripe
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from billing.errors import StripeNotConfigured, StripeUnreachable
from billing.models import MeterEvent
from tenants.actors import SYSTEM
from tenants.models import Tenant
from tenants.services import callers_changed, tenant_status_audit

log = logging.getLogger(__name__)

# Stop a run after this many transient failures in a row (Stripe down or throttling):
# the rows stay in the outbox for the next run.
_TRANSIENT_STREAK_MAX = 3
_SECRET_RE = re.compile(r"\b(sk|rk|pk)_(test|live)_[A-Za-z0-9]+|\bwhsec_[A-Za-z0-9]+")


def stripe_enabled() -> bool:
    return bool(settings.RBEE_STRIPE_SECRET_KEY)


def stripe_client() -> stripe.StripeClient | None:
    """A client for the configured account, or None when Stripe is off. The library
    itself never retries (max_network_retries=0): the outbox and the Celery task do."""
    key = settings.RBEE_STRIPE_SECRET_KEY
    if not key:
        return None
    base = settings.RBEE_STRIPE_API_BASE or None
    # With a base set (the tests' server), the other hosts Stripe uses (meter event
    # streams, files, Connect) point there too: nothing leaves for api.stripe.com.
    return stripe.StripeClient(
        key,
        base_addresses=(
            {"api": base, "meter_events": base, "files": base, "connect": base} if base else None
        ),
        max_network_retries=0,
    )


def _redact(text: str) -> str:
    key = settings.RBEE_STRIPE_SECRET_KEY
    if key:
        text = text.replace(key, "[redacted]")
    return _SECRET_RE.sub("[redacted]", text)


def _error_text(exc: Exception) -> str:
    status = getattr(exc, "http_status", None)
    message = getattr(exc, "user_message", None) or str(exc) or type(exc).__name__
    prefix = f"{type(exc).__name__}" + (f" {status}" if status else "")
    return _redact(f"{prefix}: {message}")[:500]


# --- customers -------------------------------------------------------------------------


def customer_ensure(tenant: Tenant) -> str:
    """The tenant's Stripe customer id, creating the customer the first time. The
    idempotency key `rbee-customer-{pk}` makes a retried or concurrent creation return
    the same customer. Raises StripeNotConfigured when Stripe is off and stripe.StripeError
    when Stripe refuses."""
    if tenant.stripe_customer_id:
        return tenant.stripe_customer_id
    stored = (
        Tenant.objects.filter(pk=tenant.pk).values_list("stripe_customer_id", flat=True).first()
    )
    if stored:
        tenant.stripe_customer_id = stored
        return stored
    client = stripe_client()
    if client is None:
        raise StripeNotConfigured("Stripe is off: set RBEE_STRIPE_SECRET_KEY")
    customer = client.v1.customers.create(
        params={
            "name": tenant.name,
            "metadata": {"rbee_tenant_id": str(tenant.pk), "rbee_tenant": tenant.name},
        },
        options={"idempotency_key": f"rbee-customer-{tenant.pk}"},
    )
    with transaction.atomic():
        Tenant.objects.filter(pk=tenant.pk, stripe_customer_id="").update(
            stripe_customer_id=customer.id
        )
        stored = (
            Tenant.objects.filter(pk=tenant.pk).values_list("stripe_customer_id", flat=True).first()
        )
    tenant.stripe_customer_id = stored or customer.id
    log.info("stripe customer %s for tenant %s", tenant.stripe_customer_id, tenant.name)
    return tenant.stripe_customer_id


# --- meter events --------------------------------------------------------------------------


def _value(v: Decimal) -> str:
    """A meter value as Stripe wants it in the form: '25', '12.5' (no exponent)."""
    text = format(Decimal(v).normalize(), "f")
    return text if "." not in text else text.rstrip("0").rstrip(".")


def _is_duplicate_identifier(exc: stripe.StripeError) -> bool:
    """Stripe's answer to a meter event whose identifier it already holds: HTTP 400,
    invalid_request_error, "An event already exists with identifier ...". Matched on the
    message (and the error's param/code where present), as Stripe documents no code."""
    if not isinstance(exc, stripe.InvalidRequestError) or exc.http_status != 400:
        return False
    body = exc.json_body if isinstance(exc.json_body, dict) else {}
    err = body.get("error")
    if not isinstance(err, dict):
        err = {}
    message = str(err.get("message") or exc.user_message or "").lower()
    code = str(err.get("code") or "").lower()
    if "duplicate" in code:
        return True
    return "already exists" in message and "identifier" in message


def _is_transient(exc: Exception) -> bool:
    """Worth another try later, and a sign that Stripe as a whole is unwell."""
    return isinstance(
        exc,
        stripe.APIConnectionError
        | stripe.RateLimitError
        | stripe.APIError
        | stripe.IdempotencyError,
    )


def _send_one(client: stripe.StripeClient, row: MeterEvent) -> tuple[bool, Exception | None]:
    """Send one row and record the outcome on it. (delivered, the error if not)."""
    try:
        client.v1.billing.meter_events.create(
            params={
                "event_name": row.event_name,
                "identifier": row.identifier,
                "timestamp": int(row.timestamp.timestamp()),
                "payload": {"stripe_customer_id": row.customer, "value": _value(row.value)},
            },
            options={"idempotency_key": f"rbee-meter-{row.identifier}-{row.attempts}"},
        )
    except stripe.StripeError as exc:
        if not _is_duplicate_identifier(exc):
            MeterEvent.objects.filter(pk=row.pk).update(
                attempts=row.attempts + 1, last_error=_error_text(exc)
            )
            return False, exc
        log.info("meter event %s was already in Stripe: counted as sent", row.identifier)
    MeterEvent.objects.filter(pk=row.pk, sent_at__isnull=True).update(
        sent_at=timezone.now(), last_error=""
    )
    return True, None


def meter_events_send(limit: int = 500, *, raise_when_unreachable: bool = False) -> tuple[int, int]:
    """Send up to `limit` unsent meter events; returns (sent, failed).

    Rows go oldest first among those with the fewest failed attempts, so a row Stripe
    keeps refusing never holds back newer usage. A failure leaves the row unsent with
    `attempts` + 1 and `last_error`; a run stops after a few transient failures in a
    row (and raises StripeUnreachable if `raise_when_unreachable`). Two runs at once
    never send the same row concurrently: on PostgreSQL each row is locked (FOR UPDATE
    SKIP LOCKED) while it is sent; on SQLite no write lock is held across the network
    call (the embedded queen is one process, and the identifier covers the rest)."""
    client = stripe_client()
    if client is None or limit <= 0:
        return 0, 0
    candidates = list(
        MeterEvent.objects.filter(sent_at__isnull=True)
        .order_by("attempts", "pk")
        .values_list("pk", flat=True)[:limit]
    )
    locking = connection.features.has_select_for_update_skip_locked
    sent = failed = streak = 0
    for pk in candidates:
        pending = MeterEvent.objects.filter(pk=pk, sent_at__isnull=True)
        if locking:
            with transaction.atomic():
                row = pending.select_for_update(skip_locked=True).first()
                if row is None:  # sent meanwhile, or another run holds it
                    continue
                ok, error = _send_one(client, row)
        else:
            row = pending.first()
            if row is None:
                continue
            ok, error = _send_one(client, row)
        if ok:
            sent += 1
            streak = 0
            continue
        failed += 1
        assert error is not None
        log.warning("meter event %s not sent: %s", row.identifier, _error_text(error))
        if isinstance(error, stripe.AuthenticationError | stripe.PermissionError):
            break  # the key is wrong: every other row would fail the same way
        streak = streak + 1 if _is_transient(error) else 0
        if streak >= _TRANSIENT_STREAK_MAX:
            if raise_when_unreachable:
                raise StripeUnreachable(sent, failed, _error_text(error))
            break
    if sent or failed:
        log.info("meter events: %d sent, %d failed", sent, failed)
    return sent, failed


# --- dunning ----------------------------------------------------------------------------------


def customers_sync(limit: int = 100) -> int:
    """Give every tenant a Stripe customer, and queue the usage recorded before it had
    one (its meter events were not written then). Returns how many customers were made."""
    from billing.services import meter_events_backfill

    if not stripe_enabled():
        return 0
    made = 0
    for tenant in Tenant.objects.filter(stripe_customer_id="").order_by("id")[:limit]:
        try:
            customer_ensure(tenant)
        except Exception as exc:
            log.warning("no Stripe customer for tenant %s yet: %s", tenant.name, _error_text(exc))
            continue
        made += 1
        meter_events_backfill(tenant_id=tenant.pk)
    return made


def past_due_suspend(now: datetime | None = None) -> list[str]:
    """Suspend tenants past due for longer than RBEE_PAST_DUE_GRACE_DAYS; returns their
    names. `past_due_since` is kept: it marks the suspension as one for non-payment,
    which a later paid invoice lifts (billing.webhooks)."""
    now = now or timezone.now()
    cutoff = now - timedelta(days=float(settings.RBEE_PAST_DUE_GRACE_DAYS))
    with transaction.atomic():
        due = list(
            Tenant.objects.select_for_update().filter(
                status=Tenant.Status.PAST_DUE, past_due_since__lte=cutoff
            )
        )
        names = [t.name for t in due]
        if names:
            Tenant.objects.filter(name__in=names, status=Tenant.Status.PAST_DUE).update(
                status=Tenant.Status.SUSPENDED
            )
            callers_changed()
        for t in due:  # one event each, in the transaction that suspended them
            t.status = Tenant.Status.SUSPENDED
            tenant_status_audit(
                tenant=t,
                before=Tenant.Status.PAST_DUE,
                actor=SYSTEM,
                data={
                    "reason": "past_due",
                    "past_due_since": t.past_due_since.isoformat() if t.past_due_since else None,
                    "grace_days": float(settings.RBEE_PAST_DUE_GRACE_DAYS),
                },
            )
    for name in names:
        log.warning("tenant %s suspended: past due for more than the grace period", name)
    return names
