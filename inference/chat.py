"""POST /v1/chat/completions: what differs from the other endpoints (inference/pipeline.py
does the rest): the body, the job's messages, and OpenAI's chat.completion framing."""

from __future__ import annotations

import json
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
    TextAnswer,
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
    chars += len(json.dumps(job_request.get("tools") or []))  # the template renders them too
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

    def __init__(self, stream_id: str, model: str, *, logprobs: bool = False) -> None:
        super().__init__(stream_id, model)
        self.logprobs = logprobs  # the client asked for them

    def opening(self) -> list[dict[str, Any]]:
        return [self._delta({"role": "assistant", "content": ""})]

    def delta(self, text: str, logprobs: list[dict[str, Any]]) -> dict[str, Any]:
        return self._delta({"content": text}, logprobs)

    def tool_call_delta(self, pieces: list[dict[str, Any]]) -> dict[str, Any]:
        return self._delta({"tool_calls": pieces})

    def _delta(
        self, delta: dict[str, Any], logprobs: list[dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        lp = {"content": logprobs, "refusal": None} if logprobs else None
        return self.chunk([{"index": 0, "delta": delta, "logprobs": lp, "finish_reason": None}])

    def finish(self, reason: str) -> dict[str, Any]:
        return self.chunk([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": reason}])

    def whole(self, answer: TextAnswer, usage: dict[str, int]) -> dict[str, Any]:
        message: dict[str, Any] = {
            "role": "assistant",
            # OpenAI: null when the answer is only calls.
            "content": answer.text if answer.text or not answer.tool_calls else None,
            "refusal": None,
        }
        if answer.tool_calls:
            message["tool_calls"] = answer.tool_calls
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": (
                        {"content": answer.logprobs, "refusal": None} if self.logprobs else None
                    ),
                    "finish_reason": answer.finish_reason,
                }
            ],
            "usage": usage,
        }


async def respond(call: Call[ChatCompletionRequest]) -> HttpResponseBase:
    req = call.body
    return await text_response(
        call.job,
        ChatFormat(f"chatcmpl-{uuid.uuid4().hex}", req.model, logprobs=bool(req.logprobs)),
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
