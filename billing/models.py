"""Metering, prices and invoices, and what rbee has told Stripe.

Usage is written to the database before a response is finished (UsageEvent, one per
request, unique by request id), and every later step reads it from there: meter events
for Stripe (MeterEvent, an outbox with idempotency identifiers), invoice drafts and the
portal's usage queries. A crash between the response and any of those loses nothing.
"""

from __future__ import annotations

from datetime import datetime

from django.db import models

# The units rbee meters, and the Plan field that limits each per day.
UNITS = (
    "prompt_tokens",
    "completion_tokens",
    "images",
    "audio_seconds",
    "characters",
    "video_seconds",
)


class UsageEvent(models.Model):
    """Exactly one per request that reached a worker, idempotent by request id.

    Written when the request is admitted, as `provisional` (with the queen process that
    serves it, `queen`, and its limiter reservation, `ticket`); its running counts and
    `heartbeat_at` are refreshed while the job runs, and it is finalised once, when the
    job ends (`ok`, `disconnected`, `error`). A provisional row nobody finalises (the
    queen was killed, or the final write kept failing) is settled as `interrupted`
    with its last counts once its queen is gone or its heartbeat is older than the
    lease (billing.services.usage_settle_stale); if the request was alive after all, its
    final write still replaces those counts, once (billing.services.usage_record).

    What counts: every outcome but `provisional` is billed, invoiced, exported and
    shown, for the units it records (an `interrupted` row counts what had been
    produced by its last heartbeat); provisional rows count nowhere until settled."""

    class Modality(models.TextChoices):
        CHAT = "chat"
        COMPLETION = "completion"
        EMBEDDING = "embedding"
        IMAGE = "image"
        TRANSCRIPTION = "transcription"
        TRANSLATION = "translation"
        SPEECH = "speech"
        VIDEO = "video"

    class Outcome(models.TextChoices):
        OK = "ok"
        DISCONNECTED = "disconnected"  # the client left; what was generated is counted
        ERROR = "error"
        PROVISIONAL = "provisional"  # admitted, still running (or its queen died)
        INTERRUPTED = "interrupted"  # settled after its queen died: the last counts

    request_id = models.CharField(max_length=64, unique=True)
    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="usage")
    api_key = models.ForeignKey(
        "tenants.ApiKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="usage"
    )
    model = models.CharField(max_length=200)
    modality = models.CharField(max_length=16, choices=Modality.choices)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    images = models.PositiveIntegerField(default=0)
    audio_seconds = models.FloatField(default=0.0)
    characters = models.PositiveIntegerField(default=0)
    # Seconds of generated video (the clip's length, as the worker encoded it).
    video_seconds = models.FloatField(default=0.0)
    latency_ms = models.PositiveIntegerField(default=0)
    worker = models.CharField(max_length=200, blank=True, default="")
    # Where it ran: the serving hive's region as the operator set it (never what the hive
    # says of itself); "" when no worker served it.
    region = models.CharField(max_length=32, blank=True, default="")
    # The tenant's end user, as the OpenAI `user` field named them: a data subject (GDPR).
    end_user = models.CharField(max_length=256, blank=True, default="")
    # The client's own id for the request (its X-Client-Request-Id header), if it sent one.
    client_request_id = models.CharField(max_length=512, blank=True, default="")
    outcome = models.CharField(max_length=16, choices=Outcome.choices, default=Outcome.OK)
    # When the request was admitted (the row is written then).
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    # The queen process that served it ("host/pidns/boot:pid:token", kernel.process), its
    # limiter reservation, and when that queen last said it was still running, by the
    # database's clock (provisional rows only).
    queen = models.CharField(max_length=120, blank=True, default="")
    ticket = models.CharField(max_length=64, blank=True, default="")
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["tenant", "created_at"]),
            models.Index(
                fields=["heartbeat_at"],
                condition=models.Q(outcome="provisional"),
                name="usage_provisional",
            ),
        ]

    @property
    def started_at(self) -> datetime:
        """When the request was admitted."""
        return self.created_at

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __str__(self) -> str:
        return f"usage {self.request_id} {self.tenant_id} {self.model}"


class Price(models.Model):
    """The price of one unit of one model; a row with a plan overrides the plan-less one.
    `model` '*' prices every model without a row of its own."""

    class Unit(models.TextChoices):
        PROMPT_TOKEN = "prompt_tokens"  # noqa: S105 (a unit, not a secret)
        COMPLETION_TOKEN = "completion_tokens"  # noqa: S105
        IMAGE = "images"
        AUDIO_SECOND = "audio_seconds"
        CHARACTER = "characters"
        VIDEO_SECOND = "video_seconds"

    model = models.CharField(max_length=200)
    unit = models.CharField(max_length=32, choices=Unit.choices)
    plan = models.ForeignKey("tenants.Plan", null=True, blank=True, on_delete=models.CASCADE)
    # Per unit, in the currency's main unit (e.g. 0.0000005 USD per token).
    unit_price = models.DecimalField(max_digits=20, decimal_places=12)
    currency = models.CharField(max_length=3, default="usd")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["model", "unit", "plan"], name="uniq_price"),
            models.UniqueConstraint(
                fields=["model", "unit"],
                condition=models.Q(plan__isnull=True),
                name="uniq_price_default",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.model} {self.unit} {self.unit_price} {self.currency}"


class Invoice(models.Model):
    """A monthly draft per tenant, built from usage and the price book (Celery)."""

    class Status(models.TextChoices):
        DRAFT = "draft"
        FINAL = "final"

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="invoices")
    period_start = models.DateField()
    period_end = models.DateField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DRAFT)
    currency = models.CharField(max_length=3, default="usd")
    lines = models.JSONField(default=list)
    total = models.DecimalField(max_digits=20, decimal_places=6, default=0)
    # Who it is addressed to, as it was when built (the tenant's name and billing e-mail),
    # and whose bookkeeping law keeps it (the operator's RBEE_BOOKS_JURISDICTION, ISO
    # country). A person's erasure replaces the addressee with a pseudonym
    # (`pseudonymised_at`); the invoice itself is kept for that law's period.
    customer_name = models.CharField(max_length=200, blank=True, default="")
    customer_email = models.EmailField(blank=True, default="")
    jurisdiction = models.CharField(max_length=2, blank=True, default="")
    pseudonymised_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "period_start"], name="uniq_invoice_period")
        ]

    def __str__(self) -> str:
        return f"invoice {self.tenant_id} {self.period_start} {self.total}"


class MeterEvent(models.Model):
    """One Stripe Billing Meter event to send (an outbox row per unit of a usage event).
    `identifier` is Stripe's idempotency key for meter events: a retry never counts twice."""

    usage = models.ForeignKey(UsageEvent, on_delete=models.CASCADE, related_name="meter_events")
    event_name = models.CharField(max_length=100)
    identifier = models.CharField(max_length=100, unique=True)
    customer = models.CharField(max_length=100)
    value = models.DecimalField(max_digits=20, decimal_places=6)
    timestamp = models.DateTimeField()
    sent_at = models.DateTimeField(null=True, blank=True, db_index=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.CharField(max_length=500, blank=True, default="")

    def __str__(self) -> str:
        return f"meter {self.event_name} {self.identifier}"


class StripeEvent(models.Model):
    """A webhook event handled: its id is unique, so a replay is a no-op."""

    event_id = models.CharField(max_length=100, unique=True)
    type = models.CharField(max_length=100)
    received_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.type} {self.event_id}"


class UsageDaily(models.Model):
    """The billed usage of one UTC day, per (tenant, day, model, key, modality): what the
    portal's usage pages, charts and CSV read, so they never scan the raw events.

    Kept in the same transaction as every write that changes what counts
    (billing.services: a row finalised, made final at once, settled as interrupted, or an
    interrupted row corrected by its late final write), by one upsert that adds to the
    counters (INSERT ... ON CONFLICT DO UPDATE SET x = x + excluded.x), so concurrent
    writers never lose an increment. Provisional usage counts nowhere, here neither.
    `day` is the UTC date of the request's admission (UsageEvent.created_at). `key_id` is
    the ApiKey's id, 0 for keyless requests (and for a key since deleted: its rows are
    merged into 0, as the raw rows' key becomes NULL): a plain column, so that the
    unique key has no NULL in it (NULLs never conflict). Cost is not stored: it is
    computed at render from the price book, per (model, unit), like an invoice draft,
    so a page and the invoice built from the same prices agree, a price change applies
    to every figure at once, and the request path does no price look-up.
    `billing.services.usage_rollup_rebuild` (`rbee billing rollup --rebuild`) recomputes
    it from the raw events."""

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    model = models.CharField(max_length=200)
    key_id = models.BigIntegerField(default=0)
    modality = models.CharField(max_length=16, choices=UsageEvent.Modality.choices)
    requests = models.BigIntegerField(default=0)
    prompt_tokens = models.BigIntegerField(default=0)
    completion_tokens = models.BigIntegerField(default=0)
    images = models.BigIntegerField(default=0)
    audio_seconds = models.FloatField(default=0.0)
    characters = models.BigIntegerField(default=0)
    video_seconds = models.FloatField(default=0.0)

    class Meta:
        constraints = [
            # Also the index every read uses: tenant first, then the day range.
            models.UniqueConstraint(
                fields=["tenant", "day", "model", "key_id", "modality"], name="uniq_usage_daily"
            )
        ]

    def __str__(self) -> str:
        return f"usage {self.tenant_id} {self.day} {self.model} {self.key_id} {self.modality}"
