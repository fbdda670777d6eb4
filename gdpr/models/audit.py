"""gdpr tables: the audit log.

* `AuditEvent`: one row per event, append-only (database triggers refuse UPDATE and
  DELETE, and TRUNCATE on PostgreSQL; see migration 0001). Persons' fields are sealed
  (AES-256-GCM) under their data subject's key: `actor_sealed` under `actor_key`,
  `subject_sealed` (the subject and `personal`) under `subject_key`. `data` is canonical
  JSON text, so the bytes hashed into the tree are exactly the bytes stored.
* `AuditLeaf`: the Merkle tree's order. Event ids come from a sequence and commit out of
  order when many queens write at once, so a single sequencer (gdpr.ledger) gives each
  committed event the next tree index, with its leaf hash; append-only as well.
* `AuditSubtree`: cached roots of complete chunks of the tree (see gdpr.ledger).
* `AuditKey`: a data subject's key, found by HMAC of the subject and wrapped by the
  master key kept in RBEE_HOME. Deleting the row is erasure (crypto-shredding): the
  sealed fields no longer decrypt and the key id links the events to no one.
* `AuditCursor`: durable positions of the batch appenders (e.g. inference events from
  finished usage rows), advanced in the same transaction as the events they append.
"""

from __future__ import annotations

from django.db import models

__all__ = [
    "EVENT_COLUMNS",
    "AuditCursor",
    "AuditEvent",
    "AuditKey",
    "AuditLeaf",
    "AuditSubtree",
]

# An event's stored columns, in the order its leaf hashes them (gdpr/ledger.py) and an
# export opens them (gdpr/audit.py event_view).
EVENT_COLUMNS = (
    "id",
    "created_at",
    "action",
    "actor",
    "tenant_id",
    "request_id",
    "region",
    "outcome",
    "data",
    "actor_key",
    "actor_sealed",
    "subject_key",
    "subject_sealed",
)


class AuditKey(models.Model):
    id = models.CharField(max_length=32, primary_key=True)  # random, hex
    lookup = models.CharField(max_length=64, unique=True)  # HMAC(master, subject), hex
    wrapped = models.BinaryField()  # nonce || AES-GCM(master, key), aad = id
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "gdpr_audit_key"


class AuditEvent(models.Model):
    id = models.BigAutoField(primary_key=True)
    created_at = models.DateTimeField()
    action = models.CharField(max_length=64)
    actor = models.CharField(max_length=200, blank=True, default="")  # when not a person
    tenant_id = models.BigIntegerField(null=True, blank=True)
    request_id = models.CharField(max_length=64, blank=True, default="")
    region = models.CharField(max_length=32, blank=True, default="")
    outcome = models.CharField(max_length=32, blank=True, default="ok")
    data = models.TextField(default="{}")  # canonical JSON
    actor_key = models.CharField(max_length=32, blank=True, default="")
    actor_sealed = models.BinaryField(default=b"")
    subject_key = models.CharField(max_length=32, blank=True, default="")
    subject_sealed = models.BinaryField(default=b"")

    class Meta:
        db_table = "gdpr_audit_event"
        indexes = [
            models.Index(fields=["actor_key"], name="gdpr_audit_actor_key"),
            models.Index(fields=["subject_key"], name="gdpr_audit_subject_key"),
            models.Index(fields=["tenant_id", "id"], name="gdpr_audit_tenant"),
            models.Index(fields=["request_id"], name="gdpr_audit_request"),
        ]
        constraints = [
            # One inference event per request, however often a batch appender retries.
            models.UniqueConstraint(
                fields=["request_id"],
                condition=models.Q(action="inference") & ~models.Q(request_id=""),
                name="gdpr_audit_one_inference_per_request",
            )
        ]


class AuditLeaf(models.Model):
    index = models.BigIntegerField(primary_key=True)  # position in the tree, from 0
    event_id = models.BigIntegerField(unique=True)
    leaf_hash = models.BinaryField()  # SHA-256(0x00 || leaf data), 32 bytes

    class Meta:
        db_table = "gdpr_audit_leaf"


class AuditSubtree(models.Model):
    """The root of complete, aligned chunk `chunk` of the tree (leaves
    [chunk * ledger.CHUNK, (chunk + 1) * ledger.CHUNK)), written by the checkpointer once
    the chunk is inside a signed checkpoint. Leaves are append-only, so a complete chunk's
    root never changes: proofs and checkpoints read these instead of every leaf. A cache,
    never trusted on its own: every answer built from it is checked against a signed root."""

    chunk = models.BigIntegerField(primary_key=True)
    hash = models.BinaryField()  # 32 bytes

    class Meta:
        db_table = "gdpr_audit_subtree"


class AuditCursor(models.Model):
    name = models.CharField(max_length=64, primary_key=True)
    position = models.BigIntegerField(default=0)

    class Meta:
        db_table = "gdpr_audit_cursor"
