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
    assert work.request["max_seconds"] == 3600
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
