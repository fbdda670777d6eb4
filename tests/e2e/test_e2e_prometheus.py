"""A real Prometheus (Debian's) scrapes a real queen serving real requests: PromQL over
its HTTP API returns the series and values the traffic made, the production profile's
bearer token is read from a file by the scraper (and a scraper without it is refused),
docker/'s alert rules load and evaluate cleanly, and every Grafana panel's query parses."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from testkit.live import Deployment, Hive, Queen
from testkit.prometheus import ALERTS, Prometheus, alert_queries, dashboard_queries
from tests.conftest import CHAT_MODEL

pytestmark = pytest.mark.e2e

TENANT = "acme-metrics"
END_USER = "end-user-4711"
DAILY_REQUESTS = 4
# The label names a queen's /metrics may carry (rbee's, django-prometheus', the process's);
# a tenant, key or user label is none of them.
ALLOWED_LABELS = {
    "model", "endpoint", "status_class", "kind", "outcome", "reason", "source", "state",
    "hive", "device", "region", "version", "name", "gpu_type", "le", "view", "method",
    "status", "transport", "templatename", "charset", "type", "alias", "vendor", "backend",
    "connection", "implementation", "major", "minor", "patchlevel", "generation",
}  # fmt: skip


@dataclass
class Scraped:
    dep: Deployment
    queen: Queen
    prom: Prometheus
    token: str
    key: str
    usage: dict[str, int]


@pytest.fixture(scope="module")
def scraped() -> Iterator[Scraped]:
    """A production queen and a hive serving SmolLM2, real requests through the official
    client (successes, an error, a refusal), and Prometheus scraping every second."""
    token = "metrics-" + secrets.token_hex(16)
    dep = Deployment()
    prom: Prometheus | None = None
    try:
        queen = Queen(
            dep,
            env={
                "RBEE_PRODUCTION": "1",
                "RBEE_ALLOWED_HOSTS": "127.0.0.1,localhost",
                "RBEE_CSRF_TRUSTED_ORIGINS": "https://rbee.example.com",
                "RBEE_METRICS_TOKEN": token,
            },
        )
        Hive(dep, queen, "hive-a", [CHAT_MODEL], wait=False)
        wait_served(queen, token, "hive-a", CHAT_MODEL)
        dep.rbee("plan", "set", "tight", f"requests_per_day={DAILY_REQUESTS}")
        dep.rbee("tenant", "create", TENANT, "--plan", "tight")
        key = dep.rbee("key", "create", "--tenant", TENANT).stdout.strip()
        usage = serve(queen, key)
        target = f"127.0.0.1:{queen.port}"
        token_file = dep.home / "metrics-token"  # what the scraper reads: never in its config
        token_file.touch(mode=0o600)
        token_file.write_text(token)
        prom = Prometheus(
            [
                {
                    "job_name": "rbee",
                    "static_configs": [{"targets": [target]}],
                    "authorization": {"type": "Bearer", "credentials_file": str(token_file)},
                },
                {"job_name": "anonymous", "static_configs": [{"targets": [target]}]},
            ],
            rule_files=(ALERTS,),
        )
        yield Scraped(dep, queen, prom, token, key, usage)
    finally:
        if prom is not None:
            prom.close()
        dep.close()


def wait_served(queen: Queen, token: str, hive: str, model: str, timeout: float = 120) -> None:
    """In production the /healthz inventory is for the metrics token's holder."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = httpx.get(
            f"{queen.url}/healthz", headers={"Authorization": f"Bearer {token}"}, timeout=5
        ).json()
        if any(h["name"] == hive and model in h["models"] for h in body.get("hives", [])):
            return
        time.sleep(0.2)
    raise AssertionError(f"{hive} never served {model}")


def serve(queen: Queen, key: str) -> dict[str, int]:
    """The traffic: DAILY_REQUESTS successes (chat, a stream, a completion), a model that
    does not exist, a bad key, and one over the daily quota. Returns the tokens used."""
    client = openai.OpenAI(base_url=f"{queen.url}/v1", api_key=key, max_retries=0)
    messages = [{"role": "user", "content": "Say hello to the bees."}]
    prompt = completion = 0
    for _ in range(2):
        r = client.chat.completions.create(
            model=CHAT_MODEL, messages=messages, max_tokens=8, user=END_USER
        )
        assert r.usage is not None
        prompt += r.usage.prompt_tokens
        completion += r.usage.completion_tokens
    stream = client.chat.completions.create(
        model=CHAT_MODEL,
        messages=messages,
        max_tokens=8,
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        if chunk.usage is not None:
            prompt += chunk.usage.prompt_tokens
            completion += chunk.usage.completion_tokens
    done = client.completions.create(model=CHAT_MODEL, prompt="Bees are", max_tokens=8)
    assert done.usage is not None
    prompt += done.usage.prompt_tokens
    completion += done.usage.completion_tokens
    with pytest.raises(openai.NotFoundError):  # an error: a model nobody serves
        client.chat.completions.create(model="no-such-model", messages=messages)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(
            base_url=f"{queen.url}/v1", api_key="sk-rbee-wrong", max_retries=0
        ).chat.completions.create(model=CHAT_MODEL, messages=messages)
    with pytest.raises(openai.RateLimitError) as refused:  # the daily quota is spent
        client.chat.completions.create(model=CHAT_MODEL, messages=messages, max_tokens=8)
    assert refused.value.code == "insufficient_quota"
    return {"prompt": prompt, "completion": completion}


def test_prometheus_scrapes_the_traffic_with_the_token(scraped: Scraped) -> None:
    prom = scraped.prom
    ok = f'rbee_requests_total{{job="rbee",model="{CHAT_MODEL}"'
    prom.wait_for(f'sum({ok},status_class="2xx"}})', lambda v: v == DAILY_REQUESTS)
    assert prom.value('up{job="rbee"}') == 1
    # requests by model, endpoint and status class
    assert prom.values(f"sum by (endpoint, status_class) ({ok}}})") == {
        (("endpoint", "chat"), ("status_class", "2xx")): 3,
        (("endpoint", "completion"), ("status_class", "2xx")): 1,
        (("endpoint", "chat"), ("status_class", "4xx")): 1,  # the refused one
    }
    # the unknown model and the bad key: not a label of their own
    assert prom.value('sum(rbee_requests_total{job="rbee",model="other",status_class="4xx"})') == 2
    assert prom.value('count(rbee_requests_total{job="rbee",model="no-such-model"})') is None
    assert prom.value('rbee_refusals_total{job="rbee",reason="quota_requests"}') == 1
    # tokens, as the responses reported them
    assert (
        prom.value(f'rbee_tokens_total{{job="rbee",model="{CHAT_MODEL}",kind="completion"}}')
        == scraped.usage["completion"]
    )
    assert (
        prom.value(f'rbee_tokens_total{{job="rbee",model="{CHAT_MODEL}",kind="prompt"}}')
        == scraped.usage["prompt"]
    )
    # every text request that reached the worker had a first token, and a duration
    assert (
        prom.value(f'rbee_time_to_first_token_seconds_count{{job="rbee",model="{CHAT_MODEL}"}}')
        == DAILY_REQUESTS
    )
    assert (
        prom.value(f'sum(rbee_request_duration_seconds_count{{job="rbee",model="{CHAT_MODEL}"}})')
        == DAILY_REQUESTS + 1
    )
    assert prom.value(f'rbee_jobs_total{{job="rbee",model="{CHAT_MODEL}",outcome="ok"}}') == 4
    # every admitted request passed the queue (the refused one never reached it)
    assert (
        prom.value(f'rbee_queue_wait_seconds_count{{job="rbee",model="{CHAT_MODEL}"}}')
        == DAILY_REQUESTS
    )


def test_the_hive_reaches_prometheus_through_the_queen(scraped: Scraped) -> None:
    prom = scraped.prom
    assert prom.value('rbee_hive_up{job="rbee",hive="hive-a"}') == 1
    assert prom.value('rbee_hive_connected{job="rbee",hive="hive-a"}') == 1
    assert prom.value('rbee_hive_heartbeat_age_seconds{job="rbee",hive="hive-a"}') < 30
    ((devices,),) = scraped.dep.sql("SELECT devices FROM hives_hive WHERE name = 'hive-a'")
    reported = json.loads(devices) if isinstance(devices, str) else devices
    cpu = next(d for d in reported if d["kind"] == "cpu")
    total = prom.value('rbee_device_memory_total_bytes{job="rbee",hive="hive-a",device="cpu"}')
    assert total == cpu["memory_total_mb"] * 1024 * 1024
    used = prom.value('rbee_device_memory_used_bytes{job="rbee",hive="hive-a",device="cpu"}')
    assert used is not None and 0 < used <= total
    assert (
        prom.value(
            f'rbee_worker_state{{job="rbee",hive="hive-a",device="cpu",model="{CHAT_MODEL}",state="ready"}}'
        )
        == 1
    )
    assert prom.value('rbee_hives{job="rbee",state="online"}') == 1


def test_django_prometheus_series_are_in_the_same_scrape(scraped: Scraped) -> None:
    prom = scraped.prom
    # a scrape is counted once it is answered: in the scrapes after it
    by = 'django_http_responses_total_by_status_view_method_total{job="rbee",status="200"'
    prom.wait_for(f'sum({by},view="rbee.metrics.metrics"}})', lambda v: (v or 0) >= 1)
    by_view = prom.values(
        'sum by (view) (django_http_responses_total_by_status_view_method_total{job="rbee"})'
    )
    views = {dict(k)["view"] for k in by_view}
    assert {"inference.pipeline.chat", "inference.pipeline.completion"} <= views, views
    assert "rbee.metrics.metrics" in views
    assert prom.value('sum(django_db_execute_total{job="rbee"})') > 0
    assert prom.value('process_resident_memory_bytes{job="rbee"}') > 0


def test_a_scraper_without_the_token_is_refused(scraped: Scraped) -> None:
    prom = scraped.prom
    prom.wait_for('up{job="anonymous"}', lambda v: v is not None)
    assert prom.value('up{job="anonymous"}') == 0
    (target,) = [t for t in prom.targets() if t["labels"]["job"] == "anonymous"]
    assert "401" in target["lastError"], target
    assert prom.value('count({job="anonymous", __name__=~"rbee_.*"})') is None


def test_no_series_names_a_tenant_key_or_user(scraped: Scraped) -> None:
    """Every label of every series after real traffic, from the queen and from Prometheus."""
    text = httpx.get(
        f"{scraped.queen.url}/metrics", headers={"Authorization": f"Bearer {scraped.token}"}
    ).text
    names: set[str] = set()
    values: set[str] = set()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            names.update(sample.labels)
            values.update(sample.labels.values())
    assert names <= ALLOWED_LABELS, names - ALLOWED_LABELS
    prefix = scraped.key[:16]
    for secret in (TENANT, END_USER, scraped.key, prefix, scraped.token):
        assert not any(secret in v for v in values), secret
        assert secret not in text
    stored = set(scraped.prom.api("labels"))
    prometheus_own = {"__name__", "instance", "job", "alertname", "alertstate", "severity"}
    assert stored <= ALLOWED_LABELS | prometheus_own, stored


def test_the_alert_rules_evaluate_cleanly_and_none_fires(scraped: Scraped) -> None:
    prom = scraped.prom

    def rules() -> list[dict[str, object]]:
        return [r for g in prom.api("rules")["groups"] for r in g["rules"]]

    deadline = time.monotonic() + 30
    while any(str(r["lastEvaluation"]).startswith("0001") for r in rules()):
        assert time.monotonic() < deadline, rules()
        time.sleep(0.2)
    assert len(rules()) == len(alert_queries())
    broken = [(r["name"], r.get("lastError")) for r in rules() if r["health"] != "ok"]
    assert not broken, broken
    # A healthy deployment: nothing pending or firing.
    assert prom.api("alerts")["alerts"] == []


def test_every_dashboard_query_parses_and_the_main_ones_have_data(scraped: Scraped) -> None:
    prom = scraped.prom
    queries = dashboard_queries()
    for where, expr in queries:
        prom.query(expr)  # a parse error is a 400, raised with Prometheus' message
    with_data = {where for where, expr in queries if prom.query(expr)}
    for panel in ("'Requests/s by model'", "'Tokens/s by kind'", "'Time to first token'",
                  "'Hive up'", "'Device memory used'", "'Workers'", "'Queue depth'"):  # fmt: skip
        assert any(panel in where for where in with_data), (panel, sorted(with_data))
