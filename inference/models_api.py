"""GET /v1/models and /v1/models/<id>: the models served now that the caller may use (a
key is needed, as with OpenAI; no job runs, so only the pipeline's first step applies).

A tenant sees only the models its plan and its key's scopes allow (a model it may not use
answers 404 like one that does not exist), and nothing of where they run; an operator's
caller (a key with the `operator` scope, the open local queen) also sees the hives and
placements.

A model is listed while a worker on a live hive serves it or soon will: `ready`, loading
(`starting`: a hive lists its start models so as soon as it connects, and a request for
such a model waits in its queue until a worker is ready: inference/queueing.py), or
unloaded while idle (reloaded by the next request). Refused, failed and stopped workers
do not count (hives.selectors.SERVABLE). Tenants learn nothing more about the state;
operators read it in each placement."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse

from hives import selectors as hive_selectors
from hives.protocol import Capability
from inference.errors import APIError
from inference.pipeline import authenticate, bearer, endpoint
from kernel.aio import db
from tenants.selectors import Caller

# The key scopes (ApiKey.scopes["endpoints"]) under which a model of each capability is
# used; a key that may use none of them does not see the model.
CAPABILITY_SCOPES: dict[str, tuple[str, ...]] = {
    Capability.TEXT_GEN: ("chat", "completions"),
    Capability.EMBEDDING: ("embeddings",),
    Capability.IMAGE_GEN: ("images",),
    Capability.AUDIO_TRANSCRIPTION: ("audio",),
    Capability.AUDIO_GEN: ("audio",),
    Capability.VIDEO_GEN: ("videos",),
}


def usable(caller: Caller, served: hive_selectors.Served) -> bool:
    """Whether the caller's key scopes and plan let it use this model (by name or alias),
    the same rules as billing.gate.check_access."""
    names = {served.model.name, *served.aliases}
    if caller.scope_endpoints and not set(CAPABILITY_SCOPES.get(served.model.capability, ())) & set(
        caller.scope_endpoints
    ):
        return False
    if caller.scope_models and not names & set(caller.scope_models):
        return False
    return not (caller.allowed_models and not names & set(caller.allowed_models))


def _entry(served: hive_selectors.Served, *, operator: bool) -> dict[str, Any]:
    """OpenAI's Model object, plus what it does and its other names; for operators, where
    it runs."""
    model = served.model
    entry: dict[str, Any] = {
        "id": model.name,
        "object": "model",
        "created": int(model.created_at.timestamp()),
        "owned_by": "rbee",
        "capability": model.capability,
        "engine": model.engine,
        "aliases": sorted(served.aliases),
    }
    if operator:
        entry["hives"] = served.hives
        entry["placements"] = served.placements
    return entry


def _visible(request: HttpRequest) -> tuple[Caller, list[hive_selectors.Served]]:
    caller = authenticate(bearer(request), request.META.get("HTTP_HOST", ""))
    return caller, [s for s in hive_selectors.served_models() if usable(caller, s)]


@endpoint("GET")
async def models_list(request: HttpRequest) -> HttpResponse:
    caller, served = await db(_visible, request)
    data = [_entry(m, operator=caller.operator) for m in served]
    return JsonResponse({"object": "list", "data": data})


@endpoint("GET")
async def model_detail(request: HttpRequest, model_id: str) -> HttpResponse:
    caller, served = await db(_visible, request)
    for entry in served:
        if model_id == entry.model.name or model_id in entry.aliases:
            return JsonResponse(_entry(entry, operator=caller.operator))
    raise APIError(
        404, f"The model '{model_id}' does not exist.", param="model", code="model_not_found"
    )
