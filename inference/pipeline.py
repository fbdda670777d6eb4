"""The one path every /v1 request takes. `inference/urls.py` maps each URL to `serve(...)`
(a model call) or to a view wrapped in `endpoint(...)`; everything below happens here, in
this order, for every endpoint:

    endpoint      the method check, OpenAI's error envelope for anything raised, the
                  tenant's rate-limit headers on every answer (errors included)
    serve(R)      for each resource R (inference/chat.py, completions.py, embeddings.py,
                  images.py, audio.py), which only says what differs:
     1 authenticate  the bearer key: its tenant, plan and scopes (tenants.selectors)
     2 parse         the body, JSON or multipart, validated (R.parse; inference/schemas.py)
     3 resolve       the model by name or alias, and the workers that serve or are
                     loading it (hives)
     4 access        the key's scopes and the plan's models (billing.gate.check_access),
                     and the scheduler script in force
                     (1-4 in one trip to the database, in that order: a bad key hears
                     401 whatever its body, and learns nothing else)
     5 admit         rates, concurrency and daily quotas in one atomic step, reserving
                     R.work's cost (billing.gate.admit); then the script's should_admit
     6 queue         a slot in the model's queue (inference/queueing.py); a model whose
                     workers are all still loading waits there for the first ready one
     7 route         the script's route_task, or the least loaded (inference/scheduler.py)
     8 job           sent over the channel layer to the chosen hive (inference/dispatch.py)
     9 meter         the job's Meter writes a provisional usage row before dispatch, keeps
                     it fresh while the job runs, finalises it once when the job ends, and
                     settles the reservation (billing.gate.Meter)
    10 respond       R.respond frames the events: relay() streams text as SSE, collect_text()
                     gathers it for JSON, result() waits for a one-shot job's result

Errors are raised, never returned: `APIError` (inference/errors.py) for what is about the
HTTP request itself, domain errors (tenants, billing, the scheduler) for the rest; the
`endpoint` wrapper turns both into OpenAI's envelope through the one table there.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import wraps
from typing import Any, Generic, TypeVar

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.http.multipartparser import MultiPartParserError
from django.http.response import HttpResponseBase
from django.views.decorators.csrf import csrf_exempt

from billing import gate
from billing.limits import Cost
from billing.models import UsageEvent
from billing.services import Usage
from gdpr import exchanges
from hives import selectors as hive_selectors
from hives.models import CatalogModel
from hives.protocol import Capability, EventKind, Task
from hives.selectors import Placement
from inference import decisions, metrics, queueing, request_ids, schemas
from inference.dispatch import Job, local_load, new_job_id
from inference.errors import APIError, bad_request, from_domain, from_event
from inference.scheduler import (
    Policy,
    SchedulerCode,
    SchedulerError,
    admit_async,
    current_policy,
    least_loaded,
    policy_if_fresh,
    route_async,
    task_map,
)
from inference.textparts import ToolCalls, clean_logprobs
from kernel import __version__, generations, regions
from kernel.aio import db
from kernel.errors import DomainError, Unavailable, store_down
from tenants.errors import KeyRejected
from tenants.selectors import CALLERS, Caller, caller_anonymous, caller_cached, caller_from_key
from tenants.services import api_key_touch

logger = logging.getLogger("inference")
requests_log = logging.getLogger("inference.requests")

SYSTEM_FINGERPRINT = f"rbee-{__version__}"

View = Callable[..., Awaitable[HttpResponseBase]]
Body = TypeVar("Body")


# --- every /v1 view: method, envelope, headers ------------------------------------------


def endpoint(*methods: str) -> Callable[[View], Any]:
    # Any: django-stubs types URL targets as sync views returning a response.
    """Method check, CSRF exemption, OpenAI's error envelope and the rate-limit headers
    for one /v1 view."""

    def deco(view: View) -> Any:
        @csrf_exempt
        @wraps(view)
        async def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            started = time.monotonic()
            # The request's id from the start: a model call's job, usage row and audit
            # event take it (run), and every answer carries it, errors included.
            request.rbee_request_id = new_job_id()  # type: ignore[attr-defined]
            response = await answer(request, *args, **kwargs)
            # Every response to an admitted request carries the tenant's rate-limit
            # headers, errors from the worker included.
            for k, v in getattr(request, "rbee_ratelimit", {}).items():
                if k not in response:
                    response[k] = v
            request_ids.stamp(request, response, started)
            return response

        async def answer(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            try:
                request_ids.check(request)
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
                metrics.refused(str(exc.code))
                return exc.response()
            except DomainError as exc:
                metrics.refused(str(exc.data.get("reason") or exc.code))
                return from_domain(exc).response()
            except Exception as exc:
                if store := store_down(exc):  # the database or Redis is down: 503
                    logger.warning("%s unavailable on %s: %s", store, request.path, exc)
                    return from_domain(Unavailable(store, type(exc).__name__)).response()
                logger.exception("unexpected error on %s", request.path)
                return APIError(
                    500,
                    "The server had an error while processing your request.",
                    code="internal_error",
                ).response()

        return wrapper

    return deco


@endpoint("GET", "POST", "PUT", "PATCH", "DELETE")
async def unknown_url(request: HttpRequest, rest: str = "") -> HttpResponse:
    raise APIError(404, f"Invalid URL ({request.method} {request.path})", code="unknown_url")


# --- 1 authenticate ----------------------------------------------------------------------


def bearer(request: HttpRequest) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


def loopback_host(host_header: str) -> bool:
    """Whether a Host header names this machine's loopback (localhost, 127.0.0.0/8, ::1),
    with or without a port. A web page on another site can make a browser send requests
    here under its own name (DNS rebinding): such requests carry that name instead."""
    host = host_header.strip().lower()
    if host.startswith("["):  # [::1]:7833
        host = host[1 : host.find("]")] if "]" in host else ""
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    if host in {"localhost", "::1"} or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def authenticate(raw_key: str, host: str = "", generation: object = None) -> Caller:
    """The caller of a bearer key (KeyRejected otherwise); with no key, the open queen's
    anonymous tenant if there is one, for requests addressed to a loopback name only (see
    loopback_host). Sync (database): call through kernel.aio.db. With the generation of
    the callers read before (kernel.generations), the caller is kept for later requests
    (tenants.selectors.caller_cached)."""
    if not raw_key:
        if settings.RBEE_ANONYMOUS_TENANT and loopback_host(host):
            try:
                return caller_anonymous(tenant_name=settings.RBEE_ANONYMOUS_TENANT)
            except KeyRejected:
                pass
        raise KeyRejected("missing")
    caller = caller_from_key(raw_key, generation)
    _touch(caller)
    return caller


_touched: dict[int, float] = {}


def _touch_due(caller: Caller) -> bool:
    key_id = caller.api_key_id
    return key_id is not None and time.monotonic() - _touched.get(key_id, -1e9) >= 60


def _touch(caller: Caller) -> None:
    """Keep the key's last-used time, writing at most once a minute per key and process."""
    if not _touch_due(caller):
        return
    assert caller.api_key_id is not None
    _touched[caller.api_key_id] = time.monotonic()
    api_key_touch(api_key_id=caller.api_key_id)


# --- 2 parse -----------------------------------------------------------------------------


JSON = "application/json"
MULTIPART = "multipart/form-data"


def media_type(content_type: str) -> str:
    """The media type of a Content-Type header, without its parameters, in lower case."""
    return content_type.split(";", 1)[0].strip().lower()


def require_media_type(request: HttpRequest, expected: str) -> None:
    """415 unless the body is declared as `expected` (parameters such as charset aside). A
    JSON endpoint that took text/plain or a form could be driven by any web page with a
    "simple" cross-site request, which the browser sends without asking."""
    declared = request.META.get("CONTENT_TYPE", "")
    if media_type(declared) != expected:
        got = f"'{declared}'" if declared else "no Content-Type"
        raise APIError(
            415,
            f"This endpoint takes a {expected} body (Content-Type: {expected}); the request "
            f"has {got}.",
            code="unsupported_media_type",
        )


def json_body_limit() -> int:
    return min(settings.RBEE_MAX_JSON_BYTES, settings.RBEE_MAX_BODY_BYTES)


def read_body(request: HttpRequest, limit: int | None = None) -> bytes:
    """The raw body, or 413 when it is larger than limit (by default the server's
    RBEE_MAX_BODY_BYTES): from the declared length before reading, then from what was read."""
    limit = settings.RBEE_MAX_BODY_BYTES if limit is None else limit
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


def read_json(request: HttpRequest) -> dict[str, Any]:
    """A JSON endpoint's body: application/json (415), at most RBEE_MAX_JSON_BYTES (413),
    a JSON object (400)."""
    require_media_type(request, JSON)
    return schemas.parse_json_body(read_body(request, json_body_limit()))


def read_form(request: HttpRequest) -> tuple[dict[str, Any], dict[str, tuple[str, bytes]]]:
    """A multipart form's fields and files (name -> (filename, bytes)): multipart/form-data
    (415), at most RBEE_MAX_BODY_BYTES (413). Runs in the database thread with the rest of
    the preparation, so parsing never blocks the loop."""
    require_media_type(request, MULTIPART)
    read_body(request)
    try:
        post, files = request.POST, request.FILES
    except (MultiPartParserError, TooManyFieldsSent, TooManyFilesSent) as exc:
        raise bad_request(f"The multipart body could not be parsed: {exc}.") from exc
    fields: dict[str, Any] = {}
    for key in post:
        values = post.getlist(key)
        name = key[:-2] if key.endswith("[]") else key
        fields[name] = values if key.endswith("[]") else values[-1]
    uploads = {}
    for key in files:
        f = files.get(key)
        if f is not None:
            uploads[key] = (str(f.name or ""), f.read())
    return fields, uploads


# --- what each resource says -------------------------------------------------------------


@dataclass(frozen=True)
class Work:
    """What a parsed request asks of a worker, and what it may cost."""

    request: dict[str, Any]  # what the engine receives
    size: int  # the task's size for the scheduler script (tokens, images, ...)
    cost: Cost  # reserved against the tenant's limits until the meter settles it
    model: str  # the model name the response and the usage record carry
    extra: Mapping[str, Any] = field(default_factory=dict)  # the body's own extras (priority)
    fallback: Usage | None = None  # what a job cut short counts (speech: its characters)
    end_user: str = ""  # the body's OpenAI `user` field: the tenant's end user (GDPR subject)


@dataclass(frozen=True)
class Call(Generic[Body]):
    """A request on its way out: what `respond` frames."""

    request: HttpRequest
    body: Body
    work: Work
    job: Job
    caller: Caller | None = None  # who asked (the Responses API stores under its tenant)
    keep: str = ""  # the basis for keeping the exchange (Target.keep): "" = none


@dataclass(frozen=True)
class Resource(Generic[Body]):
    """One /v1 model endpoint: only what differs between them."""

    task: str  # hives.protocol TASK_*
    capability: str  # CatalogModel.Capability
    parse: Callable[[HttpRequest], Body]  # 2: in the database trip, may raise 400/413
    model: Callable[[Body], str | None]  # the model it names (None: the default one)
    work: Callable[[Body, CatalogModel], Work]  # in the same thread as parse, never the loop
    respond: Callable[[Call[Body]], Awaitable[HttpResponseBase]]  # 10
    # What the body means for this caller, after access (in the same thread as parse):
    # the Responses API reads the tenant's stored previous response here. None: as parsed.
    bind: Callable[[Body, Caller], Body] | None = None


def serve(resource: Resource[Any]) -> Any:
    """The view of one model endpoint (POST), counted in this queen's metrics."""

    @endpoint("POST")
    async def answer(request: HttpRequest) -> HttpResponseBase:
        return await run(request, resource)

    @csrf_exempt
    async def view(request: HttpRequest) -> HttpResponseBase:
        started = time.monotonic()
        try:
            response: HttpResponseBase = await answer(request)
        except BaseException:  # cancelled: the client left before the answer (nginx's 499)
            _measured(request, resource.task, 499, started)
            raise
        if not response.streaming:
            _measured(request, resource.task, response.status_code, started)
            return response
        status = response.status_code
        content = response.streaming_content  # type: ignore[attr-defined]

        async def timed() -> AsyncIterator[bytes]:
            try:
                async for chunk in content:
                    yield chunk
            finally:  # the stream's last byte, or the client leaving it
                _measured(request, resource.task, _streamed(request, status), started)

        def timed_sync() -> Iterator[bytes]:
            try:
                yield from content
            finally:
                _measured(request, resource.task, _streamed(request, status), started)

        is_async = getattr(response, "is_async", False)
        response.streaming_content = timed() if is_async else timed_sync()  # type: ignore[attr-defined]
        return response

    view.__name__ = view.__qualname__ = resource.task
    return view


def _streamed(request: HttpRequest, status: int) -> int:
    """What a streamed answer counts as: its status, or, when its job ended with an error
    after the headers were sent (the client reads it in the stream), that error's."""
    job = getattr(request, "rbee_job", None)
    return getattr(job, "error_status", 0) or status


def _measured(request: HttpRequest, task: str, status: int, started: float) -> None:
    """Count one model request in this queen's metrics (memory only; never raises)."""
    try:
        metrics.request_done(
            model=getattr(request, "rbee_model", None),
            endpoint=task,
            status=status,
            seconds=time.monotonic() - started,
        )
    except Exception:
        logger.exception("could not count a request in the metrics")


async def run(request: HttpRequest, resource: Resource[Body]) -> HttpResponseBase:
    arrived = time.monotonic()  # the charts' time to first token counts from here
    raw_key = bearer(request)
    if not raw_key and not settings.RBEE_ANONYMOUS_TENANT:
        raise KeyRejected("missing")  # not even a trip to the database
    body, target, work = await _prepare_async(raw_key, request, resource)  # 1-4
    scheduled, slot = await _schedule(request, target, work)  # 5-7
    job = _job(
        target, scheduled, slot, resource.task, work, arrived, request_ids.ids(request)
    )  # 8, 9
    request.rbee_job = job  # type: ignore[attr-defined]  # how a stream ended (_streamed)
    await _begin(job, scheduled)
    request.rbee_request_id = job.job_id  # type: ignore[attr-defined]
    call = Call(request, body, work, job, caller=target.caller, keep=target.keep)
    response = await resource.respond(call)  # 10
    response["X-Request-Id"] = job.job_id
    _record(response, job, scheduled, operator=target.caller.operator)
    return response


# --- 1-4 in one trip to the database -----------------------------------------------------


@dataclass(frozen=True)
class Target:
    caller: Caller
    model: CatalogModel
    placements: list[Placement]
    policy: Policy
    keep: str = ""  # the basis for keeping the exchange ("" = not kept: the default)


# What each task is to billing: the scope a key needs (ApiKey.scopes["endpoints"]) and the
# modality its usage is recorded under (UsageEvent.Modality).
TASK_SCOPE: dict[str, str] = {
    Task.CHAT: "chat",
    Task.COMPLETION: "completions",
    Task.EMBEDDING: "embeddings",
    Task.IMAGE: "images",
    Task.IMAGE_VARIATION: "images",
    Task.TRANSCRIPTION: "audio",
    Task.TRANSLATION: "audio",
    Task.SPEECH: "audio",
    Task.VIDEO: "videos",
}
TASK_MODALITY: dict[str, str] = {
    Task.CHAT: UsageEvent.Modality.CHAT,
    Task.COMPLETION: UsageEvent.Modality.COMPLETION,
    Task.EMBEDDING: UsageEvent.Modality.EMBEDDING,
    Task.IMAGE: UsageEvent.Modality.IMAGE,
    Task.IMAGE_VARIATION: UsageEvent.Modality.IMAGE,
    Task.TRANSCRIPTION: UsageEvent.Modality.TRANSCRIPTION,
    Task.TRANSLATION: UsageEvent.Modality.TRANSLATION,
    Task.SPEECH: UsageEvent.Modality.SPEECH,
    Task.VIDEO: UsageEvent.Modality.VIDEO,
}


# Bodies up to this size are parsed on the event loop when everything else a request
# needs is in memory (_prepare_async); larger ones, and uploads, in the database thread.
LOOP_BODY_BYTES = 64 * 1024
_NOT_PARSED: Any = object()


async def _prepare_async(
    raw_key: str, request: HttpRequest, resource: Resource[Body]
) -> tuple[Body, Target, Work]:
    """1-4 without leaving the event loop when this process already holds the key's caller
    (tenants.selectors.caller_cached), the model and its placements
    (hives.selectors.model_cached) and the scheduler script, none of which changed since
    on any replica (kernel/generations.py), and the body is a small JSON one; otherwise
    in one trip to the database (prepare), which keeps what it read for the next
    request. The order of checks and errors is the same either way."""
    if not raw_key:
        return await db(prepare, raw_key, request, resource)
    callers, fleet = await generations.current_all(CALLERS, hive_selectors.FLEET)
    known = caller_cached(raw_key, callers)
    parsed = _NOT_PARSED
    if known is not None and _loop_sized_json(request):
        parsed = resource.parse(request)  # 400/413/415 here as in the thread
        fast = _prepare_kept(known, parsed, fleet, request, resource)
        if fast is not None:
            return fast
    return await db(prepare, raw_key, request, resource, known, callers, fleet, parsed)


def _loop_sized_json(request: HttpRequest) -> bool:
    if media_type(request.META.get("CONTENT_TYPE", "")) != JSON:
        return False
    try:
        size = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return False
    return 0 < size <= LOOP_BODY_BYTES


def _prepare_kept(
    caller: Caller, body: Body, fleet: object, request: HttpRequest, resource: Resource[Body]
) -> tuple[Body, Target, Work] | None:
    """prepare from what this process keeps, or None when something is not kept or needs
    the database (a key whose last-used time is due, scopes or plan models to check, an
    exchange that may be kept, a script due to be checked)."""
    name = resource.model(body)
    if name is None or _touch_due(caller) or caller.prompt_retention != exchanges.OFF:
        return None
    if resource.bind is not None:
        return None  # binding reads the database (a stored response)
    if caller.scope_endpoints or caller.scope_models or caller.allowed_models:
        return None  # check_access may read the plans
    kept = hive_selectors.model_cached(name=name, generation=fleet)
    if kept is None or kept.model.capability != resource.capability or not kept.placements:
        return None
    policy = policy_if_fresh(settings.RBEE_SCHEDULER_CHECK_SECONDS)
    if policy is None:
        return None
    return _target(
        caller, body, kept.model, list(kept.placements), policy, request, resource, keep=""
    )


def prepare(
    raw_key: str,
    request: HttpRequest,
    resource: Resource[Body],
    known: Caller | None = None,
    callers: object = None,
    fleet: object = None,
    parsed: Any = _NOT_PARSED,
) -> tuple[Body, Target, Work]:
    if known is not None:
        caller = known
        _touch(caller)
    else:
        caller = authenticate(raw_key, request.META.get("HTTP_HOST", ""), callers)
    body = resource.parse(request) if parsed is _NOT_PARSED else parsed
    name = resource.model(body)
    model = _resolve(name, resource.capability)
    if caller.scope_endpoints or caller.scope_models or caller.allowed_models:
        # Before anything about the model's workers: a caller that may not use it learns
        # nothing of whether it is served right now.
        _learn(request, model)
        aliases = list(model.aliases.values_list("name", flat=True))
        gate.check_access(caller, TASK_SCOPE[resource.task], model.name, aliases)
    placements = _placements(model, operator=caller.operator)
    if name is not None:
        hive_selectors.model_remember(
            name=name, model=model, placements=placements, generation=fleet
        )
    policy = current_policy(settings.RBEE_SCHEDULER_CHECK_SECONDS)
    if resource.bind is not None:
        body = resource.bind(body, caller)
    return _target(caller, body, model, placements, policy, request, resource)


def _learn(request: HttpRequest, model: CatalogModel) -> None:
    # The metrics' label: a catalog model's name (the database's, never the body's).
    request.rbee_model = model.name  # type: ignore[attr-defined]
    metrics.MODELS.learn(model.name)


def _target(
    caller: Caller,
    body: Body,
    model: CatalogModel,
    placements: list[Placement],
    policy: Policy,
    request: HttpRequest,
    resource: Resource[Body],
    keep: str | None = None,
) -> tuple[Body, Target, Work]:
    """The rest of 1-4 once the caller, model and placements are known. `keep`: the
    exchange's basis when already known ("" = not kept), else looked up (database)."""
    _learn(request, model)
    # The work too, off the loop: an upload's is header parsing and a base64 of up to 25 MB.
    work = resource.work(body, model)
    end_user = getattr(body, "user", None)
    if isinstance(end_user, str) and end_user:
        work = dataclasses.replace(work, end_user=end_user[:256])
    if keep is None:
        keep = ""
        if resource.task in KEEPABLE and caller.prompt_retention != exchanges.OFF:
            keep = exchanges.basis_for(
                setting=caller.prompt_retention, tenant=caller.tenant_name, end_user=work.end_user
            )
    target = Target(caller=caller, model=model, placements=placements, policy=policy, keep=keep)
    return body, target, work


# Tasks whose exchange (prompt and text answer) may be kept under consent or contract.
KEEPABLE = (Task.CHAT, Task.COMPLETION)


def _keeper(target: Target, work: Work) -> Callable[[Job], Awaitable[None]]:
    """The job's after-hook that keeps its exchange (gdpr/exchanges.py)."""
    caller = target.caller
    prompt = work.request.get("messages", work.request.get("prompt", ""))

    async def keep(job: Job) -> None:
        await db(
            exchanges.exchange_keep,
            tenant_id=caller.tenant_id,
            tenant=caller.tenant_name,
            request_id=job.job_id,
            end_user=work.end_user,
            basis=target.keep,
            model=work.model,
            prompt=prompt if isinstance(prompt, str) else json.dumps(prompt),
            response="".join(job.transcript or ()),
            days=caller.prompt_retention_days,
        )

    return keep


_CAPABILITY_ENDPOINTS: dict[str, str] = {
    Capability.TEXT_GEN: "/v1/chat/completions or /v1/completions",
    Capability.EMBEDDING: "/v1/embeddings",
    Capability.IMAGE_GEN: "/v1/images/generations or /v1/images/variations",
    Capability.AUDIO_TRANSCRIPTION: "/v1/audio/transcriptions or /v1/audio/translations",
    Capability.AUDIO_GEN: "/v1/audio/speech",
    Capability.VIDEO_GEN: "/v1/videos",
}


def _resolve(model_name: str | None, capability: str) -> CatalogModel:
    """The model, by name or alias; the default of the capability when none is named."""
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
    return model


def _placements(model: CatalogModel, *, operator: bool = False) -> list[Placement]:
    """The workers that serve the model or are loading it (503 with Retry-After when
    none; an operator's caller also hears why its hives' workers do not serve it)."""
    placements = hive_selectors.placements_for_model(model=model)
    if not placements:
        problems = hive_selectors.worker_problems(model=model) if operator else []
        why = f" ({'; '.join(problems)})" if problems else ""
        raise APIError(
            503,
            f"The model '{model.name}' is known but no live worker serves it right now"
            f"{why}. Try again shortly.",
            code="model_unavailable",
            headers={"Retry-After": "5"},
        )
    return placements


def unservable(exc: queueing.Unservable, *, operator: bool) -> APIError:
    """The 503 of a request that waited for a model whose loading workers were all
    refused or failed: the hives' reasons for operators' callers, neutral words for
    tenants (they name hives and what else uses their memory)."""
    if operator and exc.problems:
        message = f"The model '{exc.model}' could not be loaded: {'; '.join(exc.problems)}."
    else:
        message = (
            f"The model '{exc.model}' could not be loaded on any worker right now; try again later."
        )
    return APIError(503, message, code="model_unavailable", headers={"Retry-After": "5"})


def _loaded(target: Target, regions_: tuple[str, ...]) -> queueing.Loaded:
    """How the queue of a loading model looks at its workers (queueing.Loaded): the
    capacity of those up in the caller's region, 0 while all still load, Unservable when
    none is left (refused, failed, its hive gone)."""

    async def loaded() -> int:
        fresh = await db(hive_selectors.placements_for_model, model=target.model)
        found = hive_selectors.prefer_loaded(allowed(regions_, fresh))
        if not found:
            problems = await db(hive_selectors.worker_problems, model=target.model)
            raise queueing.Unservable(target.model.name, problems)
        if hive_selectors.loading_only(found):
            return 0
        return sum(p.slots for p in found) * settings.RBEE_WORKER_SLOTS

    return loaded


# --- 5-7 admit, queue, route -------------------------------------------------------------


@dataclass(frozen=True)
class Scheduled:
    placement: Placement
    source: str  # "script" or "default"
    eligible: list[Placement]
    admitted: gate.Admitted
    regions: tuple[str, ...] = ()  # the caller's region constraints (residency)
    queue_wait_ms: float = 0.0  # how long it waited for a slot (the charts)


async def _schedule(
    request: HttpRequest, target: Target, work: Work
) -> tuple[Scheduled, queueing.Slot]:
    """The tenant's limits (reserving the work's cost), the owner's should_admit, a free
    slot (waiting if need be), then route_task among the workers live at that moment.
    The reservation is settled by the job's Meter; if scheduling fails here, at once."""
    return await queue_and_route(target, work, await admit(request, target, work))


@dataclass(frozen=True)
class Admission:
    """A request past the tenant's limits (5), its cost reserved: what queue_and_route
    needs to go on, now or later (a video job goes on in the background)."""

    priority: str
    regions: tuple[str, ...]
    eligible: list[Placement]
    admitted: gate.Admitted


async def admit(request: HttpRequest, target: Target, work: Work) -> Admission:
    """The request's priority and region constraints, then the tenant's limits (5),
    reserving the work's cost; queue_and_route settles or releases it."""
    priority = str(
        work.extra.get("priority") or request.headers.get("X-Rbee-Priority") or "interactive"
    )
    if priority not in ("interactive", "batch"):
        raise APIError(
            400,
            f"Invalid value for 'priority': {priority!r} is not one of 'interactive', 'batch'.",
            param="priority",
            code="invalid_value",
        )
    # the plan decides the highest priority; the client may only ask for less
    priority = queueing.capped_priority(priority, target.caller.max_priority)
    regions_ = residency(target.caller, str(request.headers.get("X-Rbee-Region") or ""))
    eligible = _eligible(target, regions_, target.placements)
    admitted = await gate.admit(target.caller, work.cost)  # 5: limits
    request.rbee_ratelimit = admitted.headers  # type: ignore[attr-defined]
    return Admission(priority, regions_, eligible, admitted)


async def queue_and_route(
    target: Target, work: Work, admission: Admission
) -> tuple[Scheduled, queueing.Slot]:
    """The script's should_admit, a slot in the model's queue, route_task (5-7); the
    reservation is given back if any of them fails."""
    try:
        return await _admit_queue_route(
            target,
            work,
            admission.eligible,
            admission.priority,
            admission.regions,
            admission.admitted,
        )
    except BaseException:
        await gate.release(admission.admitted)
        raise


async def detached_job(
    target: Target, work: Work, task: str, admission: Admission, ids: tuple[str, str] = ("", "")
) -> Job:
    """5-9 for a job that outlives its HTTP request (a video): queued, routed, its usage
    row written, and dispatched; the caller consumes job.events(). `ids`: the request's
    (request_ids.ids), taken by the job and its usage row."""
    scheduled, slot = await queue_and_route(target, work, admission)
    job = _job(target, scheduled, slot, task, work, ids=ids)
    await _begin(job, scheduled)
    return job


def residency(caller: Caller, header: str) -> tuple[str, ...]:
    """Every region constraint a request must meet: the tenant's data region, its key's,
    and the X-Rbee-Region header's, which may narrow them but never widen them (a header
    outside them is refused with 400, not quietly ignored). Each is checked against the
    hive's operator-set region (kernel.regions.within_all); an empty tuple: anywhere."""
    try:
        asked = regions.normalise(header)
    except regions.RegionError as exc:
        raise APIError(
            400,
            f"Invalid X-Rbee-Region header: {exc}.",
            param="X-Rbee-Region",
            code="invalid_region",
        ) from exc
    constraints = tuple(r for r in (*caller.data_regions, asked) if r)
    if asked:
        try:
            regions.narrowest(constraints)
        except regions.RegionError as exc:
            raise APIError(
                400,
                f"X-Rbee-Region '{asked}' lies outside this key's data region "
                f"'{caller.data_region}'; it may only narrow it.",
                param="X-Rbee-Region",
                code="region_not_allowed",
            ) from exc
    return constraints


def allowed(regions_: tuple[str, ...], placements: list[Placement]) -> list[Placement]:
    """The placements on hives whose operator-set region meets every constraint."""
    if not regions_:
        return list(placements)
    return [p for p in placements if regions.within_all(p.region, regions_)]


def _eligible(
    target: Target, regions_: tuple[str, ...], placements: list[Placement]
) -> list[Placement]:
    """The workers in the caller's region, loaded ones first. None there fails closed:
    503 with Retry-After, never a worker elsewhere."""
    found = hive_selectors.prefer_loaded(allowed(regions_, placements))
    if not found:
        where = _describe(regions_)
        raise APIError(
            503,
            f"No live worker for '{target.model.name}' in region '{where}'. This request is "
            f"only served in region '{where}' (data residency) and was not sent elsewhere; "
            "try again shortly.",
            code="region_unavailable",
            headers={"Retry-After": "5"},
        )
    return found


def _describe(regions_: tuple[str, ...]) -> str:
    try:
        return regions.narrowest(regions_)
    except regions.RegionError:
        return " and ".join(regions_)


def confine(
    decision_placement: Placement,
    eligible: list[Placement],
    regions_: tuple[str, ...],
    load: Mapping[int, int],
) -> tuple[Placement, bool]:
    """The script's (or the default's) choice if it lies in the caller's region, else the
    default policy's within the region (and False: the choice was overruled). The script
    only ever sees eligible workers; this is the check that does not trust that."""
    if regions.within_all(decision_placement.region, regions_) and any(
        p.worker_id == decision_placement.worker_id for p in eligible
    ):
        return decision_placement, True
    logger.warning(
        "route_task chose worker %s outside the caller's region %s; default policy in region",
        decision_placement.worker_id,
        _describe(regions_),
    )
    return least_loaded(allowed(regions_, eligible), load), False


async def _admit_queue_route(
    target: Target,
    work: Work,
    eligible: list[Placement],
    priority: str,
    regions_: tuple[str, ...],
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
        region=_describe(regions_),
        size=work.size,
    )
    used = admitted.usage_today
    customer = {
        "tenant": caller.tenant_name,
        "tier": caller.tier,
        "queue_depth": queueing.queue_depth(model),
        "tenant_queue_depth": queueing.tenant_queue_depth(model, str(caller.tenant_id)),
        # Today's usage (with this request's reservation) and the plan's daily limits.
        "tokens_used_today": int(used.get("tokens", 0)),
        "daily_limit": caller.limits.get("tokens_per_day"),
        "requests_today": int(used.get("requests", 0)),
        "images_today": int(used.get("images", 0)),
        "audio_seconds_today": float(used.get("audio_seconds", 0.0)),
        "characters_today": int(used.get("characters", 0)),
        "limits": {k: v for k, v in caller.limits.items() if v is not None},
    }
    admission = await admit_async(target.policy, task, customer)  # 5: should_admit
    if not admission.admitted:
        decisions.note(
            kind="admission",
            model=model,
            tenant=caller.tenant_name,
            source="script",
            outcome=f"{'denied' if admission.status == 403 else 'rejected'} ({admission.status})",
            reason=f"should_admit: {admission.reason}",
            version=target.policy.version,
        )
        if admission.status == 403:
            raise SchedulerError(SchedulerCode.DENIED, admission.reason)
        raise SchedulerError(SchedulerCode.REJECTED, admission.reason, headers={"Retry-After": "1"})
    # A model whose workers in the caller's region are all still loading: the request waits
    # in its queue until one there is ready (or none is left there that could serve it),
    # without holding back requests whose workers are ready.
    loading = hive_selectors.loading_only(eligible)
    queued_at = time.monotonic()
    try:
        slot = await queueing.acquire(  # 6
            model,
            capacity=0 if loading else sum(p.slots for p in eligible) * settings.RBEE_WORKER_SLOTS,
            priority=priority,
            max_waiting=settings.RBEE_QUEUE_MAX,
            timeout=settings.RBEE_QUEUE_TIMEOUT,
            tenant=str(caller.tenant_id),
            weight=caller.queue_weight,
            max_per_tenant=settings.RBEE_QUEUE_MAX_PER_TENANT,
            loaded=_loaded(target, regions_) if loading else None,
            view=regions_,  # the workers it may use: loading ones hold back only this view
        )
    except queueing.Unservable as exc:
        raise unservable(exc, operator=caller.operator) from exc
    finally:  # granted, refused, timed out or cancelled: the wait counts
        metrics.queue_waited(model, time.monotonic() - queued_at)
    queue_wait_ms = (time.monotonic() - queued_at) * 1000
    try:
        if slot.waited:  # hives may have come and gone while we waited
            eligible = _eligible(target, regions_, await placements_now(target.model))
        chosen, source = await route_in_region(  # 7
            target.policy, task, eligible, regions_, local_load()
        )
    except BaseException:
        slot.release()
        raise
    return Scheduled(chosen, source, eligible, admitted, regions_, queue_wait_ms), slot


async def placements_now(model: CatalogModel) -> list[Placement]:
    """The model's placements as they are now: the ones this process keeps when nothing in
    the fleet changed since they were read, on any replica, and they are fresh
    (hives.selectors.model_cached: the same rule as a request's own lookup), else read
    from the database. A request that waited in its model's queue looks again before it
    is routed; under load most requests wait, and each read the database for it."""
    fleet = await generations.current(hive_selectors.FLEET)
    kept = hive_selectors.model_cached(name=model.name, generation=fleet)
    if kept is not None and kept.model.pk == model.pk:
        return list(kept.placements)
    return await db(hive_selectors.placements_for_model, model=model)


async def route_in_region(
    policy: Policy,
    task: dict[str, Any],
    eligible: list[Placement],
    regions_: tuple[str, ...],
    load: Mapping[int, int],
) -> tuple[Placement, str]:
    """7: the script's route_task (or the default) over the eligible workers, and its
    answer checked against the caller's region (`confine`): (placement, "script" or
    "default"). The decision is remembered for the dashboard (inference/decisions.py)."""
    decision = await route_async(policy, task, eligible, load)
    chosen, kept = confine(decision.placement, eligible, regions_, load)
    decisions.note(
        kind="route",
        model=str(task.get("model", "")),
        tenant=str(task.get("tenant", "")),
        source=decision.source if kept else "default",
        outcome=f"{chosen.hive_name}/{chosen.device}",
        reason=decision.reason
        if kept
        else "the choice lay outside the request's region: least loaded within it",
        version=policy.version,
    )
    return chosen, decision.source if kept else "default"


# --- 8, 9 the job and its meter ----------------------------------------------------------


def _job(
    target: Target,
    scheduled: Scheduled,
    slot: queueing.Slot,
    task: str,
    work: Work,
    arrived: float = 0.0,
    ids: tuple[str, str] = ("", ""),
) -> Job:
    job_id = ids[0] or new_job_id()  # the request's id (request_ids.ids), else a new one
    meter = gate.Meter(
        scheduled.admitted,
        request_id=job_id,
        model=work.model,
        modality=TASK_MODALITY[task],
        fallback=work.fallback,
        end_user=work.end_user,
        client_request_id=ids[1],
    )
    return Job(
        on_finish=slot.release,
        job_id=job_id,
        model=target.model.name,
        task=task,
        request=work.request,
        placements=scheduled.eligible,
        refresh=lambda: db(hive_selectors.placements_for_model, model=target.model),
        still_held=lambda p: db(
            hive_selectors.hive_socket_held, hive_id=p.hive_id, channel_name=p.channel_name
        ),
        preferred=scheduled.placement,
        regions=scheduled.regions,
        meter=meter,
        neutral_errors=not target.caller.operator,
        transcript=[] if target.keep else None,
        after=_keeper(target, work) if target.keep else None,
        arrived=arrived,
        queue_wait_ms=scheduled.queue_wait_ms,
    )


async def _begin(job: Job, scheduled: Scheduled) -> None:
    """9: the provisional usage row, before anything is dispatched (a queen killed
    mid-job leaves it to be settled); if it cannot be written, the request is refused
    (503) and gives back its slot and reservation."""
    try:
        await job.meter.begin()
    except BaseException:
        job.finish()
        await gate.release(scheduled.admitted)
        raise


def _record(resp: HttpResponseBase, job: Job, scheduled: Scheduled, *, operator: bool) -> None:
    """The tenant's rate-limit headers; for operators' callers (an `operator` key, the
    open local queen) also which worker served the request and whether the script or the
    default chose it (tenants never see hive names)."""
    for k, v in scheduled.admitted.headers.items():
        resp[k] = v
    served = job.placement or scheduled.placement
    source = scheduled.source if served.worker_id == scheduled.placement.worker_id else "retry"
    if operator:
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


# --- 10 respond: the job's events as OpenAI's answers ------------------------------------


def count(value: Any) -> int:
    """A count from a hive's event; anything that is not a count is 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def usage_of(event: dict[str, Any]) -> dict[str, Any]:
    usage = event.get("usage")
    return usage if isinstance(usage, dict) else {}


def token_usage(event: dict[str, Any]) -> dict[str, int]:
    """OpenAI's usage object of a text job's final event."""
    u = usage_of(event)
    p, c = count(u.get("prompt_tokens")), count(u.get("completion_tokens"))
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


async def result(job: Job) -> dict[str, Any]:
    """The `done` event of a one-shot job (embedding, image, transcription)."""
    async for event in job.events():
        kind = event.get("kind")
        if kind == EventKind.DONE:
            return event
        if kind == EventKind.ERROR:
            raise from_event(event)
    raise APIError(502, "The worker ended the job without a result.", code="worker_error")


@dataclass
class TextAnswer:
    """A text job's whole answer: its text, tool calls (OpenAI's `message.tool_calls`
    items), log probabilities (chat-shaped entries, see inference/textparts.py), finish
    reason and final event."""

    text: str
    finish_reason: str
    done: dict[str, Any]
    tool_calls: list[dict[str, Any]]
    logprobs: list[dict[str, Any]]


async def collect_text(job: Job) -> TextAnswer:
    """A text job's whole answer (or its error, raised)."""
    text: list[str] = []
    calls = ToolCalls.for_request(job.request)
    logprobs: list[dict[str, Any]] = []
    finish_reason = "stop"
    done: dict[str, Any] = {}
    async for event in job.events():
        kind = event.get("kind")
        if kind == EventKind.DELTA:
            text.append(str(event.get("text") or ""))
            calls.feed(event.get("tool_calls"))
            logprobs.extend(clean_logprobs(event.get("logprobs")))
        elif kind == EventKind.DONE:
            finish_reason = calls.finish_reason(str(event.get("finish_reason") or "stop"))
            done = event
        elif kind == EventKind.ERROR:
            raise from_event(event)
    return TextAnswer("".join(text), finish_reason, done, calls.calls(), logprobs)


async def opened(job: Job) -> AsyncGenerator[dict[str, Any], None]:
    """The job's events, once the first one is in: dispatching before answering makes
    "no worker" (or a bad voice) a proper status rather than a broken stream."""
    events = job.events()
    first = await events.__anext__()
    if first.get("kind") == EventKind.ERROR:
        await events.aclose()
        raise from_event(first)

    async def chained() -> AsyncGenerator[dict[str, Any], None]:
        try:
            yield first
            async for event in events:
                yield event
        finally:
            await events.aclose()

    return chained()


def streaming(chunks: AsyncIterator[bytes], content_type: str) -> StreamingHttpResponse:
    resp = StreamingHttpResponse(chunks, content_type=content_type)
    resp["Cache-Control"] = "no-cache"
    resp["X-Accel-Buffering"] = "no"
    return resp


class TextFormat(ABC):
    """How a text endpoint frames its answer (inference/chat.py, completions.py): its
    stream chunks and its whole JSON body. The relay and the collector are the same."""

    chunk_object = ""
    logprobs = False  # the client asked for log probabilities

    def __init__(self, stream_id: str, model: str) -> None:
        self.id = stream_id
        self.model = model
        self.created = int(time.time())

    def chunk(self, choices: list[Any], **extra: Any) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": self.chunk_object,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": choices,
            **extra,
        }

    def opening(self) -> list[dict[str, Any]]:
        """Chunks sent before the first text."""
        return []

    @abstractmethod
    def delta(self, text: str, logprobs: list[dict[str, Any]]) -> dict[str, Any]:
        """Each endpoint frames this its own way (chat: a delta; completions: text).
        `logprobs` are the text's tokens (empty unless asked for)."""

    def tool_call_delta(self, pieces: list[dict[str, Any]]) -> dict[str, Any] | None:
        """The chunk for tool-call pieces (inference/textparts.py: ToolCalls.feed); None
        where the endpoint has no tool calls."""
        return None

    @abstractmethod
    def finish(self, reason: str) -> dict[str, Any]:
        """Each endpoint frames this its own way."""

    @abstractmethod
    def whole(self, answer: TextAnswer, usage: dict[str, int]) -> dict[str, Any]:
        """Each endpoint frames this its own way."""


async def text_response(
    job: Job, fmt: TextFormat, *, stream: bool, include_usage: bool
) -> HttpResponseBase:
    """A text job's answer: SSE chunks as they come, or one JSON body at the end."""
    if stream:
        events = await opened(job)
        calls = ToolCalls.for_request(job.request)
        more = lambda: job.buffered > 0  # noqa: E731
        return streaming(relay(events, fmt, include_usage, calls, more), "text/event-stream")
    answer = await collect_text(job)
    return JsonResponse(fmt.whole(answer, token_usage(answer.done)))


def _sse(body: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"


def _sse_error(err: APIError) -> bytes:
    return b"data: " + json.dumps(err.body()).encode() + b"\n\n"


async def relay(
    events: AsyncGenerator[dict[str, Any], None],
    fmt: TextFormat,
    include_usage: bool,
    calls: ToolCalls,
    more: Callable[[], bool] | None = None,
) -> AsyncIterator[bytes]:
    """A text job's events as OpenAI's SSE chunks, as they arrive, then `[DONE]`; `calls`
    checks the tool-call pieces against what the request allowed. A failure after the
    headers were sent can only be told in the stream itself. The chunks of events that
    arrived together (`more()`: another is already here) go out in one write."""
    pending: list[bytes] = []
    try:
        for body in fmt.opening():
            pending.append(_sse(body))
        async for event in events:
            kind = event.get("kind")
            if kind == EventKind.DELTA:
                logprobs = clean_logprobs(event.get("logprobs")) if fmt.logprobs else []
                if event.get("text") or logprobs:
                    pending.append(_sse(fmt.delta(str(event.get("text") or ""), logprobs)))
                pieces = calls.feed(event.get("tool_calls"))
                framed = fmt.tool_call_delta(pieces) if pieces else None
                if framed is not None:
                    pending.append(_sse(framed))
            elif kind == EventKind.DONE:
                pending.append(
                    _sse(fmt.finish(calls.finish_reason(str(event.get("finish_reason") or "stop"))))
                )
                if include_usage:
                    pending.append(_sse(fmt.chunk([], usage=token_usage(event))))
                break
            elif kind == EventKind.ERROR:
                pending.append(_sse_error(from_event(event)))
                break
            if pending and not (more is not None and more()):
                out, pending = b"".join(pending), []
                yield out
        pending.append(b"data: [DONE]\n\n")
        out, pending = b"".join(pending), []
        yield out
    except Exception:
        logger.exception("stream %s failed", fmt.id)
        error = _sse_error(
            APIError(
                500, "The server had an error while streaming the response.", code="internal_error"
            )
        )
        out, pending = b"".join([*pending, error, b"data: [DONE]\n\n"]), []
        yield out
    finally:
        await events.aclose()
