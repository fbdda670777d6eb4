"""A video job's `done` is checked before it is metered: a hive's result without a
decodable MP4 is a failed job (not billed as a completed one), and the seconds a hive
reports are bounded by the seconds the tenant asked for (a hive is not trusted)."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import pytest
from channels.layers import get_channel_layer

from inference.dispatch import Job
from inference.videos import vet_done
from tests.inference.test_dispatch import fake_hive, place

pytestmark = pytest.mark.asyncio

MP4 = base64.b64encode(b"\x00\x00\x00\x18ftypisom").decode()


class _Meter:
    """What Job asks of billing's Meter, recording what finish was given."""

    def __init__(self) -> None:
        self.worker = ""
        self.finished: list[tuple[Any, str]] = []

    def progress(self, prompt_tokens: Any = None, completion_tokens: Any = None) -> None:
        pass

    async def finish(self, reported: Any, outcome: str, worker: str = "", region: str = "") -> None:
        self.finished.append((reported, outcome))


async def _run(done: dict[str, Any], seconds: int = 4) -> tuple[list[dict[str, Any]], _Meter]:
    layer = get_channel_layer()
    channel = await layer.new_channel()
    seen: list[dict[str, Any]] = []
    hive = asyncio.create_task(fake_hive(channel, 1, [done], seen))
    meter = _Meter()
    job = Job(
        job_id="v1",
        model="tiny-video",
        task="video",
        request={"seconds": str(seconds)},
        placements=[place(1, channel)],
        meter=meter,
        vet=vet_done(seconds),
    )
    got = [e async for e in job.events()]
    await hive
    return got, meter


@pytest.mark.parametrize(
    "result",
    [
        {},
        {"video_b64": ""},
        {"video_b64": "not base64!"},
        {"thumbnail_b64": MP4},
        "a string",
    ],
)
async def test_a_done_without_a_video_is_a_failure_not_billed(result: Any) -> None:
    done = {"kind": "done", "result": result, "usage": {"video_seconds": 4.0}}
    got, meter = await _run(done)
    assert got[-1]["kind"] == "error"
    assert got[-1]["code"] == "worker_error"
    assert meter.finished == [(None, "error")]


async def test_the_seconds_billed_are_at_most_those_asked_for() -> None:
    done = {"kind": "done", "result": {"video_b64": MP4}, "usage": {"video_seconds": 9999.0}}
    got, meter = await _run(done, seconds=8)
    assert got[-1]["kind"] == "done"
    assert meter.finished == [({"video_seconds": 8.0}, "ok")]


async def test_a_good_done_is_billed_as_the_worker_reported_it() -> None:
    done = {"kind": "done", "result": {"video_b64": MP4}, "usage": {"video_seconds": 4.0}}
    got, meter = await _run(done)
    assert got == [done]
    assert meter.finished == [({"video_seconds": 4.0}, "ok")]
