"""The OpenAI endpoints beyond chat: completions, embeddings, images, audio.

Each follows the chat view's path (inference/views.py): the key, the body and
the model's placements in one thread hop; then admission, a queue slot and
routing (`_schedule`); then one job on the chosen worker. Heavy work — decoding
audio, running models, encoding images and speech — happens in the worker
process on the hive, never here: the queen only frames what comes back.
"""

from __future__ import annotations

import base64
import json
import secrets
import struct
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import TooManyFieldsSent, TooManyFilesSent
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.http.multipartparser import MultiPartParserError
from django.http.response import HttpResponseBase
from django.utils import timezone

from billing.limits import Cost
from billing.services import Usage
from hives.models import CatalogModel
from hives.protocol import FINAL_KINDS, EventKind, Task
from inference import schemas
from inference.dispatch import Job
from inference.errors import APIError, bad_request
from inference.models import GeneratedImage
from inference.views import (
    _KEY_MESSAGES,
    SYSTEM_FINGERPRINT,
    Scheduled,
    Target,
    _bearer,
    _count,
    _error_from_event,
    _prepare,
    _record,
    _schedule,
    _usage,
    collect_text,
    make_job,
    openai_endpoint,
    read_body,
    read_json,
    stream_failure,
)
from kernel.aio import db

Cap = CatalogModel.Capability


def _require_key(request: HttpRequest) -> str:
    raw_key = _bearer(request)
    if not raw_key and not settings.RBEE_ANONYMOUS_TENANT:
        raise APIError(401, _KEY_MESSAGES["missing"], code="invalid_api_key")
    return raw_key


async def _job(
    request: HttpRequest,
    target: Target,
    task: str,
    job_request: dict[str, Any],
    *,
    size: int,
    extra: dict[str, Any] | None = None,
    cost: Cost | None = None,
    model: str = "",
    fallback: Usage | None = None,
) -> tuple[Job, Scheduled]:
    """Schedule (gate, script, queue, route) and build the job with its meter."""
    decision, slot = await _schedule(request, target, extra or {}, size, cost)
    job = make_job(
        target,
        decision,
        slot,
        task,
        job_request,
        model=model or target.model.name,
        fallback=fallback,
    )
    return job, decision


async def _result(job: Job) -> dict[str, Any]:
    """The `done` event of a one-shot job (embedding, image, transcription)."""
    async for event in job.events():
        kind = event.get("kind")
        if kind == EventKind.DONE:
            return event
        if kind == EventKind.ERROR:
            raise _error_from_event(event)
    raise APIError(502, "The worker ended the job without a result.", code="worker_error")


def _finish(resp: HttpResponseBase, job: Job, decision: Scheduled) -> HttpResponseBase:
    resp["X-Request-Id"] = job.job_id
    _record(resp, job, decision)
    return resp


def _form(request: HttpRequest) -> tuple[dict[str, Any], dict[str, tuple[str, bytes]]]:
    """A multipart form's fields and files (name -> (filename, bytes)). Runs in the
    database thread with the rest of the preparation, so parsing never blocks the loop."""
    read_body(request)  # 413 first
    ctype = request.META.get("CONTENT_TYPE", "")
    if not ctype.startswith("multipart/form-data"):
        raise bad_request(
            "This endpoint takes a multipart/form-data body (the file and the other "
            "fields as form fields).",
            code="invalid_content_type",
        )
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


# --- /v1/completions ---------------------------------------------------------------------


@openai_endpoint(("POST",))
async def completions(request: HttpRequest) -> HttpResponseBase:
    raw_key = _require_key(request)
    req, target = await db(
        _prepare,
        raw_key,
        request,
        lambda r: schemas.validate_completion(read_json(r)),
        lambda q: q.model,
        Cap.TEXT_GEN,
        Task.COMPLETION,
    )
    job_request = schemas.completion_job_request(req)
    prompt = job_request["prompt"]
    size = len(prompt) // 4 + int(job_request.get("max_tokens") or 16)
    job, decision = await _job(
        request,
        target,
        Task.COMPLETION,
        job_request,
        size=size,
        extra=req.model_extra,
        cost=Cost(tokens=size),
        model=req.model,
    )
    completion_id = f"cmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    head = prompt if req.echo else ""

    def chunk(text: str, finish: str | None, **extra: Any) -> bytes:
        choices = (
            [] if extra else [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}]
        )
        body = {
            "id": completion_id,
            "object": "text_completion",
            "created": created,
            "model": req.model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": choices,
            **extra,
        }
        return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"

    if req.stream:
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        events = job.events()
        first = await events.__anext__()
        if first.get("kind") == EventKind.ERROR:
            await events.aclose()
            raise _error_from_event(first)

        async def sse() -> AsyncIterator[bytes]:
            try:
                async for piece in relay():
                    yield piece
            except Exception:
                for piece in stream_failure(completion_id):
                    yield piece
            finally:
                await events.aclose()

        async def relay() -> AsyncIterator[bytes]:
            if head:
                yield chunk(head, None)
            async for event in _chain(first, events):
                kind = event.get("kind")
                if kind == EventKind.DELTA and event.get("text"):
                    yield chunk(str(event["text"]), None)
                elif kind == EventKind.DONE:
                    yield chunk("", str(event.get("finish_reason") or "stop"))
                    if include_usage:
                        yield chunk("", None, usage=_token_usage(event))
                    break
                elif kind == EventKind.ERROR:
                    err = _error_from_event(event)
                    yield b"data: " + json.dumps(err.body()).encode() + b"\n\n"
                    break
            yield b"data: [DONE]\n\n"

        stream = StreamingHttpResponse(sse(), content_type="text/event-stream")
        stream["Cache-Control"] = "no-cache"
        stream["X-Accel-Buffering"] = "no"
        return _finish(stream, job, decision)

    text, finish_reason, done = await collect_text(job)
    resp = JsonResponse(
        {
            "id": completion_id,
            "object": "text_completion",
            "created": created,
            "model": req.model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": [
                {
                    "text": head + text,
                    "index": 0,
                    "logprobs": None,
                    "finish_reason": finish_reason,
                }
            ],
            "usage": _token_usage(done),
        }
    )
    return _finish(resp, job, decision)


async def _chain(
    first: dict[str, Any], rest: AsyncGenerator[dict[str, Any], None]
) -> AsyncIterator[dict[str, Any]]:
    yield first
    async for e in rest:
        yield e


def _token_usage(event: dict[str, Any]) -> dict[str, int]:
    u = _usage(event)
    p, c = _count(u.get("prompt_tokens")), _count(u.get("completion_tokens"))
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


# --- /v1/embeddings ------------------------------------------------------------------------


@openai_endpoint(("POST",))
async def embeddings(request: HttpRequest) -> HttpResponseBase:
    raw_key = _require_key(request)
    req, target = await db(
        _prepare,
        raw_key,
        request,
        lambda r: schemas.validate_embedding(read_json(r)),
        lambda q: q.model,
        Cap.EMBEDDING,
        Task.EMBEDDING,
    )
    inputs = schemas.embedding_inputs(req)
    job, decision = await _job(
        request,
        target,
        Task.EMBEDDING,
        {"input": inputs, "dimensions": req.dimensions},
        size=sum(len(x) for x in inputs) // 4,
        extra=req.model_extra,
        cost=Cost(tokens=sum(len(x) for x in inputs) // 4 + 1),
        model=req.model,
    )
    done = await _result(job)
    result = done.get("result") or {}
    as_b64 = req.encoding_format == "base64"
    packed = result.get("embeddings_b64")
    vectors = result.get("embeddings")
    if isinstance(packed, list) and len(packed) == len(inputs):
        values: list[Any] = [str(b) if as_b64 else _floats_b64(str(b)) for b in packed]
    elif isinstance(vectors, list) and len(vectors) == len(inputs):
        values = [_b64_floats(v) if as_b64 else [float(x) for x in v] for v in vectors]
    else:
        raise APIError(502, "The worker returned no embeddings.", code="worker_error")
    data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(values)]
    tokens = _count(_usage(done).get("prompt_tokens"))
    resp = JsonResponse(
        {
            "object": "list",
            "data": data,
            "model": req.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )
    return _finish(resp, job, decision)


def _floats_b64(packed: str) -> list[float]:
    raw = base64.b64decode(packed)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


def _b64_floats(vector: list[float]) -> str:
    """OpenAI's base64 encoding: the little-endian float32 array, base64'd."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


# --- /v1/images ----------------------------------------------------------------------------


def _store_images(images: list[str], ttl: int) -> list[str]:
    """Keep PNGs for `ttl` seconds under unguessable tokens; drop the expired ones."""
    now = timezone.now()
    GeneratedImage.objects.filter(expires_at__lt=now).delete()
    tokens = []
    for b64 in images:
        token = secrets.token_urlsafe(32)
        GeneratedImage.objects.create(
            token=token,
            content=base64.b64decode(b64),
            expires_at=now + timedelta(seconds=ttl),
        )
        tokens.append(token)
    return tokens


async def _image_response(
    request: HttpRequest,
    job: Job,
    decision: Scheduled,
    response_format: str | None,
    n: int,
) -> HttpResponseBase:
    done = await _result(job)
    images = (done.get("result") or {}).get("images")
    if not isinstance(images, list) or len(images) != n:
        raise APIError(502, "The worker returned no images.", code="worker_error")
    if response_format == "b64_json":
        data = [{"b64_json": str(b64)} for b64 in images]
    else:
        tokens = await db(_store_images, [str(b) for b in images], settings.RBEE_IMAGE_URL_TTL)
        base = request.build_absolute_uri("/v1/images/content/")
        data = [{"url": f"{base}{t}.png"} for t in tokens]
    resp = JsonResponse({"created": int(time.time()), "data": data})
    return _finish(resp, job, decision)


@openai_endpoint(("POST",))
async def image_generations(request: HttpRequest) -> HttpResponseBase:
    raw_key = _require_key(request)
    req, target = await db(
        _prepare,
        raw_key,
        request,
        lambda r: schemas.validate_image_generation(read_json(r)),
        lambda q: q.model,
        Cap.IMAGE_GEN,
        Task.IMAGE,
    )
    n = req.n or 1
    job, decision = await _job(
        request,
        target,
        Task.IMAGE,
        {
            "prompt": req.prompt,
            "n": n,
            "size": None if req.size in (None, "auto") else req.size,
            "seed": req.seed,
            "steps": req.steps,
            "guidance_scale": req.guidance_scale,
            "negative_prompt": req.negative_prompt,
        },
        size=n,
        extra=req.model_extra,
        cost=Cost(images=n),
        model=req.model or target.model.name,
    )
    return await _image_response(request, job, decision, req.response_format, n)


def _variation_form(request: HttpRequest) -> tuple[schemas.ImageVariationForm, bytes]:
    fields, files = _form(request)
    req = schemas.validate_image_variation(fields)
    if "image" not in files:
        raise bad_request(
            "Missing required parameter: 'image' (a PNG file).",
            param="image",
            code="missing_required_parameter",
        )
    data = files["image"][1]
    if not data:
        raise bad_request("The image file is empty.", param="image", code="invalid_image")
    if len(data) > schemas.MAX_IMAGE_UPLOAD:
        raise bad_request(
            f"Invalid image: it is {len(data)} bytes; images must be smaller than 4 MB.",
            param="image",
            code="image_too_large",
        )
    if schemas.image_kind(data) is None:
        raise bad_request(
            "Invalid image: upload a PNG (JPEG and WebP are accepted too).",
            param="image",
            code="invalid_image_format",
        )
    return req, data


@openai_endpoint(("POST",))
async def image_variations(request: HttpRequest) -> HttpResponseBase:
    raw_key = _require_key(request)
    (req, data), target = await db(
        _prepare,
        raw_key,
        request,
        _variation_form,
        lambda q: q[0].model,
        Cap.IMAGE_GEN,
        Task.IMAGE_VARIATION,
    )
    n = req.n or 1
    job, decision = await _job(
        request,
        target,
        Task.IMAGE_VARIATION,
        {
            "image_b64": base64.b64encode(data).decode("ascii"),
            "n": n,
            "size": None if req.size in (None, "auto") else req.size,
            "seed": req.seed,
            "prompt": req.prompt,
            "strength": req.strength,
        },
        size=n,
        extra=req.model_extra,
        cost=Cost(images=n),
        model=req.model or target.model.name,
    )
    return await _image_response(request, job, decision, req.response_format, n)


@openai_endpoint(("GET",))
async def image_content(request: HttpRequest, token: str) -> HttpResponseBase:
    """An image answered as a URL. The unguessable token is the credential (as with
    OpenAI's signed URLs), so links work in a browser or an <img> tag."""

    def fetch() -> GeneratedImage | None:
        return GeneratedImage.objects.filter(token=token, expires_at__gte=timezone.now()).first()

    image = await db(fetch)
    if image is None:
        raise APIError(404, "This image does not exist or has expired.", code="not_found")
    resp = HttpResponse(bytes(image.content), content_type=image.content_type)
    left = max(0, int((image.expires_at - timezone.now()).total_seconds()))
    resp["Cache-Control"] = f"private, max-age={left}"
    return resp


# --- /v1/audio -----------------------------------------------------------------------------


def _audio_form(task: str) -> Callable[[HttpRequest], tuple[schemas.TranscriptionForm, str, bytes]]:
    def parse(request: HttpRequest) -> tuple[schemas.TranscriptionForm, str, bytes]:
        fields, files = _form(request)
        if task == Task.TRANSLATION and "language" in fields:
            raise bad_request(
                "'language' is not a parameter of translations: they are always into English.",
                param="language",
                code="unknown_parameter",
            )
        req = schemas.validate_transcription(fields)
        if "file" not in files:
            raise bad_request(
                "Missing required parameter: 'file'.",
                param="file",
                code="missing_required_parameter",
            )
        name, data = files["file"]
        schemas.check_audio_upload(name, data)
        if req.timestamp_granularities and req.response_format != "verbose_json":
            raise bad_request(
                "'timestamp_granularities' needs response_format 'verbose_json'.",
                param="timestamp_granularities",
                code="invalid_value",
            )
        return req, name, data

    return parse


async def _audio_text(request: HttpRequest, task: str) -> HttpResponseBase:
    raw_key = _require_key(request)
    (req, name, data), target = await db(
        _prepare,
        raw_key,
        request,
        _audio_form(task),
        lambda q: q[0].model,
        Cap.AUDIO_TRANSCRIPTION,
        task,
    )
    job, decision = await _job(
        request,
        target,
        task,
        {
            "audio_b64": base64.b64encode(data).decode("ascii"),
            "filename": name,
            "language": req.language.lower() if req.language else None,
            "prompt": req.prompt,
            "temperature": req.temperature,
            "word_timestamps": "word" in (req.timestamp_granularities or []),
        },
        size=len(data) // 16000,
        extra=req.model_extra,
        model=req.model,
    )
    done = await _result(job)
    result = done.get("result") or {}
    text = str(result.get("text") or "")
    segments = [s for s in result.get("segments") or [] if isinstance(s, dict)]
    seconds = float(result.get("duration") or 0.0)
    fmt = req.response_format or "json"
    resp: HttpResponseBase
    if fmt == "text":
        resp = HttpResponse(text + "\n", content_type="text/plain; charset=utf-8")
    elif fmt == "srt":
        resp = HttpResponse(to_srt(segments), content_type="text/plain; charset=utf-8")
    elif fmt == "vtt":
        resp = HttpResponse(to_vtt(segments), content_type="text/vtt; charset=utf-8")
    elif fmt == "verbose_json":
        body: dict[str, Any] = {
            "task": "transcribe" if task == Task.TRANSCRIPTION else "translate",
            "language": language_name(str(result.get("language") or "")),
            "duration": seconds,
            "text": text,
            "segments": segments,
            "usage": {"type": "duration", "seconds": max(1, round(seconds))},
        }
        if "word" in (req.timestamp_granularities or []):
            body["words"] = result.get("words") or []
        resp = JsonResponse(body)
    else:
        resp = JsonResponse(
            {"text": text, "usage": {"type": "duration", "seconds": max(1, round(seconds))}}
        )
    return _finish(resp, job, decision)


@openai_endpoint(("POST",))
async def transcriptions(request: HttpRequest) -> HttpResponseBase:
    return await _audio_text(request, Task.TRANSCRIPTION)


@openai_endpoint(("POST",))
async def translations(request: HttpRequest) -> HttpResponseBase:
    return await _audio_text(request, Task.TRANSLATION)


def _timestamp(seconds: float, sep: str) -> str:
    ms = max(0, round(seconds * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def to_srt(segments: list[dict[str, Any]]) -> str:
    blocks = []
    for i, seg in enumerate(segments, 1):
        start = _timestamp(float(seg.get("start") or 0), ",")
        end = _timestamp(float(seg.get("end") or 0), ",")
        blocks.append(f"{i}\n{start} --> {end}\n{str(seg.get('text') or '').strip()}\n")
    return "\n".join(blocks)


def to_vtt(segments: list[dict[str, Any]]) -> str:
    blocks = ["WEBVTT\n"]
    for seg in segments:
        start = _timestamp(float(seg.get("start") or 0), ".")
        end = _timestamp(float(seg.get("end") or 0), ".")
        blocks.append(f"{start} --> {end}\n{str(seg.get('text') or '').strip()}\n")
    return "\n".join(blocks)


# Whisper's language codes -> the names OpenAI's verbose_json uses.
_LANGUAGES = dict(
    pair.split(":")
    for pair in (
        "en:english zh:chinese de:german es:spanish ru:russian ko:korean fr:french "
        "ja:japanese pt:portuguese tr:turkish pl:polish ca:catalan nl:dutch ar:arabic "
        "sv:swedish it:italian id:indonesian hi:hindi fi:finnish vi:vietnamese he:hebrew "
        "uk:ukrainian el:greek ms:malay cs:czech ro:romanian da:danish hu:hungarian "
        "ta:tamil no:norwegian th:thai ur:urdu hr:croatian bg:bulgarian lt:lithuanian "
        "la:latin mi:maori ml:malayalam cy:welsh sk:slovak te:telugu fa:persian "
        "lv:latvian bn:bengali sr:serbian az:azerbaijani sl:slovenian kn:kannada "
        "et:estonian mk:macedonian br:breton eu:basque is:icelandic hy:armenian "
        "ne:nepali mn:mongolian bs:bosnian kk:kazakh sq:albanian sw:swahili "
        "gl:galician mr:marathi pa:punjabi si:sinhala km:khmer sn:shona yo:yoruba "
        "so:somali af:afrikaans oc:occitan ka:georgian be:belarusian tg:tajik "
        "sd:sindhi gu:gujarati am:amharic yi:yiddish lo:lao uz:uzbek fo:faroese "
        "ht:haitian ps:pashto tk:turkmen nn:nynorsk mt:maltese sa:sanskrit "
        "lb:luxembourgish my:myanmar bo:tibetan tl:tagalog mg:malagasy as:assamese "
        "tt:tatar haw:hawaiian ln:lingala ha:hausa ba:bashkir jw:javanese su:sundanese "
        "yue:cantonese"
    ).split()
)


def language_name(code: str) -> str:
    return _LANGUAGES.get(code.lower(), code)


_SPEECH_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/opus",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}


@openai_endpoint(("POST",))
async def speech(request: HttpRequest) -> HttpResponseBase:
    raw_key = _require_key(request)
    req, target = await db(
        _prepare,
        raw_key,
        request,
        lambda r: schemas.validate_speech(read_json(r)),
        lambda q: q.model,
        Cap.AUDIO_GEN,
        Task.SPEECH,
    )
    fmt = req.response_format or "mp3"
    job, decision = await _job(
        request,
        target,
        Task.SPEECH,
        {"input": req.input, "voice": req.voice, "response_format": fmt, "speed": req.speed or 1.0},
        size=len(req.input),
        extra=req.model_extra,
        cost=Cost(characters=len(req.input)),
        model=req.model,
        fallback=Usage(characters=len(req.input)),
    )
    events = job.events()
    # Wait for the first audio (or an error) before answering, so that a bad voice is
    # a 400 rather than a broken stream.
    first = await events.__anext__()
    if first.get("kind") == EventKind.ERROR:
        await events.aclose()
        raise _error_from_event(first)

    async def audio() -> AsyncIterator[bytes]:
        try:
            async for event in _chain(first, events):
                kind = event.get("kind")
                if kind == EventKind.AUDIO and event.get("b64"):
                    yield base64.b64decode(str(event["b64"]))
                elif kind in FINAL_KINDS:
                    # An error after the first bytes can only end the stream early.
                    break
        finally:
            await events.aclose()

    resp = StreamingHttpResponse(audio(), content_type=_SPEECH_TYPES[fmt])
    resp["Cache-Control"] = "no-cache"
    resp["X-Accel-Buffering"] = "no"
    return _finish(resp, job, decision)
