"""Inference audit events, appended in batches from finished usage rows.

Every /v1 request that reached a worker has exactly one usage row (billing.UsageEvent),
written durably on the request path. Its audit event is appended here, off that path,
by billing's periodic work (every few seconds; Celery beat with Redis, a thread of the
queen on the embedded default): request id, tenant, key prefix (never the key), end-user
id (sealed under `enduser:<tenant>:<user>`), model, hive/worker, region, outcome, units.
Never a prompt or an output: the usage row holds neither.

A durable cursor (gdpr's feed position) moves with each batch in one transaction, and
the log takes one inference event per request id, so a retried or doubled run appends
nothing twice. The cursor stops before the first row still running (provisional), and
rows after it are looked at again on the next run (and skipped once recorded).
"""

from __future__ import annotations

from billing.models import UsageEvent
from gdpr import audit, subjects

FEED = "billing.usage"
BATCH = 2000


def usage_audit_append(*, limit: int = BATCH) -> int:
    """Append the audit events of finished usage rows past the cursor. How many rows it
    looked at (events already in the log are skipped)."""
    start = audit.feed_position(FEED)
    rows = list(
        UsageEvent.objects.filter(pk__gt=start)
        .order_by("pk")
        .values(
            "pk",
            "request_id",
            "tenant_id",
            "tenant__name",
            "api_key__prefix",
            "model",
            "modality",
            "prompt_tokens",
            "completion_tokens",
            "images",
            "audio_seconds",
            "characters",
            "video_seconds",
            "latency_ms",
            "worker",
            "region",
            "end_user",
            "outcome",
            "created_at",
        )[:limit]
    )
    if not rows:
        return 0
    events: list[audit.Event] = []
    position = start
    blocked = False
    for r in rows:
        if r["outcome"] == UsageEvent.Outcome.PROVISIONAL:
            blocked = True  # still running: the cursor waits here
            continue
        if not blocked:
            position = r["pk"]
        hive, _, device = r["worker"].partition("/")
        end_user = r["end_user"]
        units = {
            k: r[k]
            for k in (
                "prompt_tokens",
                "completion_tokens",
                "images",
                "audio_seconds",
                "characters",
                "video_seconds",
            )
            if r[k]
        }
        events.append(
            audit.Event(
                "inference",
                actor=f"key:{r['api_key__prefix']}" if r["api_key__prefix"] else "anonymous",
                tenant_id=r["tenant_id"],
                subject=subjects.end_user(r["tenant__name"], end_user) if end_user else None,
                personal={"end_user": end_user} if end_user else None,
                data={
                    "model": r["model"],
                    "modality": r["modality"],
                    "hive": hive,
                    "device": device,
                    "units": units,
                    "latency_ms": r["latency_ms"],
                    "at": r["created_at"].isoformat(),
                },
                request_id=r["request_id"],
                region=r["region"],
                outcome=r["outcome"],
            )
        )
    audit.feed_append(FEED, events, position=position)
    return len(rows)
