"""GET /v1/models and /v1/models/<id>: the models served now (a key is needed, as with
OpenAI; no job runs, so only the pipeline's first step applies)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse

from hives import selectors as hive_selectors
from inference.errors import APIError
from inference.pipeline import authenticate, bearer, endpoint
from kernel.aio import db


def _entry(served: hive_selectors.Served) -> dict[str, Any]:
    """OpenAI's Model object, plus what it does, where it runs and its other names."""
    model = served.model
    return {
        "id": model.name,
        "object": "model",
        "created": int(model.created_at.timestamp()),
        "owned_by": "rbee",
        "capability": model.capability,
        "engine": model.engine,
        "hives": served.hives,
        "placements": served.placements,
        "aliases": sorted(served.aliases),
    }


@endpoint("GET")
async def models_list(request: HttpRequest) -> HttpResponse:
    await db(authenticate, bearer(request), request.META.get("HTTP_HOST", ""))
    served = await db(hive_selectors.served_models)
    return JsonResponse({"object": "list", "data": [_entry(m) for m in served]})


@endpoint("GET")
async def model_detail(request: HttpRequest, model_id: str) -> HttpResponse:
    await db(authenticate, bearer(request), request.META.get("HTTP_HOST", ""))
    served = await db(hive_selectors.served_models)
    for entry in served:
        if model_id == entry.model.name or model_id in entry.aliases:
            return JsonResponse(_entry(entry))
    raise APIError(
        404, f"The model '{model_id}' does not exist.", param="model", code="model_not_found"
    )
