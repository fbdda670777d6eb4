"""Encoding synthesised speech into the containers /v1/audio/speech offers, as it streams.

A speech engine produces int16 mono PCM a sentence at a time; the client asked for
one of OpenAI's `response_format`s. `SpeechEncoder` turns each chunk into bytes of
that container the moment it arrives, so the first sentence can play while the
rest is still being synthesised:

- "pcm": raw signed 16-bit little-endian mono at 24 kHz, the rate OpenAI documents
  for its pcm output (so a client that hard-codes 24 kHz plays it at the right
  pitch), resampled from the voice's own rate with libswresample.
- "wav": a 44-byte header whose RIFF and data sizes are 0xFFFFFFFF, the way
  OpenAI's own streamed wav is written (the length is unknown when the header
  leaves), then PCM at the voice's rate. Decoders read it to the end of the stream.
- "mp3", "opus" (in Ogg), "aac" (ADTS) and "flac": encoded with PyAV into an
  output that is not seekable, so the muxers never go back to patch a header,
  and with packets flushed as they are written; what the muxer wrote is taken
  after every feed().

Encoders are picked from what the installed PyAV (FFmpeg) build offers; a format
with no encoder at all is refused with 400 "unsupported_format" when the encoder
is built, before any audio is synthesised.
"""

from __future__ import annotations

import logging
import struct
from fractions import Fraction
from typing import Any

import numpy as np

from hives.agent.engines.base import EngineError

logger = logging.getLogger("hives.engine.audio")

RESPONSE_FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")
PCM_RATE = 24000  # OpenAI: "pcm ... raw samples in 24kHz (16-bit signed, low-endian)"

# Encoder candidates per format, best first, and the container each goes into.
ENCODERS: dict[str, tuple[str, ...]] = {
    "mp3": ("libmp3lame", "mp3", "mp3_mf", "libshine"),
    "opus": ("libopus", "opus"),
    "aac": ("aac", "libfdk_aac", "aac_mf", "aac_at"),
    "flac": ("flac",),
}
CONTAINERS = {"mp3": "mp3", "opus": "ogg", "aac": "adts", "flac": "flac"}
BIT_RATES = {"mp3": 64000, "opus": 32000, "aac": 64000}  # mono speech; flac is lossless


def pcm_duration(n_samples: int, rate: int) -> float:
    """Seconds of audio in `n_samples` mono samples at `rate` Hz."""
    return n_samples / rate if rate > 0 else 0.0


def streaming_wav_header(sample_rate: int, channels: int = 1, bits: int = 16) -> bytes:
    """A PCM WAV header for a stream of unknown length: both size fields 0xFFFFFFFF."""
    block_align = channels * bits // 8
    return (
        b"RIFF"
        + struct.pack("<I", 0xFFFFFFFF)
        + b"WAVE"
        + b"fmt "
        + struct.pack(
            "<IHHIIHH", 16, 1, channels, sample_rate, sample_rate * block_align, block_align, bits
        )
        + b"data"
        + struct.pack("<I", 0xFFFFFFFF)
    )


def pick_encoder(response_format: str) -> str:
    """The name of the first encoder for `response_format` this PyAV build has."""
    import av

    for name in ENCODERS.get(response_format, ()):
        try:
            codec = av.codec.Codec(name, "w")
        except Exception:  # UnknownCodecError: not compiled into this FFmpeg
            logger.debug("no %s encoder %r in this PyAV build", response_format, name)
            continue
        return str(codec.name)
    raise EngineError(
        f"The response_format {response_format!r} is not available on this server "
        f"(no encoder among {', '.join(ENCODERS.get(response_format, ())) or 'none'}).",
        status=400,
        code="unsupported_format",
        param="response_format",
    )


def check_format(response_format: str) -> None:
    """Raise the 400 SpeechEncoder would, without building an encoder."""
    if response_format not in RESPONSE_FORMATS:
        raise EngineError(
            f"Unsupported response_format {response_format!r}; "
            f"expected one of {', '.join(RESPONSE_FORMATS)}.",
            status=400,
            code="unsupported_format",
            param="response_format",
        )
    if response_format in ENCODERS:
        pick_encoder(response_format)


class _Sink:
    """A write-only, non-seekable file for PyAV: keeps what the muxer wrote until taken.

    Not being seekable matters: muxers that would seek back to fill in a length
    (mp3's Xing frame, flac's STREAMINFO) skip that, so no byte already sent
    would ever need to change.
    """

    def __init__(self) -> None:
        self.buf = bytearray()

    def write(self, data: Any) -> int:
        self.buf += bytes(data)
        return len(data)

    def seekable(self) -> bool:
        return False

    def take(self) -> bytes:
        out = bytes(self.buf)
        self.buf.clear()
        return out


def _as_int16(chunk: Any) -> np.ndarray:
    arr = np.asarray(chunk)
    if arr.dtype != np.int16:
        if np.issubdtype(arr.dtype, np.floating):
            arr = (np.clip(arr, -1.0, 1.0) * 32767.0).astype(np.int16)
        else:
            arr = arr.astype(np.int16)
    return np.ascontiguousarray(arr.reshape(-1))


class SpeechEncoder:
    """Encodes int16 mono PCM chunks into `response_format`, chunk by chunk.

    `feed(chunk)` returns the bytes that can be sent now (possibly none: encoders
    work on fixed-size frames and hold back a partial one); `finish()` returns the
    rest and closes the encoder. Concatenating everything returned is a valid file
    of the format (for pcm: the raw stream).
    """

    def __init__(self, response_format: str, sample_rate: int) -> None:
        if response_format not in RESPONSE_FORMATS:
            check_format(response_format)  # raises the 400
        self.response_format = response_format
        self.source_rate = int(sample_rate)
        self.samples_in = 0  # samples fed, at the source rate
        self._header_sent = False
        self._finished = False
        self._resampler: Any = None
        self._container: Any = None
        self._stream: Any = None
        self._fifo: Any = None
        self._sink: _Sink | None = None
        self._frame_size = 0
        self._pts = 0

        if response_format == "pcm":
            self.output_rate = PCM_RATE
            if self.source_rate != PCM_RATE:
                import av

                self._resampler = av.AudioResampler(format="s16", layout="mono", rate=PCM_RATE)
        elif response_format == "wav":
            self.output_rate = self.source_rate
        else:
            self._open_container(pick_encoder(response_format))

    @property
    def duration(self) -> float:
        """Seconds of audio fed so far."""
        return pcm_duration(self.samples_in, self.source_rate)

    def _open_container(self, codec_name: str) -> None:
        import av

        codec = av.codec.Codec(codec_name, "w")
        rates = sorted(codec.audio_rates or [])
        if not rates or self.source_rate in rates:
            rate = self.source_rate
        else:  # opus has no 22.05 kHz: the nearest rate above, or the highest
            rate = next((r for r in rates if r >= self.source_rate), rates[-1])
        self.output_rate = rate
        self._sink = _Sink()
        self._container = av.open(
            self._sink,
            mode="w",
            format=CONTAINERS[self.response_format],
            options=self._muxer_options(),
        )
        stream: Any = self._container.add_stream(codec_name, rate=rate, layout="mono")
        if self.response_format in BIT_RATES:
            stream.bit_rate = BIT_RATES[self.response_format]
        stream.time_base = Fraction(1, rate)
        if codec_name == "opus":  # FFmpeg's native opus encoder is flagged experimental
            stream.codec_context.strict_std_compliance = -2
        stream.codec_context.open()
        self._stream = stream
        self._frame_size = int(stream.codec_context.frame_size or 0)
        self._resampler = av.AudioResampler(
            format=stream.codec_context.format.name, layout="mono", rate=rate
        )
        self._fifo = av.AudioFifo()

    def _muxer_options(self) -> dict[str, str]:
        # flush_packets: hand each packet to the sink at once instead of filling a
        # 32 KiB buffer first. page_duration: Ogg would otherwise hold a page open
        # until it holds a full second of audio.
        options = {"flush_packets": "1"}
        if self.response_format == "opus":
            options["page_duration"] = "100000"  # microseconds
        return options

    def feed(self, chunk: Any) -> bytes:
        """Encode one chunk of int16 mono samples (float in [-1, 1] is accepted too)."""
        if self._finished:
            raise RuntimeError("SpeechEncoder.feed() after finish()")
        samples = _as_int16(chunk)
        self.samples_in += samples.size
        out = b""
        if self.response_format == "wav" and not self._header_sent:
            out = streaming_wav_header(self.source_rate)
            self._header_sent = True
        if samples.size == 0:
            return out
        if self.response_format == "wav" or (
            self.response_format == "pcm" and self._resampler is None
        ):
            return out + samples.astype("<i2").tobytes()
        frames = self._resampler.resample(self._frame(samples))
        if self.response_format == "pcm":
            return out + b"".join(_s16_bytes(f) for f in frames)
        for f in frames:
            self._fifo.write(f)
        self._encode_fifo(final=False)
        return out + self._take()

    def finish(self) -> bytes:
        """Flush the resampler and encoder, close the container; the last bytes."""
        if self._finished:
            return b""
        self._finished = True
        if self.response_format == "wav":
            return b"" if self._header_sent else streaming_wav_header(self.source_rate)
        if self.response_format == "pcm":
            if self._resampler is None:
                return b""
            return b"".join(_s16_bytes(f) for f in self._resampler.resample(None))
        for f in self._resampler.resample(None):
            self._fifo.write(f)
        self._encode_fifo(final=True)
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._container.close()
        return self._take()

    def close(self) -> None:
        """Release the encoder without producing the tail (a cancelled stream)."""
        if self._container is not None and not self._finished:
            self._finished = True
            try:
                self._container.close()
            except Exception:  # nothing was muxed yet: the header was never written
                pass

    def _frame(self, samples: np.ndarray) -> Any:
        import av

        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.source_rate
        return frame

    def _encode_fifo(self, *, final: bool) -> None:
        fifo = self._fifo
        size = self._frame_size
        while fifo.samples and (size <= 0 or fifo.samples >= size or final):
            frame = fifo.read(size if 0 < size <= fifo.samples else 0)
            if frame is None:
                break
            frame.pts = self._pts
            frame.time_base = Fraction(1, self.output_rate)
            self._pts += frame.samples
            for packet in self._stream.encode(frame):
                self._container.mux(packet)

    def _take(self) -> bytes:
        return self._sink.take() if self._sink is not None else b""


def _s16_bytes(frame: Any) -> bytes:
    arr: np.ndarray = frame.to_ndarray()
    return arr.astype("<i2").reshape(-1).tobytes()
