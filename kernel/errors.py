"""The domain error base. Apps raise errors with a code from their own enum and never an
HTTP status: the API layers map codes to HTTP, each in one table (`inference/errors.py`
for `/v1`, `rbee/api_errors.py` for `/api` and the webhook)."""

from __future__ import annotations

import enum
from typing import Any


class DomainError(Exception):
    """An error of the domain: a `code` (a member of its app's `StrEnum`), a message meant
    for the caller, and optional data: the parameter at fault, headers such as Retry-After
    (for limits), and anything else the mapping layer may show."""

    def __init__(
        self,
        code: enum.StrEnum,
        message: str,
        *,
        param: str | None = None,
        headers: dict[str, str] | None = None,
        data: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param
        self.headers = dict(headers or {})
        self.data = dict(data or {})

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code!s}, {self.message!r})"


class KernelCode(enum.StrEnum):
    UNAVAILABLE = "service_unavailable"  # the database or Redis is down or not answering


class Unavailable(DomainError):
    """A backing store (the database, Redis) is down, refuses connections or does not
    answer within its timeout: the request is answered 503 with Retry-After at once, and
    serving resumes by itself when the store is back."""

    def __init__(self, store: str, detail: str = "", *, retry_after: int = 5) -> None:
        super().__init__(
            KernelCode.UNAVAILABLE,
            f"The service is temporarily unavailable: its {store} is not answering"
            + (f" ({detail})" if detail else "")
            + f". Please try again in {retry_after}s.",
            headers={"Retry-After": str(retry_after)},
        )
        self.store = store


def store_down(exc: BaseException) -> str:
    """The backing store an exception says is down or not answering ("database", "Redis"),
    or "" when it says nothing of the kind: for the API layers' last resort, so that such
    an error raised anywhere is a 503, not a 500."""
    try:
        from django.db import InterfaceError, OperationalError

        if isinstance(exc, (OperationalError, InterfaceError)):
            return "database"
    except ImportError:  # pragma: no cover (the hive agent has no Django)
        pass
    try:
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError
    except ImportError:  # pragma: no cover
        return ""
    if isinstance(exc, (RedisConnectionError, RedisTimeoutError)):
        return "Redis"
    return ""
