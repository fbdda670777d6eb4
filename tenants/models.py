from __future__ import annotations

from django.db import models


class Plan(models.Model):
    """What a tenant may use: models, daily quotas, per-minute rates, concurrency.
    Limits are tenancy, so plans live here; billing prices them. Editable in the
    admin; empty/None means unlimited. A tenant's `overrides` replace
    single fields of its plan."""

    name = models.SlugField(max_length=64, unique=True)
    description = models.CharField(max_length=200, blank=True, default="")
    # Model names (or aliases) allowed; empty: every model.
    allowed_models = models.JSONField(default=list, blank=True)
    requests_per_day = models.PositiveIntegerField(null=True, blank=True)
    tokens_per_day = models.PositiveBigIntegerField(null=True, blank=True)
    images_per_day = models.PositiveIntegerField(null=True, blank=True)
    audio_seconds_per_day = models.PositiveIntegerField(null=True, blank=True)
    characters_per_day = models.PositiveBigIntegerField(null=True, blank=True)
    requests_per_minute = models.PositiveIntegerField(null=True, blank=True)
    tokens_per_minute = models.PositiveIntegerField(null=True, blank=True)
    max_concurrent = models.PositiveIntegerField(null=True, blank=True)
    # The tenant's share of a busy model's queue, against other tenants' (weighted fair).
    queue_weight = models.PositiveSmallIntegerField(default=1)
    # The highest priority its requests get: "interactive", or "batch" (a request may ask
    # for less, never more).
    max_priority = models.CharField(
        max_length=16,
        choices=[("interactive", "interactive"), ("batch", "batch")],
        default="interactive",
    )
    stripe_price_id = models.CharField(max_length=100, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    LIMIT_FIELDS = (
        "requests_per_day",
        "tokens_per_day",
        "images_per_day",
        "audio_seconds_per_day",
        "characters_per_day",
        "requests_per_minute",
        "tokens_per_minute",
        "max_concurrent",
    )

    def __str__(self) -> str:
        return self.name


class Tenant(models.Model):
    """A customer: everything they do is scoped to this row."""

    class Status(models.TextChoices):
        ACTIVE = "active"
        PAST_DUE = "past_due"  # a payment failed; still served until the grace period ends
        SUSPENDED = "suspended"

    name = models.SlugField(max_length=64, unique=True)
    # The plan's name, kept here for the scheduler's customer map (customer.tier).
    tier = models.CharField(max_length=32, default="free")
    plan = models.ForeignKey(
        Plan, null=True, blank=True, on_delete=models.PROTECT, related_name="tenants"
    )
    # Per-tenant limits that replace the plan's: {"tokens_per_day": 5000000, ...}.
    overrides = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    past_due_since = models.DateTimeField(null=True, blank=True)
    stripe_customer_id = models.CharField(max_length=100, blank=True, default="")
    # Where invoices go (and the Stripe customer's e-mail): when it is a person's, that
    # person is the invoices' customer for GDPR (their export holds the invoices; their
    # erasure pseudonymises them, kept for the legal period).
    billing_email = models.EmailField(blank=True, default="")
    # When the newest Stripe event applied to the status / to the plan was created: Stripe
    # does not deliver events in order, and an older one must not undo a newer one.
    status_event_at = models.DateTimeField(null=True, blank=True)
    plan_event_at = models.DateTimeField(null=True, blank=True)
    # Where its requests may run (kernel/regions.py): "" anywhere, else only on hives whose
    # operator-set region lies within it ("eu": eu, eu-west, ...); none there: 503.
    data_region = models.CharField(max_length=32, blank=True, default="")
    # ISO 3166-1 alpha-2 country whose law sets how long its books and invoices are kept
    # (gdpr retention); "" = the deployment's default period.
    jurisdiction = models.CharField(max_length=2, blank=True, default="")
    # Whether its requests' prompts and responses are kept (for debugging), and how long:
    # "off" (the default: never), "consent" (only for end users who consented to
    # prompt_retention in gdpr's ledger), "contract" (every request, under the tenant's
    # contract as controller). Kept rows expire after `prompt_retention_days`.
    prompt_retention = models.CharField(
        max_length=8,
        choices=[("off", "off"), ("consent", "consent"), ("contract", "contract")],
        default="off",
    )
    prompt_retention_days = models.PositiveSmallIntegerField(default=30)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name


class ApiKey(models.Model):
    """A bearer key. The plaintext is shown once; only its SHA-256 is kept.

    `scopes` narrows what the key may do: {"endpoints": ["chat", "embeddings"], "models":
    ["llama-3-8b"]} (missing or empty: everything). A rotated key stays valid until
    `expires_at` (the grace period) and names its successor in `replaced_by`."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100, blank=True, default="")
    prefix = models.CharField(max_length=16, unique=True)
    key_hash = models.CharField(max_length=64)
    scopes = models.JSONField(default=dict, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    replaced_by = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="replaces"
    )
    created_by = models.ForeignKey(
        "auth.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    # Narrows its tenant's data region, never widens it ("" = the tenant's).
    data_region = models.CharField(max_length=32, blank=True, default="")

    KIND = "sk-rbee"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    @property
    def display(self) -> str:
        return f"{self.KIND}-{self.prefix}-…"

    def __str__(self) -> str:
        return self.display


class Membership(models.Model):
    """A user's role in a tenant. Owners and admins manage members and keys; billing
    sees usage and invoices; members use keys and see usage."""

    class Role(models.TextChoices):
        OWNER = "owner"
        ADMIN = "admin"
        MEMBER = "member"
        BILLING = "billing"

    user = models.ForeignKey("auth.User", on_delete=models.CASCADE, related_name="memberships")
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "tenant"], name="uniq_membership"),
        ]

    def __str__(self) -> str:
        return f"{self.user_id} {self.role} of {self.tenant_id}"


class Invitation(models.Model):
    """An invitation to join a tenant with a role, accepted with a one-time token (only
    its hash is stored) before it expires."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="invitations")
    email = models.EmailField()
    role = models.CharField(max_length=16, choices=Membership.Role.choices)
    token_hash = models.CharField(max_length=64, unique=True)
    invited_by = models.ForeignKey(
        "auth.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"invitation {self.email} to {self.tenant_id}"


# The operators' areas and the permission each needs (app_label.codename).
OPERATOR_AREAS: dict[str, str] = {
    "fleet": "tenants.operate_fleet",
    "scheduler": "tenants.operate_scheduler",
    "tenants": "tenants.operate_tenants",
    "audit": "tenants.read_audit",
}


class Operator(models.Model):
    """Not a table: the home of the operators' permissions, one per area of the queen.
    Operators are Django users holding some of these (`rbee operator create/grant`); a
    superuser holds them all. `is_staff` alone grants nothing on the management APIs."""

    class Meta:
        managed = False
        db_table = "tenants_operator_permissions_only"
        default_permissions = ()
        permissions = [
            ("operate_fleet", "Fleet: hives, models, workers, downloads, aliases"),
            ("operate_scheduler", "Scheduler: replace and read the Rhai scheduler script"),
            ("operate_tenants", "Tenants and billing: tenants, keys, plans, usage, invoices"),
            ("read_audit", "Audit: read the audit and usage logs"),
        ]
