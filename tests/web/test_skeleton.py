"""The web faces' foundation: hashed static files, the CSP, sign-in for operators and
members, tenant scoping of portal pages, and the same-origin rule for browser sockets."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client

from tenants.models import Membership, Tenant
from web.assets import STATIC_ROOT, asset_url
from web.csp import POLICY

pytestmark = pytest.mark.django_db


def _operator(username: str = "ops", *areas: str) -> User:
    user = User.objects.create_user(
        username, f"{username}@example.com", "pw-123456789", is_staff=True
    )
    codenames = {
        "fleet": "operate_fleet",
        "scheduler": "operate_scheduler",
        "tenants": "operate_tenants",
        "audit": "read_audit",
    }
    for area in areas:
        user.user_permissions.add(Permission.objects.get(codename=codenames[area]))
    return user


def test_assets_are_served_under_their_hash_with_a_year_long_cache() -> None:
    url = asset_url("vendor/htmx/htmx.min.js")
    digest = hashlib.sha256((STATIC_ROOT / "vendor/htmx/htmx.min.js").read_bytes()).hexdigest()
    assert url == f"/static/rbee/vendor/htmx/htmx.min.{digest[:12]}.js"
    response = Client().get(url)
    assert response.status_code == 200
    assert response["Cache-Control"] == "public, max-age=31536000, immutable"
    assert response["Content-Type"].startswith(("text/javascript", "application/javascript"))
    assert (
        b"".join(response.streaming_content)
        == (STATIC_ROOT / "vendor/htmx/htmx.min.js").read_bytes()
    )


@pytest.mark.parametrize(
    "path",
    [
        "/static/rbee/vendor/htmx/htmx.min.js",  # no hash
        "/static/rbee/vendor/htmx/htmx.min.000000000000.js",  # a stale hash
        "/static/rbee/../../settings.000000000000.py",
        "/static/rbee/vendor/README.000000000000.md",
    ],
)
def test_anything_but_a_current_hashed_name_is_a_404(path: str) -> None:
    assert Client().get(path).status_code == 404


def test_vendored_files_match_the_sums_in_their_readme() -> None:
    readme = (STATIC_ROOT / "vendor" / "README.md").read_text()
    sums = re.findall(r"\| ([^|]+) \| [0-9.]+ \| ([^|]+) \| [^|]+ \| ([^|]+) \|", readme)
    assert sums, "no table rows in web/static/vendor/README.md"
    checked = 0
    for _pkg, files, digests in sums:
        names = [f.strip().split(" ")[0] for f in files.split(",")]
        for name, digest in zip(names, [d.strip() for d in digests.split(",")], strict=True):
            path = STATIC_ROOT / "vendor" / name
            assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, name
            assert (path.parent / "LICENSE").exists(), f"{name} has no licence beside it"
            checked += 1
    assert checked == 5


def test_faces_send_the_strict_policy_and_no_inline_script() -> None:
    response = Client().get("/ui/login")
    assert response.status_code == 200
    assert response["Content-Security-Policy"] == POLICY
    assert "script-src 'self'" in POLICY and "unsafe" not in POLICY
    html = response.content.decode()
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "an inline <script>"
    assert " style=" not in html and " on" + "click=" not in html


def test_every_template_is_free_of_inline_script_style_and_handlers() -> None:
    templates = Path(STATIC_ROOT).parent / "templates"
    for path in templates.rglob("*.html"):
        html = path.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), path
        assert not re.search(r"<style", html), path
        assert not re.search(r"\sstyle=", html), path
        assert not re.search(r"\son[a-z]+=", html), path


def test_ui_pages_send_a_signed_out_visitor_to_the_login_page() -> None:
    response = Client().get("/ui/")
    assert response.status_code == 302 and response["Location"] == "/ui/login?next=%2Fui%2F"
    response = Client().get("/ui/login?next=/ui/")
    assert response.status_code == 200
    assert b"Operators&#x27; sign-in" in response.content


def test_an_operator_signs_in_and_a_non_operator_is_refused() -> None:
    _operator("ops", "fleet")
    User.objects.create_user("plain", "plain@example.com", "pw-123456789")
    client = Client()
    response = client.post(
        "/ui/login", {"username": "plain", "password": "pw-123456789", "next": "/ui/"}
    )
    assert response.status_code == 400
    assert b"holds no operator permission" in response.content
    assert "_auth_user_id" not in client.session
    response = client.post("/ui/login", {"username": "ops", "password": "wrong", "next": "/ui/"})
    assert response.status_code == 400 and b"Unknown account or wrong password" in response.content
    response = client.post(
        "/ui/login", {"username": "ops", "password": "pw-123456789", "next": "/ui/"}
    )
    assert response.status_code == 302 and response["Location"] == "/ui/"


def test_login_never_redirects_off_site() -> None:
    _operator("ops", "fleet")
    response = Client().post(
        "/ui/login",
        {"username": "ops", "password": "pw-123456789", "next": "https://evil.example/"},
    )
    assert response.status_code == 302 and response["Location"] == "/ui/"


def test_sign_out_is_a_post_with_csrf() -> None:
    _operator("ops", "fleet")
    client = Client(enforce_csrf_checks=True)
    client.force_login(User.objects.get(username="ops"))
    assert client.get("/ui/logout").status_code == 405
    assert client.post("/ui/logout").status_code == 403  # no CSRF token
    assert "_auth_user_id" in client.session


def test_portal_sign_in_is_by_email_and_says_the_same_for_unknown_and_wrong() -> None:
    User.objects.create_user("someone", "Member@Example.com", "pw-123456789")
    client = Client()
    unknown = client.post("/portal/login", {"username": "nobody@example.com", "password": "x"})
    wrong = client.post("/portal/login", {"username": "member@example.com", "password": "x"})
    assert unknown.status_code == wrong.status_code == 400
    assert b"Unknown account or wrong password" in unknown.content
    assert b"Unknown account or wrong password" in wrong.content
    ok = client.post(
        "/portal/login", {"username": "member@example.com", "password": "pw-123456789"}
    )
    assert ok.status_code == 302 and ok["Location"] == "/portal/"


def test_failed_sign_ins_lock_the_account_out(settings: Any) -> None:
    settings.RBEE_LOGIN_MAX_FAILURES = 3
    User.objects.create_user("someone", "m@example.com", "pw-123456789")
    client = Client()
    for _ in range(3):
        client.post("/portal/login", {"username": "m@example.com", "password": "bad"})
    locked = client.post("/portal/login", {"username": "m@example.com", "password": "pw-123456789"})
    assert locked.status_code == 400 and b"Too many failed sign-ins" in locked.content
    assert "_auth_user_id" not in client.session


def test_portal_pages_are_scoped_to_the_members_tenants() -> None:
    from django.http import HttpResponse
    from django.test import RequestFactory

    from web.portal.access import member_page

    a, b = Tenant.objects.create(name="tenant-a"), Tenant.objects.create(name="tenant-b")
    user = User.objects.create_user("u", "u@example.com", "pw-123456789")
    Membership.objects.create(user=user, tenant=a, role="billing")

    @member_page()
    def page(request: Any, member: Any) -> HttpResponse:
        return HttpResponse(member.tenant.name)

    @member_page("owner", "admin", "member")
    def keys(request: Any, member: Any) -> HttpResponse:
        return HttpResponse("keys")

    request = RequestFactory().get("/portal/t/tenant-a/")
    request.user = user
    assert page(request, tenant="tenant-a").content == b"tenant-a"
    from django.http import Http404

    for name in ("tenant-b", "no-such-tenant"):
        with pytest.raises(Http404):
            page(request, tenant=name)
    with pytest.raises(Http404):  # billing does not see keys
        keys(request, tenant="tenant-a")
    assert b.name == "tenant-b"


async def test_browser_sockets_must_come_from_the_same_origin() -> None:
    from web.ws import SameOriginValidator

    seen: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope)

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    validator = SameOriginValidator(app)
    for origin in (b"http://evil.example", b"", b"http://127.0.0.1:9999"):
        headers = [(b"host", b"127.0.0.1:7833")] + ([(b"origin", origin)] if origin else [])
        await validator({"type": "websocket", "headers": headers}, receive, send)
    assert not seen and [m["code"] for m in sent] == [4403, 4403, 4403]
    headers = [(b"host", b"127.0.0.1:7833"), (b"origin", b"http://127.0.0.1:7833")]
    await validator({"type": "websocket", "headers": headers}, receive, send)
    assert len(seen) == 1
