"""POST /v1/embeddings: the inputs, and vectors as floats or OpenAI's base64 (little-endian
float32); inference/pipeline.py does the rest."""

from __future__ import annotations

import base64
import struct
from typing import Any

from django.http import HttpRequest, JsonResponse
from django.http.response import HttpResponseBase

from billing.limits import Cost
from hives.models import CatalogModel
from hives.protocol import Task
from inference import schemas
from inference.errors import APIError
from inference.pipeline import Call, Resource, Work, count, read_json, result, usage_of
from inference.schemas import EmbeddingRequest


def parse(request: HttpRequest) -> EmbeddingRequest:
    return schemas.validate_embedding(read_json(request))


def work(req: EmbeddingRequest, model: CatalogModel) -> Work:
    inputs = schemas.embedding_inputs(req)
    # Tokens, roughly: a text's characters / 4, a token array's length.
    tokens = sum(len(x) if isinstance(x, list) else len(x) // 4 for x in inputs)
    return Work(
        request={"input": inputs, "dimensions": req.dimensions},
        size=tokens,
        cost=Cost(tokens=tokens + 1),
        model=req.model,
        extra=req.model_extra or {},
    )


async def respond(call: Call[EmbeddingRequest]) -> HttpResponseBase:
    req = call.body
    n = len(call.work.request["input"])
    done = await result(call.job)
    found = done.get("result") or {}
    as_b64 = req.encoding_format == "base64"
    packed = found.get("embeddings_b64")
    vectors = found.get("embeddings")
    if isinstance(packed, list) and len(packed) == n:
        values: list[Any] = [str(b) if as_b64 else floats(str(b)) for b in packed]
    elif isinstance(vectors, list) and len(vectors) == n:
        values = [packed_b64(v) if as_b64 else [float(x) for x in v] for v in vectors]
    else:
        raise APIError(502, "The worker returned no embeddings.", code="worker_error")
    data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(values)]
    tokens = count(usage_of(done).get("prompt_tokens"))
    return JsonResponse(
        {
            "object": "list",
            "data": data,
            "model": req.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )


def floats(packed: str) -> list[float]:
    raw = base64.b64decode(packed)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


def packed_b64(vector: list[float]) -> str:
    """OpenAI's base64 encoding: the little-endian float32 array, base64'd."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


EMBEDDINGS = Resource(
    task=Task.EMBEDDING,
    capability=CatalogModel.Capability.EMBEDDING,
    parse=parse,
    model=lambda req: req.model,
    work=work,
    respond=respond,
)
