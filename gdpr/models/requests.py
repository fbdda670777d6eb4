"""gdpr tables: data-subject requests (Art. 15, 17, 20) and their Art. 12(3) deadlines."""

from __future__ import annotations

from django.db import models

__all__ = ["SubjectRequest"]


class SubjectRequest(models.Model):
    """One export or erasure request, tracked against its legal deadline.

    The subject is kept as a keyed hash (`subject_hash`, HMAC of the canonical form, to
    find every request about one person) and, while the request is useful to operators,
    its label in clear (`subject_label`). Erasing the subject replaces the label of all
    their requests with a pseudonym: the request rows stay, as the proof that we
    complied (Art. 5(2)), without naming anyone.

    Deadline: `due_at` is one month after receipt (Art. 12(3)); it moves to
    `extended_until` (at most two further months) only with a reason that was
    notified to the subject (`extension_reason`, `extension_notified_at`)."""

    class Kind(models.TextChoices):
        EXPORT = "export"
        ERASE = "erase"

    class Status(models.TextChoices):
        RECEIVED = "received"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"

    kind = models.CharField(max_length=8, choices=Kind.choices)
    subject_hash = models.CharField(max_length=64, db_index=True)
    subject_label = models.CharField(max_length=300)
    # Who asked: "account:<id>" for a signed-in person, "cli" for an operator at the console.
    requested_by = models.CharField(max_length=64)
    requested_by_user_id = models.IntegerField(null=True, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RECEIVED)
    received_at = models.DateTimeField()
    due_at = models.DateTimeField(db_index=True)
    extended_until = models.DateTimeField(null=True, blank=True)
    extension_reason = models.TextField(blank=True, default="")
    extension_notified_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    # Export: the archive's file name under RBEE_HOME/gdpr/exports; erase: the receipt.
    archive = models.CharField(max_length=200, blank=True, default="")
    result = models.JSONField(default=dict, blank=True)
    error = models.CharField(max_length=500, blank=True, default="")

    class Meta:
        ordering = ["-received_at", "-id"]

    @property
    def deadline(self):  # type: ignore[no-untyped-def]
        """The date by which it must be answered (the extension's, if granted)."""
        return self.extended_until or self.due_at

    def __str__(self) -> str:
        return f"gdpr {self.kind} #{self.pk} ({self.status})"
