"""The diffusers text-to-video engine on the tiny random AnimateDiff pipeline built here.

The pipeline animates noise, but it is saved and loaded like a real one (through
DiffusionPipeline.from_pretrained), so loading, sizes, lengths, seeds, progress,
cancellation and the MP4 encoding are the real code paths; each MP4 is opened with PyAV.
"""

from __future__ import annotations

import base64
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import av
from PIL import Image

from hives.agent.catalog import BUNDLED, materialize, parse_model_arg
from hives.agent.engines import get_engine
from hives.agent.engines.base import EngineError
from hives.agent.engines.video import DiffusersVideoEngine, encode_mp4, frame_count, listed
from hives.agent.tinyvideo import TINY_VIDEO_OPTIONS, build_tiny_video
from hives.protocol import Capability, Task
from hives.spec import ModelSpec


@pytest.fixture(scope="module")
def tiny_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_video(tmp_path_factory.mktemp("models") / "tiny-video")


@pytest.fixture(scope="module")
def engine(tiny_video: Path) -> Iterator[DiffusersVideoEngine]:
    eng = get_engine("diffusers-video")
    assert isinstance(eng, DiffusersVideoEngine)
    # The operator's options go over rbee.json's: one-second clips keep these tests quick.
    eng.load(
        ModelSpec(
            name="tiny-video",
            engine="diffusers-video",
            source=str(tiny_video),
            options={"seconds": ["1", "4"]},
        )
    )
    yield eng
    eng.unload()


def make(engine: DiffusersVideoEngine, **request: Any) -> tuple[list[dict[str, Any]], bytes]:
    events = list(engine.run(Task.VIDEO, {"prompt": "a bee", **request}, lambda: False))
    assert events[-1]["kind"] == "done"
    return events, base64.b64decode(events[-1]["result"]["video_b64"])


def probe(data: bytes) -> tuple[int, float, float, tuple[int, int]]:
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(video=0))
        return (
            frames,
            float(stream.average_rate or 0),
            float(container.duration or 0) / av.time_base,
            (stream.width, stream.height),
        )


def test_the_tiny_pipeline_is_saved_like_a_real_one(tiny_video: Path) -> None:
    index = json.loads((tiny_video / "model_index.json").read_text())
    assert index["_class_name"] == "AnimateDiffPipeline"
    for part in ("unet", "motion_adapter", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert (tiny_video / part).is_dir(), part
    assert list((tiny_video / "unet").glob("*.safetensors"))
    assert json.loads((tiny_video / "rbee.json").read_text()) == TINY_VIDEO_OPTIONS
    assert build_tiny_video(tiny_video) == tiny_video  # idempotent


def test_a_clip_is_an_mp4_of_the_asked_length(engine: DiffusersVideoEngine) -> None:
    events, data = make(engine, seconds="4", seed=3)
    progress = [e["progress"] for e in events if e["kind"] == "progress"]
    assert progress[0] == 0 and progress == sorted(progress) and progress[-1] == 95
    done = events[-1]
    assert done["usage"] == {"video_seconds": 4.0}
    result = done["result"]
    assert (result["frames"], result["fps"], result["seconds"], result["size"]) == (
        16,
        4,
        4.0,
        "64x64",
    )
    frames, fps, duration, size = probe(data)
    assert (frames, fps, size) == (16, 4.0, (64, 64))
    assert duration == pytest.approx(4.0, abs=0.3)
    thumb = Image.open(io.BytesIO(base64.b64decode(result["thumbnail_b64"])))
    assert (thumb.format, thumb.size) == ("WEBP", (64, 64))
    sheet = Image.open(io.BytesIO(base64.b64decode(result["spritesheet_b64"])))
    assert (sheet.format, sheet.size) == ("JPEG", (64 * 8, 64))


def test_the_same_seed_gives_the_same_clip_and_another_size_works(
    engine: DiffusersVideoEngine,
) -> None:
    _, a = make(engine, seconds="1", seed=7)
    _, b = make(engine, seconds="1", seed=7)
    _, c = make(engine, seconds="1", seed=8)
    assert a == b != c
    _, big = make(engine, seconds="1", seed=7, size="128x128")
    assert probe(big)[:2] == (4, 4.0)
    assert probe(big)[3] == (128, 128)


@pytest.mark.parametrize(
    ("request_", "param", "code"),
    [
        ({"size": "1280x720"}, "size", "invalid_size"),
        ({"seconds": "8"}, "seconds", "invalid_value"),  # not among this spec's lengths
    ],
)
def test_what_the_model_does_not_offer_is_the_callers_400(
    engine: DiffusersVideoEngine, request_: dict[str, Any], param: str, code: str
) -> None:
    with pytest.raises(EngineError) as got:
        list(engine.run(Task.VIDEO, {"prompt": "a", **request_}, lambda: False))
    assert (got.value.status, got.value.param, got.value.code) == (400, param, code)


def test_a_cancelled_job_stops_between_steps(engine: DiffusersVideoEngine) -> None:
    with pytest.raises(EngineError) as got:
        list(engine.run(Task.VIDEO, {"prompt": "a", "seconds": "1"}, lambda: True))
    assert (got.value.status, got.value.code) == (499, "cancelled")


def test_the_engine_serves_only_videos(engine: DiffusersVideoEngine) -> None:
    with pytest.raises(EngineError) as got:
        list(engine.run(Task.IMAGE, {"prompt": "a"}, lambda: False))
    assert got.value.code == "wrong_model_type"


@pytest.mark.parametrize(
    ("seconds", "fps", "rule", "frames"),
    [
        (4, 8, (1, 0), 32),  # AnimateDiff: any count
        (4, 16, (4, 1), 65),  # Wan: 4k+1
        (5, 24, (8, 1), 121),  # LTX-Video: 8k+1
        (6, 8, (4, 1), 49),  # CogVideoX: 4k+1
        (1, 1, (4, 1), 5),
    ],
)
def test_frame_counts_follow_the_family(
    seconds: int, fps: int, rule: tuple[int, int], frames: int
) -> None:
    assert frame_count(seconds, fps, rule) == frames


def test_listed_options_come_from_rbee_json_or_the_command_line() -> None:
    assert listed(["64x64", "128x128"]) == ["64x64", "128x128"]
    assert listed("512x512, 768x512") == ["512x512", "768x512"]
    assert listed(4) == ["4"]
    assert listed(None) == listed("") == []


def test_odd_sizes_are_encoded_even() -> None:
    clip = [Image.new("RGB", (33, 17), (i * 20, 0, 0)) for i in range(5)]
    frames, fps, _, size = probe(encode_mp4(clip, 5))
    assert (frames, fps, size) == (5, 5.0, (32, 16))


def test_tiny_video_is_a_bundled_model_built_on_first_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert BUNDLED["tiny-video"]["capability"] == Capability.VIDEO_GEN
    spec = parse_model_arg("tiny-video")
    assert (spec.engine, spec.capability, spec.source) == (
        "diffusers-video",
        Capability.VIDEO_GEN,
        "bundled:tiny-video",
    )
    monkeypatch.setenv("RBEE_MODELS_DIR", str(tmp_path))
    ready = materialize(spec)
    assert Path(ready.source) == tmp_path / "tiny-video"
    assert (tmp_path / "tiny-video" / "model_index.json").is_file()
    wan = parse_model_arg("wan-1.3b")
    assert (wan.engine, wan.source) == ("diffusers-video", "Wan-AI/Wan2.1-T2V-1.3B-Diffusers")
