from __future__ import annotations

from django.db import models


class SchedulerScript(models.Model):
    """A version of the Rhai scheduler script. The newest row is the one in force; every
    queen process switches to it within RBEE_SCHEDULER_CHECK_SECONDS, without a restart."""

    source = models.TextField()
    sha256 = models.CharField(max_length=64)
    origin = models.CharField(max_length=500, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"scheduler v{self.pk} ({self.sha256[:12]})"


class GeneratedImage(models.Model):
    """An image answered with response_format=url: served from the queen, by an
    unguessable token, until it expires (RBEE_IMAGE_URL_TTL). In the database so any
    queen replica can serve it."""

    token = models.CharField(max_length=64, unique=True)
    content = models.BinaryField()
    content_type = models.CharField(max_length=64, default="image/png")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return f"image {self.token[:8]}..."


class Video(models.Model):
    """A video job (POST /v1/videos, OpenAI's asynchronous video API), one tenant's only.

    queued --(routed, dispatched)--> in_progress --(the worker's MP4)--> completed
       |                                  |
       +----------------------------------+--(refused, failed, its queen died)--> failed

    Runs as a background task of the queen that accepted it (inference/videos.py), so it
    outlives the client's request. Its files (VideoAsset) live in the database, so any
    queen replica serves them, until `expires_at` (RBEE_VIDEO_TTL after it ended): the
    retention sweep deletes the job and its files then (inference/retention.py)."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        IN_PROGRESS = "in_progress"
        COMPLETED = "completed"
        FAILED = "failed"

    id = models.CharField(primary_key=True, max_length=64)  # video_<32 hex>
    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="+")
    # The tenant's end user, as the OpenAI `user` field named them: a data subject (GDPR).
    end_user = models.CharField(max_length=256, blank=True, default="")
    model = models.CharField(max_length=200)
    prompt = models.TextField()
    seconds = models.CharField(max_length=8)
    size = models.CharField(max_length=16, blank=True, default="")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    progress = models.PositiveSmallIntegerField(default=0)
    # The job's request id: its usage row and audit event.
    request_id = models.CharField(max_length=64, blank=True, default="")
    # The queen process running it (kernel.process), and when it last said so.
    queen = models.CharField(max_length=120, blank=True, default="")
    error_code = models.CharField(max_length=64, blank=True, default="")
    error_message = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True, db_index=True)

    class Meta:
        indexes = [models.Index(fields=["tenant", "created_at", "id"])]

    def __str__(self) -> str:
        return f"{self.id} {self.status}"


class VideoAsset(models.Model):
    """One downloadable file of a completed video: the MP4, its thumbnail (WebP) or its
    spritesheet (JPEG), the `variant`s of GET /v1/videos/{id}/content."""

    video = models.ForeignKey(Video, on_delete=models.CASCADE, related_name="assets")
    variant = models.CharField(max_length=16)
    content = models.BinaryField()
    content_type = models.CharField(max_length=32)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["video", "variant"], name="uniq_video_asset"),
        ]

    def __str__(self) -> str:
        return f"{self.video_id} {self.variant}"


class RequestStat(models.Model):
    """One minute of one model's requests, summed over every queen process: each queen
    adds what it saw in memory and flushes it every RBEE_METRICS_FLUSH_SECONDS as
    upsert-increments (inference/stats.py), never a write per request. The charts at
    /ui/charts divide the sums (TTFT = ttft_ms_sum / ttft_count, tokens/s =
    output_tokens / generation_seconds, queue wait = queue_wait_ms_sum / requests).
    Pruned after RBEE_METRICS_RETENTION_DAYS."""

    minute = models.DateTimeField()  # the minute's start, UTC
    model = models.CharField(max_length=200)
    requests = models.BigIntegerField(default=0)
    errors = models.BigIntegerField(default=0)
    ttft_ms_sum = models.FloatField(default=0.0)
    ttft_count = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    generation_seconds = models.FloatField(default=0.0)
    queue_wait_ms_sum = models.FloatField(default=0.0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["minute", "model"], name="uniq_requeststat_minute"),
        ]

    def __str__(self) -> str:
        return f"{self.model} @ {self.minute:%Y-%m-%d %H:%M}: {self.requests} requests"


class StoredResponse(models.Model):
    """A Responses API response kept for `previous_response_id`, GET and DELETE
    (inference/responses.py): only when the request asked `store` and the tenant's prompt
    retention gives a basis (gdpr/exchanges.py: basis_for), until `expires_at` (the
    tenant's retention days). Always read and deleted through the tenant
    (inference/selectors.py, services.py): another tenant's id is a 404 like one that
    does not exist."""

    response_id = models.CharField(max_length=64, unique=True)
    tenant_id = models.BigIntegerField(db_index=True)
    subject = models.CharField(max_length=600, blank=True, default="")  # the end user's
    basis = models.CharField(max_length=16)  # "consent" or "contract"
    model = models.CharField(max_length=200)
    # The conversation before this request (the previous responses' inputs and outputs)
    # and this request's own input items, in Responses API form: input_items lists the
    # latter; a next turn continues from history + input_items + the output.
    history = models.JSONField(default=list)
    input_items = models.JSONField(default=list)
    body = models.JSONField()  # the Response object as it was answered
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        indexes = [models.Index(fields=["subject"], name="inference_resp_subject")]

    def __str__(self) -> str:
        return f"response {self.response_id}"
