"""gdpr's domain errors (mapped to HTTP in rbee/api_errors.py, never here)."""

from __future__ import annotations

import enum

from kernel.errors import DomainError


class GdprErrorCode(enum.StrEnum):
    NOT_FOUND = "not_found"  # also "not yours": existence is never leaked
    INVALID = "invalid"
    FORBIDDEN = "forbidden"
    NOT_READY = "not_ready"  # the archive is not built yet
    LINK_EXPIRED = "link_expired"
    TOO_MANY = "too_many_requests"  # a person's daily number of requests (Art. 12(5))


class GdprError(DomainError):
    def __init__(self, code: GdprErrorCode, message: str, *, param: str | None = None) -> None:
        super().__init__(code, message, param=param)
