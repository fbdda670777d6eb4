"""An upload's duration from its container header (inference/audio_duration.py) and what
a transcription reserves against the daily audio quota (inference/audio.py). The files
are encoded here with PyAV (the hive's decoder library), so they are real containers."""

from __future__ import annotations

import io
import struct
import wave
from typing import Any

import numpy as np
import pytest

from inference import schemas
from inference.audio import ESTIMATE_BYTES_PER_SECOND, audio_seconds, upload_work
from inference.audio_duration import duration_seconds
from inference.errors import APIError


def encode(fmt: str, codec: str, seconds: float, rate: int) -> bytes:
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as out:
        stream: Any = out.add_stream(codec, rate=rate)
        stream.layout = "mono"
        n = int(seconds * rate)
        tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(n) / rate) * 32767).astype(np.int16)
        for i in range(0, n, 1024):
            frame = av.AudioFrame.from_ndarray(
                tone[i : i + 1024].reshape(1, -1), format="s16", layout="mono"
            )
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


def wav(seconds: float, rate: int = 16000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\0\0" * int(seconds * rate))
    return buf.getvalue()


@pytest.mark.parametrize(
    ("fmt", "codec", "rate"),
    [
        ("flac", "flac", 16000),
        ("ogg", "libopus", 48000),
        ("mp3", "libmp3lame", 16000),
        ("mp3", "libmp3lame", 44100),
    ],
)
def test_compressed_containers_state_their_duration(fmt: str, codec: str, rate: int) -> None:
    assert duration_seconds(encode(fmt, codec, 7.5, rate)) == pytest.approx(7.5, abs=0.15)


def test_wav_duration_and_a_header_that_claims_more_than_is_there() -> None:
    assert duration_seconds(wav(12.25)) == pytest.approx(12.25)
    assert duration_seconds(wav(3, rate=44100)) == pytest.approx(3.0)
    data = bytearray(wav(2.0))
    at = data.index(b"data")
    struct.pack_into("<I", data, at + 4, 0x7FFFFFF0)  # says ~9 hours, holds 2 s
    assert duration_seconds(bytes(data)) == pytest.approx(2.0)


def test_unknown_or_broken_containers_say_nothing() -> None:
    assert duration_seconds(encode("ipod", "aac", 2.0, 16000)) is None  # m4a: estimated
    assert duration_seconds(b"this is not audio at all") is None
    assert duration_seconds(b"RIFF\0\0\0\0WAVE") is None
    assert duration_seconds(b"fLaC\0\0") is None
    assert duration_seconds(b"OggS") is None
    assert duration_seconds(b"") is None


def _work(data: bytes, name: str = "a.wav") -> Any:
    form = schemas.validate_transcription({"model": "whisper-base"})
    return upload_work((form, name, data), None)  # type: ignore[arg-type]


def test_a_transcription_reserves_the_audio_seconds_it_states(settings: Any) -> None:
    settings.RBEE_MAX_AUDIO_SECONDS = 3600
    work = _work(wav(42.0))
    assert work.cost.audio_seconds == pytest.approx(42.0)
    assert work.size == 42
    # The worker is held to what was reserved (plus slack), under the server's cap.
    assert work.request["max_seconds"] == pytest.approx(42 * 1.1 + 5)
    m4a = encode("ipod", "aac", 2.0, 16000)
    assert _work(m4a, "a.m4a").cost.audio_seconds == pytest.approx(
        len(m4a) / ESTIMATE_BYTES_PER_SECOND
    )


def test_audio_longer_than_the_cap_is_refused_from_its_header(settings: Any) -> None:
    settings.RBEE_MAX_AUDIO_SECONDS = 30
    with pytest.raises(APIError) as exc:
        audio_seconds(wav(31.0))
    assert exc.value.status == 400 and exc.value.code == "audio_too_long"
    assert exc.value.param == "file"
    # An estimate is never more than the cap: the worker stops at it.
    assert audio_seconds(b"\1" * (ESTIMATE_BYTES_PER_SECOND * 100)) == 30


# --- hostile headers: the scans are bounded ------------------------------------------------


def _hostile_wav() -> bytes:
    """A valid fmt chunk, then 4 MB of empty chunks before the data: walking them all took
    ~0.4 s of the queen's event loop per request."""
    head = wav(0.5)
    fmt_end = head.index(b"data")
    return head[:fmt_end] + b"junk\0\0\0\0" * (4_000_000 // 8) + head[fmt_end:]


def _hostile_ogg() -> bytes:
    """A real Opus stream's first page, then 8 MB of page headers of another stream: the
    backward search for the last page of the first stream went through every one."""
    real = encode("ogg", "libopus", 1.0, 48000)
    first_page_end = real.index(b"OggS", 4)
    fake = b"OggS\0\0" + b"\0" * 8 + b"\xde\xad\xbe\xef"  # another serial
    return real[:first_page_end] + fake * (8_000_000 // len(fake))


def _hostile_mp3() -> bytes:
    """An ID3 tag, then 8 KiB of almost-frame-syncs (each must be looked at), then junk."""
    return b"ID3\3\0\0\0\0\0\0" + b"\xff\xff" * 4096 + b"\0" * 4_000_000


@pytest.mark.parametrize("make", [_hostile_wav, _hostile_ogg, _hostile_mp3])
def test_hostile_headers_are_parsed_quickly(make: Any, settings: Any) -> None:
    import time

    settings.RBEE_MAX_AUDIO_SECONDS = 3600
    data = make()
    started = time.perf_counter()
    seconds = audio_seconds(data)
    took = time.perf_counter() - started
    assert took < 0.05, took
    # Past the bound the header says nothing: the size estimate stands in.
    assert seconds == pytest.approx(len(data) / ESTIMATE_BYTES_PER_SECOND)


def test_ordinary_files_are_within_the_bounds() -> None:
    # A WAV with a few chunks before its data (LIST, fact, ...) still states its length.
    head = wav(2.0)
    at = head.index(b"data")
    some = b"".join(b"LIST" + struct.pack("<I", 10) + b"x" * 10 for _ in range(20))
    assert duration_seconds(head[:at] + some + head[at:]) == pytest.approx(2.0)
    # A long Ogg's last page is found in its last 64 KiB.
    assert duration_seconds(encode("ogg", "libopus", 60.0, 48000)) == pytest.approx(60, abs=0.1)


# --- the upload's work is done off the event loop ------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_a_transcriptions_work_runs_off_the_event_loop() -> None:
    """Its header parsing and the base64 of up to 25 MB ran on the queen's event loop,
    where every other request waits for them: they run in the preparation's thread."""
    import asyncio
    import dataclasses

    from asgiref.sync import sync_to_async
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.test import RequestFactory
    from django.utils import timezone

    from hives.models import CatalogModel, Hive, Worker
    from inference import pipeline
    from inference.audio import TRANSCRIPTIONS
    from tenants.services import api_key_create, tenant_create

    def setup() -> str:
        hive = Hive.objects.create(
            name="h-audio",
            token_prefix="tpa",
            token_hash="x",
            status=Hive.Status.ONLINE,
            channel_name="specific.hive!a",
            last_seen_at=timezone.now(),
            devices=[{"kind": "cpu", "index": 0}],
        )
        model = CatalogModel.objects.create(
            name="whisper-probe", capability="audio-transcription", engine="faster-whisper"
        )
        Worker.objects.create(hive=hive, model=model, device="cpu", state="ready")
        return api_key_create(tenant=tenant_create(name="listener"))[1]

    key = await sync_to_async(setup)()
    seen: list[bool] = []

    def probe(body: Any, model: Any) -> Any:
        try:
            asyncio.get_running_loop()
            seen.append(True)
        except RuntimeError:
            seen.append(False)
        upload_work(body, model)  # the real work, then stop before scheduling
        raise APIError(418, "probe")

    request = RequestFactory().post(
        "/v1/audio/transcriptions",
        {"model": "whisper-probe", "file": SimpleUploadedFile("a.wav", wav(1.0))},
        HTTP_AUTHORIZATION=f"Bearer {key}",
    )
    with pytest.raises(APIError) as exc:
        await pipeline.run(request, dataclasses.replace(TRANSCRIPTIONS, work=probe))
    assert exc.value.status == 418
    assert seen == [False], "the work ran on the event loop"


# --- the worker is held to what was reserved ------------------------------------------------


def _lying_wav(real: float, claimed: float, rate: int = 8000) -> bytes:
    """A WAV holding `real` seconds whose fmt chunk's byte rate makes its data chunk say
    `claimed` seconds (the header is the client's word)."""
    data = bytearray(wav(real, rate=rate))
    at = data.index(b"fmt ")
    struct.pack_into("<I", data, at + 16, int(rate * 2 * real / claimed))  # byte rate
    return bytes(data)


def test_the_job_may_decode_no_more_than_was_reserved(settings: Any) -> None:
    """A header that under-states the duration reserves little; the worker is capped near
    what was reserved (10% + 5 s of slack for headers that round), not at the server's
    cap, so the daily audio quota cannot be beaten by lying."""
    settings.RBEE_MAX_AUDIO_SECONDS = 3600
    lying = _lying_wav(real=30.0, claimed=1.0)
    work = _work(lying)
    assert work.cost.audio_seconds == pytest.approx(1.0, abs=0.01)
    assert work.request["max_seconds"] == pytest.approx(1.0 * 1.1 + 5, abs=0.02)
    # An honest header: the cap follows it, and never passes the server's.
    assert _work(wav(42.0)).request["max_seconds"] == pytest.approx(42 * 1.1 + 5)
    settings.RBEE_MAX_AUDIO_SECONDS = 45
    assert _work(wav(42.0)).request["max_seconds"] == 45
    # A size estimate (no header) errs long by design: the server's cap stands.
    assert _work(b"\1" * 4000, "a.m4a").request["max_seconds"] == 45


def test_the_hive_refuses_audio_longer_than_its_header_said(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job as the queen builds it, decoded by the hive's own code: 30 s of audio under
    a header that says 1 s is refused once decoding passes the reserved 6.1 s."""
    from hives.agent.engines.base import EngineError
    from hives.agent.engines.whisper import decode_upload

    settings.RBEE_MAX_AUDIO_SECONDS = 3600
    monkeypatch.setenv("RBEE_MAX_AUDIO_SECONDS", "3600")  # the hive's own cap
    work = _work(_lying_wav(real=30.0, claimed=1.0))
    with pytest.raises(EngineError) as exc:
        decode_upload(work.request)
    assert exc.value.status == 400 and exc.value.code == "audio_too_long"
    # The honest file of the same length is decoded whole.
    honest = decode_upload(_work(wav(30.0, rate=8000)).request)
    assert len(honest) == pytest.approx(30 * 16000, abs=64)
