"""diffusers: text-to-image and image variations (Stable Diffusion 1.x/2.x, SDXL, ...).

One text-to-image pipeline is loaded; the image-to-image pipeline is built from the
same components (`from_pipe`), so variations cost no extra memory.

What the API offers is decided here, not by the pipeline: the sizes a model is
good at (a model trained at 1024x1024 draws nonsense at 256x256), the default step
count. They come from spec.options, merged over an rbee.json next to a local
pipeline (hives/agent/tinysd.py writes one), merged over defaults by pipeline type.

Seeds: image i of a request is drawn with seed+i on its own generator, so the same
request with the same seed gives the same bytes, and the images of one request
differ (image i matches what seed+i alone draws, up to float rounding of the
batch). A request with no seed gets a random one.

Cancellation stops between two denoising steps (the pipeline's
callback_on_step_end raises), so a cancelled job never pays for the VAE decode.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import math
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hives.agent.engines.base import Cancelled, Engine, EngineError, hub_ref
from hives.agent.engines.torchutil import (
    dtype_bytes,
    free_device_memory,
    torch_device,
    torch_dtype,
    weights_bytes,
)
from hives.protocol import Capability, EventKind
from hives.spec import ModelSpec

logger = logging.getLogger("hives.engine.diffusion")

SDXL_SIZES = ["1024x1024", "1024x1792", "1792x1024"]
SD_SIZES = ["256x256", "512x512", "1024x1024"]
DEFAULT_STEPS = 25
DEFAULT_STRENGTH = 0.75
OPTIONS_FILE = "rbee.json"


class _Interrupted(Exception):
    """Raised from the step callback to leave the pipeline when the job is cancelled."""


def local_options(source: str) -> dict[str, Any]:
    """The options in rbee.json inside a local pipeline directory, if any."""
    path = Path(source) / OPTIONS_FILE if source else None
    if path is None or not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        logger.warning("ignoring unreadable %s: %s", path, exc)
        return {}
    return data if isinstance(data, dict) else {}


def merged_options(spec: ModelSpec) -> dict[str, Any]:
    """rbee.json's options with the spec's own on top (the operator has the last word)."""
    return {**local_options(spec.source), **spec.options}


def parse_size(size: Any) -> tuple[int, int]:
    """'WxH' -> (width, height); ValueError for anything else."""
    w, sep, h = str(size).lower().partition("x")
    if not sep:
        raise ValueError(size)
    width, height = int(w), int(h)
    if width <= 0 or height <= 0:
        raise ValueError(size)
    return width, height


def _is_sdxl(source: str, options: dict[str, Any]) -> bool:
    if "pipeline" in options:
        return str(options["pipeline"]).lower() == "sdxl"
    index = Path(source) / "model_index.json"
    if index.is_file():
        try:
            return "XL" in str(json.loads(index.read_text(encoding="utf-8")).get("_class_name"))
        except (OSError, ValueError):
            return False
    return "xl" in source.lower()


def offered_sizes(source: str, options: dict[str, Any]) -> list[str]:
    sizes = options.get("sizes")
    if sizes:
        return [str(s) for s in sizes]
    return list(SDXL_SIZES if _is_sdxl(source, options) else SD_SIZES)


def encode_png(image: Any) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def max_upload_pixels() -> int:
    """The most pixels an uploaded image may have (RBEE_MAX_IMAGE_PIXELS, default 4096 x
    4096): a small file can declare a huge image that decoding would blow up in memory."""
    return int(os.environ.get("RBEE_MAX_IMAGE_PIXELS") or 4096 * 4096)


def decode_upload(image_b64: Any) -> Any:
    """The uploaded image as an RGB PIL image; 400 invalid_image for anything that is
    not a complete PNG/JPEG/WebP (or another format PIL reads), 400 image_too_large for
    one with more pixels than max_upload_pixels (checked from the header, before decoding)."""
    from PIL import Image, UnidentifiedImageError

    limit = max_upload_pixels()
    try:
        raw = base64.b64decode(str(image_b64 or ""), validate=True)
        if not raw:
            raise ValueError("empty upload")
        img = Image.open(io.BytesIO(raw))  # reads the header only
        width, height = img.size
        if width * height > limit:
            raise _too_large(f"{width}x{height}", limit)
        img.load()  # decode fully now: a truncated file fails here, not in the pipeline
        return img.convert("RGB")
    except Image.DecompressionBombError as exc:  # PIL's own ceiling, met while opening
        raise _too_large("too many pixels", limit) from exc
    except (binascii.Error, UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise EngineError(
            f"The uploaded image could not be read ({exc}); send a PNG, JPEG or WebP file.",
            status=400,
            code="invalid_image",
            param="image",
        ) from exc


def _too_large(what: str, limit: int) -> EngineError:
    return EngineError(
        f"The uploaded image is too large ({what}); send one of at most {limit:,} pixels.",
        status=400,
        code="image_too_large",
        param="image",
    )


class DiffusersEngine(Engine):
    name = "diffusers"
    capabilities = (Capability.IMAGE_GEN,)
    slots = 1  # one pipeline, not safe to call from two threads

    def __init__(self) -> None:
        self.pipe: Any = None
        self.img2img: Any = None
        self.device = "cpu"
        self.options: dict[str, Any] = {}
        self.sizes: list[str] = []

    def memory_estimate_bytes(self, spec: ModelSpec) -> int:
        options = merged_options(spec)
        weights = weights_bytes(spec.source, dtype_bytes(spec)) if spec.source else 0
        pixels = max(
            (w * h for w, h in (_safe_size(s) for s in offered_sizes(spec.source, options))),
            default=512 * 512,
        )
        # Activations (attention over the latent, the VAE decode) grow with the image;
        # ~1 KiB per output pixel in half precision covers SD 1.5 at 512 and SDXL at 1024.
        activations = pixels * 512 * dtype_bytes(spec)
        return int(weights * 1.2) + activations

    def load(self, spec: ModelSpec) -> None:
        from diffusers import AutoPipelineForImage2Image, AutoPipelineForText2Image

        self.options = merged_options(spec)
        self.device = torch_device(spec.device)
        dtype = torch_dtype(
            ModelSpec(**{**spec.to_dict(), "options": self.options})  # rbee.json's dtype too
        )
        from diffusers.utils import logging as diffusers_logging

        diffusers_logging.disable_progress_bar()  # the worker's stderr is a log, not a tty
        # org/name@rev (or options.revision): that revision, from the Hub or its cache.
        where, revision = hub_ref(spec.source, self.options)
        kwargs: dict[str, Any] = {dtype_kwarg(): dtype}
        if revision:
            kwargs["revision"] = revision
        if safetensors_only(where, revision):
            # Never unpickle a component (torch.load runs code) when each has safetensors.
            kwargs["use_safetensors"] = True
        try:
            pipe = AutoPipelineForText2Image.from_pretrained(where, **kwargs)
        except (OSError, ValueError) as exc:
            raise EngineError(
                f"cannot load the diffusers pipeline {spec.source!r}: {exc}",
                status=503,
                code="model_missing",
            ) from exc
        pipe = pipe.to(self.device)
        pipe.set_progress_bar_config(disable=True)
        try:
            img2img = AutoPipelineForImage2Image.from_pipe(pipe)
            img2img.set_progress_bar_config(disable=True)
        except ValueError:  # a pipeline type with no image-to-image sibling
            img2img = None
        self.pipe, self.img2img = pipe, img2img
        self.sizes = offered_sizes(spec.source, self.options)

    def unload(self) -> None:
        self.pipe = None
        self.img2img = None
        free_device_memory(self.device)

    # -- request helpers -------------------------------------------------------------

    def _size(self, request: dict[str, Any]) -> tuple[int, int]:
        size = request.get("size") or self.sizes[0]
        if str(size) not in self.sizes:
            raise EngineError(
                f"Invalid size {size!r}: this model offers {', '.join(self.sizes)}.",
                status=400,
                code="invalid_size",
                param="size",
            )
        return parse_size(size)

    def _steps(self, request: dict[str, Any]) -> int:
        steps = request.get("steps") or self.options.get("steps") or DEFAULT_STEPS
        return max(1, int(steps))

    def _generators(self, seed: Any, n: int) -> list[Any]:
        import torch

        base = int(seed) if seed is not None else random.getrandbits(31)
        # MPS generators are not supported everywhere; CPU noise is reproducible anyway.
        where = self.device if self.device.startswith("cuda") else "cpu"
        return [torch.Generator(device=where).manual_seed((base + i) % 2**63) for i in range(n)]

    def _common(self, request: dict[str, Any], cancelled: Cancelled) -> dict[str, Any]:
        n = int(request.get("n") or 1)
        if not 1 <= n <= 10:
            raise EngineError("'n' must be between 1 and 10", status=400, param="n")

        def on_step_end(pipe: Any, step: int, timestep: Any, kwargs: dict[str, Any]) -> Any:
            if cancelled():
                raise _Interrupted
            return kwargs

        return {
            "num_images_per_prompt": n,
            "generator": self._generators(request.get("seed"), n),
            "callback_on_step_end": on_step_end,
            "output_type": "pil",
        }

    def _run(self, pipe: Any, kwargs: dict[str, Any], width: int, height: int) -> list[str]:
        import torch

        try:
            with torch.inference_mode():
                images = pipe(**kwargs).images
        except _Interrupted:
            raise EngineError("the request was cancelled", status=499, code="cancelled") from None
        out = []
        for img in images:
            if img.size != (width, height):  # never happens with sizes divisible by 8
                img = img.resize((width, height))
            out.append(encode_png(img))
        return out

    # -- tasks -----------------------------------------------------------------------

    def generate_image(
        self, request: dict[str, Any], cancelled: Cancelled
    ) -> Iterator[dict[str, Any]]:
        width, height = self._size(request)
        kwargs = self._common(request, cancelled)
        kwargs.update(
            prompt=str(request.get("prompt") or ""),
            width=width,
            height=height,
            num_inference_steps=self._steps(request),
        )
        guidance = request.get("guidance_scale")
        if guidance is None:
            guidance = self.options.get("guidance_scale")
        if guidance is not None:
            kwargs["guidance_scale"] = float(guidance)
        if request.get("negative_prompt"):
            kwargs["negative_prompt"] = str(request["negative_prompt"])
        images = self._run(self.pipe, kwargs, width, height)
        yield {
            "kind": EventKind.DONE,
            "result": {"images": images},
            "usage": {"images": len(images)},
        }

    def vary_image(self, request: dict[str, Any], cancelled: Cancelled) -> Iterator[dict[str, Any]]:
        from PIL import ImageOps

        if self.img2img is None:
            raise EngineError(
                "this model cannot make variations of an image",
                status=400,
                code="unsupported_parameter",
                param="image",
            )
        width, height = self._size(request)
        image = decode_upload(request.get("image_b64"))
        image = ImageOps.fit(image, (width, height))  # keep the aspect: crop, not stretch
        strength = request.get("strength")
        strength = DEFAULT_STRENGTH if strength is None else float(strength)
        if not 0.0 < strength <= 1.0:
            raise EngineError("'strength' must be in (0, 1]", status=400, param="strength")
        # img2img runs int(steps * strength) steps; make that at least one.
        steps = max(self._steps(request), math.ceil(1 / strength))
        kwargs = self._common(request, cancelled)
        kwargs.update(
            prompt=str(request.get("prompt") or ""),
            image=image,
            strength=strength,
            num_inference_steps=steps,
        )
        guidance = self.options.get("guidance_scale")
        if guidance is not None:
            kwargs["guidance_scale"] = float(guidance)
        if accepts(self.img2img, "width"):  # SDXL's img2img also takes the target size
            kwargs.update(width=width, height=height)
        images = self._run(self.img2img, kwargs, width, height)
        yield {
            "kind": EventKind.DONE,
            "result": {"images": images},
            "usage": {"images": len(images)},
        }


def repo_files(where: str, revision: str | None) -> list[str] | None:
    """The files of a pipeline (relative paths): a local directory's, else the Hub
    cache's snapshot of the revision, else (online) the Hub's listing; None when unknown."""
    path = Path(where)
    if path.is_dir():
        return [p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()]
    try:
        from huggingface_hub import snapshot_download

        snapshot = Path(snapshot_download(where, revision=revision, local_files_only=True))
        return [p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file()]
    except Exception:  # not in the cache (or not a repo id): ask the Hub, if we may
        pass
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return None
    try:
        from huggingface_hub import HfApi

        return list(HfApi().list_repo_files(where, revision=revision))
    except Exception as exc:  # the loader says what is wrong, with its own words
        logger.info("could not list %s: %s", where, exc)
        return None


def safetensors_only(where: str, revision: str | None) -> bool:
    """Whether every component of the pipeline has safetensors weights, so the loader
    can be told to take those only (diffusers' use_safetensors=True fails a component
    with pickles only, e.g. a text encoder shipped as a .bin; such a repo loads with the
    default, which still takes safetensors where a component has them)."""
    from hives.agent.download import safetensors_everywhere

    files = repo_files(where, revision)
    return bool(files) and safetensors_everywhere(files or [])


def dtype_kwarg() -> str:
    """Recent diffusers renamed from_pretrained's torch_dtype to dtype (and warn about
    the old name); older releases would ignore an unknown `dtype` silently."""
    from diffusers.utils import deprecation_utils

    return (
        "dtype" if hasattr(deprecation_utils, "_TORCH_DTYPE_DEPRECATION_MESSAGE") else "torch_dtype"
    )


def accepts(pipe: Any, param: str) -> bool:
    import inspect

    try:
        return param in inspect.signature(pipe.__call__).parameters
    except (TypeError, ValueError):
        return False


def _safe_size(size: str) -> tuple[int, int]:
    try:
        return parse_size(size)
    except ValueError:
        return (512, 512)
