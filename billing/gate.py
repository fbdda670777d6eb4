"""The gate every /v1/ request passes before dispatch, and the meter that follows it.

Order (inference/pipeline.py, steps 4 and 5): the key's scopes (403), the plan's models (403
naming the plans that include the model), then rates, concurrency and daily quotas in one
atomic step (billing/limits.py: one Redis Lua call, so queen replicas never over-admit;
429 `rate_limit_exceeded` or `insufficient_quota` with Retry-After). What the request may
use is reserved there; the Meter replaces it with what was used once the job ends, and
records the one UsageEvent of the request before the response's last bytes leave.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from billing import limits as lim
from billing.errors import AdmissionCode, AdmissionError
from billing.services import Usage, usage_begin, usage_progress, usage_record
from kernel.aio import db
from kernel.errors import Unavailable
from kernel.process import instance_id
from tenants.selectors import Caller

logger = logging.getLogger("billing.gate")

_REASON_MESSAGES = {
    "rate_limit_requests": "Rate limit reached for requests per minute",
    "rate_limit_tokens": "Rate limit reached for tokens per minute",
    "concurrency": "Too many requests in flight at once for this tenant",
    "quota_requests": "You exceeded your daily quota of requests",
    "quota_tokens": "You exceeded your daily quota of tokens",
    "quota_images": "You exceeded your daily quota of images",
    "quota_audio_seconds": "You exceeded your daily quota of audio seconds",
    "quota_characters": "You exceeded your daily quota of speech characters",
}


def limits_of(caller: Caller) -> lim.Limits:
    return lim.Limits(**{k: v for k, v in caller.limits.items() if k in _LIMIT_NAMES})


_LIMIT_NAMES = {
    "requests_per_minute",
    "tokens_per_minute",
    "max_concurrent",
    "requests_per_day",
    "tokens_per_day",
    "images_per_day",
    "audio_seconds_per_day",
    "characters_per_day",
}


def plans_including(model: str, aliases: list[str]) -> list[str]:
    """Names of the plans whose allowed models include the model (or allow every model)."""
    from tenants.models import Plan

    names = {model, *aliases}
    return sorted(
        p.name
        for p in Plan.objects.only("name", "allowed_models")
        if not p.allowed_models or names & set(p.allowed_models)
    )


def check_endpoint(caller: Caller, endpoint: str) -> None:
    """The key's endpoint scopes (ApiKey.scopes["endpoints"]) allow `endpoint`: also for
    the requests that name no model (reading or deleting a stored video)."""
    if caller.scope_endpoints and endpoint not in caller.scope_endpoints:
        raise AdmissionError(
            AdmissionCode.INSUFFICIENT_SCOPE,
            f"This API key may not use the {endpoint} endpoints "
            f"(its scopes allow: {', '.join(caller.scope_endpoints)}).",
        )


def check_access(caller: Caller, endpoint: str, model: str, aliases: list[str]) -> None:
    """Scopes of the key, then the plan's models. Runs in the database hop of the view."""
    names = {model, *aliases}
    check_endpoint(caller, endpoint)
    if caller.scope_models and not names & set(caller.scope_models):
        raise AdmissionError(
            AdmissionCode.INSUFFICIENT_SCOPE,
            f"This API key may not use the model '{model}' "
            f"(its scopes allow: {', '.join(caller.scope_models)}).",
            param="model",
        )
    if caller.allowed_models and not names & set(caller.allowed_models):
        including = plans_including(model, aliases)
        where = (
            f"it is included in the {', '.join(including)} plan{'s' if len(including) > 1 else ''}"
            if including
            else "no plan includes it"
        )
        raise AdmissionError(
            AdmissionCode.MODEL_NOT_IN_PLAN,
            f"The model '{model}' is not included in your plan ({caller.tier}); {where}.",
            param="model",
        )


@dataclass
class Admitted:
    """A request past the gate: its reservation, its headers, today's usage."""

    caller: Caller
    ticket: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    usage_today: dict[str, float] = field(default_factory=dict)
    limited: bool = False


async def admit(caller: Caller, cost: lim.Cost) -> Admitted:
    """Rates, concurrency and quotas in one atomic step; 429 when any is exhausted."""
    limits = limits_of(caller)
    if all(getattr(limits, f) is None for f in _LIMIT_NAMES):
        return Admitted(caller=caller)  # unlimited: nothing to count against
    try:
        decision = await lim.get_limiter().admit(str(caller.tenant_id), limits, cost)
    except lim.STORE_DOWN as exc:
        raise Unavailable("Redis", type(exc).__name__) from exc
    if not decision.allowed:
        retry = max(1, math.ceil(decision.retry_after))
        quota = decision.reason.startswith("quota_")
        message = _REASON_MESSAGES.get(decision.reason, "Rate limit reached")
        if quota:
            message += (
                f" on the {caller.tier} plan. It resets at midnight UTC; upgrade the plan for more."
            )
        else:
            message += f". Please try again in {retry}s."
        raise AdmissionError(
            AdmissionCode.INSUFFICIENT_QUOTA if quota else AdmissionCode.RATE_LIMIT_EXCEEDED,
            message,
            headers={**decision.headers, "Retry-After": str(retry)},
            data={"reason": decision.reason},  # which limit (the metrics' refusal reason)
        )
    return Admitted(
        caller=caller,
        ticket=decision.ticket,
        headers=dict(decision.headers),
        usage_today=dict(decision.usage_today),
        limited=True,
    )


async def release(admitted: Admitted) -> None:
    """The request never reached a worker (the script or a full queue refused it): give
    its reservation back entirely."""
    if admitted.ticket:
        await lim.get_limiter().settle(
            str(admitted.caller.tenant_id), admitted.ticket, lim.Cost(requests=0)
        )


# The most one request can use of each unit, as a worker reports it ({key: most}). A hive
# is not trusted: a report that is negative, not a number, infinite or beyond this is not
# a measurement, and is recorded as 0 (and logged) rather than charged or crashed on.
MOST: Final = {
    "prompt_tokens": 10**9,
    "completion_tokens": 10**9,
    "images": 10**4,
    "seconds": 10**7,  # about 116 days of audio
    "characters": 10**9,
    "video_seconds": 10**6,  # about 11 days of video
}


def _plausible(value: Any, most: int) -> bool:
    """A real number in [0, most] (NaN and the infinities compare outside it)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= most


def heartbeat_seconds() -> float:
    """How often a running request refreshes its provisional usage row and renews its
    concurrency lease: RBEE_USAGE_HEARTBEAT_SECONDS, and at most a third of the lease."""
    from django.conf import settings

    every = float(getattr(settings, "RBEE_USAGE_HEARTBEAT_SECONDS", 15.0))
    lease = float(getattr(settings, "RBEE_CONCURRENCY_LEASE_SECONDS", lim.LEASE_S))
    return max(0.05, min(every, lease / 3))


# Final usage writes still being retried (kept referenced until they end).
_retrying: set[asyncio.Task[None]] = set()
FINAL_WRITE_TRIES: Final = 4
FINAL_WRITE_BACKOFF_S: Final = 0.5  # doubled after each try


class Meter:
    """Follows one job's progress and records the request's usage: a provisional row when
    it starts (`begin`), refreshed with the running counts while it runs, and finalised
    once at its end (`finish`), which also settles its reservation. The caller reports
    running token counts as text arrives (`progress`), so a stream the client leaves
    half-way is counted as far as it got, and a queen killed mid-stream leaves a row with
    the counts of its last heartbeat; the wire format of the events is the caller's
    business, not billing's."""

    def __init__(
        self,
        admitted: Admitted,
        *,
        request_id: str,
        model: str,
        modality: str,
        fallback: Usage | None = None,
        end_user: str = "",
        client_request_id: str = "",
    ) -> None:
        self.admitted = admitted
        self.end_user = end_user  # the OpenAI `user` field: the tenant's end user
        self.client_request_id = client_request_id  # the client's X-Client-Request-Id
        self.request_id = request_id
        self.model = model
        self.modality = modality
        self.fallback = fallback or Usage()  # e.g. speech: the input's characters
        self.started = time.monotonic()
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.deltas = 0
        self.worker = ""
        self.done = False
        self.usage: Usage | None = None  # what `finish` recorded
        self._beat: asyncio.Task[None] | None = None

    async def begin(self) -> None:
        """Write the request's provisional usage row (Unavailable when the database is
        down: the request is refused before it reaches a worker), then keep it and the
        concurrency lease fresh until `finish`."""
        caller = self.admitted.caller
        await db(
            usage_begin,
            request_id=self.request_id,
            tenant_id=caller.tenant_id,
            api_key_id=caller.api_key_id,
            model=self.model,
            modality=self.modality,
            queen=instance_id(),
            ticket=self.admitted.ticket,
            end_user=self.end_user,
            client_request_id=self.client_request_id,
        )
        if not self.done:
            self._beat = asyncio.get_running_loop().create_task(
                _heartbeat(weakref.ref(self), heartbeat_seconds()),
                name=f"usage-heartbeat-{self.request_id}",
            )

    async def beat(self) -> None:
        """Refresh the provisional row with the counts so far; renew the reservation's
        concurrency lease. Failures are logged: the next beat tries again."""
        caller = self.admitted.caller
        try:
            await db(
                usage_progress,
                request_id=self.request_id,
                usage=self.usage_of(None),
                latency_ms=int((time.monotonic() - self.started) * 1000),
                worker=self.worker,
            )
        except Exception as exc:
            logger.warning("could not refresh the usage of request %s: %s", self.request_id, exc)
        if self.admitted.ticket:
            try:
                await lim.get_limiter().renew(str(caller.tenant_id), self.admitted.ticket)
            except Exception as exc:
                logger.warning("could not renew the lease of request %s: %s", self.request_id, exc)

    def progress(self, prompt_tokens: Any = None, completion_tokens: Any = None) -> None:
        """One more piece of output, with the running token counts when known."""
        self.deltas += 1
        # Counts out of range are ignored (the last plausible one stands).
        if isinstance(prompt_tokens, int) and _plausible(prompt_tokens, MOST["prompt_tokens"]):
            self.prompt_tokens = prompt_tokens
        if isinstance(completion_tokens, int) and _plausible(
            completion_tokens, MOST["completion_tokens"]
        ):
            self.completion_tokens = completion_tokens

    def usage_of(self, reported: dict[str, Any] | None) -> Usage:
        """The usage to record: what the worker reported when it finished (`reported`, its
        usage map), or, for a job that ended early (None), what was produced so far."""
        u = reported if isinstance(reported, dict) else {}

        def n(key: str) -> float:
            v = u.get(key)
            if v is None:
                return 0.0
            if not _plausible(v, MOST[key]):
                logger.warning(
                    "request %s: the worker %s reported %s=%.40r, not a number in [0, %d]; "
                    "recorded as 0",
                    self.request_id,
                    self.worker or "?",
                    key,
                    v,
                    MOST[key],
                )
                return 0.0
            return float(v)

        if reported is None:
            # Ended early (the client left, or an error): what was produced so far.
            completion = self.completion_tokens or self.deltas
            return Usage(
                prompt_tokens=self.prompt_tokens if completion else 0,
                completion_tokens=completion,
                characters=self.fallback.characters if self.deltas else 0,
            )
        return Usage(
            prompt_tokens=int(n("prompt_tokens")),
            completion_tokens=int(n("completion_tokens")),
            images=int(n("images")),
            audio_seconds=n("seconds") if self.modality != "speech" else 0.0,
            characters=int(n("characters")),
            video_seconds=n("video_seconds"),
        )

    async def finish(
        self, reported: dict[str, Any] | None, outcome: str, worker: str = "", region: str = ""
    ) -> None:
        """Record and settle, once. Called before the final event is passed on; `reported`
        as for usage_of. When the database write fails it is retried in the background
        (a bounded number of times); if it never succeeds, the provisional row stays and
        is settled as interrupted (billing.services.usage_settle_stale): never lost."""
        if self.done:
            return
        self.done = True
        if self._beat is not None:
            self._beat.cancel()
        usage = self.usage = self.usage_of(reported)
        caller = self.admitted.caller
        record = functools.partial(
            usage_record,
            request_id=self.request_id,
            tenant_id=caller.tenant_id,
            api_key_id=caller.api_key_id,
            model=self.model,
            modality=self.modality,
            usage=usage,
            latency_ms=int((time.monotonic() - self.started) * 1000),
            worker=worker or self.worker,
            outcome=outcome,
            region=region,
            end_user=self.end_user,
        )
        try:
            await db(record)
        except Exception as exc:
            logger.warning(
                "could not record the usage of request %s (%s); trying again", self.request_id, exc
            )
            task = asyncio.get_running_loop().create_task(_record_later(self.request_id, record))
            _retrying.add(task)
            task.add_done_callback(_retrying.discard)
        if self.admitted.ticket:
            actual = lim.Cost(
                requests=1,
                tokens=usage.tokens,
                images=usage.images,
                audio_seconds=usage.audio_seconds,
                characters=usage.characters,
            )
            try:
                await lim.get_limiter().settle(str(caller.tenant_id), self.admitted.ticket, actual)
            except Exception:
                logger.exception("could not settle the reservation of %s", self.request_id)


async def _heartbeat(ref: weakref.ref[Meter], every: float) -> None:
    """A running request's heartbeat; ends with its Meter (finished, or forgotten)."""
    while True:
        await asyncio.sleep(every)
        meter = ref()
        if meter is None or meter.done:
            return
        await meter.beat()
        del meter


async def _record_later(request_id: str, record: Callable[[], Any]) -> None:
    """Retry a final usage write that failed, with backoff; give up after a few tries and
    leave the provisional row to the settler."""
    wait = FINAL_WRITE_BACKOFF_S
    last: Exception | None = None
    for attempt in range(1, FINAL_WRITE_TRIES):
        await asyncio.sleep(wait)
        wait *= 2
        try:
            await db(record)
            logger.info("recorded the usage of request %s (try %d)", request_id, attempt + 1)
            return
        except Exception as exc:
            last = exc
    logger.error(
        "could not record the usage of request %s after %d tries (%s); its provisional "
        "row will be settled as interrupted",
        request_id,
        FINAL_WRITE_TRIES,
        last,
    )
