"""Billing's domain errors, by code; never an HTTP status (`inference/errors.py` maps the
gate's codes for /v1, `rbee/api_errors.py` every code for the API and Stripe's webhook).

`AdmissionCode`: what the gate refuses. The codes are OpenAI's where OpenAI has one
(`rate_limit_exceeded`, `insufficient_quota`). `BillingCode`: the books (invoices,
Stripe, its webhook)."""

from __future__ import annotations

import enum

from kernel.errors import DomainError


class AdmissionCode(enum.StrEnum):
    INSUFFICIENT_SCOPE = "insufficient_scope"  # the key's scopes exclude the endpoint/model
    MODEL_NOT_IN_PLAN = "model_not_in_plan"
    RATE_LIMIT_EXCEEDED = "rate_limit_exceeded"  # a per-minute rate or concurrency
    INSUFFICIENT_QUOTA = "insufficient_quota"  # a daily quota


class AdmissionError(DomainError):
    """The gate refused a request: scope, plan or limits."""


class BillingCode(enum.StrEnum):
    MIXED_CURRENCIES = "mixed_currencies"  # an invoice's prices are in several currencies
    STRIPE_NOT_CONFIGURED = "stripe_not_configured"
    STRIPE_UNREACHABLE = "stripe_unreachable"  # a send run stopped: Stripe kept failing
    WEBHOOK_NOT_CONFIGURED = "webhook_not_configured"
    INVALID_SIGNATURE = "invalid_signature"
    INVALID_PAYLOAD = "invalid_payload"
    EVENT_FAILED = "event_failed"  # handling a webhook event failed; Stripe sends it again
    INVALID_PRICE = "invalid_price"  # a price book entry that cannot be (price_set)


class BillingError(DomainError):
    """The books: invoices, Stripe and its webhook."""

    def __init__(self, code: BillingCode, message: str) -> None:
        super().__init__(code, message)


class InvoiceError(BillingError):
    """An invoice cannot be built as the price book stands (e.g. mixed currencies)."""


class StripeNotConfigured(BillingError):
    """Stripe is off (no RBEE_STRIPE_SECRET_KEY) and the caller needs it."""

    def __init__(self, message: str) -> None:
        super().__init__(BillingCode.STRIPE_NOT_CONFIGURED, message)


class StripeUnreachable(BillingError):
    """A send run stopped because Stripe kept failing (network, 429 or 5xx): a class of its
    own, because the Celery task retries on it."""

    def __init__(self, sent: int, failed: int, error: str) -> None:
        super().__init__(
            BillingCode.STRIPE_UNREACHABLE,
            f"stripe unreachable after {sent} sent, {failed} failed: {error}",
        )
        self.sent = sent
        self.failed = failed
