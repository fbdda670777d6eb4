from __future__ import annotations

import enum


class TenantErrorCode(enum.StrEnum):
    NOT_FOUND = "not_found"
    ALREADY_EXISTS = "already_exists"
    INVALID = "invalid"


class TenantError(Exception):
    def __init__(self, code: TenantErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
