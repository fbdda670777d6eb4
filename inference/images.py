"""POST /v1/images/generations and /v1/images/variations (multipart, with the image), and
GET /v1/images/content/<token>.png for images answered as URLs. What differs from the other
endpoints: the bodies, the upload's checks, and where the images go; inference/pipeline.py
does the rest."""

from __future__ import annotations

import base64
import secrets
import time
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.http.response import HttpResponseBase
from django.utils import timezone

from billing.limits import Cost
from hives.models import CatalogModel
from hives.protocol import Task
from inference import schemas
from inference.errors import APIError, bad_request
from inference.models import GeneratedImage
from inference.pipeline import Call, Resource, Work, endpoint, read_form, read_json, result
from inference.schemas import ImageGenerationRequest, ImageVariationForm
from kernel.aio import db


def _size(size: str | None) -> str | None:
    return None if size in (None, "auto") else size


# --- generations -------------------------------------------------------------------------


def parse_generation(request: HttpRequest) -> ImageGenerationRequest:
    return schemas.validate_image_generation(read_json(request))


def generation_work(req: ImageGenerationRequest, model: CatalogModel) -> Work:
    n = req.n or 1
    return Work(
        request={
            "prompt": req.prompt,
            "n": n,
            "size": _size(req.size),
            "seed": req.seed,
            "steps": req.steps,
            "guidance_scale": req.guidance_scale,
            "negative_prompt": req.negative_prompt,
        },
        size=n,
        cost=Cost(images=n),
        model=req.model or model.name,
        extra=req.model_extra or {},
    )


# --- variations --------------------------------------------------------------------------

Variation = tuple[ImageVariationForm, bytes]


def parse_variation(request: HttpRequest) -> Variation:
    fields, files = read_form(request)
    req = schemas.validate_image_variation(fields)
    if "image" not in files:
        raise bad_request(
            "Missing required parameter: 'image' (a PNG file).",
            param="image",
            code="missing_required_parameter",
        )
    data = files["image"][1]
    if not data:
        raise bad_request("The image file is empty.", param="image", code="invalid_image")
    if len(data) > schemas.MAX_IMAGE_UPLOAD:
        raise bad_request(
            f"Invalid image: it is {len(data)} bytes; images must be smaller than 4 MB.",
            param="image",
            code="image_too_large",
        )
    if schemas.image_kind(data) is None:
        raise bad_request(
            "Invalid image: upload a PNG (JPEG and WebP are accepted too).",
            param="image",
            code="invalid_image_format",
        )
    return req, data


def variation_work(body: Variation, model: CatalogModel) -> Work:
    req, data = body
    n = req.n or 1
    return Work(
        request={
            "image_b64": base64.b64encode(data).decode("ascii"),
            "n": n,
            "size": _size(req.size),
            "seed": req.seed,
            "prompt": req.prompt,
            "strength": req.strength,
        },
        size=n,
        cost=Cost(images=n),
        model=req.model or model.name,
        extra=req.model_extra or {},
    )


# --- the answer: base64, or URLs served from the queen -----------------------------------


async def respond_generation(call: Call[ImageGenerationRequest]) -> HttpResponseBase:
    return await _images(call, call.body.response_format)


async def respond_variation(call: Call[Variation]) -> HttpResponseBase:
    return await _images(call, call.body[0].response_format)


async def _images(call: Call[Any], response_format: str | None) -> HttpResponseBase:
    n = int(call.work.request["n"])
    done = await result(call.job)
    images = (done.get("result") or {}).get("images")
    if not isinstance(images, list) or len(images) != n:
        raise APIError(502, "The worker returned no images.", code="worker_error")
    if response_format == "b64_json":
        data = [{"b64_json": str(b64)} for b64 in images]
    else:
        tokens = await db(store_images, [str(b) for b in images], settings.RBEE_IMAGE_URL_TTL)
        base = call.request.build_absolute_uri("/v1/images/content/")
        data = [{"url": f"{base}{t}.png"} for t in tokens]
    return JsonResponse({"created": int(time.time()), "data": data})


def store_images(images: list[str], ttl: int) -> list[str]:
    """Keep PNGs for `ttl` seconds under unguessable tokens; drop the expired ones."""
    now = timezone.now()
    GeneratedImage.objects.filter(expires_at__lt=now).delete()
    tokens = []
    for b64 in images:
        token = secrets.token_urlsafe(32)
        GeneratedImage.objects.create(
            token=token,
            content=base64.b64decode(b64),
            expires_at=now + timedelta(seconds=ttl),
        )
        tokens.append(token)
    return tokens


@endpoint("GET")
async def content(request: HttpRequest, token: str) -> HttpResponseBase:
    """An image answered as a URL. The unguessable token is the credential (as with
    OpenAI's signed URLs), so links work in a browser or an <img> tag."""

    def fetch() -> GeneratedImage | None:
        return GeneratedImage.objects.filter(token=token, expires_at__gte=timezone.now()).first()

    image = await db(fetch)
    if image is None:
        raise APIError(404, "This image does not exist or has expired.", code="not_found")
    resp = HttpResponse(bytes(image.content), content_type=image.content_type)
    left = max(0, int((image.expires_at - timezone.now()).total_seconds()))
    resp["Cache-Control"] = f"private, max-age={left}"
    return resp


GENERATIONS = Resource(
    task=Task.IMAGE,
    capability=CatalogModel.Capability.IMAGE_GEN,
    parse=parse_generation,
    model=lambda req: req.model,
    work=generation_work,
    respond=respond_generation,
)

VARIATIONS = Resource(
    task=Task.IMAGE_VARIATION,
    capability=CatalogModel.Capability.IMAGE_GEN,
    parse=parse_variation,
    model=lambda body: body[0].model,
    work=variation_work,
    respond=respond_variation,
)
