"""How long an uploaded audio file plays, from its container's header, without decoding it.

The queen reserves a transcription's audio seconds against the tenant's daily quota
before dispatch (inference/audio.py), so it needs the duration up front; decoding is the
worker's job (hives/agent/engines/whisper.py) and the queen has no codec library. These
formats say their length in a few header bytes:

* WAV (RIFF): the `data` chunk's size over the `fmt ` chunk's byte rate;
* FLAC: STREAMINFO's total samples over its sample rate;
* Ogg (Vorbis, Opus, FLAC-in-Ogg): the last page's granule position over the sample
  rate of the first stream's identification header;
* MP3: the Xing/Info or VBRI frame count of the first frame, else (constant bit rate)
  the bytes after the tags over the first frame's bit rate.

Anything else (m4a, webm, ...) is None: the caller estimates from the size, and the
worker's real duration settles the reservation either way.

Every scan is bounded, whatever the upload says: at most WAV_MAX_CHUNKS chunks, the last
OGG_TAIL bytes for Ogg's last page, MP3_SYNC_REACH bytes for the first frame after a tag
(FLAC's is a fixed place). A file that hides its header past them says nothing (None), so
a crafted upload costs microseconds, not seconds.
"""

from __future__ import annotations

import struct

# Bit rates (kbit/s) by MPEG version family and layer, indexed by the header's 4 bits.
_MP3_BITRATES = {
    (1, 1): (0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (1, 2): (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (1, 3): (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (2, 1): (0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (2, 2): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (2, 3): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_MP3_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}

WAV_MAX_CHUNKS = 64
"""Chunks looked at for `fmt ` and `data` (real files have a handful)."""
OGG_TAIL = 64 * 1024
"""Where the last Ogg page starts: a page is at most 27 + 255 + 255 * 255 = 65307 bytes."""
MP3_SYNC_REACH = 8192
"""Bytes after an ID3 tag searched for the first frame."""


def duration_seconds(data: bytes) -> float | None:
    """The duration the header states, in seconds; None when the format is not one of
    those above or its header does not say."""
    try:
        if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
            return _wav(data)
        if data[:4] == b"fLaC":
            return _flac(data)
        if data[:4] == b"OggS":
            return _ogg(data)
        return _mp3(data)
    except (struct.error, IndexError, ValueError, ZeroDivisionError):
        return None


def _wav(data: bytes) -> float | None:
    pos, byte_rate, data_size = 12, 0, None
    for _ in range(WAV_MAX_CHUNKS):
        if pos + 8 > len(data):
            break
        cid, size = data[pos : pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        if cid == b"fmt ":
            byte_rate = struct.unpack_from("<I", data, pos + 16)[0]
        elif cid == b"data":
            # A streamed WAV may say 0 or 0xFFFFFFFF: then the bytes that are there count.
            data_size = size if 0 < size < 0xFFFFFFFF else len(data) - pos - 8
            data_size = min(data_size, len(data) - pos - 8)
            break
        pos += 8 + size + (size & 1)
    if not byte_rate or data_size is None:
        return None
    return data_size / byte_rate


def _flac(data: bytes) -> float | None:
    # The first metadata block is STREAMINFO: after min/max block (2+2) and frame (3+3)
    # sizes, 20 bits of sample rate, 3 of channels, 5 of depth, 36 of total samples.
    if data[4] & 0x7F != 0:
        return None
    bits = int.from_bytes(data[18:26], "big")
    rate = bits >> 44
    total = bits & ((1 << 36) - 1)
    return total / rate if rate and total else None


def _ogg(data: bytes) -> float | None:
    # The first page's packet is the identification header of the first stream.
    segments = data[26]
    packet = data[27 + segments : 27 + segments + 64]
    serial = data[14:18]
    if packet[:8] == b"OpusHead":
        rate, skip = 48000, struct.unpack_from("<H", packet, 10)[0]
    elif packet[:7] == b"\x01vorbis":
        rate, skip = struct.unpack_from("<I", packet, 12)[0], 0
    elif packet[:5] == b"\x7fFLAC":
        rate, skip = int.from_bytes(packet[27:30], "big") >> 4, 0
    else:
        return None
    # The last page of that stream holds the final granule position (samples); it starts
    # in the last OGG_TAIL bytes (else another stream's pages end the file: None).
    floor = max(0, len(data) - OGG_TAIL)
    pos = data.rfind(b"OggS", floor)
    while pos >= 0:
        if data[pos + 14 : pos + 18] == serial:
            granule = struct.unpack_from("<q", data, pos + 6)[0]
            if granule > 0:
                return max(0, granule - skip) / rate if rate else None
        pos = data.rfind(b"OggS", floor, pos)
    return None


def _mp3(data: bytes) -> float | None:
    pos, reach = 0, 1  # without a tag the file must start with a frame: no guessing
    if data[:3] == b"ID3":  # ID3v2 tag: a syncsafe size after 6 bytes, plus a footer flag
        size = (data[6] << 21) | (data[7] << 14) | (data[8] << 7) | data[9]
        pos, reach = 10 + size + (10 if data[5] & 0x10 else 0), MP3_SYNC_REACH
    end = len(data) - (128 if data[-128:-125] == b"TAG" else 0)
    # The first frame sync (after a tag, padding before it is tolerated).
    for start in range(pos, min(pos + reach, len(data) - 4)):
        header = struct.unpack_from(">I", data, start)[0]
        if header >> 21 != 0x7FF:
            continue
        version_bits, layer_bits = (header >> 19) & 3, (header >> 17) & 3
        rate_index, bitrate_index = (header >> 10) & 3, (header >> 12) & 15
        if version_bits == 1 or layer_bits == 0 or rate_index == 3 or bitrate_index in (0, 15):
            continue
        layer = 4 - layer_bits
        family = 1 if version_bits == 3 else 2
        bitrate = _MP3_BITRATES[(family, layer)][bitrate_index] * 1000
        rate = _MP3_RATES[version_bits][rate_index]
        samples = 384 if layer == 1 else (1152 if layer == 2 or family == 1 else 576)
        mono = (header >> 6) & 3 == 3
        side = (17 if mono else 32) if family == 1 else (9 if mono else 17)
        for tag_at in (start + 4 + side, start + 36):  # Xing/Info, then VBRI's fixed place
            tag = data[tag_at : tag_at + 4]
            if tag in (b"Xing", b"Info"):
                flags = struct.unpack_from(">I", data, tag_at + 4)[0]
                if flags & 1:
                    frames = struct.unpack_from(">I", data, tag_at + 8)[0]
                    return frames * samples / rate
            elif tag == b"VBRI":
                frames = struct.unpack_from(">I", data, tag_at + 14)[0]
                return frames * samples / rate
        return (end - start) * 8 / bitrate
    return None
