"""Tenancy's domain errors (mapped to HTTP by the API layers, never here)."""

from __future__ import annotations

import enum

from kernel.errors import DomainError


class TenantErrorCode(enum.StrEnum):
    NOT_FOUND = "not_found"
    ALREADY_EXISTS = "already_exists"
    INVALID = "invalid"
    FORBIDDEN = "forbidden"  # the caller's role in the tenant does not allow it
    ALREADY_ROTATED = "already_rotated"  # rotate the key's successor instead
    UNKNOWN_USER = "unknown_user"
    # A bearer key that does not let its caller in (OpenAI's codes).
    INVALID_API_KEY = "invalid_api_key"
    ACCOUNT_DEACTIVATED = "account_deactivated"


class TenantError(DomainError):
    def __init__(self, code: TenantErrorCode, message: str, *, param: str | None = None) -> None:
        super().__init__(code, message, param=param)


_KEY_MESSAGES = {
    "missing": (
        "You didn't provide an API key. You need to provide your API key in an Authorization "
        "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
    ),
    "malformed": "Incorrect API key provided: the key is not in rbee's format (sk-rbee-...).",
    "unknown": "Incorrect API key provided. Create a key with `rbee key create --tenant NAME`.",
    "revoked": "This API key has been revoked.",
    "expired": "This API key has expired (a rotated key stops working after its grace period).",
    "suspended": "The tenant this API key belongs to is suspended.",
}


class KeyRejected(TenantError):
    """The bearer key is missing, malformed, unknown, revoked or expired, or its tenant is
    suspended; `reason` says which."""

    def __init__(self, reason: str) -> None:
        code = (
            TenantErrorCode.ACCOUNT_DEACTIVATED
            if reason == "suspended"
            else TenantErrorCode.INVALID_API_KEY
        )
        super().__init__(code, _KEY_MESSAGES.get(reason, _KEY_MESSAGES["unknown"]))
        self.reason = reason
