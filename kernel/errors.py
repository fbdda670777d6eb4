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
