"""Input at the edges is the faces' 400 page, never a 500: dates whose arithmetic would
leave Python's date range (web/dates.py bounds the year to 2000..9998), and NUL
characters in a path, query or form under /ui, /console and /portal (web/nul.py), which
PostgreSQL refuses in text. Nothing happens on such a request."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.test import Client

from gdpr import audit
from tenants.models import Plan, Tenant
from tenants.services import tenant_create

pytestmark = pytest.mark.django_db

NUL = "a\x00b"


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RBEE_HOME", str(tmp_path))
    audit._cache.clear()


@pytest.fixture
def root() -> Client:
    Plan.objects.create(name="free", requests_per_day=100)
    tenant_create(name="acme")
    user = User.objects.create_superuser("root", "root@example.com", "pw-123456789")
    client = Client(raise_request_exception=False)
    client.force_login(user)
    return client


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("/console/tenants/acme?month=9999-12", "the year must be from 2000 to 9998"),
        ("/console/tenants/acme?month=1999-12", "the year must be from 2000 to 9998"),
        ("/console/invoices?month=99999999999999999999-01", "not a month"),
        ("/console/invoices?month=9999-01", "the year must be from 2000 to 9998"),
        ("/console/audit?until=9999-12-31", "the year must be from 2000 to 9998"),
        ("/console/audit/export?until=9999-12-31", "the year must be from 2000 to 9998"),
        ("/console/audit?since=0001-01-01", "the year must be from 2000 to 9998"),
    ],
)
def test_edge_dates_are_a_400_that_says_why(root: Client, url: str, says: str) -> None:
    response = root.get(url)
    assert response.status_code == 400, (url, response.status_code)
    assert says in response.content.decode()


def test_dates_inside_the_bounds_still_work(root: Client) -> None:
    assert root.get("/console/tenants/acme?month=9998-12").status_code == 200
    assert root.get("/console/invoices?month=2000-01").status_code == 200
    assert root.get("/console/audit?since=2000-01-01&until=9998-12-31").status_code == 200


@pytest.mark.parametrize(
    "url",
    [
        f"/console/invoices?tenant={NUL}",
        f"/console/audit?actor={NUL}",
        f"/console/audit?tenant={NUL}",
        f"/console/keys?q={NUL}",
        f"/console/tenants?q={NUL}",
        "/console/tenants/a%00b",
        f"/ui/charts?range={NUL}",
        f"/portal/login?next={NUL}",
    ],
)
def test_a_nul_byte_in_a_path_or_query_is_the_400_page(root: Client, url: str) -> None:
    response = root.get(url)
    assert response.status_code == 400, url
    assert b"NUL character" in response.content
    assert response["Content-Security-Policy"].startswith("default-src 'self'")


def test_a_nul_byte_in_the_portal_sign_in_is_a_400_before_anything_is_counted() -> None:
    User.objects.create_user("m", "m@example.com", "pw-123456789")
    client = Client(raise_request_exception=False)
    for _ in range(10):  # more than the lockout allows, were they counted
        response = client.post(
            "/portal/login", {"username": f"m@example.com{NUL}", "password": "x"}
        )
        assert response.status_code == 400
    signed_in = client.post(
        "/portal/login", {"username": "m@example.com", "password": "pw-123456789"}
    )
    assert signed_in.status_code == 302


def test_a_nul_byte_in_the_password_reset_is_a_400() -> None:
    response = Client(raise_request_exception=False).post(
        "/portal/password-reset", {"email": "a\x00b@example.com"}
    )
    assert response.status_code == 400


@pytest.mark.parametrize(
    ("url", "data"),
    [
        ("/ui/assignments/remove", {"hive": NUL, "model": NUL}),
        ("/ui/spawn", {"hive": NUL, "model": NUL}),
        ("/ui/downloads", {"hive": NUL, "source": NUL}),
        ("/ui/aliases", {"alias": NUL, "target": NUL}),
        ("/ui/scheduler/check", {"source": "fn x(", "model": NUL, "tier": NUL}),
        ("/console/hives/token", {"name": NUL}),
        ("/console/tenants/new", {"name": NUL}),
        ("/console/prices", {"model": NUL, "unit": "prompt_tokens", "unit_price": "1"}),
        ("/console/tenants/new", {NUL: "x", "name": "fresh"}),
    ],
)
def test_a_nul_byte_in_a_form_is_a_400_and_nothing_is_done(
    root: Client, url: str, data: dict[str, str]
) -> None:
    before = set(Tenant.objects.values_list("name", flat=True))
    response = root.post(url, data)
    assert response.status_code == 400, url
    assert b"NUL character" in response.content
    assert set(Tenant.objects.values_list("name", flat=True)) == before


@pytest.mark.parametrize(
    ("url", "data"),
    [
        ("/ui/assignments/remove", {"hive": "nope", "model": "x"}),
        ("/ui/workers/99999999999999999999/action", {"action": "stop"}),
        ("/console/plans/new", {"name": "p1", "requests_per_day": "9" * 30}),
        ("/console/tenants/acme/overrides", {"requests_per_day": "9" * 30}),
        ("/console/gdpr/99999999999999999999/retry", {}),
        ("/console/invoices/99999999999999999999/rebuild", {}),
    ],
)
def test_junk_posts_are_not_a_500(root: Client, url: str, data: dict[str, str]) -> None:
    assert root.post(url, data).status_code != 500, url
