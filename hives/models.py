from __future__ import annotations

from enum import StrEnum

from django.db import models

from hives.protocol import Capability, DownloadState, WorkerAction, WorkerState


def _choices(words: type[StrEnum]) -> list[tuple[str, str]]:
    """Field choices from one of the protocol's enums (labels as TextChoices makes them),
    so that the wire and the database share one list of words."""
    return [(w.value, w.name.replace("_", " ").title()) for w in words]


class Hive(models.Model):
    """A machine running `rbee hive start`, known by name and authenticated by a token.

    States::

        (token created) --> offline --(websocket hello)--> online
                               ^                              |
                               +--(socket closed / stale)-----+
    """

    class Status(models.TextChoices):
        ONLINE = "online"
        OFFLINE = "offline"

    name = models.SlugField(max_length=64, unique=True)
    token_prefix = models.CharField(max_length=16, unique=True)
    token_hash = models.CharField(max_length=64)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OFFLINE)
    # The channel-layer name of the consumer that holds this hive's websocket,
    # looked up on every dispatch (so no sticky sessions between replicas).
    channel_name = models.CharField(max_length=255, blank=True, default="")
    # Operator data (`rbee hive token --region`, `rbee hive set --region`, the
    # management API): what a hive says about its own region never changes it, or a
    # hive could pull a tenant's requests out of their residency region.
    region = models.CharField(max_length=32, blank=True, default="")
    # What the hive's hello said, shown to the operator beside `region`.
    reported_region = models.CharField(max_length=32, blank=True, default="")
    # The operator lets this hive's start models (`rbee hive start --model`) in without
    # approving each (`rbee hive token --trust-models`; the local hive of `rbee up`).
    trust_models = models.BooleanField(default=False)
    # Disabled: its socket is closed and reconnects are refused until enabled again.
    disabled = models.BooleanField(default=False)
    # Revoked: its token no longer works (`rbee hive token` issues a new one).
    token_revoked = models.BooleanField(default=False)
    version = models.CharField(max_length=32, blank=True, default="")
    devices = models.JSONField(default=list, blank=True)
    telemetry = models.JSONField(default=dict, blank=True)
    connected_at = models.DateTimeField(null=True, blank=True)
    last_seen_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    TOKEN_KIND = "rbee-hive"  # noqa: S105 (the public prefix of tokens, not a secret)

    def __str__(self) -> str:
        return self.name


class CatalogModel(models.Model):
    """A model rbee knows how to serve: its public id, what it does, how and from where."""

    Capability = Capability

    name = models.CharField(max_length=200, unique=True)
    capability = models.CharField(max_length=32, choices=_choices(Capability))
    engine = models.CharField(max_length=64)
    source = models.CharField(max_length=1000, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name


class ModelApproval(models.Model):
    """A model name a hive may serve, beyond what the operator assigned to it.

    A hive reports the workers it runs; one for a model that is neither assigned to it
    (Assignment) nor approved here is recorded as pending (`approved=False`, with what
    the hive said about it) and is never routed to. `rbee hive approve HIVE MODEL` (or
    the management API) approves it; a hive the operator trusts (`trust_models`) has
    its start models approved when it says hello.
    """

    hive = models.ForeignKey(Hive, on_delete=models.CASCADE, related_name="approvals")
    model_name = models.CharField(max_length=200)
    approved = models.BooleanField(default=False)
    # What the hive last reported for it (the catalog row is made from this on approval).
    capability = models.CharField(max_length=32, blank=True, default="")
    engine = models.CharField(max_length=64, blank=True, default="")
    source = models.CharField(max_length=1000, blank=True, default="")
    device = models.CharField(max_length=32, blank=True, default="")
    state = models.CharField(max_length=16, blank=True, default="")
    reason = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["hive", "model_name"], name="uniq_model_approval"),
        ]

    def __str__(self) -> str:
        return f"{self.model_name}@{self.hive.name} ({'approved' if self.approved else 'pending'})"


class ModelAlias(models.Model):
    """Another name a catalog model answers to (`rbee model alias tts-1 piper-joe`):
    clients that hard-code OpenAI's model names, or the seeds' names, reach it."""

    name = models.CharField(max_length=200, unique=True)
    model = models.ForeignKey(CatalogModel, on_delete=models.CASCADE, related_name="aliases")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.name} -> {self.model.name}"


class Worker(models.Model):
    """One model loaded on one device of one hive, as the hive last reported it.

    States: hives.protocol.WorkerState, as reported by the hive (the hive restarts a
    failed worker with backoff).
    """

    State = WorkerState

    hive = models.ForeignKey(Hive, on_delete=models.CASCADE, related_name="workers")
    model = models.ForeignKey(CatalogModel, on_delete=models.CASCADE, related_name="workers")
    device = models.CharField(max_length=32, default="cpu")
    state = models.CharField(
        max_length=16, choices=_choices(WorkerState), default=WorkerState.STARTING
    )
    pinned = models.BooleanField(default=False)
    inflight = models.IntegerField(default=0)
    slots = models.IntegerField(default=1)
    memory_bytes = models.BigIntegerField(default=0)
    message = models.CharField(max_length=1000, blank=True, default="")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["hive", "model", "device"], name="uniq_worker_place"),
        ]

    def __str__(self) -> str:
        return f"{self.model.name}@{self.hive.name}:{self.device}"


class Assignment(models.Model):
    """A model the queen wants on a hive's device (`rbee model add --hive`).

    The queen sends it to the hive when the hive connects and whenever its heartbeat
    shows it missing, so a pinned model comes back where it was after a hive restart.
    `spec` is what `rbee hive start --model` takes: a bundled id or NAME=ENGINE:SOURCE.
    """

    hive = models.ForeignKey(Hive, on_delete=models.CASCADE, related_name="assignments")
    model_name = models.CharField(max_length=200)
    spec = models.CharField(max_length=1000)
    device = models.CharField(max_length=32, default="cpu")
    pinned = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["hive", "model_name", "device"], name="uniq_assignment_place"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.model_name}@{self.hive.name}:{self.device}"


class WorkerCommand(models.Model):
    """An operator's order for one worker (`rbee worker restart`, the management API),
    delivered to its hive with the next heartbeat and then marked sent."""

    Action = WorkerAction

    hive = models.ForeignKey(Hive, on_delete=models.CASCADE, related_name="worker_commands")
    model_name = models.CharField(max_length=200)
    device = models.CharField(max_length=32, default="cpu")
    action = models.CharField(max_length=16, choices=_choices(WorkerAction))
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.action} {self.model_name}@{self.hive.name}:{self.device}"


class ModelDownload(models.Model):
    """`rbee model download SOURCE --hive H`: the hive fetches a repo (or checks a local
    path) and reports its progress; sent again when the hive reconnects, so an
    interrupted download resumes where it stopped."""

    Status = DownloadState

    hive = models.ForeignKey(Hive, on_delete=models.CASCADE, related_name="downloads")
    source = models.CharField(max_length=1000)
    status = models.CharField(
        max_length=16, choices=_choices(DownloadState), default=DownloadState.QUEUED
    )
    done_bytes = models.BigIntegerField(default=0)
    total_bytes = models.BigIntegerField(default=0)
    path = models.CharField(max_length=1000, blank=True, default="")
    # The commit the hive fetched (the revision named, or `main`, resolved by the Hub;
    # the name itself where the Hub gave no commit).
    revision = models.CharField(max_length=200, blank=True, default="")
    message = models.CharField(max_length=1000, blank=True, default="")
    sent_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"download {self.source} on {self.hive.name} ({self.status})"


class DeviceSample(models.Model):
    """A device's memory and utilisation in one minute, from the hive's heartbeats: the
    first heartbeat of the minute is kept (hives.services.hive_heartbeat), so at most one
    row per device and minute whatever the number of queens. Charted at /ui/charts;
    pruned after RBEE_METRICS_RETENTION_DAYS."""

    hive = models.ForeignKey(Hive, on_delete=models.CASCADE, related_name="samples")
    device = models.CharField(max_length=32)
    minute = models.DateTimeField(db_index=True)  # the minute's start, UTC
    memory_used_mb = models.BigIntegerField(default=0)
    memory_total_mb = models.BigIntegerField(default=0)
    utilization = models.FloatField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["hive", "device", "minute"], name="uniq_devicesample_minute"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.hive_id}/{self.device} @ {self.minute:%Y-%m-%d %H:%M}"
