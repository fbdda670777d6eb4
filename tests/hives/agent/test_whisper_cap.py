"""The hive decodes at most RBEE_MAX_AUDIO_SECONDS of an upload (or the queen's lower cap
sent with the job), and refuses a longer one with a clear 400 (whisper.py)."""

from __future__ import annotations

import base64
import io
import wave

import pytest

from hives.agent.engines.base import EngineError
from hives.agent.engines.whisper import SAMPLE_RATE, decode_upload


def wav(seconds: float, rate: int = 8000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\1\0" * int(seconds * rate))
    return buf.getvalue()


def job(data: bytes, **kw: object) -> dict[str, object]:
    return {"audio_b64": base64.b64encode(data).decode(), "filename": "a.wav", **kw}


def test_audio_within_the_cap_is_decoded_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RBEE_MAX_AUDIO_SECONDS", "5")
    audio = decode_upload(job(wav(3.0)))
    assert audio.dtype.name == "float32"
    assert abs(len(audio) - 3 * SAMPLE_RATE) <= 64


def test_audio_past_the_hives_cap_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RBEE_MAX_AUDIO_SECONDS", "2")
    with pytest.raises(EngineError) as exc:
        decode_upload(job(wav(3.0)))
    assert exc.value.status == 400 and exc.value.code == "audio_too_long"
    assert "2 seconds" in str(exc.value)


def test_the_queens_lower_cap_applies(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RBEE_MAX_AUDIO_SECONDS", "3600")
    with pytest.raises(EngineError) as exc:
        decode_upload(job(wav(3.0), max_seconds=1))
    assert exc.value.code == "audio_too_long"
    # A cap the queen sends cannot raise the hive's own.
    monkeypatch.setenv("RBEE_MAX_AUDIO_SECONDS", "1")
    with pytest.raises(EngineError):
        decode_upload(job(wav(3.0), max_seconds=100))


def test_the_hives_cap_reaches_its_whisper_workers() -> None:
    from hives.agent.workerenv import worker_env

    assert worker_env({"RBEE_MAX_AUDIO_SECONDS": "600"})["RBEE_MAX_AUDIO_SECONDS"] == "600"
