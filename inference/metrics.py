"""This queen process's Prometheus series of the request path (served at /metrics by
rbee/metrics.py, beside django-prometheus' and the fleet's).

Recorded as requests happen, in memory only (prometheus_client's counters and histograms:
a lock and an addition, never a database write): every /v1 model request by model,
endpoint and status class with its duration; for the jobs that reached a worker, time to
first token, inter-token latency, tokens and other units by kind, and how the job ended;
the wait in the model's queue; the refusals of limits, quotas, scopes, the scheduler's
should_admit and full queues, by reason; the scheduler's decisions and script errors, and
the queues' depth (read from their own counters when scraped).

Labels are bounded and never name a tenant, a key or a user (those belong in the usage
tables): `model` is a catalog model's name (a request naming an alias counts under the
model the alias points to; anything the catalog does not know, and anything past
MAX_MODEL_LABELS names, is `other`), `endpoint` one of hives.protocol.Task, `reason` one
of REFUSAL_REASONS, `kind` and `outcome` fixed words.

Each queen process counts its own requests: with several queens, add them up
(`sum without (instance)`); Prometheus tells them apart by `instance`.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from hives.protocol import Task
from inference import queueing, scheduler

# No `_created` series beside every counter and histogram (the text format does not need
# them; they would double the lines of every scrape), for django-prometheus' too.
disable_created_metrics()

REGISTRY = CollectorRegistry()

OTHER = "other"
MAX_MODEL_LABELS = 1000  # model names kept as labels at most; past it, `other`
ENDPOINTS: frozenset[str] = frozenset(t.value for t in Task)

# Why a /v1 request was refused before it reached a worker: the limiter's reasons
# (billing/limits.py), the gate's and the scheduler's codes, the queue's.
REFUSAL_REASONS: frozenset[str] = frozenset(
    {
        "rate_limit_requests",
        "rate_limit_tokens",
        "concurrency",
        "quota_requests",
        "quota_tokens",
        "quota_images",
        "quota_audio_seconds",
        "quota_characters",
        "rate_limit_exceeded",  # a rate refusal whose limit was not named
        "insufficient_quota",  # a quota refusal whose unit was not named
        "insufficient_scope",
        "model_not_in_plan",
        "scheduler_rejected",
        "scheduler_denied",
        "queue_full",
        "queue_timeout",
    }
)
JOB_OUTCOMES = ("ok", "error", "abandoned")


class ModelLabels:
    """The model names that may be a label: the catalog's, learnt as requests resolve
    models (from the database, so they are catalog names) and replaced by the catalog's
    names at every scrape. Anything else is `other`, so no request can add a label
    value of its own choosing; at most `limit` names are kept."""

    def __init__(self, limit: int = MAX_MODEL_LABELS) -> None:
        self.limit = limit
        self._known: frozenset[str] = frozenset()
        self._lock = threading.Lock()

    def label(self, name: str | None) -> str:
        return name if name and name in self._known else OTHER

    def learn(self, name: str) -> None:
        """A catalog model's name a request resolved (known from then on, within the limit)."""
        if name in self._known:
            return
        with self._lock:
            if name not in self._known and len(self._known) < self.limit:
                self._known = self._known | {name}

    def replace(self, names: Iterable[str]) -> None:
        """The catalog's names, as the scrape read them (the first `limit`, sorted)."""
        kept = sorted({n for n in names if n})[: self.limit]
        with self._lock:
            self._known = frozenset(kept)

    @property
    def known(self) -> frozenset[str]:
        return self._known


MODELS = ModelLabels()

# Buckets in seconds: request durations run from an embedding's milliseconds to a long
# generation's minutes; the first token and the queue from milliseconds to the timeouts.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30)
ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1)
QUEUE_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

REQUESTS = Counter(
    "rbee_requests",
    "Requests to the /v1 model endpoints, by model, endpoint and HTTP status class",
    ["model", "endpoint", "status_class"],
    registry=REGISTRY,
)
REQUEST_DURATION = Histogram(
    "rbee_request_duration_seconds",
    "Time from a /v1 model request's arrival to its response's last byte",
    ["model", "endpoint"],
    buckets=DURATION_BUCKETS,
    registry=REGISTRY,
)
TIME_TO_FIRST_TOKEN = Histogram(
    "rbee_time_to_first_token_seconds",
    "Time from a text request's arrival to the worker's first text (queue wait included)",
    ["model"],
    buckets=TTFT_BUCKETS,
    registry=REGISTRY,
)
INTER_TOKEN_LATENCY = Histogram(
    "rbee_inter_token_latency_seconds",
    "Mean time between a text request's output tokens, from its first text to its last",
    ["model"],
    buckets=ITL_BUCKETS,
    registry=REGISTRY,
)
QUEUE_WAIT = Histogram(
    "rbee_queue_wait_seconds",
    "Time a request waited in its model's queue for a worker slot (timeouts included)",
    ["model"],
    buckets=QUEUE_BUCKETS,
    registry=REGISTRY,
)
TOKENS = Counter(
    "rbee_tokens",
    "Tokens of the requests that reached a worker, by kind (prompt, completion)",
    ["model", "kind"],
    registry=REGISTRY,
)
IMAGES = Counter("rbee_images", "Images generated", ["model"], registry=REGISTRY)
AUDIO_SECONDS = Counter(
    "rbee_audio_seconds",
    "Seconds of audio transcribed or translated",
    ["model"],
    registry=REGISTRY,
)
SPEECH_CHARACTERS = Counter(
    "rbee_speech_characters",
    "Characters of text spoken",
    ["model"],
    registry=REGISTRY,
)
JOBS = Counter(
    "rbee_jobs",
    "Jobs sent to workers, by how they ended (ok, error, abandoned: the client left)",
    ["model", "outcome"],
    registry=REGISTRY,
)
REFUSALS = Counter(
    "rbee_refusals",
    "Requests refused before reaching a worker: rate limits, quotas, scopes, the plan, "
    "the scheduler's should_admit and full queues, by reason",
    ["reason"],
    registry=REGISTRY,
)


class _Children:
    """A metric's children by label values, kept: `labels()` validates and locks on every
    call (about 1 us); a dict lookup is a tenth of that. Label values are bounded, so is
    this."""

    def __init__(self, metric: Any) -> None:
        self.metric = metric
        self.kept: dict[tuple[str, ...], Any] = {}

    def __call__(self, *values: str) -> Any:
        child = self.kept.get(values)
        if child is None:
            child = self.kept[values] = self.metric.labels(*values)
        return child


_requests = _Children(REQUESTS)
_duration = _Children(REQUEST_DURATION)
_ttft = _Children(TIME_TO_FIRST_TOKEN)
_itl = _Children(INTER_TOKEN_LATENCY)
_queue_wait = _Children(QUEUE_WAIT)
_tokens = _Children(TOKENS)
_images = _Children(IMAGES)
_audio = _Children(AUDIO_SECONDS)
_characters = _Children(SPEECH_CHARACTERS)
_jobs = _Children(JOBS)
_refusals = _Children(REFUSALS)


def status_class(status: int) -> str:
    """`2xx`, `4xx`, `5xx` (`1xx`, `3xx`); anything outside 100-599 is `5xx`."""
    return f"{status // 100}xx" if 100 <= status <= 599 else "5xx"


def endpoint_label(task: str) -> str:
    return task if task in ENDPOINTS else OTHER


def request_done(*, model: str | None, endpoint: str, status: int, seconds: float) -> None:
    """One /v1 model request answered (and, for a stream, its last byte sent)."""
    m, e = MODELS.label(model), endpoint_label(endpoint)
    _requests(m, e, status_class(status)).inc()
    _duration(m, e).observe(_seconds(seconds))


def refused(reason: str) -> None:
    """A request refused by a limit, a quota, a scope, should_admit or a full queue."""
    if reason in REFUSAL_REASONS:
        _refusals(reason).inc()


def queue_waited(model: str, seconds: float) -> None:
    _queue_wait(MODELS.label(model)).observe(_seconds(seconds))


def job_done(
    *,
    model: str,
    outcome: str,
    ttft: float | None = None,
    inter_token: float | None = None,
    prompt_tokens: int = 0,
    completion_tokens: int = 0,
    images: int = 0,
    audio_seconds: float = 0.0,
    characters: int = 0,
) -> None:
    """One job over: how it ended, its latencies and what it produced (as metered)."""
    m = MODELS.label(model)
    _jobs(m, outcome if outcome in JOB_OUTCOMES else "error").inc()
    if ttft is not None:
        _ttft(m).observe(_seconds(ttft))
    if inter_token is not None:
        _itl(m).observe(_seconds(inter_token))
    if prompt_tokens > 0:
        _tokens(m, "prompt").inc(prompt_tokens)
    if completion_tokens > 0:
        _tokens(m, "completion").inc(completion_tokens)
    if images > 0:
        _images(m).inc(images)
    if audio_seconds > 0 and math.isfinite(audio_seconds):
        _audio(m).inc(audio_seconds)
    if characters > 0:
        _characters(m).inc(characters)


def _seconds(value: float) -> float:
    return value if math.isfinite(value) and value > 0 else 0.0


class SchedulerCollector(Collector):
    """The scheduler's decisions and script errors (inference/scheduler.py's counters) and
    the queues' depth (inference/queueing.py), read when scraped."""

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        counters = scheduler.counters
        decisions = CounterMetricFamily(
            "rbee_scheduler_decisions", "Routing decisions, by who decided", labels=["source"]
        )
        for source in ("script", "default"):
            decisions.add_metric([source], counters[f"{source}_decisions"])
        yield decisions
        for name, key, doc in (
            ("rbee_scheduler_fallbacks", "fallbacks", "Script answers replaced by the default"),
            ("rbee_scheduler_script_errors", "script_errors", "Scheduler script runtime errors"),
            ("rbee_scheduler_admissions", "admissions", "Requests admitted by should_admit"),
            ("rbee_scheduler_rejections", "rejections", "Requests refused by should_admit"),
            ("rbee_scheduler_timeouts", "timeouts", "Script calls past RBEE_SCHEDULER_TIMEOUT_MS"),
        ):
            yield CounterMetricFamily(name, doc, value=counters[key])
        version = GaugeMetricFamily(
            "rbee_scheduler_script_version", "Version of the scheduler script in force (0: none)"
        )
        version.add_metric([], scheduler.version_in_force())
        yield version
        waiting = GaugeMetricFamily(
            "rbee_queue_waiting",
            "Requests waiting in the model's queue (its depth)",
            labels=["model"],
        )
        running = GaugeMetricFamily(
            "rbee_queue_running", "Requests holding a worker slot of the model", labels=["model"]
        )
        sums: dict[str, list[int]] = {}
        for model, (n_waiting, n_running) in queueing.occupancy().items():
            held = sums.setdefault(MODELS.label(model), [0, 0])
            held[0] += n_waiting
            held[1] += n_running
        for label, (n_waiting, n_running) in sorted(sums.items()):
            waiting.add_metric([label], n_waiting)
            running.add_metric([label], n_running)
        yield waiting
        yield running


REGISTRY.register(SchedulerCollector())
