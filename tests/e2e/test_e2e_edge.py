"""The edge of a real queen: bodies it must not read (rbee/server.py).

Daphne buffers a whole request body before the application sees any of it, so these
checks happen from the request line and headers: a missing, malformed or unknown key on
a large body, a JSON body over RBEE_MAX_JSON_BYTES, and more bytes in flight from one
client than RBEE_MAX_INFLIGHT_BYTES_PER_CLIENT are refused before the body is read. The
queen's memory is watched from /proc while it happens.

The client here writes raw HTTP on asyncio streams and reads the answer while it is
still sending, as a browser or curl does: a server that answers early and stops reading
must still be heard.
"""

from __future__ import annotations

import asyncio
import io
import math
import struct
import threading
import time
import wave
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import openai
import pytest

from testkit.live import Deployment, Hive, Queen
from testkit.rawhttp import Answer, post

pytestmark = pytest.mark.e2e

MiB = 2**20
BIG = 25 * 1000 * 1000  # 25 MB
INFLIGHT_CAP = 3 * MiB


@dataclass
class Edge:
    dep: Deployment
    queen: Queen
    api_key: str


@pytest.fixture(scope="module")
def edge() -> Iterator[Edge]:
    dep = Deployment()
    try:
        queen = Queen(dep, env={"RBEE_MAX_INFLIGHT_BYTES_PER_CLIENT": str(INFLIGHT_CAP)})
        dep.rbee("tenant", "create", "acme")
        key = dep.rbee("key", "create", "--tenant", "acme").stdout.strip()
        yield Edge(dep=dep, queen=queen, api_key=key)
    finally:
        dep.close()


def rss(pid: int) -> int:
    """Resident memory of a process, in bytes (VmRSS of /proc/PID/status)."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


class PeakRSS:
    """Samples a process's RSS every 10 ms while in use; `.peak` is the highest seen."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = rss(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss(self.pid))
            time.sleep(0.01)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss(self.pid))


def test_unauthenticated_large_posts_are_refused_without_reading_them(edge: Edge) -> None:
    """100 clients at once POST 25 MB each with no key, a malformed key or an unknown key:
    every one hears 401 quickly and the queen's memory stays flat."""
    port = edge.queen.port
    keys = [None, "Basic dXNlcjpwYXNz", "sk-rbee-short", "sk-rbee-abcdefghij-" + "U" * 40]
    pid = edge.queen.proc.pid

    async def flood() -> list[Answer]:
        calls = []
        for i in range(100):
            key = keys[i % len(keys)]
            headers = {"Content-Type": "application/json"}
            if key is not None:
                headers["Authorization"] = key if key.startswith("Basic") else f"Bearer {key}"
            calls.append(post(port, "/v1/chat/completions", headers, BIG))
        return await asyncio.gather(*calls)

    before = rss(pid)
    with PeakRSS(pid) as watch:
        answers = asyncio.run(flood())
    after = rss(pid)
    assert watch.peak - before < 50 * MiB, (before, watch.peak, after)
    assert max(a.seconds for a in answers) < 10, sorted(a.seconds for a in answers)[-5:]
    assert [a.status for a in answers] == [401] * 100
    assert {a.body["error"]["code"] for a in answers} == {"invalid_api_key"}
    # What left the clients was headers and the kernel's socket buffers' worth (a few MB
    # per connection on loopback), never the bodies.
    assert sum(a.sent for a in answers) < 100 * BIG / 2
    # The queen still serves.
    ok = httpx.get(
        f"{edge.queen.url}/v1/models", headers={"Authorization": f"Bearer {edge.api_key}"}
    )
    assert ok.status_code == 200


def test_a_valid_key_with_a_huge_json_body_is_413_before_it_is_read(edge: Edge) -> None:
    pid = edge.queen.proc.pid
    headers = {"Authorization": f"Bearer {edge.api_key}", "Content-Type": "application/json"}
    before = rss(pid)
    with PeakRSS(pid) as watch:
        answer = asyncio.run(post(edge.queen.port, "/v1/chat/completions", headers, BIG))
    assert watch.peak - before < 50 * MiB, (before, watch.peak)
    assert answer.status == 413, answer
    assert answer.body["error"]["code"] == "request_too_large"
    assert answer.seconds < 5 and answer.sent < BIG / 2


def test_bytes_in_flight_per_client_are_capped(edge: Edge) -> None:
    """Two 2 MiB uploads held open from one address pass 3 MiB: the second is a 429
    before it is read; once the first is done, the next one is served."""
    port = edge.queen.port
    headers = {
        "Authorization": f"Bearer {edge.api_key}",
        "Content-Type": "multipart/form-data; boundary=x",
    }

    async def scenario() -> tuple[Answer, Answer, Answer]:
        hold = asyncio.Event()
        first = asyncio.create_task(
            post(port, "/v1/audio/transcriptions", headers, 2 * MiB, hold=hold, send=MiB)
        )
        await asyncio.sleep(0.5)  # the first one's headers are in, its body half sent
        second = await post(port, "/v1/audio/transcriptions", headers, 2 * MiB)
        hold.set()
        done = await first
        third = await post(port, "/v1/audio/transcriptions", headers, 2 * MiB)
        return done, second, third

    first, second, third = asyncio.run(scenario())
    assert second.status == 429, second
    assert second.body["error"]["type"] == "rate_limit_error"
    assert second.seconds < 2  # answered from its headers
    # The held one and the one after it are read and answered (their forms are not
    # valid: a 400, from Twisted's form parser or the view).
    assert first.status == 400 and third.status == 400, (first, third)


def test_a_malformed_upload_hears_the_apis_error_not_twisteds(edge: Edge) -> None:
    """Twisted's own form parser no longer runs (it answered a bare 400 with no body)."""
    r = httpx.post(
        f"{edge.queen.url}/v1/audio/transcriptions",
        headers={
            "Authorization": f"Bearer {edge.api_key}",
            "Content-Type": "multipart/form-data",  # no boundary
        },
        content=b"--zzz\r\nnot a part header\r\n\r\n" + b"x" * 1000,
    )
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "invalid_request_error"


def held(port: int, path: str, headers: dict[str, str], length: int) -> Answer:
    """POST `length` declared bytes but send only 64 KiB of them: an answer can only come
    from the request line and headers (a server waiting for the body would wait forever)."""

    async def go() -> Answer:
        never = asyncio.Event()
        return await post(port, path, headers, length, hold=never, send=65536, wait=15)

    return asyncio.run(go())


def test_a_percent_encoded_v1_path_gets_the_early_checks(edge: Edge) -> None:
    """Daphne hands the application the decoded path, so /%76%31/chat/completions is
    /v1/chat/completions to Django: the edge must treat it so (early 401, JSON ceiling).
    2 MiB: over both of those thresholds, under the fixture's in-flight cap."""
    port = edge.queen.port
    json_headers = {"Content-Type": "application/json"}
    for path in ("/%76%31/chat/completions", "/v1%2Fchat%2Fcompletions", "/%76%31/embeddings"):
        answer = held(port, path, json_headers, 2 * MiB)
        assert answer.status == 401, (path, answer)
        assert answer.body["error"]["code"] == "invalid_api_key"
    # With a valid key, the JSON ceiling (not the upload ceiling) applies.
    authed = {**json_headers, "Authorization": f"Bearer {edge.api_key}"}
    answer = held(port, "/%76%31/chat/completions", authed, 2 * MiB)
    assert answer.status == 413 and answer.body["error"]["code"] == "request_too_large"
    # A client cannot move the path with Daphne-Root-Path (only a trusted proxy may).
    rooted = {**json_headers, "Daphne-Root-Path": "/x"}
    answer = held(port, "/x/v1/chat/completions", rooted, 2 * MiB)
    assert answer.status in (401, 413), answer


@pytest.mark.parametrize(
    ("path", "ctype", "length"),
    [
        ("/api/tenants", "application/json", 5 * 1000 * 1000),
        ("/stripe/webhook", "application/json", 5 * 1000 * 1000),
        # Under the fixture's in-flight cap, so only a ceiling can refuse them:
        ("/api/tenants", "application/json", 2 * MiB),
        ("/api/tenants", "multipart/form-data; boundary=x", 2 * MiB),
        ("/stripe/webhook", "application/json", 2 * MiB),
        ("/admin/login/", "application/x-www-form-urlencoded", 2 * MiB),
    ],
)
def test_large_bodies_outside_v1_are_413_before_they_are_read(
    edge: Edge, path: str, ctype: str, length: int
) -> None:
    """Nothing outside /v1 takes uploads: 5 MB to the management API, Stripe's webhook or
    the admin is refused from its headers, unauthenticated as it is."""
    answer = held(edge.queen.port, path, {"Content-Type": ctype}, length)
    assert answer.status == 413, answer
    assert answer.body["error"]["code"] == "request_too_large"
    assert "message" in answer.body["error"] and "type" not in answer.body["error"]
    assert answer.seconds < 5


def test_small_requests_are_not_held_up(edge: Edge) -> None:
    """Under the early-auth threshold, the view answers as it always did."""
    r = httpx.post(f"{edge.queen.url}/v1/chat/completions", json={"model": "x"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"


# --- the audio quota is enforced at admission -------------------------------------------

WHISPER = "whisper-base"


def tone_wav(seconds: float, rate: int = 16000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        n = int(seconds * rate)
        w.writeframes(
            b"".join(
                struct.pack("<h", int(2000 * math.sin(2 * math.pi * 220 * i / rate)))
                for i in range(n)
            )
        )
    return buf.getvalue()


def test_the_audio_quota_refuses_the_second_long_transcription() -> None:
    """A plan of 60 audio seconds a day: a 35 s file is served and counted as 35 s; a
    second one would pass the quota, so it is refused at admission (429) rather than
    transcribed and counted afterwards."""
    dep = Deployment()
    try:
        queen = Queen(dep)
        Hive(dep, queen, "hive-w", [WHISPER], wait=False)
        queen.wait_for_model("hive-w", WHISPER, timeout=300)
        dep.rbee("plan", "set", "listen", "audio_seconds_per_day=60")
        dep.rbee("tenant", "create", "acme", "--plan", "listen")
        key = dep.rbee("key", "create", "--tenant", "acme").stdout.strip()
        client = openai.OpenAI(base_url=f"{queen.url}/v1", api_key=key, max_retries=0)
        clip = tone_wav(35.0)
        first = client.audio.transcriptions.create(
            model=WHISPER, file=("a.wav", clip), response_format="verbose_json", timeout=300
        )
        assert first.duration == pytest.approx(35.0, abs=0.1)
        with pytest.raises(openai.RateLimitError) as exc:
            client.audio.transcriptions.create(model=WHISPER, file=("b.wav", clip), timeout=300)
        error = exc.value.body
        assert isinstance(error, dict) and error["code"] == "insufficient_quota", error
        assert "audio seconds" in error["message"]
        # Reconciled: what is counted is the worker's real duration, once.
        rows = dep.sql("SELECT audio_seconds FROM billing_usageevent WHERE outcome = 'ok'")
        assert [round(r[0]) for r in rows] == [35], rows
    finally:
        dep.close()


def test_a_header_that_under_states_the_duration_is_refused_by_the_hive() -> None:
    """30 s of audio under a WAV header that says 1 s reserves 1 s of the quota; the hive
    is told to decode no more than that (plus slack) and refuses it, and the queen says
    the header under-stated the duration. (An honest 35 s file is transcribed under the
    same rule: test_the_audio_quota_refuses_the_second_long_transcription.)"""
    dep = Deployment()
    try:
        queen = Queen(dep)
        Hive(dep, queen, "hive-w", [WHISPER], wait=False)
        queen.wait_for_model("hive-w", WHISPER, timeout=300)
        dep.rbee("tenant", "create", "acme")
        key = dep.rbee("key", "create", "--tenant", "acme").stdout.strip()
        client = openai.OpenAI(base_url=f"{queen.url}/v1", api_key=key, max_retries=0)
        clip = bytearray(tone_wav(30.0))
        at = clip.index(b"fmt ")
        struct.pack_into("<I", clip, at + 16, 16000 * 2 * 30)  # byte rate: "1 second"
        with pytest.raises(openai.BadRequestError) as exc:
            client.audio.transcriptions.create(
                model=WHISPER, file=("lie.wav", bytes(clip)), timeout=300
            )
        error = exc.value.body
        assert isinstance(error, dict) and error["code"] == "audio_too_long", error
        assert error["param"] == "file"
        assert "header" in error["message"], error
        # Nothing was transcribed, so nothing is counted.
        rows = dep.sql("SELECT audio_seconds FROM billing_usageevent WHERE outcome = 'ok'")
        assert rows == [], rows
    finally:
        dep.close()
