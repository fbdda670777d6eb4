"""/metrics (rbee/metrics.py): django-prometheus' series, this queen's request path and the
fleet read from the database when scraped, in one response, with bounded labels."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.core.handlers.asgi import ASGIHandler
from django.test import AsyncClient, Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from billing.models import MeterEvent, UsageEvent
from gdpr import audit, ledger
from hives.models import Hive
from inference.metrics import MODELS
from rbee import metrics
from tenants.services import tenant_create
from tests.web.fleet_fixtures import CPU, RTX, hive, worker

# The view reads the database on the request path's own threads (kernel/aio.py), which see
# only what was committed.
pytestmark = pytest.mark.django_db(transaction=True)
MiB = 1024 * 1024


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A master key and a checkpoint directory of this test's own."""
    monkeypatch.setenv("RBEE_HOME", str(tmp_path))
    monkeypatch.delenv("RBEE_AUDIT_CHECKPOINT_DIR", raising=False)
    monkeypatch.delenv("RBEE_AUDIT_CHECKPOINT_S3", raising=False)
    audit._cache.clear()
    metrics.checkpoints.forget()


def scrape(client: Client | None = None, **headers: Any) -> dict[str, dict[tuple, float]]:
    """GET /metrics, parsed: {sample name: {sorted labels: value}}."""
    r = (client or Client()).get("/metrics", **headers)
    assert r.status_code == 200, r.content
    assert r["Content-Type"].startswith("text/plain; version=")
    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(r.content.decode()):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def one(samples: dict[str, dict[tuple, float]], name: str, **labels: str) -> float:
    return samples[name][tuple(sorted(labels.items()))]


def test_one_response_carries_django_prometheus_rbee_and_the_process() -> None:
    Client().get("/ui/login")  # a page of the site, through django-prometheus' middleware
    got = scrape()
    assert one(got, "rbee_build_info", version=__import__("kernel").__version__) == 1
    assert one(got, "rbee_metrics_fleet_up") == 1
    for name in (
        "django_http_requests_total_by_method_total",
        "django_http_responses_total_by_status_view_method_total",
        "django_http_requests_latency_seconds_by_view_method_count",
        "django_db_execute_total",
        "django_db_query_duration_seconds_count",
        "process_resident_memory_bytes",
        "rbee_scheduler_decisions_total",
        "rbee_hives",
    ):
        assert name in got, name
    assert not [n for n in got if n.endswith("_created")]  # not doubled by `_created` series
    views = {
        dict(k)["view"] for k in got["django_http_responses_total_by_status_view_method_total"]
    }
    assert "ui-login" in views, views


async def call(path: str, *headers: tuple[bytes, bytes], method: str = "GET") -> int:
    """One request (a GET) through the queen's ASGI application, as Daphne calls it: its
    status."""
    from rbee.asgi import application

    sent: list[dict[str, Any]] = []
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"host", b"localhost"), *headers],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 7833),
    }
    received = iter([{"type": "http.request", "body": b"", "more_body": False}])

    async def receive() -> dict[str, Any]:
        try:
            return next(received)
        except StopIteration:
            await asyncio.sleep(3600)
            raise

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await application(scope, receive, send)
    return int(sent[0]["status"])


def test_the_api_is_counted_by_view_without_middleware() -> None:
    """/v1, /healthz and /metrics run in rbee/api_asgi.py (no middleware): counted by
    calling django-prometheus' middleware methods there."""
    key = (("method", "GET"), ("status", "200"), ("view", "rbee.views.healthz"))
    before = scrape().get("django_http_responses_total_by_status_view_method_total", {}).get(key, 0)
    assert asyncio.run(call("/healthz")) == 200
    got = scrape()
    assert got["django_http_responses_total_by_status_view_method_total"][key] == before + 1
    assert (
        got["django_http_requests_latency_seconds_by_view_method_count"][
            (("method", "GET"), ("view", "rbee.views.healthz"))
        ]
        >= 1
    )


def test_a_made_up_method_makes_no_series_of_its_own() -> None:
    """Daphne passes any token as the method; django-prometheus labelled its latency
    histogram with it as sent, so each made-up method (from anyone, without a key) added
    ~20 series for the life of the process. They all count as `<invalid method>`."""
    import prometheus_client

    def latency_count(view: str) -> float:
        got = prometheus_client.REGISTRY.get_sample_value(
            "django_http_requests_latency_seconds_by_view_method_count",
            {"view": view, "method": "<invalid method>"},
        )
        return got or 0.0

    before_api = latency_count("rbee.views.healthz")
    before_site = latency_count("ui-login")
    for n in range(3):
        asyncio.run(call("/healthz", method=f"MADEUP{n}"))  # the lean /v1 application
        Client().generic(f"MADEUP{n}", "/ui/login")  # the site, through MIDDLEWARE
    text = prometheus_client.generate_latest(prometheus_client.REGISTRY).decode()
    assert "MADEUP" not in text
    assert latency_count("rbee.views.healthz") == before_api + 3
    assert latency_count("ui-login") == before_site + 3


def test_a_request_the_counters_cannot_read_is_still_answered() -> None:
    assert asyncio.run(call("/healthz", (b"content-length", b"not-a-number"))) == 200


def test_the_site_middleware_keeps_async_views_async(caplog: pytest.LogCaptureFixture) -> None:
    """django-prometheus' middleware are async-capable (MiddlewareMixin): Django adapts no
    handler for them, so an async view behind the whole stack runs as a coroutine on the
    event loop, not through async_to_sync in a thread."""
    caplog.set_level(logging.DEBUG, logger="django.request")
    handler = ASGIHandler()
    adapted = [r.getMessage() for r in caplog.records if "adapted for middleware" in r.getMessage()]
    assert adapted == []
    assert asyncio.iscoroutinefunction(handler._middleware_chain)  # type: ignore[attr-defined]


async def test_an_async_request_through_the_stack_is_counted() -> None:
    before = _count_by_status("302") + _count_by_status("200")
    response = await AsyncClient().get("/ui/")
    assert response.status_code in (200, 302)
    assert _count_by_status("302") + _count_by_status("200") == before + 1


def _count_by_status(status: str) -> float:
    import prometheus_client

    got = prometheus_client.REGISTRY.get_sample_value(
        "django_http_responses_total_by_status_total", {"status": status}
    )
    return got or 0.0


def test_the_fleet_hives_devices_and_workers() -> None:
    up = hive("gaming-pc", devices=[RTX, CPU])
    worker(up, "llama-3-8b", "cuda:0", "ready", memory_bytes=5 * 2**30, inflight=2)
    worker(up, "sdxl", "cuda:0", "failed")
    hive("stale-box", age_s=120)
    down = hive("gone-box", online=False, devices=[RTX])
    worker(down, "llama-3-8b", "cuda:0", "ready")
    never = hive("never-box", online=False)
    Hive.objects.filter(pk=never.pk).update(last_seen_at=None)
    off = hive("off-box")
    Hive.objects.filter(pk=off.pk).update(disabled=True)
    got = scrape()

    assert {dict(k)["state"]: v for k, v in got["rbee_hives"].items()} == {
        "online": 1,
        "stale": 1,
        "offline": 2,
        "disabled": 1,
        "revoked": 0,
    }
    assert got["rbee_hive_up"] == {
        (("hive", "gaming-pc"),): 1,
        (("hive", "stale-box"),): 0,
        (("hive", "gone-box"),): 0,
    }  # never connected and disabled hives are not "down"
    assert got["rbee_hive_connected"] == {
        (("hive", "gaming-pc"),): 1,
        (("hive", "stale-box"),): 1,
        (("hive", "gone-box"),): 0,
    }
    assert one(got, "rbee_hive_heartbeat_age_seconds", hive="stale-box") == pytest.approx(
        120, abs=5
    )
    assert one(got, "rbee_hive_info", hive="gaming-pc", region="", version="0.9.0") == 1

    gpu = {"hive": "gaming-pc", "device": "cuda:0"}
    assert one(got, "rbee_device_memory_total_bytes", **gpu) == 24564 * MiB
    assert one(got, "rbee_device_memory_used_bytes", **gpu) == 18424 * MiB
    assert one(got, "rbee_device_utilization_ratio", **gpu) == pytest.approx(0.87)
    cpu = {"hive": "gaming-pc", "device": "cpu"}
    assert one(got, "rbee_device_memory_used_bytes", **cpu) == (65536 - 60000) * MiB  # from free
    assert ("hive", "gaming-pc") in dict.fromkeys(p for k in got["rbee_device_info"] for p in k)
    assert (("device", "cpu"), ("hive", "gaming-pc")) not in got.get(
        "rbee_device_utilization_ratio", {}
    )  # not reported: absent, not 0
    # an offline hive's last report is not a measurement
    assert all(dict(k)["hive"] != "gone-box" for k in got["rbee_device_memory_used_bytes"])

    assert got["rbee_worker_state"] == {
        (
            ("device", "cuda:0"),
            ("hive", "gaming-pc"),
            ("model", "llama-3-8b"),
            ("state", "ready"),
        ): 1,
        (("device", "cuda:0"), ("hive", "gaming-pc"), ("model", "sdxl"), ("state", "failed")): 1,
    }
    llama = {"hive": "gaming-pc", "device": "cuda:0", "model": "llama-3-8b"}
    assert one(got, "rbee_worker_memory_bytes", **llama) == 5 * 2**30
    # the catalog is what model labels may be
    assert MODELS.known == {"llama-3-8b", "sdxl"}


def test_the_stripe_outbox_backlog_and_lag() -> None:
    got = scrape()
    assert one(got, "rbee_stripe_outbox_pending") == 0
    assert one(got, "rbee_stripe_outbox_lag_seconds") == 0
    tenant = tenant_create(name="acme")
    usage = UsageEvent.objects.create(
        request_id="r1", tenant=tenant, model="m", modality="chat", prompt_tokens=3
    )
    an_hour_ago = timezone.now() - timedelta(hours=1)
    for i, sent in enumerate((None, None, timezone.now())):
        MeterEvent.objects.create(
            usage=usage,
            event_name="rbee_prompt_tokens",
            identifier=f"r1:{i}",
            customer="cus_1",
            value=Decimal(3),
            timestamp=an_hour_ago + timedelta(minutes=i),
            sent_at=sent,
        )
    got = scrape()
    assert one(got, "rbee_stripe_outbox_pending") == 2
    assert one(got, "rbee_stripe_outbox_lag_seconds") == pytest.approx(3600, abs=10)


def test_how_far_the_audit_log_is_signed() -> None:
    audit.record_many(audit.Event("key.create", actor="cli", data={"n": i}) for i in range(3))
    got = scrape()
    assert one(got, "rbee_audit_checkpoint_size") == 0  # no checkpoint yet
    assert "rbee_audit_checkpoint_age_seconds" not in got
    assert one(got, "rbee_audit_oldest_unsigned_event_age_seconds") >= 0
    unsigned = one(got, "rbee_audit_oldest_unsigned_event_age_seconds")

    ledger.checkpoint()
    metrics.checkpoints.forget()  # the sink is read at most every 30 s
    got = scrape()
    assert one(got, "rbee_audit_tree_size") == 3
    assert one(got, "rbee_audit_checkpoint_size") == 3
    assert one(got, "rbee_audit_checkpoint_age_seconds") < 60
    assert one(got, "rbee_audit_oldest_unsigned_event_age_seconds") == 0
    assert unsigned >= 0

    # events after the checkpoint, one sequenced and one not yet: the oldest counts
    audit.record_many([audit.Event("key.create", actor="cli", data={"n": 9})])
    ledger.sequence()
    audit.record_many([audit.Event("key.create", actor="cli", data={"n": 10})])
    got = scrape()
    assert one(got, "rbee_audit_tree_size") == 4
    assert one(got, "rbee_audit_checkpoint_size") == 3  # cached: the same checkpoint
    assert one(got, "rbee_audit_oldest_unsigned_event_age_seconds") > 0


def test_a_stale_checkpoint_is_read_again_without_holding_the_scrape(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import time

    cache = metrics._CheckpointCache()
    assert cache.get() == metrics.Checkpointed(0, None)  # the first read: at once
    audit.record_many(audit.Event("key.create", actor="cli", data={"n": i}) for i in range(3))
    ledger.checkpoint()
    assert cache.get() == metrics.Checkpointed(0, None)  # within CHECKPOINT_READ_SECONDS
    monkeypatch.setattr(metrics, "CHECKPOINT_READ_SECONDS", 0.0)
    assert cache.get() == metrics.Checkpointed(0, None)  # stale: served, read meanwhile
    deadline = time.monotonic() + 10
    while (got := cache.get()) is None or got.size != 3:
        assert time.monotonic() < deadline, got
        time.sleep(0.01)
    assert got.time is not None


def test_an_unreadable_checkpoint_sink_claims_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RBEE_AUDIT_CHECKPOINT_S3", "not-a-bucket-url")
    got = scrape()
    for name in (
        "rbee_audit_tree_size",
        "rbee_audit_checkpoint_size",
        "rbee_audit_oldest_unsigned_event_age_seconds",
    ):
        assert name not in got
    assert one(got, "rbee_metrics_fleet_up") == 1  # the rest of the fleet is there


def test_without_the_database_the_process_series_are_still_served() -> None:
    text = metrics.render(None).decode()
    assert "rbee_metrics_fleet_up 0.0" in text
    assert "rbee_scheduler_decisions_total" in text and "rbee_hive_up" not in text


async def test_a_database_that_does_not_answer_holds_one_thread_for_all_scrapes(
    settings: Any,
) -> None:
    """A scrape waits RBEE_DB_TIMEOUT for the fleet, then answers without it; its read
    runs on in a thread of the executor the request path's queries share, until the
    database answers. Scrapes that come meanwhile (Prometheus every 15 s, two of them in
    an HA pair) wait for that read: one thread held, not one more per scrape until the
    request path has none left. Here the database does not answer because another session
    holds a lock on the hives' table."""
    import psycopg
    from django.db import connection

    assert connection.vendor == "postgresql", "this test holds a lock in PostgreSQL"
    settings.RBEE_DB_TIMEOUT = 0.3
    db = connection.settings_dict
    locker = psycopg.connect(
        dbname=db["NAME"], user=db["USER"], host=db["HOST"], port=db["PORT"] or 5432
    )
    waiting = (
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
    )
    try:
        locker.execute("LOCK TABLE hives_hive IN ACCESS EXCLUSIVE MODE")
        for _ in range(3):
            text = (await metrics.scrape()).decode()
            assert "rbee_metrics_fleet_up 0.0" in text
            assert "rbee_hives{" not in text
        assert locker.execute(waiting).fetchone() == (1,)
    finally:
        locker.rollback()
        locker.close()
    text = (await metrics.scrape()).decode()  # the read in flight answers now
    assert "rbee_metrics_fleet_up 1.0" in text


async def test_the_token_holder_is_answered_while_the_request_path_holds_every_thread(
    settings: Any,
) -> None:
    """During a database incident the request path's calls block the shared executor's
    threads (each abandoned after RBEE_DB_TIMEOUT, running on until the database
    answers). That is when the metrics matter: the scraper holding RBEE_METRICS_TOKEN is
    still answered, with the process's and the request path's series and
    rbee_metrics_fleet_up 0 (not a 401 because the token check waited for a thread, nor a
    scrape that hangs waiting for one to render)."""
    import os

    import psycopg
    from django.db import connection
    from django.test import AsyncRequestFactory

    from kernel.aio import db

    assert connection.vendor == "postgresql", "this test holds a lock in PostgreSQL"
    settings.RBEE_DB_TIMEOUT = 0.3
    settings.RBEE_PRODUCTION = True
    settings.RBEE_METRICS_TOKEN = token = "metrics-" + "q" * 32
    conf = connection.settings_dict
    locker = psycopg.connect(
        dbname=conf["NAME"], user=conf["USER"], host=conf["HOST"], port=conf["PORT"] or 5432
    )
    threads = min(32, (os.cpu_count() or 1) + 4)  # the default executor's

    def read_hives() -> int:
        return Hive.objects.count()

    request = AsyncRequestFactory().get("/metrics", headers={"Authorization": f"Bearer {token}"})
    try:
        locker.execute("LOCK TABLE hives_hive IN ACCESS EXCLUSIVE MODE")
        blocked = await asyncio.gather(
            *(db(read_hives) for _ in range(threads + 2)), return_exceptions=True
        )
        assert all(isinstance(b, Exception) for b in blocked)  # each gave up; threads held
        response = await asyncio.wait_for(metrics.metrics(request), timeout=10)
        assert response.status_code == 200
        text = response.content.decode()
        assert "rbee_metrics_fleet_up 0.0" in text
        assert "rbee_scheduler_decisions_total" in text and "process_cpu_seconds_total" in text
    finally:
        locker.rollback()
        locker.close()


def test_no_series_is_labelled_with_a_tenant_key_or_user() -> None:
    allowed = {
        # rbee's own
        "model", "endpoint", "status_class", "kind", "outcome", "reason", "source", "state",
        "hive", "device", "region", "version", "name", "gpu_type", "le",
        # django-prometheus and prometheus_client
        "view", "method", "status", "transport", "templatename", "charset", "type",
        "alias", "vendor", "backend", "connection", "implementation", "major", "minor",
        "patchlevel", "generation",
    }  # fmt: skip
    hive("gaming-pc", devices=[RTX])
    Client().get("/ui/login")
    names = {k for series in scrape().values() for labels in series for k, _ in labels}
    assert names <= allowed, names - allowed


def test_production_keeps_the_metrics_for_the_token(settings: Any) -> None:
    settings.RBEE_PRODUCTION = True
    settings.RBEE_METRICS_TOKEN = "metrics-" + "p" * 32
    settings.ALLOWED_HOSTS = ["testserver"]
    assert Client().get("/metrics").status_code == 401
    assert Client().get("/metrics", HTTP_AUTHORIZATION="Bearer nope").status_code == 401
    got = scrape(HTTP_AUTHORIZATION=f"Bearer {settings.RBEE_METRICS_TOKEN}")
    assert one(got, "rbee_metrics_fleet_up") == 1
