"""gdpr tables: privacy — legal holds, retention settings and the consent ledger.

No foreign keys to other apps (gdpr imports none): a tenant is its id, a person is a
data subject's canonical string (gdpr.subjects)."""

from __future__ import annotations

from django.db import models

__all__ = ["ConsentRecord", "LegalHold", "RetentionSetting", "StoredExchange"]


class LegalHold(models.Model):
    """Records of a tenant, or of one data subject, that must not be purged (litigation,
    an authority's request), whatever their retention period says, until released."""

    tenant_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    subject = models.CharField(max_length=400, blank=True, default="", db_index=True)
    reason = models.CharField(max_length=500)
    placed_by = models.CharField(max_length=200)
    placed_at = models.DateTimeField(auto_now_add=True)
    released_at = models.DateTimeField(null=True, blank=True)
    released_by = models.CharField(max_length=200, blank=True, default="")

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=~(models.Q(tenant_id__isnull=True) & models.Q(subject="")),
                name="gdpr_hold_has_target",
            )
        ]

    def __str__(self) -> str:
        return f"hold {self.pk} on {self.subject or f'tenant {self.tenant_id}'}"


class RetentionSetting(models.Model):
    """An operator's retention period for one record class (and jurisdiction, "" for all
    others), replacing the built-in one. Changes are audit events."""

    record_class = models.CharField(max_length=64)
    jurisdiction = models.CharField(max_length=2, blank=True, default="")
    days = models.PositiveIntegerField()
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.CharField(max_length=200, blank=True, default="")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["record_class", "jurisdiction"], name="gdpr_retention_setting_uniq"
            )
        ]

    def __str__(self) -> str:
        return f"{self.record_class}/{self.jurisdiction or '*'}: {self.days} days"


class ConsentRecord(models.Model):
    """One grant or withdrawal of consent (Art. 7), append-only: the state at any moment
    is the newest record per (subject, purpose) at or before it. Nothing is updated or
    deleted by the application except by a subject's erasure."""

    class Action(models.TextChoices):
        GRANT = "grant"
        WITHDRAW = "withdraw"

    class Mechanism(models.TextChoices):
        PORTAL = "portal"
        API = "api"
        CLI = "cli"

    subject = models.CharField(max_length=400, db_index=True)  # canonical subject string
    tenant_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    purpose = models.CharField(max_length=64)
    action = models.CharField(max_length=8, choices=Action.choices)
    text_sha256 = models.CharField(max_length=64)  # of the exact text shown (empty: withdraw)
    mechanism = models.CharField(max_length=8, choices=Mechanism.choices)
    recorded_by = models.CharField(max_length=400)  # who recorded it (the subject, or a tenant)
    at = models.DateTimeField(db_index=True)

    class Meta:
        indexes = [models.Index(fields=["subject", "purpose", "at"], name="gdpr_consent_state")]

    def __str__(self) -> str:
        return f"{self.action} {self.purpose} by {self.pk}"


class StoredExchange(models.Model):
    """A request's prompt and response, kept for debugging only under a legal basis
    (`basis`: the end user's consent, or the tenant's contract) and only until
    `expires_at` (purged by retention). Off by default (tenants.Tenant.prompt_retention)."""

    tenant_id = models.BigIntegerField(db_index=True)
    request_id = models.CharField(max_length=64, unique=True)
    subject = models.CharField(max_length=400, blank=True, default="", db_index=True)
    basis = models.CharField(max_length=8)  # "consent" or "contract"
    model = models.CharField(max_length=200)
    prompt = models.TextField()
    response = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return f"exchange {self.request_id}"
