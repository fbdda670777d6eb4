"""Send a job to a hive and relay its events back, through the channel layer.

The pipeline (inference/pipeline.py) opens a reply channel of its own, sends
``job.dispatch`` to the channel of the consumer holding the chosen hive's websocket, and
waits for the hive's acknowledgement. Channel layers deliver at most once, so a dispatch that is not
acknowledged in time is sent again (to another hive when there is one) before any
event has arrived; afterwards, a job that stays silent too long is failed rather
than left hanging.

A job's events come back through the consumer that holds its hive's websocket, which
may live in another queen process. When that process dies (killed, its machine gone), no
one fails the jobs it relayed, and the hive, whose socket closed, drops them: so a job
that has been silent for a heartbeat interval asks the database whether its hive is
still held by that socket (`still_held`) and fails at once, as `hive_disconnected`, when
the hive has reconnected elsewhere or gone stale, instead of waiting out the idle
timeout.

A job never cancels a receive on its reply channel to stop waiting for it. A cancelled
channels_redis receive can miss its cancellation (redis-py's read timeout racing it, on
Python 3.11) and then never end, so waiting for it to end hung the request for good (a
stress test of cancelled receives hit it about once in 200; the two-queens test, in
about one run in fifteen). Waits with a timeout leave the one receive running
(`_receive`), and at the end the job sends its reply channel a message of its own, so
that a receive still waiting returns like any other (`_stop_receiving`).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings

from hives.protocol import FINAL_KINDS, EventKind, error_event
from hives.selectors import Placement
from inference import metrics, stats
from inference.errors import APIError, from_event, neutral_error
from inference.scheduler import least_loaded
from kernel import regions

logger = logging.getLogger("inference.dispatch")

# Jobs this process has in flight per worker: a cheap, always-current load signal.
_local_inflight: dict[int, int] = defaultdict(int)


def local_load() -> dict[int, int]:
    return _local_inflight


def new_job_id() -> str:
    return uuid.uuid4().hex


@dataclass
class Job:
    job_id: str
    model: str
    task: str
    request: dict[str, Any]
    placements: list[Placement]
    # Re-reads the placements before a retry: a hive that reconnected has a new channel.
    refresh: Callable[[], Awaitable[list[Placement]]] | None = None
    # Whether the socket that took the job (the placement's channel) still holds its hive
    # (hives.selectors.hive_socket_held): asked when the job has been silent for a
    # heartbeat interval; False fails the job as `hive_disconnected`.
    still_held: Callable[[Placement], Awaitable[bool]] | None = None
    # The scheduler's choice for the first try (retries pick the least loaded).
    preferred: Placement | None = None
    # The caller's region constraints (kernel.regions): every try, the first included,
    # goes only to a hive whose operator-set region meets them all; when none is left the
    # job fails closed (503), however many placements elsewhere could take it.
    regions: tuple[str, ...] = ()
    # Called once when the job is over, however it ends (frees its queue slot).
    on_finish: Callable[[], None] | None = None
    # Records the request's usage once and settles its reservation (billing/gate.py):
    # called with the final event before it is passed on, or with None if the job ends
    # without one (the client left, or the job was never taken).
    meter: Any = None
    # Checks a `done` before it is metered or passed on (a hive is not trusted): returns
    # the event to go on with, the same or with its usage bounded, or an `error` when the
    # result is not what was asked for (metered as a failure, not as work done).
    vet: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    # A tenant's job: worker errors reach it in neutral words, naming no hive or device
    # (inference.errors.neutral_error); operators' jobs keep the worker's own text.
    neutral_errors: bool = False
    # The text of its deltas, when the request's exchange is to be kept (gdpr/exchanges.py:
    # only under consent or contract); `after` is called with the job once it ended with
    # `done` (errors are logged, never raised: the answer is already out).
    transcript: list[str] | None = None
    after: Callable[[Job], Awaitable[None]] | None = None
    # For the charts (inference/stats.py): when the request arrived (time.monotonic(); 0:
    # not measured) and how long it waited in the model's queue.
    arrived: float = 0.0
    queue_wait_ms: float = 0.0
    succeeded: bool = False
    placement: Placement | None = None
    finished: bool = False
    # The HTTP status of the error event the job ended with (0: none): what a stream that
    # fails after its headers counts as in the metrics (inference/pipeline.py).
    error_status: int = 0
    _reply: str = ""
    _receiving: asyncio.Future[dict[str, Any]] | None = None  # the receive in progress
    _tried: set[str] = field(default_factory=set)  # channel names
    _counted: bool = False
    _dispatched_at: float = 0.0
    _first_text_at: float = 0.0
    _last_text_at: float = 0.0
    _ended_at: float = 0.0
    _failed: bool = False  # no hive took it, or it went silent (an error, not the client)
    _output_tokens: int = 0
    # Events of the batch being yielded that are already here, after the one just yielded:
    # a relay writes what came together in one write (inference/pipeline.py: relay).
    buffered: int = 0

    async def events(self) -> AsyncGenerator[dict[str, Any], None]:
        """Yield the job's events; the last one is a `done` or an `error`."""
        layer = get_channel_layer()
        assert layer is not None
        # The default prefix matters: channels_redis serves all of a process's
        # channels from one key, named after that prefix.
        try:
            self._reply = await layer.new_channel()
            # Inside the try: a client that leaves while we wait for the ack must
            # still cancel the job and stop counting it against the hive.
            self._dispatched_at = time.monotonic()
            try:
                batch = await self._dispatch(layer)
            except APIError:
                self._failed = True
                raise
            idle = settings.RBEE_JOB_IDLE_TIMEOUT
            while True:
                for i, event in enumerate(batch):
                    self.buffered = len(batch) - i - 1
                    kind = event.get("kind")
                    if kind == EventKind.DONE and self.vet is not None:
                        event = self.vet(event)
                        kind = event.get("kind")
                    if self.meter is not None and kind == EventKind.DELTA:
                        self.meter.progress(
                            event.get("prompt_tokens"), event.get("completion_tokens")
                        )
                    if self.transcript is not None and kind == EventKind.DELTA:
                        self.transcript.append(str(event.get("text") or ""))
                    if kind == EventKind.DELTA and event.get("text"):
                        self._last_text_at = time.monotonic()
                        if not self._first_text_at:
                            self._first_text_at = self._last_text_at
                    if kind in FINAL_KINDS:
                        self._ended_at = time.monotonic()
                        if kind == EventKind.DONE:
                            self._output_tokens = _completion_tokens(event)
                        self.finished = True
                        self.succeeded = kind == EventKind.DONE
                        if self.meter is not None:
                            done = kind == EventKind.DONE
                            await self.meter.finish(
                                _reported_usage(event) if done else None,
                                "ok" if done else "error",
                                self._worker_name(),
                                self._region(),
                            )
                    if kind == EventKind.ERROR:
                        self.error_status = from_event(event).status
                        if self.neutral_errors:
                            event = neutral_error(self.model, event)
                    yield event
                    if self.finished:
                        return
                msg = await self._next_message(layer, idle)
                if msg is _IDLE:
                    # Not finished: the hive may still be working, so _release cancels it.
                    self._failed = True
                    self.error_status = 504
                    yield {
                        "kind": EventKind.ERROR,
                        "message": f"the worker sent nothing for {idle:.0f} s; "
                        "the request was abandoned",
                        "code": "worker_timeout",
                        "status": 504,
                    }
                    return
                if msg is _LOST:
                    # The hive dropped the job with its socket: ended like any failed job
                    # (metered with what was produced, in neutral words for tenants).
                    assert self.placement is not None
                    logger.warning(
                        "job %s: hive %s lost the socket that ran it (its queen is gone)",
                        self.job_id,
                        self.placement.hive_name,
                    )
                    batch = [
                        error_event(
                            f"hive {self.placement.hive_name!r} disconnected while running "
                            "the request",
                            code="hive_disconnected",
                            status=502,
                        )
                    ]
                    continue
                if msg.get("hive_id") != self._hive_id or msg.get("type") != "job.events":
                    batch = []  # a late ack, or an abandoned earlier try
                    continue
                batch = list(msg["events"])
        finally:
            try:
                await self._release(layer, send_cancel=not self.finished)
                await self._stop_receiving(layer)
                self._forget_reply_channel(layer)
            finally:
                try:
                    if self.meter is not None and not self.finished:
                        await self.meter.finish(
                            None, "disconnected", self._worker_name(), self._region()
                        )
                finally:
                    self.finish()
                    self._record_stats()
                    if self.after is not None and self.succeeded:
                        try:
                            await self.after(self)
                        except Exception:
                            logger.exception("job %s: after-hook failed", self.job_id)

    async def _next_message(self, layer: Any, idle: float) -> dict[str, Any]:
        """The next message on the reply channel; `_IDLE` after `idle` seconds of silence;
        `_LOST` when, after a heartbeat interval of silence, the socket that took the job
        no longer holds its hive (a check that fails, the database restarting say, counts
        as held: the idle timeout still bounds the wait)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + idle
        every = max(0.1, float(settings.RBEE_HIVE_HEARTBEAT))
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return _IDLE
            message = await self._receive(layer, min(every, remaining))
            if message is not None:
                return message
            placement = self.placement
            if self.still_held is None or placement is None:
                continue
            try:
                held = await self.still_held(placement)
            except Exception as exc:
                logger.warning("job %s: could not check its hive (%s)", self.job_id, exc)
                continue
            if not held:
                return _LOST

    async def _receive(self, layer: Any, timeout: float) -> dict[str, Any] | None:
        """The next message on the reply channel, or None after `timeout` seconds. The
        receive is not cancelled when the time is up: the next call waits on it again."""
        if self._receiving is None:
            self._receiving = asyncio.ensure_future(layer.receive(self._reply))
        done, _ = await asyncio.wait({self._receiving}, timeout=max(0.0, timeout))
        if not done:
            return None
        receiving, self._receiving = self._receiving, None
        message: dict[str, Any] = receiving.result()
        return message

    async def _stop_receiving(self, layer: Any) -> None:
        """End the receive still waiting on the reply channel: the job sends the channel a
        message of its own, which that receive returns. Only if that cannot be done (the
        channel layer is down) is the receive cancelled, and then not waited for."""
        receiving, self._receiving = self._receiving, None
        if receiving is None:
            return
        receiving.add_done_callback(_drop_result)
        if receiving.done():
            return
        try:
            await layer.send(self._reply, {"type": "job.closed"})
            await asyncio.wait({receiving}, timeout=STOP_RECEIVING_S)
        except Exception as exc:
            logger.debug("job %s: could not end its receive (%s)", self.job_id, exc)
        if not receiving.done():
            receiving.cancel()

    def _record_stats(self) -> None:
        """Add this request to the charts' per-minute sums and to this queen's metrics
        (memory only; never raises)."""
        self._record_metrics()
        if not self.arrived:
            return
        try:
            end = self._ended_at or time.monotonic()
            stats.record(
                model=self.model,
                ok=self.succeeded,
                ttft_ms=(self._first_text_at - self.arrived) * 1000
                if self._first_text_at
                else None,
                output_tokens=self._output_tokens,
                generation_seconds=end - self._dispatched_at if self._dispatched_at else 0.0,
                queue_wait_ms=self.queue_wait_ms,
            )
        except Exception:
            logger.exception("job %s: could not count it for the charts", self.job_id)

    def _record_metrics(self) -> None:
        try:
            if self.succeeded:
                outcome = "ok"
            elif self.finished or self._failed:
                outcome = "error"
            else:
                outcome = "abandoned"
            ttft = inter = None
            if self._first_text_at and self.arrived:
                ttft = self._first_text_at - self.arrived
            if self._output_tokens > 1 and self._last_text_at > self._first_text_at > 0:
                inter = (self._last_text_at - self._first_text_at) / (self._output_tokens - 1)
            usage = getattr(self.meter, "usage", None)
            metrics.job_done(
                model=self.model,
                outcome=outcome,
                ttft=ttft,
                inter_token=inter,
                prompt_tokens=int(getattr(usage, "prompt_tokens", 0)),
                completion_tokens=int(getattr(usage, "completion_tokens", 0)),
                images=int(getattr(usage, "images", 0)),
                audio_seconds=float(getattr(usage, "audio_seconds", 0.0)),
                characters=int(getattr(usage, "characters", 0)),
            )
        except Exception:
            logger.exception("job %s: could not count it in the metrics", self.job_id)

    def _worker_name(self) -> str:
        p = self.placement
        return f"{p.hive_name}/{p.device}" if p is not None else ""

    def _region(self) -> str:
        """The serving hive's region, as its operator set it."""
        return self.placement.region if self.placement is not None else ""

    def finish(self) -> None:
        """Free what the job held; safe to call more than once."""
        done, self.on_finish = self.on_finish, None
        if done is not None:
            done()

    def _forget_reply_channel(self, layer: Any) -> None:
        """channels_redis keeps a buffer per reply channel that received messages nobody
        read (events sent before the hive saw our cancel) and never drops it."""
        buffers = getattr(layer, "receive_buffer", None)
        if buffers is not None:
            reply = self._reply
            asyncio.get_running_loop().call_later(30, buffers.pop, reply, None)

    @property
    def _hive_id(self) -> int | None:
        return self.placement.hive_id if self.placement else None

    async def _dispatch(self, layer: Any) -> list[dict[str, Any]]:
        """Send the job until a hive takes it; returns any events that came with the answer."""
        tries = max(1, settings.RBEE_DISPATCH_TRIES)
        ack_timeout = settings.RBEE_DISPATCH_ACK_TIMEOUT
        for attempt in range(tries):
            if attempt and self.refresh is not None:
                # A hive that reconnected meanwhile has a new channel name.
                self.placements = await self.refresh() or self.placements
            self.placements = self._in_region(self.placements)
            if not self.placements:
                break
            untried = [p for p in self.placements if p.channel_name not in self._tried]
            if attempt == 0 and self.preferred is not None and self._in_region([self.preferred]):
                placement = self.preferred
            else:
                # Shuffled first: equals are then taken at random, so the jobs a dropped
                # hive leaves behind spread out instead of all landing on one worker.
                pool = list(untried or self.placements)
                random.shuffle(pool)
                placement = least_loaded(pool, _local_inflight)
            # Resending to the same socket: no cancel, or it would stop the job we resend.
            previous = self.placement
            same = previous is not None and previous.channel_name == placement.channel_name
            await self._release(layer, send_cancel=not same)
            self.placement = placement
            self._tried.add(placement.channel_name)
            _local_inflight[placement.worker_id] += 1
            self._counted = True
            logger.debug("job %s dispatched to %s", self.job_id, placement.hive_name)
            await layer.send(
                placement.channel_name,
                {
                    "type": "job.dispatch",
                    "id": self.job_id,
                    "reply": self._reply,
                    "model": self.model,
                    "device": placement.device,
                    "task": self.task,
                    "request": self.request,
                },
            )
            loop = asyncio.get_running_loop()
            deadline = loop.time() + ack_timeout
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                msg = await self._receive(layer, remaining)
                if msg is None:
                    break
                if msg.get("hive_id") != placement.hive_id:
                    continue
                if msg.get("type") == "job.ack":
                    logger.debug("job %s acknowledged by %s", self.job_id, placement.hive_name)
                    self._taken()
                    return []
                if msg.get("type") == "job.events":
                    self._taken()
                    return list(msg["events"])
            logger.warning(
                "hive %s did not acknowledge job %s within %.1f s; trying again",
                placement.hive_name,
                self.job_id,
                ack_timeout,
            )
        await self._release(layer, send_cancel=True)
        if not self.placements:
            raise APIError(
                503,
                f"No live worker for '{self.model}' in this request's region "
                f"'{' and '.join(self.regions)}' is left to take it; it was not sent "
                "elsewhere. Try again shortly.",
                code="region_unavailable",
                headers={"Retry-After": "5"},
            )
        raise APIError(
            503,
            f"No worker acknowledged the request for model '{self.model}'; try again shortly.",
            code="worker_unavailable",
        )

    def _taken(self) -> None:
        """A hive took the job: its usage heartbeats name the worker from now on, so a
        row settled as interrupted (its queen died) still says where it ran."""
        if self.meter is not None:
            self.meter.worker = self._worker_name()

    def _in_region(self, placements: list[Placement]) -> list[Placement]:
        if not self.regions:
            return placements
        return [p for p in placements if regions.within_all(p.region, self.regions)]

    async def _release(self, layer: Any, *, send_cancel: bool) -> None:
        """Stop counting the current placement as busy; optionally tell its hive to stop."""
        placement = self.placement
        if placement is None or not self._counted:
            return
        self._counted = False
        if _local_inflight[placement.worker_id] > 0:
            _local_inflight[placement.worker_id] -= 1
        if send_cancel:
            try:
                await layer.send(placement.channel_name, {"type": "job.cancel", "id": self.job_id})
            except Exception:
                logger.exception("could not send cancel for job %s", self.job_id)


# What Job._next_message returns instead of a message: silence for the idle timeout, or
# the job's socket lost.
_IDLE: dict[str, Any] = {"type": "rbee.idle"}
_LOST: dict[str, Any] = {"type": "rbee.lost"}
# How long a job waits for its last receive to return the message it sent itself.
STOP_RECEIVING_S = 5.0


def _drop_result(receiving: asyncio.Future[dict[str, Any]]) -> None:
    """A receive nobody waits for any more: its message or error is dropped (and not
    reported as never retrieved)."""
    if not receiving.cancelled():
        receiving.exception()


def _completion_tokens(event: dict[str, Any]) -> int:
    """The completion tokens a `done` reports (0 when none, or not a count)."""
    n = _reported_usage(event).get("completion_tokens")
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 0


def _reported_usage(event: dict[str, Any]) -> dict[str, Any]:
    """The usage map a worker's `done` carries ({} when it carries none)."""
    usage = event.get("usage")
    return usage if isinstance(usage, dict) else {}
