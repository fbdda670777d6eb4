"""OpenAI's error envelope for /v1: {"error": {"message", "type", "param", "code"}} with its
status, and the one table from domain codes (tenants, billing, the scheduler) to it.
(The /api endpoints have theirs in rbee/api_errors.py.)"""

from __future__ import annotations

from typing import Any

from django.http import JsonResponse

from billing.errors import AdmissionCode
from inference.scheduler import SchedulerCode
from kernel.errors import DomainError, KernelCode
from tenants.errors import TenantErrorCode

_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    502: "server_error",
    503: "server_error",
    504: "server_error",
}


class APIError(Exception):
    """What is wrong with a /v1 request itself (its body, method, URL, model, the queue,
    the worker), raised anywhere on the path; `inference.pipeline.endpoint` answers it
    with OpenAI's error body. Domain errors go through `from_domain` instead."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type or _TYPES.get(
            status, "server_error" if status >= 500 else "invalid_request_error"
        )
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self) -> JsonResponse:
        resp = JsonResponse(self.body(), status=self.status)
        for k, v in self.headers.items():
            resp[k] = v
        return resp


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


# The one table from domain codes to /v1 responses: (HTTP status, OpenAI error type or None
# for the status's default). The codes a /v1 request can meet; any other is a 500.
DOMAIN_STATUS: dict[str, tuple[int, str | None]] = {
    # tenants: who is calling
    TenantErrorCode.INVALID_API_KEY: (401, None),
    TenantErrorCode.ACCOUNT_DEACTIVATED: (401, None),
    # billing: the key's scopes, the plan's models, rates and quotas
    AdmissionCode.INSUFFICIENT_SCOPE: (403, None),
    AdmissionCode.MODEL_NOT_IN_PLAN: (403, None),
    AdmissionCode.RATE_LIMIT_EXCEEDED: (429, "requests"),
    AdmissionCode.INSUFFICIENT_QUOTA: (429, "insufficient_quota"),
    # the owner's should_admit
    SchedulerCode.REJECTED: (429, None),
    SchedulerCode.DENIED: (403, None),
    # the database or Redis is down or not answering (Retry-After comes with it)
    KernelCode.UNAVAILABLE: (503, None),
}


def from_domain(exc: DomainError) -> APIError:
    """A domain error as OpenAI's envelope; an unmapped code is the server's fault (500)."""
    status, type_ = DOMAIN_STATUS.get(exc.code, (500, None))
    return APIError(
        status, exc.message, param=exc.param, code=str(exc.code), type=type_, headers=exc.headers
    )


def from_event(event: dict[str, Any]) -> APIError:
    """A worker's `error` event as OpenAI's envelope."""
    status = event.get("status")
    status = status if isinstance(status, int) else 500
    if status == 499:  # an engine's "cancelled", reaching a job that was not: a retry's
        status = 503
    return APIError(
        status if 400 <= status < 600 else 500,
        str(event.get("message") or "the worker failed"),
        code=str(event.get("code") or "worker_error"),
        param=event.get("param"),
    )


def neutral_error(model: str, event: dict[str, Any]) -> dict[str, Any]:
    """A worker's `error` event as a tenant may read it. The hive's own texts name hives,
    devices and what else uses their memory: operators' business. A server-side failure
    (5xx, or a cancelled retry) gets a neutral text; the code and status stay, and so do
    4xx texts, which are about the request itself (a bad voice, a prompt too long)."""
    status = event.get("status")
    status = status if isinstance(status, int) else 500
    if 400 <= status < 500 and status != 499:
        return event
    if status in (499, 503):
        message = f"No worker is ready for model '{model}' right now; try again shortly."
    elif status == 504:
        message = f"The worker serving model '{model}' did not answer in time."
    else:
        message = f"The worker serving model '{model}' failed while running the request."
    return {**event, "message": message}
