"""OpenAI's error envelope: {"error": {"message", "type", "param", "code"}} with its status."""

from __future__ import annotations

from typing import Any

from django.http import JsonResponse

from billing.errors import AdmissionCode
from kernel.errors import DomainError

_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    502: "server_error",
    503: "server_error",
    504: "server_error",
}


class APIError(Exception):
    """Raised anywhere on the /v1/ path; turned into OpenAI's error body by the view."""

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
# for the status's default).
DOMAIN_STATUS: dict[str, tuple[int, str | None]] = {
    AdmissionCode.INSUFFICIENT_SCOPE: (403, None),
    AdmissionCode.MODEL_NOT_IN_PLAN: (403, None),
    AdmissionCode.RATE_LIMIT_EXCEEDED: (429, "requests"),
    AdmissionCode.INSUFFICIENT_QUOTA: (429, "insufficient_quota"),
}


def from_domain(exc: DomainError) -> APIError:
    """A domain error as OpenAI's envelope; an unmapped code is the server's fault (500)."""
    status, type_ = DOMAIN_STATUS.get(exc.code, (500, None))
    return APIError(
        status, exc.message, param=exc.param, code=str(exc.code), type=type_, headers=exc.headers
    )
