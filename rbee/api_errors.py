"""The one error handler of every DRF endpoint: the portal and management APIs under
/api/ and Stripe's webhook (settings.REST_FRAMEWORK["EXCEPTION_HANDLER"]), and the one
table from the apps' domain codes to HTTP statuses. (/v1 has its own, with OpenAI's
envelope: inference/errors.py.)

Bodies are {"error": {"message", "code"}}, plus the error's data when it has any (a
script's line and column); Stripe's webhook answers {"error": message}, as it always did
(Stripe reads only the status)."""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler
from rest_framework.views import set_rollback

from billing.errors import AdmissionCode, BillingCode
from gdpr.errors import GdprErrorCode
from hives.errors import HiveErrorCode
from inference.scheduler import SchedulerCode
from kernel.errors import DomainError, KernelCode, Unavailable, store_down
from tenants.errors import TenantErrorCode

NOT_FOUND_MESSAGE = "not found"

# Every domain code of every app, and its status on the API (a code missing here is a
# 500: tests/rbee/test_api_errors.py checks that none is).
HTTP_STATUS: dict[str, int] = {
    # tenants: portal objects, roles, keys
    TenantErrorCode.NOT_FOUND: status.HTTP_404_NOT_FOUND,
    TenantErrorCode.ALREADY_EXISTS: status.HTTP_409_CONFLICT,
    TenantErrorCode.INVALID: status.HTTP_400_BAD_REQUEST,
    TenantErrorCode.FORBIDDEN: status.HTTP_403_FORBIDDEN,
    TenantErrorCode.ALREADY_ROTATED: status.HTTP_400_BAD_REQUEST,
    TenantErrorCode.UNKNOWN_USER: status.HTTP_400_BAD_REQUEST,
    TenantErrorCode.INVALID_API_KEY: status.HTTP_401_UNAUTHORIZED,
    TenantErrorCode.ACCOUNT_DEACTIVATED: status.HTTP_401_UNAUTHORIZED,
    # billing: the gate, invoices, Stripe and its webhook
    AdmissionCode.INSUFFICIENT_SCOPE: status.HTTP_403_FORBIDDEN,
    AdmissionCode.MODEL_NOT_IN_PLAN: status.HTTP_403_FORBIDDEN,
    AdmissionCode.RATE_LIMIT_EXCEEDED: status.HTTP_429_TOO_MANY_REQUESTS,
    AdmissionCode.INSUFFICIENT_QUOTA: status.HTTP_429_TOO_MANY_REQUESTS,
    BillingCode.MIXED_CURRENCIES: status.HTTP_409_CONFLICT,
    BillingCode.STRIPE_NOT_CONFIGURED: status.HTTP_503_SERVICE_UNAVAILABLE,
    BillingCode.STRIPE_UNREACHABLE: status.HTTP_503_SERVICE_UNAVAILABLE,
    BillingCode.WEBHOOK_NOT_CONFIGURED: status.HTTP_503_SERVICE_UNAVAILABLE,
    BillingCode.INVALID_SIGNATURE: status.HTTP_400_BAD_REQUEST,
    BillingCode.INVALID_PAYLOAD: status.HTTP_400_BAD_REQUEST,
    BillingCode.INVALID_PRICE: status.HTTP_400_BAD_REQUEST,
    BillingCode.EVENT_FAILED: status.HTTP_500_INTERNAL_SERVER_ERROR,  # Stripe sends it again
    # hives: the fleet
    HiveErrorCode.INVALID_NAME: status.HTTP_400_BAD_REQUEST,
    HiveErrorCode.UNKNOWN_HIVE: status.HTTP_400_BAD_REQUEST,
    HiveErrorCode.INVALID_DEVICE: status.HTTP_400_BAD_REQUEST,
    HiveErrorCode.INVALID_SPEC: status.HTTP_400_BAD_REQUEST,
    HiveErrorCode.INVALID_ACTION: status.HTTP_400_BAD_REQUEST,
    HiveErrorCode.NO_WORKER: status.HTTP_400_BAD_REQUEST,
    HiveErrorCode.INVALID_ALIAS: status.HTTP_400_BAD_REQUEST,
    HiveErrorCode.UNKNOWN_MODEL: status.HTTP_400_BAD_REQUEST,
    HiveErrorCode.INVALID_SOURCE: status.HTTP_400_BAD_REQUEST,
    HiveErrorCode.INVALID_REGION: status.HTTP_400_BAD_REQUEST,
    HiveErrorCode.NOT_FOUND: status.HTTP_404_NOT_FOUND,
    # the scheduler script
    SchedulerCode.SCRIPT_INVALID: status.HTTP_400_BAD_REQUEST,
    SchedulerCode.REJECTED: status.HTTP_429_TOO_MANY_REQUESTS,
    SchedulerCode.DENIED: status.HTTP_403_FORBIDDEN,
    # gdpr: data-subject requests
    GdprErrorCode.NOT_FOUND: status.HTTP_404_NOT_FOUND,
    GdprErrorCode.INVALID: status.HTTP_400_BAD_REQUEST,
    GdprErrorCode.FORBIDDEN: status.HTTP_403_FORBIDDEN,
    GdprErrorCode.NOT_READY: status.HTTP_409_CONFLICT,
    GdprErrorCode.LINK_EXPIRED: status.HTTP_410_GONE,
    GdprErrorCode.TOO_MANY: status.HTTP_429_TOO_MANY_REQUESTS,
    # the kernel: the database or Redis is down or not answering (with Retry-After)
    KernelCode.UNAVAILABLE: status.HTTP_503_SERVICE_UNAVAILABLE,
}


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's handler, with domain errors mapped by HTTP_STATUS and every body in one shape."""
    if not isinstance(exc, DomainError) and (store := store_down(exc)):
        exc = Unavailable(store, type(exc).__name__)  # the database or Redis is down: 503
    if isinstance(exc, DomainError):
        set_rollback()
        response = Response(
            status=HTTP_STATUS.get(exc.code, status.HTTP_500_INTERNAL_SERVER_ERROR),
            headers=exc.headers or None,
        )
        message, code, data = exc.message, str(exc.code), exc.data
    else:
        drf_response = drf_exception_handler(exc, context)
        if drf_response is None:
            return None  # not an API error: Django's 500
        response, data = drf_response, {}
        message, code = _describe(exc)
    if getattr(context.get("view"), "flat_errors", False):
        response.data = {"error": message}
    else:
        response.data = {"error": {"message": message, "code": code, **data}}
    return response


def _describe(exc: Exception) -> tuple[str, str]:
    if isinstance(exc, exceptions.ValidationError):
        return "; ".join(_flatten(exc.detail)) or "invalid request", "invalid_request"
    if isinstance(exc, exceptions.NotFound):
        # The same for "not yours" and "does not exist".
        return NOT_FOUND_MESSAGE, "not_found"
    if isinstance(exc, exceptions.PermissionDenied):
        return str(exc.detail), "forbidden"
    if isinstance(exc, exceptions.APIException):
        codes = exc.get_codes()
        return str(exc.detail), codes if isinstance(codes, str) else "error"
    return "error", "error"


def _flatten(detail: Any, field: str = "") -> list[str]:
    """A serializer's errors as "field.sub: message" lines."""
    if isinstance(detail, dict):
        out: list[str] = []
        for key, value in detail.items():
            name = key if key != "non_field_errors" else ""
            out += _flatten(value, f"{field}.{name}" if field and name else field or name)
        return out
    if isinstance(detail, list):
        return [m for item in detail for m in _flatten(item, field)]
    return [f"{field}: {detail}" if field else str(detail)]
