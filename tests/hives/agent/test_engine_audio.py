"""The audio engines on real models, in-process: Piper and espeak-ng speak, whisper-base
(joined from its two packages) listens, and PyAV checks every container they write."""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from hives.agent.engines import get_engine
from hives.agent.engines.audio import PCM_RATE, SpeechEncoder, pcm_duration
from hives.agent.engines.base import EngineError
from hives.agent.engines.piper import (
    EspeakEngine,
    PiperEngine,
    bundled_voice_path,
    split_sentences,
)
from hives.agent.engines.whisper import (
    WHISPER_BASE_SIZE,
    FasterWhisperEngine,
    assemble_whisper_base,
)
from hives.spec import ModelSpec

FOX = "The quick brown fox jumps over the lazy dog."
THREE = "Bees make honey in the hive. The queen lays the eggs. Workers gather pollen all day."
FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")
NEVER = lambda: False  # noqa: E731


@pytest.fixture(scope="module")
def whisper_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return assemble_whisper_base(tmp_path_factory.mktemp("models") / "whisper-base")


@pytest.fixture(scope="module")
def whisper(whisper_dir: Path) -> Iterator[FasterWhisperEngine]:
    engine = get_engine("faster-whisper")
    assert isinstance(engine, FasterWhisperEngine)
    engine.load(
        ModelSpec(
            name="whisper-base",
            engine="faster-whisper",
            source=str(whisper_dir),
            capability="audio-transcription",
        )
    )
    yield engine
    engine.unload()


@pytest.fixture(scope="module")
def piper() -> Iterator[PiperEngine]:
    path = bundled_voice_path()
    assert path is not None and path.name == "en_US-joe-medium.onnx"
    engine = get_engine("piper")
    assert isinstance(engine, PiperEngine)
    engine.load(
        ModelSpec(name="piper-joe", engine="piper", source=str(path), capability="audio-gen")
    )
    assert engine.fallback is None  # the real voice, not espeak
    yield engine
    engine.unload()


@pytest.fixture(scope="module")
def espeak() -> Iterator[EspeakEngine]:
    if shutil.which("espeak-ng") is None and not os.environ.get("CI"):
        # A developer machine without it; CI installs it (.ci/run), so there it must run.
        pytest.skip("espeak-ng is not installed (apt install espeak-ng)")
    engine = get_engine("espeak-ng")
    assert isinstance(engine, EspeakEngine)
    engine.load(ModelSpec(name="espeak-ng", engine="espeak-ng", source="", capability="audio-gen"))
    yield engine
    engine.unload()


def speak(engine: Any, text: str, fmt: str = "wav", **kw: Any) -> tuple[list[bytes], dict]:
    """The audio events' bytes, and the done event."""
    events = list(
        engine.speak({"input": text, "voice": "alloy", "response_format": fmt, **kw}, NEVER)
    )
    done = events[-1]
    assert done["kind"] == "done"
    assert all(e["kind"] == "audio" for e in events[:-1])
    chunks = [base64.b64decode(e["b64"]) for e in events[:-1]]
    assert all(chunks), "empty audio events must not be sent"
    return chunks, done


@pytest.fixture(scope="module")
def fox_wav(piper: PiperEngine) -> bytes:
    chunks, _ = speak(piper, FOX, "wav")
    return b"".join(chunks)


def transcribe(whisper: FasterWhisperEngine, data: bytes, **kw: Any) -> dict[str, Any]:
    request = {"audio_b64": base64.b64encode(data).decode(), "filename": "a", **kw}
    events = list(whisper.transcribe(request, NEVER))
    assert len(events) == 1 and events[0]["kind"] == "done"
    return events[0]


def words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


def close_enough(heard: str, said: str) -> bool:
    """Most of the words come back: all but two (whisper-base may drop a plural 's', and
    piper's voice is drawn with random noise inside its ONNX graph, so each synthesis
    differs a little: "quick brown" came back once as "quip round")."""
    said_words = words(said)
    heard_words = {w.rstrip("s") for w in words(heard)}
    hits = sum(w.rstrip("s") in heard_words for w in said_words)
    return hits >= len(said_words) - 2


def decode(data: bytes) -> tuple[int, int]:
    """(samples, sample rate) PyAV decodes from a whole file."""
    with av.open(io.BytesIO(data)) as container:
        samples, rate = 0, 0
        for frame in container.decode(audio=0):
            samples += frame.samples
            rate = frame.sample_rate
    return samples, rate


# --- whisper -----------------------------------------------------------------------------


def test_whisper_base_is_assembled_once(whisper_dir: Path) -> None:
    assert (whisper_dir / "model.bin").stat().st_size == WHISPER_BASE_SIZE
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        assert (whisper_dir / name).is_file()
    assert not [p for p in whisper_dir.iterdir() if p.name.startswith(".")]  # no temp left
    mtime = (whisper_dir / "model.bin").stat().st_mtime_ns
    t0 = time.monotonic()
    assert assemble_whisper_base(whisper_dir) == whisper_dir
    assert time.monotonic() - t0 < 0.5
    assert (whisper_dir / "model.bin").stat().st_mtime_ns == mtime


def test_missing_whisper_packages_are_a_503(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hives.agent.engines.whisper as mod

    monkeypatch.setattr(mod, "WHISPER_BASE_PACKAGES", ("no_such_pkg_part1", "no_such_pkg_part2"))
    with pytest.raises(EngineError) as exc:
        assemble_whisper_base(tmp_path / "w")
    assert exc.value.status == 503 and exc.value.code == "model_missing"
    assert "pip install" in exc.value.message
    assert not (tmp_path / "w" / "model.bin").exists()


def test_memory_estimates_do_not_load(whisper_dir: Path) -> None:
    spec = ModelSpec(name="w", engine="faster-whisper", source=str(whisper_dir))
    engine = FasterWhisperEngine()
    estimate = engine.memory_estimate_bytes(spec)
    assert int(WHISPER_BASE_SIZE * 1.3) < estimate < 600 * 2**20
    assert engine.model is None
    large = ModelSpec(name="l", engine="faster-whisper", source="Systran/faster-whisper-large-v3")
    assert engine.memory_estimate_bytes(large) > 3 * 2**30
    voice = bundled_voice_path()
    assert voice is not None
    piper_spec = ModelSpec(name="p", engine="piper", source=str(voice))
    assert PiperEngine().memory_estimate_bytes(piper_spec) == voice.stat().st_size * 2 + 100 * 2**20
    assert EspeakEngine().memory_estimate_bytes(piper_spec) == 20 * 2**20


def test_piper_speech_is_heard_by_whisper(whisper: FasterWhisperEngine, fox_wav: bytes) -> None:
    done = transcribe(whisper, fox_wav, language="en", word_timestamps=True)
    result = done["result"]
    assert close_enough(result["text"], FOX), result["text"]
    assert result["language"] == "en"
    assert 1.5 < result["duration"] < 6
    assert done["usage"] == {"seconds": result["duration"]}
    # verbose_json's fields
    assert result["segments"]
    for i, seg in enumerate(result["segments"]):
        assert seg["id"] == i
        assert 0 <= seg["start"] < seg["end"] <= result["duration"] + 0.5
        for key in ("seek", "text", "tokens", "temperature", "avg_logprob"):
            assert key in seg
        assert "compression_ratio" in seg and "no_speech_prob" in seg
    assert len(result["words"]) >= 7
    assert all(w["start"] <= w["end"] for w in result["words"])
    assert close_enough(" ".join(w["word"] for w in result["words"]), FOX)


def test_language_is_detected_and_words_are_off_by_default(
    whisper: FasterWhisperEngine, fox_wav: bytes
) -> None:
    result = transcribe(whisper, fox_wav)["result"]
    assert result["language"] == "en"
    assert result["words"] == []


def test_translation_is_english(whisper: FasterWhisperEngine, fox_wav: bytes) -> None:
    request = {"audio_b64": base64.b64encode(fox_wav).decode(), "filename": "fox.wav"}
    (done,) = list(whisper.translate(request, NEVER))
    assert close_enough(done["result"]["text"], FOX)
    assert done["result"]["language"] == "en"  # the language heard


def test_mp3_upload_is_transcribed(
    whisper: FasterWhisperEngine, piper: PiperEngine, fox_wav: bytes
) -> None:
    pcm = np.frombuffer(fox_wav[44:], dtype="<i2")
    encoder = SpeechEncoder("mp3", 22050)
    mp3 = encoder.feed(pcm) + encoder.finish()
    assert mp3[:3] == b"ID3" or mp3[0] == 0xFF
    assert close_enough(transcribe(whisper, mp3, temperature=0.0)["result"]["text"], FOX)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"this is not audio at all, just some text " * 20, "could not be decoded"),
        (b"\x89PNG\r\n\x1a\n" + bytes(200), "could not be decoded"),
    ],
)
def test_bad_audio_is_a_400_on_file(
    whisper: FasterWhisperEngine, data: bytes, message: str
) -> None:
    with pytest.raises(EngineError) as exc:
        transcribe(whisper, data)
    assert (exc.value.status, exc.value.code, exc.value.param) == (400, "invalid_audio", "file")
    assert message in exc.value.message


def test_unknown_language_is_a_400(whisper: FasterWhisperEngine, fox_wav: bytes) -> None:
    with pytest.raises(EngineError) as exc:
        transcribe(whisper, fox_wav, language="xx")
    assert (exc.value.status, exc.value.param) == (400, "language")


# --- speech ------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_decodes(piper: PiperEngine, fmt: str) -> None:
    chunks, done = speak(piper, "Hello from the hive.", fmt)
    data = b"".join(chunks)
    seconds = done["usage"]["seconds"]
    assert done["usage"]["characters"] == len("Hello from the hive.")
    assert 0.5 < seconds < 5
    if fmt == "pcm":
        assert len(data) % 2 == 0
        assert abs(pcm_duration(len(data) // 2, PCM_RATE) - seconds) < 0.05
        return
    samples, rate = decode(data)
    assert samples > 0
    # Codecs pad to whole frames and add priming; the length must still be close.
    assert abs(samples / rate - seconds) < 0.15, (fmt, samples / rate, seconds)
    if fmt == "wav":
        assert data[:4] == b"RIFF" and data[4:8] == b"\xff\xff\xff\xff"
        assert rate == 22050
    if fmt == "opus":
        assert data[:4] == b"OggS"


def test_speech_streams_sentence_by_sentence(piper: PiperEngine) -> None:
    chunks, _ = speak(piper, THREE, "mp3")
    assert len(chunks) >= 3


def test_speed_changes_duration(piper: PiperEngine) -> None:
    _, normal = speak(piper, FOX, "pcm", speed=1.0)
    _, fast = speak(piper, FOX, "pcm", speed=2.0)
    assert fast["usage"]["seconds"] < 0.7 * normal["usage"]["seconds"]


def test_voices(piper: PiperEngine) -> None:
    for voice in ("alloy", "shimmer", "verse", "en_US-joe-medium", "joe"):
        request = {"input": "Hi.", "voice": voice, "response_format": "wav"}
        assert list(piper.speak(request, NEVER))[-1]["kind"] == "done"
    with pytest.raises(EngineError) as exc:
        list(piper.speak({"input": "Hi.", "voice": "darth", "response_format": "wav"}, NEVER))
    assert (exc.value.status, exc.value.code, exc.value.param) == (400, "invalid_voice", "voice")
    assert "alloy" in exc.value.message and "joe" in exc.value.message


def test_unknown_format_is_a_400(piper: PiperEngine) -> None:
    with pytest.raises(EngineError) as exc:
        piper.speak({"input": "Hi.", "voice": "alloy", "response_format": "ogg-vorbis"}, NEVER)
    assert (exc.value.status, exc.value.code) == (400, "unsupported_format")


def test_cancel_stops_between_sentences(piper: PiperEngine) -> None:
    events: list[dict] = []
    stream = piper.speak(
        {"input": THREE, "voice": "alloy", "response_format": "wav"},
        lambda: any(e["kind"] == "audio" for e in events),
    )
    for event in stream:
        events.append(event)
    assert [e["kind"] for e in events] == ["audio", "done"]
    _, full = speak(piper, THREE, "wav")
    assert events[-1]["usage"]["seconds"] < 0.6 * full["usage"]["seconds"]


def test_espeak_speaks(espeak: EspeakEngine, whisper: FasterWhisperEngine) -> None:
    chunks, done = speak(espeak, THREE, "opus")
    assert len(chunks) >= 3
    samples, rate = decode(b"".join(chunks))
    assert abs(samples / rate - done["usage"]["seconds"]) < 0.15
    wav, _ = speak(espeak, FOX, "wav", speed=1.0)
    assert close_enough(transcribe(whisper, b"".join(wav), language="en")["result"]["text"], FOX)
    with pytest.raises(EngineError) as exc:
        espeak.speak({"input": "Hi.", "voice": "darth", "response_format": "wav"}, NEVER)
    assert exc.value.param == "voice"


def test_piper_falls_back_to_espeak(tmp_path: Path) -> None:
    if shutil.which("espeak-ng") is None and not os.environ.get("CI"):
        # A developer machine without it; CI installs it (.ci/run), so there it must run.
        pytest.skip("espeak-ng is not installed (apt install espeak-ng)")
    broken = tmp_path / "en_US-broken-medium.onnx"
    broken.write_bytes(b"not an onnx model")
    spec = ModelSpec(name="p", engine="piper", source=str(broken))
    engine = PiperEngine()
    engine.load(spec)
    assert engine.fallback is not None
    chunks, _ = speak(engine, "Hello.", "wav")
    assert decode(b"".join(chunks))[0] > 0
    with pytest.raises(EngineError) as exc:
        PiperEngine().load(
            ModelSpec(name="p", engine="piper", source=str(broken), options={"fallback": ""})
        )
    assert exc.value.status == 503


def test_split_sentences() -> None:
    assert split_sentences(THREE) == [
        "Bees make honey in the hive.",
        "The queen lays the eggs.",
        "Workers gather pollen all day.",
    ]
    assert split_sentences('He said "stop." Then left!\nNew line') == [
        'He said "stop."',
        "Then left!",
        "New line",
    ]
    assert split_sentences("  ") == []
