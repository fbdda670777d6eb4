"""Dispatch over the channel layer: acknowledgement, retry elsewhere, idle timeout."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from channels.layers import get_channel_layer

from hives.selectors import Placement
from inference.dispatch import Job
from inference.errors import APIError

pytestmark = pytest.mark.asyncio


@pytest.fixture(autouse=True)
def fast(settings: Any) -> None:
    settings.RBEE_DISPATCH_ACK_TIMEOUT = 0.3
    settings.RBEE_DISPATCH_TRIES = 2
    settings.RBEE_JOB_IDLE_TIMEOUT = 0.5


def place(hive_id: int, channel: str) -> Placement:
    return Placement(
        worker_id=hive_id,
        hive_id=hive_id,
        hive_name=f"h{hive_id}",
        channel_name=channel,
        device="cpu",
        inflight=0,
    )


async def fake_hive(
    channel: str, hive_id: int, events: list[dict[str, Any]], seen: list[dict[str, Any]]
) -> None:
    layer = get_channel_layer()
    msg = await layer.receive(channel)
    seen.append(msg)
    await layer.send(msg["reply"], {"type": "job.ack", "hive_id": hive_id})
    for ev in events:
        await layer.send(msg["reply"], {"type": "job.events", "hive_id": hive_id, "events": [ev]})


async def test_unacknowledged_dispatch_is_retried_on_a_refreshed_placement() -> None:
    layer = get_channel_layer()
    dead = await layer.new_channel()
    alive = await layer.new_channel()
    seen: list[dict[str, Any]] = []
    done = {"kind": "done", "finish_reason": "stop", "usage": {}}
    hive = asyncio.create_task(fake_hive(alive, 2, [{"kind": "delta", "text": "hi"}, done], seen))
    refreshed = 0

    async def refresh() -> list[Placement]:
        nonlocal refreshed
        refreshed += 1
        return [place(1, dead), place(2, alive)]

    job = Job(
        job_id="j1",
        model="m",
        task="chat",
        request={},
        placements=[place(1, dead)],
        refresh=refresh,
    )
    got = [e async for e in job.events()]
    await hive
    assert got == [{"kind": "delta", "text": "hi"}, done]
    assert refreshed == 1
    assert seen[0]["id"] == "j1"
    assert job.placement is not None and job.placement.hive_id == 2


async def test_no_acknowledgement_at_all_is_503() -> None:
    layer = get_channel_layer()
    dead = await layer.new_channel()
    job = Job(job_id="j2", model="m", task="chat", request={}, placements=[place(1, dead)])
    with pytest.raises(APIError) as exc:
        [e async for e in job.events()]
    assert exc.value.status == 503


async def test_silence_after_the_ack_fails_the_job_instead_of_hanging() -> None:
    layer = get_channel_layer()
    ch = await layer.new_channel()
    seen: list[dict[str, Any]] = []
    hive = asyncio.create_task(fake_hive(ch, 1, [{"kind": "delta", "text": "a"}], seen))
    job = Job(job_id="j3", model="m", task="chat", request={}, placements=[place(1, ch)])
    got = [e async for e in job.events()]
    await hive
    assert got[0] == {"kind": "delta", "text": "a"}
    assert got[-1]["kind"] == "error" and got[-1]["status"] == 504
    # The hive was told to stop working on it.
    cancel = await asyncio.wait_for(layer.receive(ch), 2)
    assert cancel == {"type": "job.cancel", "id": "j3"}


async def test_events_from_an_abandoned_try_are_ignored() -> None:
    layer = get_channel_layer()
    slow = await layer.new_channel()
    good = await layer.new_channel()
    seen: list[dict[str, Any]] = []
    done = {"kind": "done", "finish_reason": "stop", "usage": {}}
    good_hive = asyncio.create_task(fake_hive(good, 2, [done], seen))
    job = Job(
        job_id="j4", model="m", task="chat", request={}, placements=[place(1, slow), place(2, good)]
    )
    # Make sure the first try goes to the slow hive.
    from inference import dispatch

    dispatch._local_inflight[2] += 5
    try:
        events = job.events()
        first = await events.__anext__()
        # The slow hive wakes up late and talks: its words must not reach the client.
        await layer.send(
            job._reply,
            {"type": "job.events", "hive_id": 1, "events": [{"kind": "delta", "text": "stale"}]},
        )
        rest = [e async for e in events]
    finally:
        dispatch._local_inflight[2] -= 5
    await good_hive
    assert [first, *rest] == [done]


async def test_a_resend_to_the_same_hive_is_not_cancelled() -> None:
    """The first dispatch is lost; the resend goes to the same (only) hive and must run."""
    layer = get_channel_layer()
    ch = await layer.new_channel()
    done = {"kind": "done", "finish_reason": "stop", "usage": {}}
    received: list[dict[str, Any]] = []

    async def hive() -> None:
        first = await layer.receive(ch)  # "lost": never acknowledged
        received.append(first)
        second = await layer.receive(ch)
        received.append(second)
        await layer.send(second["reply"], {"type": "job.ack", "hive_id": 1})
        await layer.send(second["reply"], {"type": "job.events", "hive_id": 1, "events": [done]})

    task = asyncio.create_task(hive())
    job = Job(job_id="j5", model="m", task="chat", request={}, placements=[place(1, ch)])
    got = [e async for e in job.events()]
    await task
    assert got == [done]
    assert [m["type"] for m in received] == ["job.dispatch", "job.dispatch"]


async def test_leaving_while_waiting_for_the_ack_cancels_and_uncounts(settings: Any) -> None:
    from inference import dispatch

    # Long enough that no retry is sent before the client leaves, however loaded the
    # machine (at 0.3 s a busy CI run re-dispatched before the cancel).
    settings.RBEE_DISPATCH_ACK_TIMEOUT = 5

    layer = get_channel_layer()
    ch = await layer.new_channel()
    job = Job(job_id="j6", model="m", task="chat", request={}, placements=[place(7, ch)])
    events = job.events()
    waiting = asyncio.ensure_future(events.__anext__())
    await asyncio.sleep(0.1)
    assert dispatch._local_inflight[7] == 1
    waiting.cancel()  # the client went away before the hive answered
    await asyncio.gather(waiting, return_exceptions=True)
    await events.aclose()
    assert dispatch._local_inflight[7] == 0
    msgs = [await asyncio.wait_for(layer.receive(ch), 2) for _ in range(2)]
    assert [m["type"] for m in msgs] == ["job.dispatch", "job.cancel"]


async def test_a_silent_job_whose_hive_socket_is_gone_fails_at_once(settings: Any) -> None:
    """The consumer relaying a job lived in a queen process that died (SIGKILL): nobody
    fails the job, and the hive dropped it with its socket. A silent job asks every
    heartbeat interval whether its socket still holds the hive; once not (the hive
    reconnected elsewhere), it fails as hive_disconnected instead of waiting out the
    idle timeout (an hour here: only the check can end it)."""
    settings.RBEE_JOB_IDLE_TIMEOUT = 3600
    settings.RBEE_HIVE_HEARTBEAT = 0.05
    layer = get_channel_layer()
    ch = await layer.new_channel()
    seen: list[dict[str, Any]] = []
    hive = asyncio.create_task(fake_hive(ch, 1, [{"kind": "delta", "text": "a"}], seen))
    asked: list[Placement] = []

    async def still_held(p: Placement) -> bool:
        asked.append(p)
        return len(asked) < 3  # held twice, then the hive is connected elsewhere

    job = Job(
        job_id="j7",
        model="m",
        task="chat",
        request={},
        placements=[place(1, ch)],
        still_held=still_held,
    )
    got = await asyncio.wait_for(_collect(job), 60)
    await hive
    assert got == [
        {"kind": "delta", "text": "a"},
        {
            "kind": "error",
            "message": "hive 'h1' disconnected while running the request",
            "code": "hive_disconnected",
            "status": 502,
        },
    ]
    assert len(asked) == 3 and {p.channel_name for p in asked} == {ch}
    assert job.finished and not job.succeeded


async def test_a_held_socket_keeps_a_slow_job_and_a_failed_check_counts_as_held(
    settings: Any,
) -> None:
    """A job that is slow but whose hive is still connected runs to its end; a check that
    fails (the database restarting) does not fail the job either."""
    settings.RBEE_JOB_IDLE_TIMEOUT = 3600
    settings.RBEE_HIVE_HEARTBEAT = 0.05
    layer = get_channel_layer()
    ch = await layer.new_channel()
    done = {"kind": "done", "finish_reason": "stop", "usage": {}}
    checks = 0
    enough = asyncio.Event()

    async def still_held(p: Placement) -> bool:
        nonlocal checks
        checks += 1
        if checks >= 4:
            enough.set()
        if checks % 2:
            raise OSError("the database is restarting")
        return True

    async def slow_hive() -> None:
        msg = await layer.receive(ch)
        await layer.send(msg["reply"], {"type": "job.ack", "hive_id": 1})
        await enough.wait()  # silent for several checks, then answers
        await layer.send(msg["reply"], {"type": "job.events", "hive_id": 1, "events": [done]})

    task = asyncio.create_task(slow_hive())
    job = Job(
        job_id="j8",
        model="m",
        task="chat",
        request={},
        placements=[place(1, ch)],
        still_held=still_held,
    )
    got = await asyncio.wait_for(_collect(job), 60)
    await task
    assert got == [done] and checks >= 4


async def _collect(job: Job) -> list[dict[str, Any]]:
    return [e async for e in job.events()]


class _Meter:
    """What Job asks of billing's Meter: the worker it names, progress and finish."""

    def __init__(self) -> None:
        self.worker = ""
        self.finished: list[tuple[Any, ...]] = []

    def progress(self, prompt_tokens: Any = None, completion_tokens: Any = None) -> None:
        pass

    async def finish(self, reported: Any, outcome: str, worker: str = "", region: str = "") -> None:
        self.finished.append((outcome, worker))


async def test_the_meter_names_the_worker_that_took_the_job() -> None:
    """Once a hive takes the job, the request's usage heartbeats name its worker, so a row
    settled as interrupted (its queen died mid-stream) still says where it ran. A try that
    was never acknowledged names nothing."""
    layer = get_channel_layer()
    dead = await layer.new_channel()
    alive = await layer.new_channel()
    seen: list[dict[str, Any]] = []
    meter = _Meter()

    async def hive() -> None:
        msg = await layer.receive(alive)
        seen.append(msg)
        await layer.send(msg["reply"], {"type": "job.ack", "hive_id": 2})
        done = {"kind": "done", "finish_reason": "stop", "usage": {}}
        await layer.send(msg["reply"], {"type": "job.events", "hive_id": 2, "events": [done]})

    task = asyncio.create_task(hive())

    async def refresh() -> list[Placement]:
        return [place(1, dead), place(2, alive)]

    job = Job(
        job_id="j9",
        model="m",
        task="chat",
        request={},
        placements=[place(1, dead)],
        refresh=refresh,
        meter=meter,
    )
    events = job.events()
    first = await events.__anext__()
    assert meter.worker == "h2/cpu"
    rest = [e async for e in events]
    await task
    assert [first, *rest][-1]["kind"] == "done"
    assert meter.finished == [("ok", "h2/cpu")]


class SwallowingLayer:
    """A channel layer whose receive misses its cancellation and waits on, as a
    channels_redis receive can (redis-py's read timeout racing the cancel, Python 3.11):
    a job that cancels a receive and waits for it to end hangs for good."""

    def __init__(self) -> None:
        self.queues: dict[str, asyncio.Queue[dict[str, Any]]] = {}
        self.cancels = 0
        self.made = 0
        self.released = False

    def release(self) -> None:
        """After the test: receives take their cancellation again, so that a job that
        relies on cancelling them fails its test instead of hanging the run."""
        self.released = True
        for queue in self.queues.values():
            queue.put_nowait({"type": "test.released"})

    def _queue(self, channel: str) -> asyncio.Queue[dict[str, Any]]:
        return self.queues.setdefault(channel, asyncio.Queue())

    async def new_channel(self, prefix: str = "specific") -> str:
        self.made += 1
        return f"{prefix}.swallowing!{self.made}"

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        self._queue(channel).put_nowait(dict(message))

    async def receive(self, channel: str) -> dict[str, Any]:
        while True:
            try:
                return await self._queue(channel).get()
            except asyncio.CancelledError:
                if self.released:
                    raise
                self.cancels += 1  # missed: waits on


@pytest.fixture
async def swallowing(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[SwallowingLayer]:
    from inference import dispatch

    layer = SwallowingLayer()
    monkeypatch.setattr(dispatch, "get_channel_layer", lambda: layer)
    yield layer
    layer.release()  # in the test's event loop, before it closes
    await asyncio.sleep(0)


async def test_no_wait_of_a_job_depends_on_cancelling_a_receive(
    swallowing: SwallowingLayer, settings: Any
) -> None:
    """Every way a job stops waiting on its reply channel (an acknowledgement that never
    comes, its hive's socket lost, silence past the idle timeout) ends the job, even on
    a layer whose receives ignore cancellation: the job never cancels one to stop it."""
    settings.RBEE_HIVE_HEARTBEAT = 0.05
    layer = swallowing
    # 1. Nobody acknowledges: both tries time out, then 503.
    gone = await layer.new_channel()
    job = Job(job_id="s1", model="m", task="chat", request={}, placements=[place(1, gone)])
    with pytest.raises(APIError) as exc:
        await _within(_collect(job))
    assert exc.value.status == 503
    # 2. Acknowledged, one delta, then the socket is lost.
    hive = await layer.new_channel()

    async def one_delta() -> None:
        msg = await layer.receive(hive)
        await layer.send(msg["reply"], {"type": "job.ack", "hive_id": 1})
        event = {"kind": "delta", "text": "a"}
        await layer.send(msg["reply"], {"type": "job.events", "hive_id": 1, "events": [event]})

    async def never_held(p: Placement) -> bool:
        return False

    task = asyncio.create_task(one_delta())
    job = Job(
        job_id="s2",
        model="m",
        task="chat",
        request={},
        placements=[place(1, hive)],
        still_held=never_held,
    )
    got = await _within(_collect(job))
    await task
    assert [e["kind"] for e in got] == ["delta", "error"] and got[-1]["status"] == 502
    # 3. Acknowledged, then silence past the idle timeout (0.5 s here).
    task = asyncio.create_task(one_delta())
    job = Job(job_id="s3", model="m", task="chat", request={}, placements=[place(1, hive)])
    got = await _within(_collect(job))
    await task
    assert got[-1]["code"] == "worker_timeout"
    assert layer.cancels == 0  # each ended its last receive with a message of its own


async def test_a_client_that_leaves_ends_the_job_on_a_layer_that_misses_cancels(
    swallowing: SwallowingLayer,
) -> None:
    layer = swallowing
    hive = await layer.new_channel()
    job = Job(job_id="s4", model="m", task="chat", request={}, placements=[place(1, hive)])
    events = job.events()
    waiting = asyncio.ensure_future(events.__anext__())
    await asyncio.sleep(0.05)  # dispatched; waiting for the acknowledgement
    waiting.cancel()  # the client went away
    await _within(asyncio.gather(waiting, return_exceptions=True))
    await _within(events.aclose())
    sent = [m["type"] for m in [layer.queues[hive].get_nowait() for _ in range(2)]]
    assert sent == ["job.dispatch", "job.cancel"]


async def _within(coro: Any, seconds: float = 30) -> Any:
    """Await `coro`, failing (not hanging) if it has not ended after `seconds`: unlike
    wait_for, this does not wait for a cancelled wait to end."""
    task = asyncio.ensure_future(coro)
    done, _ = await asyncio.wait({task}, timeout=seconds)
    assert done, f"still waiting after {seconds} s"
    return task.result()
