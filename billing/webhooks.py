"""Stripe's webhook: payments and subscriptions change a tenant's status and plan.

Every event is verified (Stripe-Signature, HMAC-SHA256 of "{t}.{body}" with the endpoint
secret, at most five minutes old) and recorded once by its id (StripeEvent) in the same
transaction as its effects: a replay, or a redelivery of an event already handled, is
a no-op. An event that fails while being handled leaves nothing behind and answers 500,
so Stripe delivers it again.

Handled: invoice.payment_failed (past due), invoice.paid / invoice.payment_succeeded
(active again), customer.subscription.created / .updated (the plan whose
stripe_price_id is the price of one of its items; items whose prices no plan has,
add-ons, are skipped; only an active or trialing subscription grants its plan: one
that is incomplete, past due, unpaid, paused, ... changes nothing, though it still
outdates older events), customer.subscription.deleted (plan "free"). Others are
recorded and ignored.

Deliveries may come out of order: an event older than the last one applied (per tenant:
one clock for status, one for plan) changes nothing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import stripe
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from rest_framework.permissions import AllowAny
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from billing.errors import BillingCode, BillingError
from billing.models import StripeEvent
from gdpr import audit
from gdpr.actions import AuditAction
from tenants.actors import STRIPE
from tenants.models import Plan, Tenant
from tenants.services import tenant_status_audit

log = logging.getLogger(__name__)

# How old a signed delivery may be (Stripe's libraries default to 300 s).
TOLERANCE_SECONDS = 300
FREE_PLAN = "free"
# The subscription statuses that grant the subscription's plan: paid for, or in a trial.
GRANTING_STATUSES = frozenset({"active", "trialing"})


class StripeWebhook(APIView):
    """POST /stripe/webhook. Errors are raised with billing's codes and answered by the
    one handler of every DRF endpoint (rbee/api_errors.py: the status from its table),
    with the flat body this endpoint has always had: {"error": message}."""

    authentication_classes: list[type[Any]] = []  # Stripe signs; no session, no CSRF
    permission_classes = [AllowAny]
    renderer_classes = [JSONRenderer]
    flat_errors = True

    def post(self, request: Request) -> Response:
        secret = settings.RBEE_STRIPE_WEBHOOK_SECRET
        if not secret:
            raise BillingError(
                BillingCode.WEBHOOK_NOT_CONFIGURED,
                "stripe webhooks are not configured (RBEE_STRIPE_WEBHOOK_SECRET)",
            )
        payload = request.body  # the raw bytes, as signed (DRF's parsers are never used)
        signature = request.headers.get("Stripe-Signature", "")
        if not signature:
            raise BillingError(BillingCode.INVALID_SIGNATURE, "missing Stripe-Signature header")
        try:
            stripe.WebhookSignature.verify_header(payload, signature, secret, TOLERANCE_SECONDS)
        except stripe.SignatureVerificationError as exc:
            raise BillingError(BillingCode.INVALID_SIGNATURE, "invalid signature") from exc
        except UnicodeDecodeError as exc:
            raise BillingError(BillingCode.INVALID_PAYLOAD, "invalid payload") from exc
        try:
            event = json.loads(payload)
        except ValueError as exc:
            raise BillingError(BillingCode.INVALID_PAYLOAD, "invalid payload") from exc
        if not isinstance(event, dict):
            raise BillingError(BillingCode.INVALID_PAYLOAD, "invalid payload")
        event_id, event_type = event.get("id"), event.get("type")
        if not isinstance(event_id, str) or not 0 < len(event_id) <= 100:
            raise BillingError(BillingCode.INVALID_PAYLOAD, "invalid payload: an event needs an id")
        if not isinstance(event_type, str):
            raise BillingError(
                BillingCode.INVALID_PAYLOAD, "invalid payload: an event needs a type"
            )
        data = event.get("data")
        obj = data.get("object") if isinstance(data, dict) else None
        try:
            with transaction.atomic():
                _, created = StripeEvent.objects.get_or_create(
                    event_id=event_id, defaults={"type": event_type[:100]}
                )
                if not created:
                    return Response({"received": True, "duplicate": True})
                handler = HANDLERS.get(event_type)
                if handler is not None and isinstance(obj, dict):
                    handler(obj, event_id, _created(event))
        except Exception as exc:
            log.exception(
                "stripe event %s (%s) failed; Stripe will deliver it again", event_id, event_type
            )
            raise BillingError(BillingCode.EVENT_FAILED, "the event could not be handled") from exc
        return Response({"received": True})


stripe_webhook = StripeWebhook.as_view()


# --- handlers: each runs inside the transaction that records the event ----------------------


def _created(event: dict[str, Any]) -> datetime:
    """When Stripe created the event (deliveries may arrive out of order)."""
    created = event.get("created")
    if isinstance(created, int | float) and not isinstance(created, bool):
        return datetime.fromtimestamp(created, tz=UTC)
    return timezone.now()


def _newer(tenant: Tenant, field: str, created: datetime) -> bool:
    """Apply an event only if it is not older than the last one applied to `field`; then
    remember it. An older `payment_failed` arriving after a newer `paid` is ignored."""
    last = getattr(tenant, field)
    if last is not None and created < last:
        log.info("tenant %s: an older Stripe event arrived late; ignored", tenant.name)
        return False
    setattr(tenant, field, created)
    tenant.save(update_fields=[field])
    return True


def _customer_id(obj: dict[str, Any]) -> str:
    customer = obj.get("customer")
    if isinstance(customer, dict):  # expanded
        customer = customer.get("id")
    return customer if isinstance(customer, str) else ""


def _tenants(obj: dict[str, Any], event_id: str) -> list[Tenant]:
    customer = _customer_id(obj)
    tenants = (
        list(Tenant.objects.select_for_update().filter(stripe_customer_id=customer))
        if customer
        else []
    )
    if not tenants:
        log.warning("stripe event %s: no tenant for customer %r; ignored", event_id, customer)
    return tenants


def _payment_failed(obj: dict[str, Any], event_id: str, created: datetime) -> None:
    now = timezone.now()
    for t in _tenants(obj, event_id):
        if not _newer(t, "status_event_at", created):
            continue
        if t.status != Tenant.Status.ACTIVE:
            continue  # already past due (keep the first failure's time) or suspended
        t.status, t.past_due_since = Tenant.Status.PAST_DUE, now
        t.save(update_fields=["status", "past_due_since"])
        tenant_status_audit(
            tenant=t, before=Tenant.Status.ACTIVE, actor=STRIPE, data=_event_data(obj, event_id)
        )
        log.warning("tenant %s past due: invoice %s failed", t.name, obj.get("id"))


def _paid(obj: dict[str, Any], event_id: str, created: datetime) -> None:
    for t in _tenants(obj, event_id):
        if not _newer(t, "status_event_at", created):
            continue
        if t.status == Tenant.Status.SUSPENDED and t.past_due_since is None:
            # Suspended by hand, not for non-payment: a payment does not lift it.
            log.info("tenant %s paid invoice %s; stays suspended", t.name, obj.get("id"))
            continue
        if t.status == Tenant.Status.ACTIVE and t.past_due_since is None:
            continue
        before = t.status
        t.status, t.past_due_since = Tenant.Status.ACTIVE, None
        t.save(update_fields=["status", "past_due_since"])
        tenant_status_audit(tenant=t, before=before, actor=STRIPE, data=_event_data(obj, event_id))
        log.info("tenant %s active again: invoice %s paid", t.name, obj.get("id"))


def _price_ids(subscription: dict[str, Any]) -> list[str]:
    """The prices of a subscription's items, in Stripe's order."""
    items = subscription.get("items")
    data = items.get("data") if isinstance(items, dict) else None
    if not isinstance(data, list):
        return []
    prices: list[str] = []
    for item in data:
        if not isinstance(item, dict):
            continue
        for key in ("price", "plan"):  # "plan" on old API versions
            ref = item.get(key)
            if isinstance(ref, dict):
                ref = ref.get("id")
            if isinstance(ref, str) and ref:
                prices.append(ref)
                break
    return prices


def _subscription_plan(subscription: dict[str, Any]) -> Plan | None:
    """The plan of the first item whose price is a plan's; the others (add-ons, metered
    prices) name no plan and are skipped, wherever they come."""
    prices = _price_ids(subscription)
    by_price: dict[str, Plan] = {}
    for plan in Plan.objects.filter(stripe_price_id__in=prices).order_by("pk"):
        by_price.setdefault(plan.stripe_price_id, plan)
    found = [by_price[p] for p in prices if p in by_price]
    if len({p.pk for p in found}) > 1:
        log.warning(
            "subscription %s has the prices of several plans (%s); the first one counts",
            subscription.get("id"),
            ", ".join(p.name for p in found),
        )
    return found[0] if found else None


def _event_data(obj: dict[str, Any], event_id: str) -> dict[str, Any]:
    """What an audit event keeps of the Stripe event that caused it: its ids only."""
    return {"stripe_event": event_id, "stripe_object": str(obj.get("id") or "")[:100]}


def _plan_set(
    tenants: list[Tenant], plan: Plan | None, created: datetime, event: dict[str, Any]
) -> None:
    """Move the tenants to `plan`, unless a newer subscription event was applied already.
    With `plan` None the event is only remembered: it still outdates older ones."""
    for t in tenants:
        if not _newer(t, "plan_event_at", created):
            continue
        if plan is None or (t.plan_id == plan.pk and t.tier == plan.name):
            continue
        before = t.plan.name if t.plan is not None else None
        t.plan, t.tier = plan, plan.name
        t.save(update_fields=["plan", "tier"])
        audit.record(
            AuditAction.TENANT_PLAN,
            actor=STRIPE,
            tenant_id=t.pk,
            data={"from": before, "to": plan.name, **event},
        )
        log.info("tenant %s now on plan %s", t.name, plan.name)


def _subscription_changed(obj: dict[str, Any], event_id: str, created: datetime) -> None:
    plan = _subscription_plan(obj)
    if plan is None:
        log.warning(
            "stripe event %s: subscription %s has prices %r, none of which a plan has; "
            "plan unchanged",
            event_id,
            obj.get("id"),
            _price_ids(obj),
        )
        return
    status = obj.get("status")
    if status not in GRANTING_STATUSES:
        # Not paid for (incomplete, past_due, unpaid, paused, ...): the plan is not granted.
        # The event still counts as the subscription's latest state, so an older active
        # or trialing event delivered after it does not grant the plan either.
        log.warning(
            "stripe event %s: subscription %s is %r; plan %s not granted",
            event_id,
            obj.get("id"),
            status,
            plan.name,
        )
        _plan_set(_tenants(obj, event_id), None, created, _event_data(obj, event_id))
        return
    _plan_set(_tenants(obj, event_id), plan, created, _event_data(obj, event_id))


def _subscription_deleted(obj: dict[str, Any], event_id: str, created: datetime) -> None:
    plan = Plan.objects.filter(name=FREE_PLAN).first()
    tenants = _tenants(obj, event_id)
    if plan is None:
        log.error(
            "stripe event %s: subscription ended but there is no plan %r", event_id, FREE_PLAN
        )
        return
    _plan_set(tenants, plan, created, _event_data(obj, event_id))


HANDLERS: dict[str, Callable[[dict[str, Any], str, datetime], None]] = {
    "invoice.payment_failed": _payment_failed,
    "invoice.paid": _paid,
    "invoice.payment_succeeded": _paid,
    "customer.subscription.created": _subscription_changed,
    "customer.subscription.updated": _subscription_changed,
    "customer.subscription.deleted": _subscription_deleted,
}
