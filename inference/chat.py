"""POST /v1/chat/completions: what differs from the other endpoints (inference/pipeline.py
does the rest): the body, the job's messages, and OpenAI's chat.completion framing."""

from __future__ import annotations

import uuid
from typing import Any

from django.http import HttpRequest
from django.http.response import HttpResponseBase

from billing.limits import Cost
from hives.models import CatalogModel
from hives.protocol import Task
from inference import schemas
from inference.pipeline import (
    SYSTEM_FINGERPRINT,
    Call,
    Resource,
    TextFormat,
    Work,
    read_json,
    text_response,
)
from inference.schemas import ChatCompletionRequest


def parse(request: HttpRequest) -> ChatCompletionRequest:
    return schemas.validate_chat(read_json(request))


def work(req: ChatCompletionRequest, model: CatalogModel) -> Work:
    job_request = schemas.chat_job_request(req)
    # Tokens the task may take, roughly: prompt characters / 4 plus the completion budget.
    chars = sum(len(str(m.get("content") or "")) for m in job_request["messages"])
    size = chars // 4 + int(job_request.get("max_tokens") or 256)
    return Work(
        request=job_request,
        size=size,
        cost=Cost(requests=1, tokens=size),
        model=req.model,
        extra=req.model_extra or {},
    )


class ChatFormat(TextFormat):
    chunk_object = "chat.completion.chunk"

    def opening(self) -> list[dict[str, Any]]:
        return [self._delta({"role": "assistant", "content": ""})]

    def delta(self, text: str) -> dict[str, Any]:
        return self._delta({"content": text})

    def _delta(self, delta: dict[str, Any]) -> dict[str, Any]:
        return self.chunk([{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}])

    def finish(self, reason: str) -> dict[str, Any]:
        return self.chunk([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": reason}])

    def whole(self, text: str, finish_reason: str, usage: dict[str, int]) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": finish_reason,
                }
            ],
            "usage": usage,
        }


async def respond(call: Call[ChatCompletionRequest]) -> HttpResponseBase:
    req = call.body
    return await text_response(
        call.job,
        ChatFormat(f"chatcmpl-{uuid.uuid4().hex}", req.model),
        stream=bool(req.stream),
        include_usage=bool(req.stream_options and req.stream_options.include_usage),
    )


CHAT = Resource(
    task=Task.CHAT,
    capability=CatalogModel.Capability.TEXT_GEN,
    parse=parse,
    model=lambda req: req.model,
    work=work,
    respond=respond,
)
