"""The OpenAI-compatible API under /v1/ (async views, OpenAI's bodies and errors)."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from functools import wraps
from typing import Any, TypeVar

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.views.decorators.csrf import csrf_exempt

from billing import gate
from billing.limits import Cost
from hives import selectors as hive_selectors
from hives.models import CatalogModel
from hives.protocol import Capability, EventKind, Task
from hives.selectors import Placement
from inference import queueing, schemas
from inference.dispatch import Job, local_load, new_job_id
from inference.errors import APIError, from_domain
from inference.scheduler import Policy, current_policy, task_map
from kernel import __version__
from kernel.aio import db
from kernel.errors import DomainError
from tenants.selectors import Caller, KeyRejected, caller_anonymous, caller_from_key
from tenants.services import api_key_touch

logger = logging.getLogger("inference")
requests_log = logging.getLogger("inference.requests")

SYSTEM_FINGERPRINT = f"rbee-{__version__}"

View = Callable[..., Awaitable[HttpResponseBase]]

_KEY_MESSAGES = {
    "missing": (
        "You didn't provide an API key. You need to provide your API key in an Authorization "
        "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
    ),
    "malformed": "Incorrect API key provided: the key is not in rbee's format (sk-rbee-...).",
    "unknown": "Incorrect API key provided. Create a key with `rbee key create --tenant NAME`.",
    "revoked": "This API key has been revoked.",
    "expired": "This API key has expired (a rotated key stops working after its grace period).",
    "suspended": "The tenant this API key belongs to is suspended.",
}


def _bearer(request: HttpRequest) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


def _authenticate(raw_key: str) -> Caller:
    if not raw_key:
        if settings.RBEE_ANONYMOUS_TENANT:
            try:
                return caller_anonymous(tenant_name=settings.RBEE_ANONYMOUS_TENANT)
            except KeyRejected:
                pass
        raise APIError(401, _KEY_MESSAGES["missing"], code="invalid_api_key")
    try:
        caller = caller_from_key(raw_key)
        _touch(caller)
        return caller
    except KeyRejected as exc:
        code = "account_deactivated" if exc.reason == "suspended" else "invalid_api_key"
        raise APIError(401, _KEY_MESSAGES[exc.reason], code=code) from exc


_touched: dict[int, float] = {}


def _touch(caller: Caller) -> None:
    """Keep the key's last-used time, writing at most once a minute per key and process."""
    key_id = caller.api_key_id
    now = time.monotonic()
    if key_id is None or now - _touched.get(key_id, -1e9) < 60:
        return
    _touched[key_id] = now
    api_key_touch(api_key_id=key_id)


def openai_endpoint(methods: tuple[str, ...]) -> Callable[[View], Any]:
    # Any: django-stubs types URL targets as sync views returning a response.
    """Method check, CSRF exemption and the error envelope for one /v1/ view."""

    def deco(view: View) -> Any:
        @csrf_exempt
        @wraps(view)
        async def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            response = await _answer(request, *args, **kwargs)
            for k, v in getattr(request, "rbee_ratelimit", {}).items():
                if k not in response:
                    response[k] = v
            return response

        async def _answer(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            try:
                if request.method not in methods:
                    raise APIError(
                        405,
                        f"Method {request.method} is not allowed on {request.path}; "
                        f"use {', '.join(methods)}.",
                        code="method_not_allowed",
                        headers={"Allow": ", ".join(methods)},
                    )
                return await view(request, *args, **kwargs)
            except APIError as exc:
                return exc.response()
            except DomainError as exc:
                return from_domain(exc).response()
            except Exception:
                logger.exception("unexpected error on %s", request.path)
                return APIError(
                    500,
                    "The server had an error while processing your request.",
                    code="internal_error",
                ).response()

        return wrapper

    return deco


def read_json(request: HttpRequest) -> dict[str, Any]:
    return schemas.parse_json_body(read_body(request))


def read_body(request: HttpRequest) -> bytes:
    """The raw body, or 413 when it is larger than the server accepts."""
    limit = settings.RBEE_MAX_BODY_BYTES
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    too_big = APIError(
        413,
        f"The request body is larger than this server accepts ({limit} bytes).",
        code="request_too_large",
    )
    if declared > limit:
        raise too_big
    try:
        raw = request.body
    except RequestDataTooBig as exc:
        raise too_big from exc
    if len(raw) > limit:
        raise too_big
    return raw


@dataclass(frozen=True)
class Target:
    caller: Caller
    model: CatalogModel
    placements: list[Placement]
    policy: Policy = field(default_factory=Policy)


P = TypeVar("P")


def _prepare(
    raw_key: str,
    request: HttpRequest,
    parse: Callable[[HttpRequest], P],
    model_of: Callable[[P], str | None],
    capability: str,
    task: str,
) -> tuple[P, Target]:
    """Key, body, the key's scopes and the plan's models, and placements, in one thread
    hop and in that order: a caller with a bad key hears 401 whatever its body, and
    learns nothing else."""
    caller = _authenticate(raw_key)
    req = parse(request)
    target = _resolve(caller, model_of(req), capability)
    if caller.scope_endpoints or caller.scope_models or caller.allowed_models:
        aliases = list(target.model.aliases.values_list("name", flat=True))
        gate.check_access(caller, task, target.model.name, aliases)
    policy = current_policy(settings.RBEE_SCHEDULER_CHECK_SECONDS)
    return req, Target(
        caller=caller, model=target.model, placements=target.placements, policy=policy
    )


def _prepare_chat(
    raw_key: str, request: HttpRequest
) -> tuple[schemas.ChatCompletionRequest, Target]:
    return _prepare(
        raw_key,
        request,
        lambda r: schemas.validate_chat(read_json(r)),
        lambda req: req.model,
        CatalogModel.Capability.TEXT_GEN,
        Task.CHAT,
    )


_CAPABILITY_ENDPOINTS: dict[str, str] = {
    Capability.TEXT_GEN: "/v1/chat/completions or /v1/completions",
    Capability.EMBEDDING: "/v1/embeddings",
    Capability.IMAGE_GEN: "/v1/images/generations or /v1/images/variations",
    Capability.AUDIO_TRANSCRIPTION: "/v1/audio/transcriptions or /v1/audio/translations",
    Capability.AUDIO_GEN: "/v1/audio/speech",
}


def _resolve(caller: Caller, model_name: str | None, capability: str) -> Target:
    """The model (by name or alias; the default of the capability when none is named)
    and the workers that can serve it."""
    if model_name is None:
        model = hive_selectors.default_model_for(capability=capability)
        if model is None:
            raise APIError(
                503,
                f"No {capability} model is served right now; name one with 'model'.",
                param="model",
                code="model_unavailable",
                headers={"Retry-After": "5"},
            )
    else:
        model = hive_selectors.catalog_model_get(name=model_name)
    if model is None:
        raise APIError(
            404,
            f"The model '{model_name}' does not exist. GET /v1/models lists the models served.",
            param="model",
            code="model_not_found",
        )
    if model.capability != capability:
        raise APIError(
            400,
            f"The model '{model_name}' is a {model.capability} model and cannot serve this "
            f"endpoint; use it with {_CAPABILITY_ENDPOINTS.get(model.capability, 'another one')}.",
            param="model",
            code="wrong_model_type",
        )
    placements = hive_selectors.placements_for_model(model=model)
    if not placements:
        raise APIError(
            503,
            f"The model '{model.name}' is known but no live worker serves it right now "
            "(its hive is offline or still loading it). Try again shortly.",
            code="model_unavailable",
            headers={"Retry-After": "5"},
        )
    return Target(caller=caller, model=model, placements=placements)


def _model_entry(served: hive_selectors.Served) -> dict[str, Any]:
    """OpenAI's Model object, plus what it does, where it runs and its other names."""
    model = served.model
    return {
        "id": model.name,
        "object": "model",
        "created": int(model.created_at.timestamp()),
        "owned_by": "rbee",
        "capability": model.capability,
        "engine": model.engine,
        "hives": served.hives,
        "placements": served.placements,
        "aliases": sorted(served.aliases),
    }


def make_job(
    target: Target,
    decision: Scheduled,
    slot: queueing.Slot,
    task: str,
    job_request: dict[str, Any],
    *,
    model: str,
    fallback: Any = None,
) -> Job:
    """The job for a scheduled request, with the meter that records its usage once."""
    job_id = new_job_id()
    meter = None
    if decision.admitted is not None:
        meter = gate.Meter(
            decision.admitted,
            request_id=job_id,
            model=model,
            modality=gate.TASK_MODALITY.get(task, task),
            fallback=fallback,
        )
    return Job(
        on_finish=slot.release,
        job_id=job_id,
        model=target.model.name,
        task=task,
        request=job_request,
        placements=decision.eligible,
        refresh=lambda: db(hive_selectors.placements_for_model, model=target.model),
        preferred=decision.placement,
        meter=meter,
    )


def _record(resp: HttpResponseBase, job: Job, decision: Scheduled) -> None:
    """Which worker served the request, and whether the script or the default chose it;
    the tenant's rate-limit headers."""
    if decision.admitted is not None:
        for k, v in decision.admitted.headers.items():
            resp[k] = v
    served = job.placement or decision.placement
    source = decision.source if served.worker_id == decision.placement.worker_id else "retry"
    resp["X-Rbee-Worker"] = f"{served.hive_name}/{served.device}"
    resp["X-Rbee-Decision"] = source
    requests_log.info(
        "job %s model %s served by %s/%s (%s)",
        job.job_id,
        job.model,
        served.hive_name,
        served.device,
        source,
    )


def _size_estimate(job_request: dict[str, Any]) -> int:
    """Tokens the task may take, roughly: prompt characters / 4 plus the completion budget."""
    chars = sum(len(str(m.get("content") or "")) for m in job_request.get("messages") or [])
    return chars // 4 + int(job_request.get("max_tokens") or 256)


@dataclass(frozen=True)
class Scheduled:
    placement: Placement
    source: str
    eligible: list[Placement]
    admitted: gate.Admitted | None = None


async def _schedule(
    request: HttpRequest,
    target: Target,
    extra: dict[str, Any],
    size: int,
    cost: Cost | None = None,
) -> tuple[Scheduled, queueing.Slot]:
    """Eligibility, the tenant's rates and quotas (reserving `cost`), the owner's
    should_admit, a free slot (waiting if need be), then route_task among the workers
    live at that moment (inference/scheduler.py). The reservation is settled by the
    job's Meter; if scheduling fails here, it is settled at once."""
    priority = str(extra.get("priority") or request.headers.get("X-Rbee-Priority") or "interactive")
    if priority not in ("interactive", "batch"):
        raise APIError(
            400,
            f"Invalid value for 'priority': {priority!r} is not one of 'interactive', 'batch'.",
            param="priority",
            code="invalid_value",
        )
    region = str(request.headers.get("X-Rbee-Region") or "")

    def eligible_of(placements: list[Placement]) -> list[Placement]:
        found = hive_selectors.prefer_loaded(
            [p for p in placements if not region or p.region == region]
        )
        if not found:
            raise APIError(
                503,
                f"No live worker for '{target.model.name}' in region '{region}'.",
                code="model_unavailable",
                headers={"Retry-After": "5"},
            )
        return found

    eligible = eligible_of(target.placements)
    caller = target.caller
    admitted = await gate.admit(caller, cost or Cost(requests=1, tokens=size))
    # Every response to an admitted request carries the tenant's rate-limit headers, errors
    # from the worker included (openai_endpoint adds them).
    request.rbee_ratelimit = admitted.headers  # type: ignore[attr-defined]
    try:
        scheduled, slot = await _admit_and_route(
            request, target, eligible, eligible_of, priority, region, size, admitted
        )
    except BaseException:
        await gate.release(admitted)
        raise
    return scheduled, slot


async def _admit_and_route(
    request: HttpRequest,
    target: Target,
    eligible: list[Placement],
    eligible_of: Callable[[list[Placement]], list[Placement]],
    priority: str,
    region: str,
    size: int,
    admitted: gate.Admitted,
) -> tuple[Scheduled, queueing.Slot]:
    caller = target.caller
    model = target.model.name
    task = task_map(
        type=target.model.capability,
        model=model,
        priority=priority,
        tier=caller.tier,
        tenant=caller.tenant_name,
        region=region,
        size=size,
    )
    used = admitted.usage_today
    customer = {
        "tenant": caller.tenant_name,
        "tier": caller.tier,
        "queue_depth": queueing.queue_depth(model),
        # Today's usage (with this request's reservation) and the plan's daily limits.
        "tokens_used_today": int(used.get("tokens", 0)),
        "daily_limit": caller.limits.get("tokens_per_day"),
        "requests_today": int(used.get("requests", 0)),
        "images_today": int(used.get("images", 0)),
        "audio_seconds_today": float(used.get("audio_seconds", 0.0)),
        "characters_today": int(used.get("characters", 0)),
        "limits": {k: v for k, v in caller.limits.items() if v is not None},
    }
    admission = target.policy.admit(task, customer)
    if not admission.admitted:
        if admission.status == 403:
            raise APIError(403, admission.reason, code="scheduler_denied")
        raise APIError(
            429, admission.reason, code="scheduler_rejected", headers={"Retry-After": "1"}
        )
    slot = await queueing.acquire(
        model,
        capacity=sum(p.slots for p in eligible) * settings.RBEE_WORKER_SLOTS,
        priority=priority,
        max_waiting=settings.RBEE_QUEUE_MAX,
        timeout=settings.RBEE_QUEUE_TIMEOUT,
    )
    try:
        if slot.waited:  # hives may have come and gone while we waited
            fresh = await db(hive_selectors.placements_for_model, model=target.model)
            eligible = eligible_of(fresh)
        decision = target.policy.route(task, eligible, local_load())
    except BaseException:
        slot.release()
        raise
    return Scheduled(decision.placement, decision.source, eligible, admitted), slot


@openai_endpoint(("GET",))
async def models_list(request: HttpRequest) -> HttpResponse:
    await db(_authenticate, _bearer(request))
    served = await db(hive_selectors.served_models)
    return JsonResponse({"object": "list", "data": [_model_entry(m) for m in served]})


@openai_endpoint(("GET",))
async def model_detail(request: HttpRequest, model_id: str) -> HttpResponse:
    await db(_authenticate, _bearer(request))
    served = await db(hive_selectors.served_models)
    for entry in served:
        if model_id == entry.model.name or model_id in entry.aliases:
            return JsonResponse(_model_entry(entry))
    raise APIError(
        404, f"The model '{model_id}' does not exist.", param="model", code="model_not_found"
    )


def _count(value: Any) -> int:
    """A token count from a hive's event; anything that is not a count is 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _usage(event: dict[str, Any]) -> dict[str, Any]:
    usage = event.get("usage")
    return usage if isinstance(usage, dict) else {}


def _error_from_event(event: dict[str, Any]) -> APIError:
    status = event.get("status")
    status = status if isinstance(status, int) else 500
    if status == 499:  # an engine's "cancelled", reaching a job that was not: a retry's
        status = 503
    return APIError(
        status if 400 <= status < 600 else 500,
        str(event.get("message") or "the worker failed"),
        code=str(event.get("code") or "worker_error"),
        param=event.get("param"),
    )


@openai_endpoint(("POST",))
async def chat_completions(request: HttpRequest) -> HttpResponseBase:
    raw_key = _bearer(request)
    # Authentication comes first: an unauthenticated caller learns nothing else.
    if not raw_key and not settings.RBEE_ANONYMOUS_TENANT:
        raise APIError(401, _KEY_MESSAGES["missing"], code="invalid_api_key")
    req, target = await db(_prepare_chat, raw_key, request)
    job_request = schemas.chat_job_request(req)
    decision, slot = await _schedule(
        request, target, req.model_extra or {}, _size_estimate(job_request)
    )
    job = make_job(target, decision, slot, Task.CHAT, job_request, model=req.model)
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    if req.stream:
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        events = job.events()
        # Dispatch before answering, so that "no worker" is a proper status, not a stream error.
        first = await events.__anext__()
        if first.get("kind") == EventKind.ERROR:
            await events.aclose()
            raise _error_from_event(first)
        stream = StreamingHttpResponse(
            _sse(events, first, completion_id, created, req.model, include_usage),
            content_type="text/event-stream",
        )
        stream["Cache-Control"] = "no-cache"
        stream["X-Accel-Buffering"] = "no"
        stream["X-Request-Id"] = job.job_id
        _record(stream, job, decision)
        return stream

    text, finish_reason, done = await collect_text(job)
    usage = _usage(done)
    prompt_tokens = _count(usage.get("prompt_tokens"))
    completion_tokens = _count(usage.get("completion_tokens"))
    resp = JsonResponse(
        {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": req.model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": finish_reason,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
    )
    resp["X-Request-Id"] = job.job_id
    _record(resp, job, decision)
    return resp


def _chunk(completion_id: str, created: int, model: str, choices: list[Any], **extra: Any) -> bytes:
    body = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": choices,
        **extra,
    }
    return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"


async def collect_text(job: Job) -> tuple[str, str, dict[str, Any]]:
    """A text job's whole answer: its text, finish reason and final event (or its error,
    raised)."""
    text: list[str] = []
    finish_reason = "stop"
    done: dict[str, Any] = {}
    async for event in job.events():
        kind = event.get("kind")
        if kind == EventKind.DELTA:
            text.append(str(event.get("text", "")))
        elif kind == EventKind.DONE:
            finish_reason = str(event.get("finish_reason") or "stop")
            done = event
        elif kind == EventKind.ERROR:
            raise _error_from_event(event)
    return "".join(text), finish_reason, done


def stream_failure(stream_id: str) -> list[bytes]:
    """The end of an SSE stream that failed after its headers were sent: the failure can
    only be told in the stream itself."""
    logger.exception("stream %s failed", stream_id)
    err = APIError(
        500, "The server had an error while streaming the response.", code="internal_error"
    )
    return [b"data: " + json.dumps(err.body()).encode() + b"\n\n", b"data: [DONE]\n\n"]


async def _sse(
    events: AsyncGenerator[dict[str, Any], None],
    first: dict[str, Any] | None,
    completion_id: str,
    created: int,
    model: str,
    include_usage: bool,
) -> AsyncIterator[bytes]:
    """Relay a job's events as OpenAI chat.completion.chunk events, as they arrive."""

    def delta(content: str, role: bool = False) -> bytes:
        d: dict[str, Any] = {"content": content}
        if role:
            d = {"role": "assistant", "content": content}
        return _chunk(
            completion_id,
            created,
            model,
            [{"index": 0, "delta": d, "logprobs": None, "finish_reason": None}],
        )

    try:
        yield delta("", role=True)
        pending = [first] if first else []

        async def stream() -> AsyncIterator[dict[str, Any]]:
            for e in pending:
                yield e
            async for e in events:
                yield e

        async for event in stream():
            kind = event.get("kind")
            if kind == EventKind.DELTA:
                if event.get("text"):
                    yield delta(str(event["text"]))
            elif kind == EventKind.DONE:
                yield _chunk(
                    completion_id,
                    created,
                    model,
                    [
                        {
                            "index": 0,
                            "delta": {},
                            "logprobs": None,
                            "finish_reason": str(event.get("finish_reason") or "stop"),
                        }
                    ],
                )
                if include_usage:
                    u = _usage(event)
                    p, c = _count(u.get("prompt_tokens")), _count(u.get("completion_tokens"))
                    yield _chunk(
                        completion_id,
                        created,
                        model,
                        [],
                        usage={"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c},
                    )
                break
            elif kind == EventKind.ERROR:
                err = _error_from_event(event)
                yield b"data: " + json.dumps(err.body()).encode() + b"\n\n"
                break
        yield b"data: [DONE]\n\n"
    except Exception:
        for piece in stream_failure(completion_id):
            yield piece
    finally:
        await events.aclose()


@openai_endpoint(("GET", "POST", "PUT", "PATCH", "DELETE"))
async def not_found(request: HttpRequest, rest: str = "") -> HttpResponse:
    raise APIError(404, f"Invalid URL ({request.method} {request.path})", code="unknown_url")
