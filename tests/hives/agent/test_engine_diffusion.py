"""The diffusers engine on a tiny random Stable Diffusion pipeline built here.

The pipeline draws noise, but it is saved and loaded like a real one, so every
code path (loading, sizes, seeds, img2img, cancellation, PNG output) is real.
"""

from __future__ import annotations

import base64
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from PIL import Image

from hives.agent.engines import get_engine
from hives.agent.engines.base import EngineError
from hives.agent.engines.diffusion import DiffusersEngine, offered_sizes
from hives.agent.tinysd import build_tiny_sd
from hives.spec import ModelSpec


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_sd(tmp_path_factory.mktemp("models") / "tiny-sd")


@pytest.fixture(scope="module")
def engine(tiny_sd: Path) -> Iterator[DiffusersEngine]:
    eng = get_engine("diffusers")
    assert isinstance(eng, DiffusersEngine)
    eng.load(ModelSpec(name="tiny-sd", engine="diffusers", source=str(tiny_sd)))
    yield eng
    eng.unload()


def draw(engine: DiffusersEngine, task: str = "image", **request: Any) -> list[bytes]:
    events = list(engine.run(task, request, lambda: False))
    assert len(events) == 1 and events[0]["kind"] == "done"
    images = events[0]["result"]["images"]
    assert events[0]["usage"] == {"images": len(images)}
    return [base64.b64decode(b) for b in images]


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(np.int16)


def png_size(data: bytes) -> tuple[int, int]:
    img = Image.open(io.BytesIO(data))
    assert img.format == "PNG"
    return img.size


def test_build_is_idempotent_and_writes_rbee_options(tiny_sd: Path) -> None:
    assert json.loads((tiny_sd / "rbee.json").read_text())["sizes"] == [
        "64x64",
        "128x128",
        "256x256",
    ]
    stamp = (tiny_sd / "model_index.json").stat().st_mtime_ns
    assert build_tiny_sd(tiny_sd) == tiny_sd
    assert (tiny_sd / "model_index.json").stat().st_mtime_ns == stamp
    assert not [p for p in tiny_sd.parent.iterdir() if p.name.startswith(".")]  # no leftovers


def test_png_of_the_requested_size(engine: DiffusersEngine) -> None:
    [png] = draw(engine, prompt="a bee on a flower", size="64x64", seed=1)
    assert png_size(png) == (64, 64)
    [wide] = draw(engine, prompt="a bee", size="128x128", seed=1)
    assert png_size(wide) == (128, 128)


def test_seeds_repeat_and_n_images_differ(engine: DiffusersEngine) -> None:
    a = draw(engine, prompt="a hive", n=2, size="64x64", seed=7)
    b = draw(engine, prompt="a hive", n=2, size="64x64", seed=7)
    assert len(a) == 2 and a == b
    assert a[0] != a[1]
    # image i of a request is the image a request seeded seed+i would draw first (up to
    # rounding: a batch of two is computed with slightly different float kernels)
    [c] = draw(engine, prompt="a hive", size="64x64", seed=8)
    assert pixels(c).shape == pixels(a[1]).shape
    assert np.abs(pixels(c) - pixels(a[1])).max() <= 2
    assert np.abs(pixels(a[0]) - pixels(a[1])).mean() > 10


def test_size_not_offered_is_refused(engine: DiffusersEngine) -> None:
    with pytest.raises(EngineError) as err:
        draw(engine, prompt="x", size="1024x1024")
    assert err.value.status == 400
    assert err.value.code == "invalid_size"
    assert err.value.param == "size"
    assert "64x64, 128x128, 256x256" in err.value.message


def test_vary_image_from_a_generated_png(engine: DiffusersEngine) -> None:
    [png] = draw(engine, prompt="a bee", size="128x128", seed=3)
    # upload a JPEG of another size: it is cropped/resized to the requested one
    jpeg = io.BytesIO()
    Image.open(io.BytesIO(png)).convert("RGB").resize((100, 80)).save(jpeg, format="JPEG")
    for upload in (png, jpeg.getvalue()):
        b64 = base64.b64encode(upload).decode()
        out = draw(engine, "image_variation", image_b64=b64, size="64x64", n=2, seed=5)
        assert [png_size(o) for o in out] == [(64, 64), (64, 64)]
    again = draw(engine, "image_variation", image_b64=b64, size="64x64", n=2, seed=5)
    assert again == out


@pytest.mark.parametrize(
    "upload",
    [b"this is not an image", b"", "truncated"],
)
def test_bad_upload_is_refused(engine: DiffusersEngine, upload: bytes | str) -> None:
    if upload == "truncated":
        [png] = draw(engine, prompt="a bee", size="64x64", seed=3)
        upload = png[: len(png) // 2]
    assert isinstance(upload, bytes)
    with pytest.raises(EngineError) as err:
        draw(engine, "image_variation", image_b64=base64.b64encode(upload).decode(), size="64x64")
    assert (err.value.status, err.value.code, err.value.param) == (400, "invalid_image", "image")


def test_cancellation_stops_between_steps(engine: DiffusersEngine) -> None:
    checks = 0

    def cancelled() -> bool:
        nonlocal checks
        checks += 1
        return True

    with pytest.raises(EngineError) as err:
        list(engine.generate_image({"prompt": "x", "size": "64x64", "steps": 50}, cancelled))
    assert err.value.code == "cancelled"
    assert checks == 1  # stopped after the first step, not after fifty


def test_sizes_and_memory_estimate_without_loading(tiny_sd: Path) -> None:
    assert offered_sizes("stabilityai/stable-diffusion-xl-base-1.0", {}) == [
        "1024x1024",
        "1024x1792",
        "1792x1024",
    ]
    assert offered_sizes("runwayml/stable-diffusion-v1-5", {}) == [
        "256x256",
        "512x512",
        "1024x1024",
    ]
    assert offered_sizes("x", {"sizes": ["512x768"]}) == ["512x768"]
    eng = DiffusersEngine()
    spec = ModelSpec(name="tiny-sd", engine="diffusers", source=str(tiny_sd))
    estimate = eng.memory_estimate_bytes(spec)
    assert 0 < estimate < 200 * 1024**2
    assert eng.pipe is None


def test_tiny_sdxl_loads_and_draws(tmp_path_factory: pytest.TempPathFactory) -> None:
    src = build_tiny_sd(tmp_path_factory.mktemp("models") / "tiny-sdxl", kind="sdxl")
    eng = DiffusersEngine()
    eng.load(ModelSpec(name="tiny-sdxl", engine="diffusers", source=str(src)))
    try:
        assert type(eng.pipe).__name__ == "StableDiffusionXLPipeline"
        assert eng.sizes == ["64x64", "128x128", "256x256"]  # from its rbee.json
        [png] = draw(eng, prompt="a bee", size="64x64", seed=1)
        assert png_size(png) == (64, 64)
        b64 = base64.b64encode(png).decode()
        [var] = draw(eng, "image_variation", image_b64=b64, size="128x128", prompt="a hive")
        assert png_size(var) == (128, 128)
    finally:
        eng.unload()


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares width x height, with almost no pixel data: what a decompression
    bomb shows before a byte of it is decoded."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("size", [(20000, 10000), (5000, 5000)])
def test_an_upload_declaring_too_many_pixels_is_a_400_before_decoding(
    size: tuple[int, int],
) -> None:
    """20000x10000 is past PIL's own bomb ceiling (which raised a bare exception: a 500);
    5000x5000 is past rbee's cap of 4096x4096 pixels."""
    import base64

    from hives.agent.engines.base import EngineError
    from hives.agent.engines.diffusion import decode_upload

    with pytest.raises(EngineError) as caught:
        decode_upload(base64.b64encode(_png_header(*size)).decode())
    assert caught.value.status == 400 and caught.value.code == "image_too_large"
