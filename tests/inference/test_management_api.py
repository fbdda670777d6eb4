"""The operators' scheduler API (for the dashboard) and the Prometheus metrics."""

from __future__ import annotations

import base64

import pytest
from django.contrib.auth.models import User
from django.test import Client

from inference import scheduler
from inference.models import SchedulerScript
from testkit.scheduler import seed_scripts

pytestmark = pytest.mark.django_db

URL = "/api/scheduler/script"


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"HTTP_AUTHORIZATION": f"Basic {token}"}


@pytest.fixture
def staff() -> dict[str, str]:
    User.objects.create_superuser("ops", "ops@example.com", "pw-for-tests")
    return basic("ops", "pw-for-tests")


def test_staff_store_a_script_and_read_it_back(staff: dict[str, str]) -> None:
    c = Client()
    assert c.get(URL, **staff).json()["version"] == 0
    r = c.post(
        URL,
        {"source": seed_scripts()[0], "origin": "dashboard"},
        content_type="application/json",
        **staff,
    )
    assert r.status_code == 201, r.content
    version = r.json()["version"]
    got = c.get(URL, **staff).json()
    assert (got["version"], got["origin"], got["source"]) == (
        version,
        "dashboard",
        seed_scripts()[0],
    )


def test_a_broken_script_is_refused_with_its_position(staff: dict[str, str]) -> None:
    c = Client()
    r = c.post(
        URL,
        {"source": "fn route_task(task, workers) {\n  let = 3;\n}"},
        content_type="application/json",
        **staff,
    )
    assert r.status_code == 400
    err = r.json()["error"]
    assert (err["line"], err["code"]) == (2, "script_invalid")
    assert err["column"] > 0
    assert SchedulerScript.objects.count() == 0
    assert c.post(URL, {}, content_type="application/json", **staff).status_code == 400


def test_only_staff_may_touch_the_scheduler() -> None:
    User.objects.create_user("joe", "joe@example.com", "pw-for-tests")
    c = Client()
    assert c.get(URL).status_code in (401, 403)
    assert (
        c.post(
            URL,
            {"source": "fn route_task(t, w) { () }"},
            content_type="application/json",
            **basic("joe", "pw-for-tests"),
        ).status_code
        == 403
    )
    assert c.get(URL, **basic("ops", "wrong")).status_code in (401, 403)
    assert SchedulerScript.objects.count() == 0


def test_metrics_expose_scheduler_counters() -> None:
    scheduler.counters["script_decisions"] += 1
    body = Client().get("/metrics").content.decode()
    assert 'rbee_scheduler_decisions_total{source="script"}' in body
    assert "rbee_scheduler_script_errors_total" in body
    assert "rbee_scheduler_script_version" in body
