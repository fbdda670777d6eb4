"""Tenancy's domain errors (mapped to HTTP by the API layers, never here)."""

from __future__ import annotations

import enum

from kernel.errors import DomainError


class TenantErrorCode(enum.StrEnum):
    NOT_FOUND = "not_found"
    ALREADY_EXISTS = "already_exists"
    INVALID = "invalid"


class TenantError(DomainError):
    def __init__(self, code: TenantErrorCode, message: str, *, param: str | None = None) -> None:
        super().__init__(code, message, param=param)
