"""POST /v1/completions (legacy text completions): the body, the prompt (echoed back when
asked) and OpenAI's text_completion framing; inference/pipeline.py does the rest."""

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
    TextAnswer,
    TextFormat,
    Work,
    read_json,
    text_response,
)
from inference.schemas import CompletionRequest
from inference.textparts import completion_logprobs


def parse(request: HttpRequest) -> CompletionRequest:
    return schemas.validate_completion(read_json(request))


def work(req: CompletionRequest, model: CatalogModel) -> Work:
    job_request = schemas.completion_job_request(req)
    size = len(job_request["prompt"]) // 4 + int(job_request.get("max_tokens") or 16)
    return Work(
        request=job_request,
        size=size,
        cost=Cost(tokens=size),
        model=req.model,
        extra=req.model_extra or {},
    )


class CompletionFormat(TextFormat):
    chunk_object = "text_completion"

    def __init__(self, stream_id: str, model: str, head: str, *, logprobs: bool = False) -> None:
        super().__init__(stream_id, model)
        self.head = head  # the prompt, when echoed
        self.logprobs = logprobs  # the client asked for them
        self._offset = len(head)  # text_offset of the next streamed token

    def _choice(
        self, text: str, finish: str | None, logprobs: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        return self.chunk(
            [{"text": text, "index": 0, "logprobs": logprobs, "finish_reason": finish}]
        )

    def opening(self) -> list[dict[str, Any]]:
        return [self._choice(self.head, None)] if self.head else []

    def delta(self, text: str, logprobs: list[dict[str, Any]]) -> dict[str, Any]:
        lp = completion_logprobs(logprobs, self._offset) if self.logprobs else None
        self._offset += len(text)
        return self._choice(text, None, lp)

    def finish(self, reason: str) -> dict[str, Any]:
        return self._choice("", reason)

    def whole(self, answer: TextAnswer, usage: dict[str, int]) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": [
                {
                    "text": self.head + answer.text,
                    "index": 0,
                    "logprobs": (
                        completion_logprobs(answer.logprobs, len(self.head))
                        if self.logprobs
                        else None
                    ),
                    "finish_reason": answer.finish_reason,
                }
            ],
            "usage": usage,
        }


async def respond(call: Call[CompletionRequest]) -> HttpResponseBase:
    req = call.body
    head = str(call.work.request["prompt"]) if req.echo else ""
    return await text_response(
        call.job,
        CompletionFormat(
            f"cmpl-{uuid.uuid4().hex}", req.model, head, logprobs=req.logprobs is not None
        ),
        stream=bool(req.stream),
        include_usage=bool(req.stream_options and req.stream_options.include_usage),
    )


COMPLETIONS = Resource(
    task=Task.COMPLETION,
    capability=CatalogModel.Capability.TEXT_GEN,
    parse=parse,
    model=lambda req: req.model,
    work=work,
    respond=respond,
)
