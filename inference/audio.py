"""POST /v1/audio/transcriptions and /v1/audio/translations (multipart, with the audio
file) and POST /v1/audio/speech. What differs from the other endpoints: the uploads'
checks, the transcript's formats (json, text, srt, vtt, verbose_json) and speech streamed
as the bytes of the asked container; inference/pipeline.py does the rest. Decoding and
encoding audio happen in the worker process, never here."""

from __future__ import annotations

import base64
import math
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.http.response import HttpResponseBase

from billing.limits import Cost
from billing.services import Usage
from hives.models import CatalogModel
from hives.protocol import FINAL_KINDS, EventKind, Task
from inference import schemas
from inference.audio_duration import duration_seconds
from inference.errors import APIError, bad_request
from inference.pipeline import (
    Call,
    Resource,
    Work,
    opened,
    read_form,
    read_json,
    result,
    streaming,
)
from inference.schemas import SpeechRequest, TranscriptionForm

# --- transcriptions and translations -----------------------------------------------------

Upload = tuple[TranscriptionForm, str, bytes]  # the form, the file's name, its bytes


def _parse_upload(task: str) -> Callable[[HttpRequest], Upload]:
    def parse(request: HttpRequest) -> Upload:
        fields, files = read_form(request)
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


# For a container whose header does not state its length (m4a, webm): what speech
# codecs use at the low end (32 kbit/s), so the estimate errs long; the worker's real
# duration settles the reservation.
ESTIMATE_BYTES_PER_SECOND = 4000


def audio_seconds(data: bytes) -> float:
    """The seconds a transcription reserves against the daily quota: the duration the
    container's header states (400 past RBEE_MAX_AUDIO_SECONDS), else an estimate from
    the size; never more than the cap, which the worker enforces while decoding."""
    return _reserved(data)[0]


# What a header may under-state before the worker refuses the file: headers round (an
# MP3's first-frame bit rate, a stream's granule), the decoder pads.
HEADER_SLACK = 1.1
HEADER_SLACK_SECONDS = 5.0


def _reserved(data: bytes) -> tuple[float, bool]:
    """audio_seconds, and whether it is the header's word (else the size estimate)."""
    cap = float(settings.RBEE_MAX_AUDIO_SECONDS)
    stated = duration_seconds(data)
    if stated is not None and cap and stated > cap:
        raise bad_request(
            f"The audio file is {stated:.0f} seconds long; this server transcribes at most "
            f"{cap:.0f} seconds per request.",
            param="file",
            code="audio_too_long",
        )
    seconds = stated if stated is not None else len(data) / ESTIMATE_BYTES_PER_SECOND
    return (min(seconds, cap) if cap else seconds), stated is not None


def job_max_seconds(reserved: float, from_header: bool) -> float:
    """The most audio the worker may decode: the server's cap, and for a duration taken
    from the header (the client's word) what was reserved plus some slack, so a header
    that under-states the length cannot get hours transcribed against a second of quota.
    (The size estimate errs long by design: the cap stands.) 0: no cap."""
    cap = float(settings.RBEE_MAX_AUDIO_SECONDS)
    if not from_header:
        return cap
    held = reserved * HEADER_SLACK + HEADER_SLACK_SECONDS
    return min(cap, held) if cap else held


def upload_work(body: Upload, model: CatalogModel) -> Work:
    req, name, data = body
    seconds, from_header = _reserved(data)
    size = math.ceil(seconds)
    return Work(
        request={
            "max_seconds": job_max_seconds(seconds, from_header),
            "audio_b64": base64.b64encode(data).decode("ascii"),
            "filename": name,
            "language": req.language.lower() if req.language else None,
            "prompt": req.prompt,
            "temperature": req.temperature,
            "word_timestamps": "word" in (req.timestamp_granularities or []),
        },
        size=size,
        # Reserved at admission, so the daily audio quota refuses before the work is done.
        cost=Cost(requests=1, audio_seconds=seconds),
        model=req.model,
        extra=req.model_extra or {},
    )


def _respond_transcript(task: str) -> Callable[[Call[Upload]], Awaitable[HttpResponseBase]]:
    async def respond(call: Call[Upload]) -> HttpResponseBase:
        req = call.body[0]
        try:
            done = await result(call.job)
        except APIError as exc:
            raise _under_stated(exc, call.work) from exc
        found = done.get("result") or {}
        text = str(found.get("text") or "")
        segments = [s for s in found.get("segments") or [] if isinstance(s, dict)]
        seconds = float(found.get("duration") or 0.0)
        fmt = req.response_format or "json"
        if fmt == "text":
            return HttpResponse(text + "\n", content_type="text/plain; charset=utf-8")
        if fmt == "srt":
            return HttpResponse(to_srt(segments), content_type="text/plain; charset=utf-8")
        if fmt == "vtt":
            return HttpResponse(to_vtt(segments), content_type="text/vtt; charset=utf-8")
        usage = {"type": "duration", "seconds": max(1, round(seconds))}
        if fmt != "verbose_json":
            return JsonResponse({"text": text, "usage": usage})
        body: dict[str, Any] = {
            "task": "transcribe" if task == Task.TRANSCRIPTION else "translate",
            "language": language_name(str(found.get("language") or "")),
            "duration": seconds,
            "text": text,
            "segments": segments,
            "usage": usage,
        }
        if "word" in (req.timestamp_granularities or []):
            body["words"] = found.get("words") or []
        return JsonResponse(body)

    return respond


def _under_stated(exc: APIError, work: Work) -> APIError:
    """The worker's audio_too_long for a job held to its header's duration (not to the
    server's cap) says so: the file is longer than its header states."""
    cap = float(settings.RBEE_MAX_AUDIO_SECONDS)
    held = float(work.request.get("max_seconds") or 0)
    if exc.code != "audio_too_long" or not held or (cap and held >= cap):
        return exc
    stated = work.cost.audio_seconds
    unit = "second" if round(stated) == 1 else "seconds"
    return bad_request(
        f"The audio file is longer than its header states ({stated:.0f} {unit}): the "
        "header under-stated the duration, and no more than that (plus a margin) is "
        "transcribed against the audio quota. Send the file with a correct header.",
        param="file",
        code="audio_too_long",
    )


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


# --- speech ------------------------------------------------------------------------------

SPEECH_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/opus",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}


def parse_speech(request: HttpRequest) -> SpeechRequest:
    return schemas.validate_speech(read_json(request))


def speech_work(req: SpeechRequest, model: CatalogModel) -> Work:
    return Work(
        request={
            "input": req.input,
            "voice": req.voice,
            "response_format": req.response_format or "mp3",
            "speed": req.speed or 1.0,
        },
        size=len(req.input),
        cost=Cost(characters=len(req.input)),
        model=req.model,
        extra=req.model_extra or {},
        fallback=Usage(characters=len(req.input)),
    )


async def respond_speech(call: Call[SpeechRequest]) -> HttpResponseBase:
    """The audio as the worker encodes it, streamed; the first bytes (or an error: a bad
    voice is a 400, not a broken stream) before the headers."""
    events = await opened(call.job)
    fmt = str(call.work.request["response_format"])
    return streaming(_audio(events), SPEECH_TYPES[fmt])


async def _audio(events: AsyncGenerator[dict[str, Any], None]) -> AsyncIterator[bytes]:
    try:
        async for event in events:
            kind = event.get("kind")
            if kind == EventKind.AUDIO and event.get("b64"):
                yield base64.b64decode(str(event["b64"]))
            elif kind in FINAL_KINDS:
                # An error after the first bytes can only end the stream early.
                break
    finally:
        await events.aclose()


TRANSCRIPTIONS = Resource(
    task=Task.TRANSCRIPTION,
    capability=CatalogModel.Capability.AUDIO_TRANSCRIPTION,
    parse=_parse_upload(Task.TRANSCRIPTION),
    model=lambda body: body[0].model,
    work=upload_work,
    respond=_respond_transcript(Task.TRANSCRIPTION),
)

TRANSLATIONS = Resource(
    task=Task.TRANSLATION,
    capability=CatalogModel.Capability.AUDIO_TRANSCRIPTION,
    parse=_parse_upload(Task.TRANSLATION),
    model=lambda body: body[0].model,
    work=upload_work,
    respond=_respond_transcript(Task.TRANSLATION),
)

SPEECH = Resource(
    task=Task.SPEECH,
    capability=CatalogModel.Capability.AUDIO_GEN,
    parse=parse_speech,
    model=lambda req: req.model,
    work=speech_work,
    respond=respond_speech,
)
