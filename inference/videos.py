"""OpenAI's asynchronous video API: POST /v1/videos (a job), GET /v1/videos (the
tenant's jobs, paginated), GET and DELETE /v1/videos/{id}, GET /v1/videos/{id}/content
(the MP4, or its `thumbnail` or `spritesheet` variant).

A video takes longer than a client should hold a request open, so the POST goes through
the request path up to the tenant's limits (1-5 of inference/pipeline.py: key, body,
model, access, limits; each refusal is the POST's own answer) and returns the queued
job at once; a background task of this queen then does the rest (should_admit, the
queue, routing, dispatch, metering: the same steps as any request), following the
job's progress, and stores the worker's files in the database (any replica serves
them) until RBEE_VIDEO_TTL after the job ended. The client may go away at any time:
nothing of the job depends on its connection. A queen that dies takes its running
jobs with it; the retention sweep marks them failed (RBEE_VIDEO_STALE_SECONDS).

Every read and delete is scoped to the caller's tenant: another tenant's video id is
answered exactly like one that does not exist (404).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.http.response import HttpResponseBase

from billing import gate
from billing.limits import Cost
from hives.models import CatalogModel
from hives.protocol import EventKind, Task
from inference import request_ids, schemas, selectors, services
from inference.errors import APIError, bad_request, from_domain, from_event
from inference.models import Video
from inference.pipeline import (
    MULTIPART,
    Admission,
    Call,
    Resource,
    Target,
    Work,
    admit,
    authenticate,
    bearer,
    count,
    detached_job,
    endpoint,
    media_type,
    prepare,
    read_form,
    read_json,
)
from inference.schemas import VideoRequest
from kernel.aio import db
from kernel.errors import DomainError
from kernel.process import instance_id
from tenants.errors import KeyRejected
from tenants.selectors import Caller

logger = logging.getLogger("inference.videos")

DEFAULT_SECONDS = "4"  # OpenAI's default clip length
LIST_LIMIT = 20
LIST_MOST = 100
POLL_AFTER_MS = 500

# The background tasks of this queen's video jobs (a task nobody references can be
# collected mid-flight).
_running: set[asyncio.Task[None]] = set()


# --- the job object ----------------------------------------------------------------------


def _epoch(when: Any) -> int | None:
    return int(when.timestamp()) if when is not None else None


def video_object(video: Video) -> dict[str, Any]:
    """OpenAI's video job object (VideoResource)."""
    error = None
    if video.status == Video.Status.FAILED:
        error = {"code": video.error_code or "server_error", "message": video.error_message}
    return {
        "id": video.id,
        "object": "video",
        "model": video.model,
        "status": video.status,
        "progress": video.progress,
        "created_at": _epoch(video.created_at),
        "completed_at": _epoch(video.completed_at),
        "expires_at": _epoch(video.expires_at),
        "prompt": video.prompt,
        "size": video.size,
        "seconds": video.seconds,
        "remixed_from_video_id": None,
        "error": error,
    }


# --- POST /v1/videos ---------------------------------------------------------------------


def parse_create(request: HttpRequest) -> VideoRequest:
    """A JSON body, or a multipart form as the official SDKs send it (a reference image
    upload is refused: this API makes videos from text)."""
    if media_type(request.META.get("CONTENT_TYPE", "")) == MULTIPART:
        fields, files = read_form(request)
        if "input_reference" in files:
            fields["input_reference"] = files["input_reference"][0] or "upload"
        return schemas.validate_video(fields)
    return schemas.validate_video(read_json(request))


def create_work(req: VideoRequest, model: CatalogModel) -> Work:
    seconds = req.seconds or DEFAULT_SECONDS
    return Work(
        request={
            "prompt": req.prompt,
            "seconds": seconds,
            "size": req.size,
            "seed": req.seed,
            "steps": req.steps,
            "negative_prompt": req.negative_prompt,
        },
        size=int(seconds),
        cost=Cost(),
        model=req.model or model.name,
        extra=req.model_extra or {},
    )


async def _not_a_request(call: Call[VideoRequest]) -> HttpResponseBase:
    raise AssertionError("a video is answered by POST /v1/videos as a job, not by run()")


VIDEOS = Resource(
    task=Task.VIDEO,
    capability=CatalogModel.Capability.VIDEO_GEN,
    parse=parse_create,
    model=lambda req: req.model,
    work=create_work,
    respond=_not_a_request,
)


@endpoint("GET", "POST")
async def videos(request: HttpRequest) -> HttpResponseBase:
    if request.method == "GET":
        return await _list(request)
    raw_key = bearer(request)
    if not raw_key and not settings.RBEE_ANONYMOUS_TENANT:
        raise KeyRejected("missing")
    body, target, work = await db(prepare, raw_key, request, VIDEOS)  # 1-4
    admission = await admit(request, target, work)  # 5: the tenant's limits
    try:
        video = await db(
            services.video_create,
            tenant_id=target.caller.tenant_id,
            model=work.model,
            prompt=body.prompt,
            seconds=str(work.request["seconds"]),
            size=body.size or "",
            end_user=work.end_user,
            queen=instance_id(),
        )
    except BaseException:
        await gate.release(admission.admitted)
        raise
    task = asyncio.get_running_loop().create_task(
        _produce(video.id, target, work, admission, request_ids.ids(request))
    )
    _running.add(task)
    task.add_done_callback(_running.discard)
    return JsonResponse(video_object(video))


async def _produce(
    video_id: str, target: Target, work: Work, admission: Admission, ids: tuple[str, str]
) -> None:
    """The job, in the background, kept alive for the stale sweep while it waits or runs."""
    beat = asyncio.get_running_loop().create_task(_keepalive(video_id))
    try:
        await _run_job(video_id, target, work, admission, ids)
    finally:
        beat.cancel()


async def _run_job(
    video_id: str, target: Target, work: Work, admission: Admission, ids: tuple[str, str]
) -> None:
    """5-9 of the request path, then the job's events."""
    ttl = settings.RBEE_VIDEO_TTL
    try:
        job = await detached_job(target, work, Task.VIDEO, admission, ids)
    except APIError as exc:
        await _failed(video_id, exc)
        return
    except DomainError as exc:
        await _failed(video_id, from_domain(exc))
        return
    except Exception:
        logger.exception("video %s: could not be dispatched", video_id)
        await _failed(video_id, None)
        return
    events = job.events()
    try:
        await db(services.video_started, video_id=video_id, request_id=job.job_id)
        last = -1
        async for event in events:
            kind = event.get("kind")
            if kind == EventKind.PROGRESS or kind == EventKind.LOADING:
                progress = min(99, count(event.get("progress")))
                if progress > last or kind == EventKind.LOADING:
                    if not await db(services.video_progress, video_id=video_id, progress=progress):
                        logger.info("video %s was deleted; its job is cancelled", video_id)
                        return
                    last = progress
            elif kind == EventKind.DONE:
                result = event.get("result")
                await db(
                    services.video_complete,
                    video_id=video_id,
                    result=result if isinstance(result, dict) else {},
                    ttl=ttl,
                )
                return
            elif kind == EventKind.ERROR:
                await _failed(video_id, from_event(event))
                return
        await _failed(video_id, APIError(502, "The worker ended the job without a video."))
    except Exception:
        logger.exception("video %s failed", video_id)
        await _failed(video_id, None)
    finally:
        await events.aclose()


async def _keepalive(video_id: str) -> None:
    """Touch the job while it waits in its queue or runs, so the stale sweep knows its
    queen is alive (progress reports touch it too)."""
    every = max(1.0, settings.RBEE_VIDEO_STALE_SECONDS / 4)
    while True:
        await asyncio.sleep(every)
        try:
            if not await db(services.video_touch, video_id=video_id):
                return
        except Exception as exc:  # the database is down: the next beat tries again
            logger.warning("video %s: could not touch it (%s)", video_id, exc)


async def _failed(video_id: str, exc: APIError | None) -> None:
    code = str(exc.code or "server_error") if exc is not None else "server_error"
    message = (
        exc.message
        if exc is not None
        else "The server had an error while generating the video; create it again."
    )
    try:
        await db(
            services.video_fail,
            video_id=video_id,
            code=code,
            message=message,
            ttl=settings.RBEE_VIDEO_TTL,
        )
    except Exception:  # the stale sweep fails it later
        logger.exception("video %s: could not record its failure", video_id)


# --- reads and delete --------------------------------------------------------------------


async def _caller(request: HttpRequest) -> Caller:
    raw_key = bearer(request)
    if not raw_key and not settings.RBEE_ANONYMOUS_TENANT:
        raise KeyRejected("missing")
    return await db(authenticate, raw_key, request.META.get("HTTP_HOST", ""))


def _not_found(video_id: str) -> APIError:
    return APIError(
        404,
        f"No video found with id '{video_id[:80]}'.",
        param="video_id",
        code="video_not_found",
    )


async def _list(request: HttpRequest) -> HttpResponseBase:
    caller = await _caller(request)
    raw_limit = request.GET.get("limit", str(LIST_LIMIT))
    try:
        limit = int(raw_limit)
    except ValueError:
        limit = 0
    if not 1 <= limit <= LIST_MOST:
        raise bad_request(
            f"Invalid value for 'limit': {raw_limit[:20]!r} is not an integer from 1 to "
            f"{LIST_MOST}.",
            param="limit",
            code="invalid_value",
        )
    order = request.GET.get("order", "desc")
    if order not in ("asc", "desc"):
        raise bad_request(
            f"Invalid value for 'order': {order[:20]!r} is not one of 'asc', 'desc'.",
            param="order",
            code="invalid_value",
        )
    after = request.GET.get("after") or None
    page, more = await db(
        selectors.video_list, tenant_id=caller.tenant_id, limit=limit, order=order, after=after
    )
    data = [video_object(v) for v in page]
    return JsonResponse(
        {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": more,
        }
    )


@endpoint("GET", "DELETE")
async def video(request: HttpRequest, video_id: str) -> HttpResponseBase:
    caller = await _caller(request)
    if request.method == "DELETE":
        if not await db(services.video_delete, tenant_id=caller.tenant_id, video_id=video_id):
            raise _not_found(video_id)
        return JsonResponse({"id": video_id, "object": "video.deleted", "deleted": True})
    found = await db(selectors.video_get, tenant_id=caller.tenant_id, video_id=video_id)
    if found is None:
        raise _not_found(video_id)
    resp = JsonResponse(video_object(found))
    if found.status in (Video.Status.QUEUED, Video.Status.IN_PROGRESS):
        resp["openai-poll-after-ms"] = str(POLL_AFTER_MS)  # the SDKs' poll() reads it
    return resp


@endpoint("GET")
async def content(request: HttpRequest, video_id: str) -> HttpResponseBase:
    caller = await _caller(request)
    variant = request.GET.get("variant", "video")
    if variant not in services.VIDEO_VARIANTS:
        raise bad_request(
            f"Invalid value for 'variant': {variant[:20]!r} is not one of "
            f"{', '.join(repr(v) for v in services.VIDEO_VARIANTS)}.",
            param="variant",
            code="invalid_value",
        )
    asset = await db(
        selectors.video_asset, tenant_id=caller.tenant_id, video_id=video_id, variant=variant
    )
    if asset is None:
        found = await db(selectors.video_get, tenant_id=caller.tenant_id, video_id=video_id)
        if found is None:
            raise _not_found(video_id)
        if found.status in (Video.Status.QUEUED, Video.Status.IN_PROGRESS):
            raise APIError(
                409,
                f"Video '{video_id}' is {found.status}; its content can be downloaded once "
                "it has completed.",
                param="video_id",
                code="video_not_ready",
            )
        raise APIError(
            404,
            f"Video '{video_id}' failed and has no content."
            if found.status == Video.Status.FAILED
            else f"Video '{video_id}' has no {variant}.",
            param="video_id",
            code="video_content_not_found",
        )
    resp = HttpResponse(bytes(asset.content), content_type=asset.content_type)
    ext = {"video": "mp4", "thumbnail": "webp", "spritesheet": "jpg"}[variant]
    resp["Content-Disposition"] = f'attachment; filename="{video_id}.{ext}"'
    resp["Cache-Control"] = "private, max-age=3600"
    return resp
