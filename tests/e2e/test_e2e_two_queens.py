"""Two queens behind a real load balancer (Debian's HAProxy, testkit/balancer.py), on
PostgreSQL + Redis, with hives connected through the balancer and a real Celery worker
and beat (`rbee billing worker --no-beat`, `rbee billing beat`) beside them; Stripe is
tests/billing/fakestripe.py on loopback.

Traffic flows through both queens (the balancer's log and the usage rows' queen process
say which served each request). One queen is killed with SIGKILL while streams run on
it: those streams end with a closed connection (never a hang), new requests go to the
other queen, the balancer's health checks mark the dead one down, the hives whose socket
it held reconnect through the balancer to the other queen, and every request has exactly
one usage row (final for those that completed, `interrupted` for those cut off), one
audit event, and Stripe is told each unit once."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import openai
import pytest

from testkit.balancer import Balancer
from testkit.live import ROOT, Deployment, Hive, Queen, bundled_gguf
from tests.billing.fakestripe import API_KEY, FakeStripe

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not os.environ.get("RBEE_REDIS_URL") or not os.environ.get("RBEE_DATABASE_URL"),
        reason="two queens share state only through PostgreSQL and Redis "
        "(set RBEE_DATABASE_URL and RBEE_REDIS_URL)",
    ),
]

MODEL = "story-llm"
STORY = [{"role": "user", "content": "Tell me a long story about bees and their queen."}]
SHORT = [{"role": "user", "content": "Say hello."}]


def wait_until(what: str, check: Callable[[], Any], timeout: float = 120) -> Any:
    """Poll `check` until it returns something true; fail naming `what` after `timeout`
    (a generous bound for a loaded CI machine, never a timing assertion)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.2)


@dataclass
class StreamRun:
    """One streamed chat completion, read on a thread of its own."""

    request_id: str = ""
    chunks: int = 0
    usage: Any = None
    completed: bool = False
    error: BaseException | None = None
    started: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)


def start_stream(base_url: str, key: str) -> StreamRun:
    run = StreamRun()
    # A generous read timeout: a stream that hangs shows up as APITimeoutError, which the
    # test refuses, rather than as a test that never ends.
    client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=180)

    def read() -> None:
        try:
            stream = client.chat.completions.create(
                model=MODEL,
                messages=STORY,
                max_tokens=400,
                temperature=1.0,
                stream=True,
                stream_options={"include_usage": True},
            )
            run.request_id = stream.response.headers["x-request-id"]
            run.started.set()
            for chunk in stream:
                run.chunks += 1
                if chunk.usage is not None:
                    run.usage = chunk.usage
            run.completed = run.usage is not None
        except BaseException as exc:
            run.error = exc
        finally:
            run.started.set()
            run.done.set()

    threading.Thread(target=read, daemon=True).start()
    return run


@dataclass
class CallRun:
    """One chat completion without streaming, on a thread of its own."""

    request_id: str = ""
    usage: Any = None
    status: int = 0  # the HTTP status of a refusal
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)


def start_call(base_url: str, key: str) -> CallRun:
    run = CallRun()
    client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=180)

    def call() -> None:
        try:
            raw = client.chat.completions.with_raw_response.create(
                model=MODEL, messages=STORY, max_tokens=120, temperature=1.0
            )
            run.usage = raw.parse().usage
            run.request_id = raw.headers["x-request-id"]
        except openai.APIStatusError as exc:
            # A queen's answer carries its x-request-id; the balancer's own does not.
            run.request_id = exc.response.headers.get("x-request-id", "")
            run.status = exc.status_code
            run.error = exc
        except BaseException as exc:
            run.error = exc
        finally:
            run.done.set()

    threading.Thread(target=call, daemon=True).start()
    return run


@dataclass(frozen=True)
class Row:
    outcome: str
    prompt_tokens: int
    completion_tokens: int
    queen: str  # the queen process that served it (kernel.process.instance_id)
    worker: str  # "hive/device"


def usage_rows(dep: Deployment) -> dict[str, Row]:
    """Every usage row, by request id."""
    rows = dep.sql(
        "select request_id, outcome, prompt_tokens, completion_tokens, queen, worker "
        "from billing_usageevent"
    )
    return {r[0]: Row(*r[1:]) for r in rows}


def queen_pid(instance: str) -> int:
    """The pid in a usage row's queen instance ("HOST/PIDNS/MACHINE:PID:TOKEN")."""
    return int(instance.rsplit(":", 2)[1])


def connections(queen: Queen, hive: str) -> list[str]:
    """When this queen accepted a socket of `hive` (its log's timestamps, in order)."""
    text = queen.log.read_text(errors="replace")
    return re.findall(rf"^(\S+ \S+) INFO \S+: hive {re.escape(hive)} connected \(", text, re.M)


def socket_holder(queens: list[Queen], hive: str) -> Queen:
    """The queen that accepted `hive`'s latest socket."""
    latest = {q.name: max(connections(q, hive), default="") for q in queens}
    assert any(latest.values()), f"no queen logged a connection of {hive}"
    return next(q for q in queens if latest[q.name] == max(latest.values()))


def celery_call(dep: Deployment, task: str) -> subprocess.Popen[bytes]:
    """Send `task` to the deployment's Celery worker through the broker."""
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "rbee.celery", "call", task],
        env=dep.env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


@pytest.fixture
def stripe() -> Iterator[FakeStripe]:
    with FakeStripe() as fake:
        yield fake


@pytest.fixture
def deployment(request: pytest.FixtureRequest) -> Iterator[Deployment]:
    """The deployment; when the test fails, the tail of every process's log goes to the
    report (the logs are gone with the deployment's home)."""
    dep = Deployment()
    try:
        yield dep
        if getattr(request.node, "failed_call", False):
            for log in sorted(dep.home.glob("*.log")):
                lines = log.read_text(errors="replace").splitlines()[-120:]
                print(f"\n===== {log.name} (last {len(lines)} lines) =====", *lines, sep="\n")
    finally:
        dep.close()


@pytest.mark.timeout(900)
def test_a_queen_killed_behind_the_balancer_loses_and_doubles_nothing(
    deployment: Deployment, stripe: FakeStripe
) -> None:
    dep = deployment
    env = {
        "RBEE_USAGE_HEARTBEAT_SECONDS": "0.5",
        "RBEE_USAGE_SETTLE_SECONDS": "1",
        "RBEE_TRUSTED_PROXIES": "127.0.0.1",
        "RBEE_STRIPE_SECRET_KEY": API_KEY,
        "RBEE_STRIPE_API_BASE": stripe.url,
    }
    queens = [Queen(dep, env=env, name="queen1"), Queen(dep, env=env, name="queen2")]
    lb = Balancer(dep, queens)
    # The production layout's background work: Celery workers without a beat of their
    # own, and exactly one beat.
    celery, celery_log = dep.spawn(
        ["billing", "worker", "--no-beat", "--concurrency", "2"], "celery-worker", env
    )
    beat, beat_log = dep.spawn(["billing", "beat"], "celery-beat", env)
    wait_until("the Celery worker is ready", lambda: " ready." in celery_log.read_text(), 120)
    wait_until("Celery beat started", lambda: "beat: Starting..." in beat_log.read_text(), 120)

    gguf = bundled_gguf()
    hives = [
        Hive(dep, lb, name, [f"{MODEL}=llama.cpp:{gguf}?slots=2&n_ctx=2048"])
        for name in ("hive-1", "hive-2")
    ]
    dep.rbee("tenant", "create", "t1")
    key = dep.rbee("key", "create", "--tenant", "t1").stdout.strip()
    # The worker gives the tenant its Stripe customer first, so that every usage row
    # below writes its Stripe outbox with it.
    call = celery_call(dep, "billing.report_usage")
    assert call.wait(60) == 0, call.stderr.read() if call.stderr else ""
    customer = wait_until(
        "the tenant's Stripe customer",
        lambda: dep.sql("select stripe_customer_id from tenants_tenant where name = 't1'")[0][0],
    )

    client = openai.OpenAI(base_url=f"{lb.url}/v1", api_key=key, max_retries=0, timeout=120)
    by_pid = {q.proc.pid: q for q in queens}
    completed: dict[str, tuple[int, int]] = {}  # request id -> (prompt, completion tokens)

    def one_request() -> str:
        raw = client.chat.completions.with_raw_response.create(
            model=MODEL, messages=SHORT, max_tokens=4
        )
        resp = raw.parse()
        rid = raw.headers["x-request-id"]
        assert resp.usage is not None
        completed[rid] = (resp.usage.prompt_tokens, resp.usage.completion_tokens)
        return rid

    # --- traffic flows through both queens --------------------------------------------
    # Which queen served a request, two ways: the usage row's queen process (its pid), and
    # the balancer's log (the server it sent the request to, with the x-request-id the
    # queen answered).
    first = [one_request() for _ in range(8)]
    rows = usage_rows(dep)
    served_by = {rid: by_pid[queen_pid(rows[rid].queen)] for rid in first}
    assert set(served_by.values()) == set(queens), f"one queen served every request: {served_by}"
    logged = wait_until("the balancer logged the first requests", lambda: lb_log(lb, first))
    for rid in first:
        assert lb.names[logged[rid].server] is served_by[rid], rid
        assert (logged[rid].status, logged[rid].term) == (200, "--")

    # --- which queen holds which hive's socket (its log says so) -----------------------------
    held_by = {h.name: socket_holder(queens, h.name) for h in hives}
    channels = dict(dep.sql("select name, channel_name from hives_hive"))
    # The sockets one queen holds share its channel layer's client prefix.
    prefix = {h: channels[h].split("!")[0] for h in held_by}
    for a in held_by:
        for b in held_by:
            assert (held_by[a] is held_by[b]) == (prefix[a] == prefix[b]), (held_by, channels)

    # --- streams in flight on both queens; then one queen is killed ---------------------------
    # Each queen spreads its streams over both hives, so the queen to kill has streams of
    # its own in flight ("own") and holds the socket of a hive that runs a stream of the
    # other queen ("relayed": its events come back through the queen to kill).
    # Behind them, two requests without streaming wait for a free worker: the balancer
    # sends one to each queen (round robin), so one is in flight on the queen to kill,
    # with no answer started yet.
    runs: list[StreamRun] = []
    calls: list[CallRun] = []
    chosen: tuple[Queen, list[StreamRun], list[StreamRun]] | None = None
    for _attempt in range(4):
        batch = [start_stream(f"{lb.url}/v1", key) for _ in range(4)]
        runs += batch
        for run in batch:
            assert run.started.wait(120), "a stream never started"
            assert run.request_id, f"a stream failed before it started: {run.error!r}"
        calls += [start_call(f"{lb.url}/v1", key) for _ in range(2)]

        def pick(batch: list[StreamRun] = batch) -> Any:
            rows = usage_rows(dep)
            # Running, with a heartbeat that brought counts and the worker to its row.
            live = [
                r
                for r in batch
                if not r.done.is_set()
                and r.chunks >= 3
                and rows[r.request_id].completion_tokens > 0
                and rows[r.request_id].worker
            ]
            for q in queens:
                own = [r for r in live if by_pid[queen_pid(rows[r.request_id].queen)] is q]
                relayed = [
                    r
                    for r in live
                    if r not in own and held_by[rows[r.request_id].worker.split("/")[0]] is q
                ]
                if own and relayed:
                    return q, own, relayed
            return "again" if all(r.done.is_set() for r in batch) else None

        picked = wait_until("streams in flight on the queen to kill", pick)
        if picked != "again":
            chosen = picked
            break  # else every story ended too soon: another batch
    assert chosen, "no queen ever had streams of its own and relayed ones in flight"
    victim, own_runs, relayed_runs = chosen
    survivor = next(q for q in queens if q is not victim)
    victim_name, survivor_name = lb.name_of(victim), lb.name_of(survivor)
    on_victim = [h for h in hives if held_by[h.name] is victim]
    accepted_before = {h.name: len(connections(survivor, h.name)) for h in on_victim}
    victim.stop(signal.SIGKILL)

    # --- new requests succeed, through the other queen ------------------------------------
    after = [one_request() for _ in range(6)]

    # --- the streams in flight end, none hangs ----------------------------------------------
    for run in runs:
        assert run.done.wait(240), f"stream {run.request_id} hangs"
    rows = usage_rows(dep)
    on = {r.request_id: by_pid[queen_pid(rows[r.request_id].queen)] for r in runs}
    cut = {r.request_id for r in runs if not r.completed}
    assert {r.request_id for r in own_runs + relayed_runs} <= cut
    for run in runs:
        if run.completed:
            continue  # it ended before the kill, or ran on the surviving queen's own hives
        if on[run.request_id] is victim:
            # The dead queen's streams: the connection closes mid-body (HAProxy had sent
            # the queen's 200 and headers, so it can only cut the stream short): the SDK
            # raises APIConnectionError (httpx's RemoteProtocolError, incomplete chunked
            # read), never a timeout.
            assert isinstance(run.error, openai.APIConnectionError), repr(run.error)
            assert not isinstance(run.error, openai.APITimeoutError), repr(run.error)
            assert "incomplete chunked read" in repr(run.error.__cause__), repr(run.error)
        else:
            # The other queen's streams whose hive socket the dead queen held: the hive
            # dropped them with its socket; they end with an error event as soon as the job
            # notices its socket is gone (inference/dispatch.py), not after the 120 s idle
            # timeout.
            assert isinstance(run.error, openai.APIError), repr(run.error)
            assert not isinstance(run.error, openai.APIConnectionError), repr(run.error)
            assert "120 s" not in str(run.error), str(run.error)
            hive = rows[run.request_id].worker.split("/")[0]
            assert held_by[hive] is victim, rows[run.request_id]

    # The request waiting on the dead queen had no answer started: HAProxy answers it
    # 502 Bad Gateway itself (it does not retry a request a queen had received). The
    # other one is the surviving queen's: it completes, or, if a hive whose socket the
    # dead queen held had taken it, the queen answers 502 (hive_disconnected) at once.
    for c in calls:
        assert c.done.wait(240), "a request without streaming hangs"
    refused = [c for c in calls if c.error is not None and not c.request_id]
    assert [c.status for c in refused] == [502], [repr(c.error) for c in calls]
    for c in calls:
        if c.error is None:
            completed[c.request_id] = (c.usage.prompt_tokens, c.usage.completion_tokens)
        elif c.request_id:
            assert c.status == 502, repr(c.error)
            cut.add(c.request_id)
            on[c.request_id] = by_pid[queen_pid(usage_rows(dep)[c.request_id].queen)]

    # --- the balancer marks the dead queen down, and sent the new requests to the other ------
    lb.wait_state(victim_name, "DOWN")
    assert lb.server_states()[survivor_name] == "UP"
    logged = wait_until(
        "the balancer logged the streams and the new requests",
        lambda: lb_log(lb, [*after, *(r.request_id for r in runs)]),
    )
    assert {logged[rid].server for rid in after} == {survivor_name}
    for run in own_runs:
        # 200 sent, then the server aborted during the data phase (SD).
        served = logged[run.request_id]
        assert (served.server, served.status, served.term) == (victim_name, 200, "SD"), served
    # The 502: the queen went away before it answered (SH), and no x-request-id came back.
    bad_gateway = [s for s in lb.served() if s.status == 502 and not s.request_id]
    assert [(s.server, s.term, s.request_id) for s in bad_gateway] == [(victim_name, "SH", "")]

    # --- the hives that were on the dead queen reconnect through the balancer ----------------
    for hive in on_victim:

        def moved(hive: Hive = hive) -> bool:
            now = dict(dep.sql("select name, channel_name from hives_hive"))
            return (
                now[hive.name] not in ("", channels[hive.name])
                and len(connections(survivor, hive.name)) > accepted_before[hive.name]
            )

        wait_until(f"{hive.name} reconnected to the surviving queen", moved, 60)
    assert all(h.proc.poll() is None for h in hives)
    # The surviving queen holds every hive socket now, and routes to all of them.
    prefixes = {
        c.split("!")[0] for c in dict(dep.sql("select name, channel_name from hives_hive")).values()
    }
    assert len(prefixes) == 1, prefixes
    for _ in range(4):
        after.append(one_request())

    # --- usage: exactly one row per request, none left provisional ---------------------------
    wait_until(
        "every provisional usage row settled",
        lambda: all(r.outcome != "provisional" for r in usage_rows(dep).values()),
        60,
    )
    rows = usage_rows(dep)
    for run in runs:
        if run.completed:
            completed[run.request_id] = (run.usage.prompt_tokens, run.usage.completion_tokens)
    assert set(completed) | cut <= set(rows), "a request without its usage row"
    # A row the client has no id for: the 502'd request, if a worker had taken it before
    # the kill (else it never reached a worker, and has no usage).
    unknown = set(rows) - set(completed) - cut
    assert len(unknown) <= len(refused), unknown
    for rid in unknown:
        row = rows[rid]
        assert row.outcome == "interrupted" and by_pid[queen_pid(row.queen)] is victim, row
    for rid, (prompt, completion) in completed.items():
        row = rows[rid]
        assert (row.outcome, row.prompt_tokens, row.completion_tokens) == ("ok", prompt, completion)
    for rid in cut:
        row = rows[rid]
        if on[rid] is victim:
            # Settled by the surviving queen, with the counts of its last heartbeat.
            assert row.outcome == "interrupted", row
        else:
            # Recorded by the surviving queen that served it, with what was generated.
            assert row.outcome == "error" and by_pid[queen_pid(row.queen)] is survivor, row
    for run in own_runs + relayed_runs:
        # These had a heartbeat before the kill: their rows hold counts and the worker (a
        # stream cut before its first heartbeat is settled with what that recorded).
        row = rows[run.request_id]
        assert row.prompt_tokens > 0 and row.completion_tokens > 0 and row.worker, row

    # --- Celery: Stripe is told every unit once, and the audit log has one event each ---------
    calls = [celery_call(dep, "billing.report_usage") for _ in range(2)]  # two runs at once
    for c in calls:
        assert c.wait(60) == 0, c.stderr.read() if c.stderr else ""
    wait_until(
        "the Stripe outbox sent",
        lambda: dep.sql("select count(*) from billing_meterevent where sent_at is null")[0][0] == 0,
        120,
    )
    outbox = dep.sql("select identifier, value from billing_meterevent")
    sums: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for row in rows.values():
        sums[(customer, "rbee_prompt_tokens")] += row.prompt_tokens
        sums[(customer, "rbee_completion_tokens")] += row.completion_tokens
    assert stripe.totals() == {k: v for k, v in sums.items() if v}
    accepted = Counter(
        c.params["identifier"]
        for c in stripe.calls_to("POST", "/v1/billing/meter_events")
        if c.status == 200
    )
    assert sorted(accepted) == sorted(i for i, _ in outbox) and set(accepted.values()) == {1}

    ids = ", ".join(f"'{rid}'" for rid in rows)
    audited_query = (
        "select request_id, count(*), min(outcome) from gdpr_audit_event "
        f"where action = 'inference' and request_id in ({ids}) group by request_id"
    )
    wait_until(
        "an inference audit event for every request",
        lambda: len(dep.sql(audited_query)) == len(rows),
        120,
    )
    audited = {rid: (n, outcome) for rid, n, outcome in dep.sql(audited_query)}
    assert audited == {rid: (1, row.outcome) for rid, row in rows.items()}
    assert celery.poll() is None and beat.poll() is None


def lb_log(lb: Balancer, request_ids: list[str]) -> dict[str, Any] | None:
    """The balancer's log lines by request id, once it has logged all of `request_ids`."""
    seen = {s.request_id: s for s in lb.served()}
    return seen if set(request_ids) <= set(seen) else None
