"""This queen's request-path series (inference/metrics.py): bounded labels, counters and
histograms recorded in memory."""

from __future__ import annotations

import math

import pytest

from inference import metrics
from inference.metrics import MODELS, OTHER, REGISTRY, ModelLabels


def value(name: str, **labels: str) -> float:
    got = REGISTRY.get_sample_value(name, labels)
    return 0.0 if got is None else got


def test_unknown_models_collapse_to_other() -> None:
    labels = ModelLabels(limit=3)
    assert labels.label("llama-3-8b") == OTHER
    assert labels.label(None) == OTHER and labels.label("") == OTHER
    labels.learn("llama-3-8b")
    assert labels.label("llama-3-8b") == "llama-3-8b"
    assert labels.label("Llama-3-8B") == OTHER  # names are exact, never normalised into a new one


def test_at_most_limit_model_names_become_labels() -> None:
    labels = ModelLabels(limit=3)
    for name in ("a", "b", "c", "d", "e"):
        labels.learn(name)
    assert labels.known == {"a", "b", "c"}
    assert labels.label("d") == OTHER


def test_the_catalog_replaces_what_was_learnt() -> None:
    labels = ModelLabels(limit=2)
    labels.learn("gone")
    labels.replace(["zeta", "alpha", "beta", ""])
    assert labels.known == {"alpha", "beta"}  # the first two, sorted
    assert labels.label("gone") == OTHER


@pytest.mark.parametrize(
    ("status", "klass"), [(200, "2xx"), (404, "4xx"), (429, "4xx"), (499, "4xx"), (503, "5xx")]
)
def test_status_classes(status: int, klass: str) -> None:
    assert metrics.status_class(status) == klass


def test_a_status_out_of_range_is_a_server_error() -> None:
    assert metrics.status_class(0) == "5xx" and metrics.status_class(700) == "5xx"


def test_a_request_counts_once_under_its_model_endpoint_and_status_class() -> None:
    MODELS.learn("metrics-test-model")
    labels = {"model": "metrics-test-model", "endpoint": "chat"}
    before = value("rbee_requests_total", **labels, status_class="2xx")
    before_n = value("rbee_request_duration_seconds_count", **labels)
    before_sum = value("rbee_request_duration_seconds_sum", **labels)
    metrics.request_done(model="metrics-test-model", endpoint="chat", status=200, seconds=0.25)
    assert value("rbee_requests_total", **labels, status_class="2xx") == before + 1
    assert value("rbee_request_duration_seconds_count", **labels) == before_n + 1
    assert value("rbee_request_duration_seconds_sum", **labels) == pytest.approx(before_sum + 0.25)
    assert value("rbee_request_duration_seconds_bucket", **labels, le="0.25") >= 1


def test_a_model_the_catalog_does_not_know_and_an_unknown_endpoint_are_other() -> None:
    before = value("rbee_requests_total", model=OTHER, endpoint=OTHER, status_class="4xx")
    metrics.request_done(model="made-up-by-a-client", endpoint="/v1/x", status=404, seconds=0.01)
    assert (
        value("rbee_requests_total", model=OTHER, endpoint=OTHER, status_class="4xx") == before + 1
    )
    assert (
        REGISTRY.get_sample_value(
            "rbee_requests_total",
            {"model": "made-up-by-a-client", "endpoint": OTHER, "status_class": "4xx"},
        )
        is None
    )


def test_a_job_counts_its_tokens_latencies_and_outcome() -> None:
    MODELS.learn("metrics-test-job")
    m = {"model": "metrics-test-job"}
    before = {
        "prompt": value("rbee_tokens_total", **m, kind="prompt"),
        "completion": value("rbee_tokens_total", **m, kind="completion"),
        "ok": value("rbee_jobs_total", **m, outcome="ok"),
        "ttft": value("rbee_time_to_first_token_seconds_count", **m),
        "itl": value("rbee_inter_token_latency_seconds_sum", **m),
        "images": value("rbee_images_total", **m),
    }
    metrics.job_done(
        model="metrics-test-job",
        outcome="ok",
        ttft=0.3,
        inter_token=0.02,
        prompt_tokens=11,
        completion_tokens=7,
        images=2,
    )
    assert value("rbee_tokens_total", **m, kind="prompt") == before["prompt"] + 11
    assert value("rbee_tokens_total", **m, kind="completion") == before["completion"] + 7
    assert value("rbee_jobs_total", **m, outcome="ok") == before["ok"] + 1
    assert value("rbee_time_to_first_token_seconds_count", **m) == before["ttft"] + 1
    assert value("rbee_inter_token_latency_seconds_sum", **m) == pytest.approx(before["itl"] + 0.02)
    assert value("rbee_images_total", **m) == before["images"] + 2


def test_a_job_without_tokens_or_with_a_bad_figure_adds_nothing_absurd() -> None:
    MODELS.learn("metrics-test-odd")
    m = {"model": "metrics-test-odd"}
    before = value("rbee_time_to_first_token_seconds_sum", **m)
    metrics.job_done(
        model="metrics-test-odd", outcome="weird", ttft=math.nan, audio_seconds=math.inf
    )
    assert value("rbee_jobs_total", **m, outcome="error") >= 1  # an unknown outcome is an error
    assert value("rbee_jobs_total", **m, outcome="weird") == 0
    assert value("rbee_time_to_first_token_seconds_sum", **m) == before  # NaN observed as 0
    assert value("rbee_audio_seconds_total", **m) == 0
    assert value("rbee_tokens_total", **m, kind="completion") == 0


def test_only_known_refusal_reasons_are_counted() -> None:
    before = value("rbee_refusals_total", reason="quota_tokens")
    metrics.refused("quota_tokens")
    metrics.refused("invalid_api_key")  # not a refusal of a limit: an error
    metrics.refused("Tenant acme's secret reason")
    assert value("rbee_refusals_total", reason="quota_tokens") == before + 1
    assert value("rbee_refusals_total", reason="invalid_api_key") == 0
    assert value("rbee_refusals_total", reason="Tenant acme's secret reason") == 0


def test_the_queue_depth_and_the_scheduler_counters_are_read_when_scraped() -> None:
    from inference import scheduler

    before = scheduler.counters["script_errors"]
    scheduler.counters["script_errors"] += 2
    try:
        assert value("rbee_scheduler_script_errors_total") == before + 2
    finally:
        scheduler.counters["script_errors"] -= 2
    families = {f.name for f in REGISTRY.collect()}
    assert {"rbee_queue_waiting", "rbee_queue_running", "rbee_scheduler_decisions"} <= families


async def test_queue_depth_is_labelled_by_known_models_only() -> None:
    import asyncio

    from inference import queueing

    MODELS.learn("metrics-test-queue")
    held = await queueing.acquire(
        "metrics-test-queue", capacity=1, priority="interactive", max_waiting=5, timeout=5
    )
    odd = await queueing.acquire(
        "metrics-test-unknown-q", capacity=1, priority="interactive", max_waiting=5, timeout=5
    )
    waiter = asyncio.create_task(
        queueing.acquire(
            "metrics-test-queue", capacity=1, priority="interactive", max_waiting=5, timeout=5
        )
    )
    try:
        await asyncio.sleep(0.05)
        assert value("rbee_queue_waiting", model="metrics-test-queue") == 1
        assert value("rbee_queue_running", model="metrics-test-queue") == 1
        assert value("rbee_queue_running", model=OTHER) >= 1
        assert (
            REGISTRY.get_sample_value("rbee_queue_running", {"model": "metrics-test-unknown-q"})
            is None
        )
    finally:
        held.release()
        (await waiter).release()
        odd.release()


@pytest.mark.django_db(transaction=True)  # the view reads on the request path's own threads
async def test_the_pipeline_counts_every_answer_under_the_catalog_name() -> None:
    """A bad key and an unknown model are `other`; a model outside the plan and one no
    worker serves are counted under the catalog's name, with the plan's refusal."""
    import json

    from asgiref.sync import sync_to_async
    from django.test import RequestFactory

    from hives.models import CatalogModel
    from inference import chat, pipeline
    from tenants.services import api_key_create, plan_set, tenant_create

    def setup() -> tuple[str, str]:
        CatalogModel.objects.create(name="metrics-private", capability="text-gen", engine="echo")
        plan_set(name="basic", limits={}, allowed_models=["some-other-model"])
        plan_set(name="pro", limits={}, allowed_models=["metrics-private"])
        _, basic = api_key_create(tenant=tenant_create(name="acme", plan="basic"))
        _, pro = api_key_create(tenant=tenant_create(name="bigco", plan="pro"))
        return basic, pro

    basic, pro = await sync_to_async(setup)()
    view = pipeline.serve(chat.CHAT)

    async def post(key: str, model: str) -> int:
        body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
        request = RequestFactory().post(
            "/v1/chat/completions",
            data=json.dumps(body),
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {key}",
        )
        return (await view(request)).status_code

    def count(model: str, klass: str) -> float:
        return value("rbee_requests_total", model=model, endpoint="chat", status_class=klass)

    other_4xx = count(OTHER, "4xx")
    plan_refusals = value("rbee_refusals_total", reason="model_not_in_plan")
    assert await post("sk-rbee-nonsense", "metrics-private") == 401
    assert await post(pro, "metrics-no-such-model") == 404
    assert count(OTHER, "4xx") == other_4xx + 2
    assert await post(basic, "metrics-private") == 403
    assert count("metrics-private", "4xx") == 1
    assert value("rbee_refusals_total", reason="model_not_in_plan") == plan_refusals + 1
    assert await post(pro, "metrics-private") == 503  # known, but no worker serves it
    assert count("metrics-private", "5xx") == 1
    assert (
        value("rbee_request_duration_seconds_count", model="metrics-private", endpoint="chat") == 2
    )


@pytest.mark.django_db(transaction=True)
async def test_a_stream_that_fails_after_its_first_bytes_counts_as_its_error() -> None:
    """A stream's headers (200) are out before the worker fails; the client reads the
    error in the stream. The request counts under that error's status class, so the error
    rate (the alert, the dashboard) sees workers that fail mid-answer, and it counts once."""
    import asyncio
    import json

    from asgiref.sync import sync_to_async
    from channels.layers import get_channel_layer
    from django.test import RequestFactory

    from hives.models import Hive
    from inference import chat, pipeline
    from tenants.services import api_key_create, tenant_create
    from tests.web.fleet_fixtures import hive, worker

    layer = get_channel_layer()
    channel = await layer.new_channel()

    def setup() -> tuple[int, str]:
        h = hive("metrics-hive")
        Hive.objects.filter(pk=h.pk).update(channel_name=channel)
        worker(h, "metrics-stream", "cpu", "ready")
        _, key = api_key_create(tenant=tenant_create(name="acme"))
        return h.pk, key

    hive_id, key = await sync_to_async(setup)()

    async def failing_hive() -> None:
        """Acknowledges, sends the first words, then fails (a worker that crashed)."""
        job = await layer.receive(channel)
        reply = job["reply"]
        await layer.send(reply, {"type": "job.ack", "hive_id": hive_id})
        for event in (
            {"kind": "delta", "text": "Hello"},
            {"kind": "error", "message": "worker died", "code": "worker_error", "status": 502},
        ):
            await layer.send(reply, {"type": "job.events", "hive_id": hive_id, "events": [event]})

    def count(klass: str) -> float:
        return value(
            "rbee_requests_total", model="metrics-stream", endpoint="chat", status_class=klass
        )

    before = {klass: count(klass) for klass in ("2xx", "5xx")}
    before_errors = value("rbee_jobs_total", model="metrics-stream", outcome="error")
    body = {
        "model": "metrics-stream",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
    }
    request = RequestFactory().post(
        "/v1/chat/completions",
        data=json.dumps(body),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {key}",
    )
    fake = asyncio.create_task(failing_hive())
    response = await pipeline.serve(chat.CHAT)(request)
    assert response.status_code == 200 and response.streaming
    streamed = b"".join([chunk async for chunk in response.streaming_content])
    await fake
    assert b"Hello" in streamed and b'"code": "worker_error"' in streamed
    assert count("5xx") == before["5xx"] + 1
    assert count("2xx") == before["2xx"]
    assert value("rbee_jobs_total", model="metrics-stream", outcome="error") == before_errors + 1


async def test_a_scrape_reads_the_queues_while_the_loop_adds_some() -> None:
    """The exposition is rendered in a thread (rbee/metrics.py) while the event loop adds
    a queue at each model's first request: reading them must not fail the scrape with
    'dictionary changed size during iteration'. Thread switches are made frequent so the
    two meet many times."""
    import sys
    import threading
    import traceback

    from inference import queueing

    failures: list[str] = []
    stop = threading.Event()

    def scrape() -> None:
        while not stop.is_set():
            try:
                list(metrics.SchedulerCollector().collect())
            except Exception:
                failures.append(traceback.format_exc())

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    scraper = threading.Thread(target=scrape)
    scraper.start()
    try:
        for n in range(20_000):
            slot = await queueing.acquire(
                f"metrics-test-new-{n}",
                capacity=1,
                priority="interactive",
                max_waiting=1,
                timeout=1,
            )
            slot.release()
    finally:
        stop.set()
        scraper.join()
        sys.setswitchinterval(interval)
        for n in range(20_000):
            queueing._queues.pop(f"metrics-test-new-{n}", None)
    assert not failures, f"{len(failures)} scrapes failed, the first:\n{failures[0]}"
