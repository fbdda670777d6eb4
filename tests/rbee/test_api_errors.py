"""One error model: every app's domain codes have a status in the API's one table, the codes
a /v1 request can meet have one in OpenAI's, and the one DRF handler shapes every error."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from billing.errors import AdmissionCode, BillingCode
from hives.errors import HiveErrorCode
from inference.errors import DOMAIN_STATUS, from_domain
from inference.scheduler import Policy, SchedulerCode, ScriptError
from rbee.api_errors import HTTP_STATUS
from tenants.errors import KeyRejected, TenantErrorCode

ALL_CODES = [
    *TenantErrorCode,
    *AdmissionCode,
    *BillingCode,
    *HiveErrorCode,
    *SchedulerCode,
]


def test_every_domain_code_has_an_http_status() -> None:
    missing = [f"{type(c).__name__}.{c.name}" for c in ALL_CODES if c not in HTTP_STATUS]
    assert not missing
    assert all(400 <= s < 600 for s in HTTP_STATUS.values())


def test_the_codes_a_v1_request_meets_have_openais_envelope() -> None:
    for code in (
        *AdmissionCode,
        TenantErrorCode.INVALID_API_KEY,
        TenantErrorCode.ACCOUNT_DEACTIVATED,
        SchedulerCode.REJECTED,
        SchedulerCode.DENIED,
    ):
        assert code in DOMAIN_STATUS, code
        # Both tables agree on the status.
        assert DOMAIN_STATUS[code][0] == HTTP_STATUS[code], code


def test_a_rejected_key_is_openais_401() -> None:
    err = from_domain(KeyRejected("revoked"))
    assert (err.status, err.code, err.type) == (401, "invalid_api_key", "invalid_request_error")
    assert from_domain(KeyRejected("suspended")).code == "account_deactivated"
    assert "Authorization" in from_domain(KeyRejected("missing")).message


def test_a_script_error_carries_its_position_as_data() -> None:
    with pytest.raises(ScriptError) as exc:
        Policy("fn route_task(task, workers) {\n  let = 3;\n}")
    err = exc.value
    assert err.code == SchedulerCode.SCRIPT_INVALID
    assert err.data["line"] == 2 and err.data["column"] > 0
    assert str(err) == f"{err.data['line']}:{err.data['column']}: {err.data['detail']}"


def _staff() -> dict[str, str]:
    User.objects.create_superuser("ops", "ops@example.com", "pw-for-tests")
    token = base64.b64encode(b"ops:pw-for-tests").decode()
    return {"HTTP_AUTHORIZATION": f"Basic {token}"}


@pytest.mark.django_db
def test_management_api_errors_have_the_portals_shape() -> None:
    staff: dict[str, Any] = _staff()
    c = Client()
    for r, statuses in (
        (c.post("/api/workers/999999/stop", **staff), (404,)),
        (c.delete("/api/models/m", **staff), (400,)),
        (c.post("/api/models", {}, content_type="application/json", **staff), (400,)),
        (c.post("/api/scheduler/script", {}, content_type="application/json", **staff), (400,)),
        (c.get("/api/workers"), (401, 403)),
    ):
        assert r.status_code in statuses, r.content
        assert set(r.json()) == {"error"} and set(r.json()["error"]) == {"message", "code"}
    r = c.post(
        "/api/models",
        {"spec": "m", "hive": "nowhere"},
        content_type="application/json",
        **staff,
    )
    assert r.json()["error"]["code"] == "unknown_hive"


@pytest.mark.django_db
def test_a_json_body_that_is_not_an_object_is_a_400_everywhere() -> None:
    """`true`, `[]`, `"x"` or `3` parse as JSON but no view takes them: before, a PATCH of
    a plan with `true` met `"name" in True` (a 500 the management fuzzer found)."""
    from tenants.models import Plan

    staff: dict[str, Any] = _staff()
    plan = Plan.objects.create(name="team")
    c = Client()
    for body in ("true", "[1]", '"x"', "3", "null"):
        for method, path in (
            ("patch", f"/api/plans/{plan.pk}"),
            ("post", "/api/plans"),
            ("post", "/api/downloads"),
            ("post", "/api/models"),
        ):
            r = getattr(c, method)(path, body, content_type="application/json", **staff)
            assert r.status_code == 400, (method, path, body, r.content)
            assert r.json()["error"]["message"] == "the request body must be a JSON object"
    assert Plan.objects.get(pk=plan.pk).name == "team"
