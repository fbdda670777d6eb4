"""diffusers text-to-video: AnimateDiff, Wan, LTX-Video, CogVideoX (CUDA for real use).

The pipeline is loaded with `DiffusionPipeline.from_pretrained`, which picks the class
from the model's model_index.json (WanPipeline, LTXPipeline, CogVideoXPipeline, or an
AnimateDiffPipeline saved whole, as hives/agent/tinyvideo.py writes one). An AnimateDiff
that is a Stable Diffusion base plus a motion adapter names the adapter in its options
(`motion_adapter=guoyww/animatediff-motion-adapter-v1-5-2`).

What the API offers is decided here, from spec.options over rbee.json over defaults by
pipeline family: the sizes, the frame rate, the step count, and the frame-count rule
of the family (Wan and CogVideoX take 4k+1 frames, LTX-Video 8k+1). A clip of S seconds
has round(S * fps) frames, rounded up to the family's rule, and is encoded at fps.

The pipeline runs in a thread of its own so that the job can report its progress
between denoising steps (`progress` events, which also keep a long job alive at the
queen); cancellation stops between two steps. The frames are encoded to MP4 (H.264
when the FFmpeg inside PyAV has an encoder for it, else MPEG-4 Part 2) with PyAV, and
a WebP thumbnail (the first frame) and a JPEG spritesheet come with it: the three
variants of OpenAI's GET /v1/videos/{id}/content.
"""

from __future__ import annotations

import base64
import io
import math
import os
import queue
import random
import tempfile
import threading
from collections.abc import Iterator
from typing import Any

from hives.agent.engines.base import Cancelled, Engine, EngineError, hub_ref
from hives.agent.engines.diffusion import (
    accepts,
    dtype_kwarg,
    merged_options,
    parse_size,
    safetensors_only,
)
from hives.agent.engines.torchutil import (
    dtype_bytes,
    free_device_memory,
    torch_device,
    torch_dtype,
    weights_bytes,
)
from hives.protocol import Capability, EventKind
from hives.spec import ModelSpec

DEFAULT_SECONDS = ("4", "8", "12")
DEFAULT_STEPS = 25
SPRITES = 8  # frames in the spritesheet, side by side

# Per pipeline family (by class name): sizes, fps, and the frame rule (multiple, plus).
FAMILIES: dict[str, dict[str, Any]] = {
    "Wan": {"sizes": ["832x480", "480x832"], "fps": 16, "frames": (4, 1)},
    "LTX": {"sizes": ["768x512", "512x768"], "fps": 24, "frames": (8, 1)},
    "CogVideoX": {"sizes": ["720x480"], "fps": 8, "frames": (4, 1)},
    "AnimateDiff": {"sizes": ["512x512"], "fps": 8, "frames": (1, 0)},
}


class _Interrupted(Exception):
    """Raised from the step callback to leave the pipeline when the job is cancelled."""


def listed(value: Any) -> list[str]:
    """An option that lists values: a list (rbee.json), or one value or a comma-separated
    string (`?sizes=512x512,768x512` on the command line)."""
    if value is None or value == "":
        return []
    if isinstance(value, list | tuple):
        return [str(v).strip() for v in value if str(v).strip()]
    return [v.strip() for v in str(value).split(",") if v.strip()]


def family_of(pipe: Any) -> dict[str, Any]:
    name = type(pipe).__name__
    for prefix, family in FAMILIES.items():
        if name.startswith(prefix):
            return family
    return FAMILIES["AnimateDiff"]


def frame_count(seconds: int, fps: int, rule: tuple[int, int]) -> int:
    """round(seconds * fps) frames, raised to the next count the family takes
    (multiple * k + plus)."""
    multiple, plus = rule
    wanted = max(1, round(seconds * fps))
    if multiple <= 1:
        return wanted
    k = max(1, math.ceil((wanted - plus) / multiple))
    return multiple * k + plus


def encode_mp4(frames: list[Any], fps: int) -> bytes:
    """RGB PIL frames as an MP4 (yuv420p, moov atom first so it plays while downloading)."""
    width, height = frames[0].size
    # faststart rewrites the file at the end (it reopens it by name): a temporary file.
    with tempfile.TemporaryDirectory(prefix="rbee-video-") as where:
        path = os.path.join(where, "video.mp4")
        _write_mp4(path, frames, fps, width, height)
        with open(path, "rb") as f:
            return f.read()


def _write_mp4(path: str, frames: list[Any], fps: int, width: int, height: int) -> None:
    import av

    with av.open(path, mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        stream: Any = container.add_stream(codec, rate=fps)
        stream.width, stream.height = width - width % 2, height - height % 2
        stream.pix_fmt = "yuv420p"
        for image in frames:
            frame = av.VideoFrame.from_image(image.convert("RGB"))
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def thumbnail_webp(frame: Any) -> bytes:
    buf = io.BytesIO()
    frame.convert("RGB").save(buf, format="WEBP")
    return buf.getvalue()


def spritesheet_jpeg(frames: list[Any]) -> bytes:
    """Up to SPRITES frames, evenly spaced, side by side in one JPEG."""
    from PIL import Image

    step = max(1, len(frames) // SPRITES)
    picked = frames[::step][:SPRITES]
    width, height = picked[0].size
    sheet = Image.new("RGB", (width * len(picked), height))
    for i, frame in enumerate(picked):
        sheet.paste(frame.convert("RGB"), (i * width, 0))
    buf = io.BytesIO()
    sheet.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class DiffusersVideoEngine(Engine):
    name = "diffusers-video"
    capabilities = (Capability.VIDEO_GEN,)
    slots = 1  # one pipeline, not safe to call from two threads

    def __init__(self) -> None:
        self.pipe: Any = None
        self.device = "cpu"
        self.options: dict[str, Any] = {}
        self.sizes: list[str] = []
        self.fps = 8
        self.seconds: list[str] = list(DEFAULT_SECONDS)
        self.rule: tuple[int, int] = (1, 0)

    def memory_estimate_bytes(self, spec: ModelSpec) -> int:
        weights = weights_bytes(spec.source, dtype_bytes(spec)) if spec.source else 0
        # Activations: the latent video and the VAE's frame-by-frame decode; a fifth of
        # the weights again covers the 1-2B families at their native sizes.
        return int(weights * 1.4)

    def load(self, spec: ModelSpec) -> None:
        self.options = merged_options(spec)
        self.device = torch_device(spec.device)
        dtype = torch_dtype(ModelSpec(**{**spec.to_dict(), "options": self.options}))
        from diffusers.utils import logging as diffusers_logging

        diffusers_logging.disable_progress_bar()  # the worker's stderr is a log, not a tty
        where, revision = hub_ref(spec.source, self.options)
        kwargs: dict[str, Any] = {dtype_kwarg(): dtype}
        if revision:
            kwargs["revision"] = revision
        if safetensors_only(where, revision):
            kwargs["use_safetensors"] = True  # never unpickle when safetensors exist
        try:
            pipe = self._pipeline(where, kwargs, dtype)
        except (OSError, ValueError) as exc:
            raise EngineError(
                f"cannot load the video pipeline {spec.source!r}: {exc}",
                status=503,
                code="model_missing",
            ) from exc
        pipe = pipe.to(self.device)
        pipe.set_progress_bar_config(disable=True)
        family = family_of(pipe)
        self.pipe = pipe
        self.sizes = listed(self.options.get("sizes")) or list(family["sizes"])
        self.fps = max(1, int(self.options.get("fps") or family["fps"]))
        self.seconds = listed(self.options.get("seconds")) or list(DEFAULT_SECONDS)
        rule = self.options.get("frame_rule") or family["frames"]
        self.rule = (int(rule[0]), int(rule[1]))

    def _pipeline(self, where: str, kwargs: dict[str, Any], dtype: Any) -> Any:
        adapter = self.options.get("motion_adapter")
        if adapter:
            from diffusers import AnimateDiffPipeline, MotionAdapter

            adapter_where, adapter_rev = hub_ref(str(adapter))
            motion = MotionAdapter.from_pretrained(
                adapter_where, revision=adapter_rev, **{dtype_kwarg(): dtype}
            )
            return AnimateDiffPipeline.from_pretrained(where, motion_adapter=motion, **kwargs)
        from diffusers import DiffusionPipeline

        return DiffusionPipeline.from_pretrained(where, **kwargs)

    def unload(self) -> None:
        self.pipe = None
        free_device_memory(self.device)

    # -- request helpers -------------------------------------------------------------

    def _size(self, request: dict[str, Any]) -> tuple[str, int, int]:
        size = str(request.get("size") or self.sizes[0])
        if size not in self.sizes:
            raise EngineError(
                f"Invalid size {size!r}: this model offers {', '.join(self.sizes)}.",
                status=400,
                code="invalid_size",
                param="size",
            )
        width, height = parse_size(size)
        return size, width, height

    def _seconds(self, request: dict[str, Any]) -> int:
        seconds = str(request.get("seconds") or self.seconds[0])
        if seconds not in self.seconds:
            raise EngineError(
                f"Invalid seconds {seconds!r}: this model makes clips of "
                f"{', '.join(self.seconds)} seconds.",
                status=400,
                code="invalid_value",
                param="seconds",
            )
        return int(seconds)

    def _frames(self, seconds: int) -> int:
        frames = frame_count(seconds, self.fps, self.rule)
        most = self.options.get("max_frames")
        if most is not None and frames > int(most):
            raise EngineError(
                f"Invalid seconds {seconds}: this model makes at most {int(most)} frames "
                f"({int(most) // self.fps} seconds at {self.fps} fps).",
                status=400,
                code="invalid_value",
                param="seconds",
            )
        return frames

    # -- the task --------------------------------------------------------------------

    def generate_video(
        self, request: dict[str, Any], cancelled: Cancelled
    ) -> Iterator[dict[str, Any]]:
        import torch

        size, width, height = self._size(request)
        seconds = self._seconds(request)
        frames = self._frames(seconds)
        steps = max(1, int(request.get("steps") or self.options.get("steps") or DEFAULT_STEPS))
        seed = request.get("seed")
        seed = int(seed) if seed is not None else random.getrandbits(31)
        where = self.device if self.device.startswith("cuda") else "cpu"
        reports: queue.Queue[tuple[str, Any]] = queue.Queue()

        def on_step_end(pipe: Any, step: int, timestep: Any, kwargs: dict[str, Any]) -> Any:
            if cancelled():
                raise _Interrupted
            # 0-95 for the denoising; the decode and the encoding are the rest.
            reports.put(("progress", min(95, int(95 * (step + 1) / steps))))
            return kwargs

        kwargs: dict[str, Any] = {
            "prompt": str(request.get("prompt") or ""),
            "num_frames": frames,
            "width": width,
            "height": height,
            "num_inference_steps": steps,
            "generator": torch.Generator(device=where).manual_seed(seed),
            "callback_on_step_end": on_step_end,
            "output_type": "pil",
        }
        if request.get("negative_prompt"):
            kwargs["negative_prompt"] = str(request["negative_prompt"])
        guidance = self.options.get("guidance_scale")
        if guidance is not None:
            kwargs["guidance_scale"] = float(guidance)
        if accepts(self.pipe, "frame_rate"):  # LTX-Video conditions on it
            kwargs["frame_rate"] = self.fps

        def work() -> None:
            try:
                with torch.inference_mode():
                    reports.put(("done", self.pipe(**kwargs).frames[0]))
            except BaseException as exc:  # handed to the job's thread, raised there
                reports.put(("error", exc))

        yield {"kind": EventKind.PROGRESS, "progress": 0}
        runner = threading.Thread(target=work, name="video-pipeline", daemon=True)
        runner.start()
        while True:
            what, value = reports.get()
            if what == "progress":
                yield {"kind": EventKind.PROGRESS, "progress": value}
            elif what == "done":
                images = list(value)
                break
            else:
                runner.join()
                if isinstance(value, _Interrupted):
                    raise EngineError("the request was cancelled", status=499, code="cancelled")
                raise value
        runner.join()
        images = [
            img if img.size == (width, height) else img.resize((width, height)) for img in images
        ]
        video = encode_mp4(images, self.fps)
        yield {
            "kind": EventKind.DONE,
            "result": {
                "video_b64": _b64(video),
                "thumbnail_b64": _b64(thumbnail_webp(images[0])),
                "spritesheet_b64": _b64(spritesheet_jpeg(images)),
                "frames": len(images),
                "fps": self.fps,
                "seconds": len(images) / self.fps,
                "size": size,
            },
            "usage": {"video_seconds": len(images) / self.fps},
        }
