"""/ui/settings: any operator sees this queen's facts (never a secret or a database
password), their own areas, and may change their own password (current password
required, checked through the lockout backend; the session stays); only a superuser
lists operators, grants and revokes areas and creates operators, audited as the CLI is;
the hive commands carry this queen's URL."""

from __future__ import annotations

import html
import re
import time
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client, override_settings
from django.utils import timezone

from gdpr.actions import AuditAction as A
from gdpr.models import AuditEvent
from hives.models import CatalogModel, Hive, Worker
from inference.services import scheduler_script_store
from tenants.selectors import operator_areas
from tests.audit_events import (
    audit_home,  # noqa: F401 (the fixture, used by name)
    events,
    one,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("audit_home")]

PASSWORD = "pw-123456789"
NEW_PASSWORD = "a-new-pw-987654"
CODENAMES = {
    "fleet": "operate_fleet",
    "scheduler": "operate_scheduler",
    "tenants": "operate_tenants",
    "audit": "read_audit",
}


def make_user(username: str, *areas: str, superuser: bool = False) -> User:
    if superuser:
        return User.objects.create_superuser(username, f"{username}@example.com", PASSWORD)
    user = User.objects.create_user(
        username, f"{username}@example.com", PASSWORD, is_staff=bool(areas)
    )
    for area in areas:
        user.user_permissions.add(Permission.objects.get(codename=CODENAMES[area]))
    return user


def signed_in(user: User, **kwargs: Any) -> Client:
    client = Client(**kwargs)
    client.force_login(user)
    return client


def text(response: Any) -> str:
    """The response's visible text, tags dropped, entities decoded, spaces collapsed."""
    body = response.content.decode()
    body = re.sub(r"</?(?:span|a|strong|code)\b[^>]*>", "", body)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", body))).strip()


def fact(response: Any, name: str) -> str:
    body = response.content.decode()
    found = re.search(rf'<(dd|span)\b[^>]*data-fact="{name}"[^>]*>(.*?)</\1>', body, re.S)
    assert found, f"no fact {name}"
    inner = re.sub(r"<[^>]+>", "", found.group(2))
    return re.sub(r"\s+", " ", html.unescape(inner)).strip()


def match(pattern: str, body: str) -> str:
    found = re.search(pattern, body, re.S)
    assert found, pattern
    return found.group(1)


def fresh(username: str) -> User:
    return User.objects.get(username=username)  # no cached permissions


# Who may see it ---------------------------------------------------------------------------


def test_signed_out_goes_to_the_login_and_a_non_operator_is_refused() -> None:
    response = Client().get("/ui/settings")
    assert response.status_code == 302
    assert response["Location"] == "/ui/login?next=%2Fui%2Fsettings"
    member = make_user("member")  # a portal user: no operator area
    assert signed_in(member).get("/ui/settings").status_code == 403
    assert signed_in(member).post("/ui/settings/password", {}).status_code == 403


@pytest.mark.parametrize("area", ["fleet", "scheduler", "tenants", "audit"])
def test_any_operator_sees_the_page_from_the_nav(area: str) -> None:
    response = signed_in(make_user("ops", area)).get("/ui/settings")
    assert response.status_code == 200
    body = response.content.decode()
    assert "<title>Settings · rbee</title>" in body
    assert '<a href="/ui/settings" aria-current="page">Settings</a>' in body
    assert match(r"You may manage: <span data-my-areas>(.*?)</span>", body) == area
    # Not a superuser: no operators' section, no operators' forms.
    assert 'id="operators"' not in body
    assert "/ui/settings/operators" not in body


def test_the_nav_links_settings_on_other_dashboard_pages() -> None:
    body = signed_in(make_user("ops", "scheduler")).get("/ui/scheduler").content.decode()
    assert '<li><a href="/ui/settings" >Settings</a></li>' in body


def test_the_page_is_get_only() -> None:
    assert signed_in(make_user("ops", "fleet")).post("/ui/settings").status_code == 405


# This queen -------------------------------------------------------------------------------


def test_the_queen_facts_come_from_settings_and_the_fleet() -> None:
    hive = Hive.objects.create(
        name="box-1",
        token_prefix="tp-set",
        token_hash="x",
        status=Hive.Status.ONLINE,
        channel_name="specific.hive!1",
        last_seen_at=timezone.now(),
    )
    Hive.objects.create(name="box-2", token_prefix="tp-set2", token_hash="x")
    model = CatalogModel.objects.create(name="chat-8b", capability="text-gen", engine="echo")
    Worker.objects.create(hive=hive, model=model, device="cuda:0", state="ready")
    Worker.objects.create(hive=hive, model=model, device="cuda:1", state="starting")
    client = signed_in(make_user("ops", "audit"))

    response = client.get("/ui/settings")
    assert fact(response, "version") == "0.1.0"
    assert fact(response, "hives") == "2 (1 live)"
    assert fact(response, "workers") == "2 (1 ready)"
    assert fact(response, "scheduler").startswith("default policy (least loaded)")
    assert fact(response, "prompt-retention").startswith(
        "off for new tenants (kept 30 days where a tenant turns it on)"
    )
    assert fact(response, "production") == "off"
    assert '<a href="/ui/scheduler">Scheduler</a>' in response.content.decode()

    stored = scheduler_script_store(source="fn route_task(task, workers) { workers.first() }")
    response = client.get("/ui/settings")
    assert fact(response, "scheduler").startswith(f"script v{stored.pk} ({stored.sha256[:12]})")


@pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")
@override_settings(
    DATABASES={
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "HOST": "db.internal",
            "PORT": "5433",
            "NAME": "rbee",
            "USER": "rbee",
            "PASSWORD": "db-Pa55word-XYZ",
        }
    },
    REDIS_URL="redis://:redis-Pa55-QRS@redis.internal:6380/4",
    SECRET_KEY="django-secret-key-ABCDEF-0123456789-abcdef-0123456789",
    RBEE_METRICS_TOKEN="metrics-token-LMNOP",
    EMAIL_HOST_PASSWORD="smtp-Pa55-TUV",
    RBEE_STRIPE_SECRET_KEY="sk_test_stripe-WXYZ",
    RBEE_PRODUCTION=True,
    ALLOWED_HOSTS=["testserver", "rbee.example"],
    CSRF_TRUSTED_ORIGINS=["https://rbee.example"],
    SECURE_HSTS_SECONDS=31536000,
)
def test_postgres_and_redis_show_host_and_database_and_never_a_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RBEE_AUDIT_CHECKPOINT_S3", "s3://audit-bucket/rbee")
    monkeypatch.setenv("RBEE_AUDIT_S3_ENDPOINT", "https://key:s3-Pa55@minio.internal:9000")
    monkeypatch.setenv("RBEE_QUEEN_LISTEN", "0.0.0.0:7833")
    response = signed_in(make_user("ops", "fleet")).get("/ui/settings")
    assert response.status_code == 200
    assert fact(response, "mode") == "PostgreSQL and Redis"
    assert fact(response, "database") == "PostgreSQL · db.internal:5433 / rbee"
    assert fact(response, "layer") == "Redis · redis.internal:6380 / db 4"
    assert fact(response, "sink") == "S3 bucket audit-bucket, prefix rbee at minio.internal"
    assert fact(response, "listen") == "0.0.0.0:7833"
    assert fact(response, "production") == "on"
    page = text(response)
    assert "Host names answered testserver, rbee.example" in page
    assert "HSTS 31536000 s" in page
    assert "/metrics bearer token required" in page
    body = response.content.decode()
    for secret in (
        "db-Pa55word-XYZ",
        "redis-Pa55-QRS",
        "django-secret-key-ABCDEF",
        "metrics-token-LMNOP",
        "smtp-Pa55-TUV",
        "sk_test_stripe-WXYZ",
        "s3-Pa55",
        "postgres://",
        "redis://",
    ):
        assert secret not in body, secret


@pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")
def test_the_embedded_mode_names_sqlite_and_the_directory_sink(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.delenv("RBEE_AUDIT_CHECKPOINT_S3", raising=False)
    monkeypatch.setenv("RBEE_AUDIT_CHECKPOINT_DIR", str(tmp_path / "cps"))
    monkeypatch.delenv("RBEE_QUEEN_LISTEN", raising=False)
    with override_settings(
        DATABASES={
            "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": "/srv/rbee/rbee.sqlite3"}
        },
        REDIS_URL="",
    ):
        response = signed_in(make_user("ops", "fleet")).get("/ui/settings")
    assert fact(response, "mode") == (
        "Embedded: SQLite (embedded) and the in-memory channel layer (this process only)"
    )
    assert fact(response, "database") == "SQLite (embedded) · /srv/rbee/rbee.sqlite3"
    assert fact(response, "sink") == f"directory {tmp_path / 'cps'}"
    # No recorded listen address (not started by `rbee queen start`): the request's.
    assert fact(response, "listen") == "testserver:80"


# Your account: the password ---------------------------------------------------------------


def test_the_password_changes_with_the_current_one_and_the_session_stays() -> None:
    user = make_user("ops", "fleet")
    client = signed_in(user)
    response = client.post(
        "/ui/settings/password",
        {"old_password": PASSWORD, "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD},
    )
    assert response.status_code == 302
    assert response["Location"] == "/ui/settings#account"
    user.refresh_from_db()
    assert user.check_password(NEW_PASSWORD) and not user.check_password(PASSWORD)
    # Still signed in (update_session_auth_hash), and told so.
    follow = client.get("/ui/settings")
    assert follow.status_code == 200
    assert "Your password is changed." in text(follow)
    # The current password was checked by the backend: a sign-in check, audited.
    assert len(events(A.LOGIN_SUCCESS)) == 1
    # A new sign-in takes the new password only.
    assert Client().post("/ui/login", {"username": "ops", "password": PASSWORD}).status_code == 400
    assert (
        Client().post("/ui/login", {"username": "ops", "password": NEW_PASSWORD}).status_code == 302
    )


def test_a_wrong_current_password_is_a_400_counted_as_a_failed_sign_in() -> None:
    user = make_user("ops", "fleet")
    client = signed_in(user)
    response = client.post(
        "/ui/settings/password",
        {
            "old_password": "not-it-000",
            "new_password1": NEW_PASSWORD,
            "new_password2": NEW_PASSWORD,
        },
    )
    assert response.status_code == 400
    assert "Your current password was entered incorrectly." in text(response)
    assert 'aria-invalid="true" aria-describedby="pw-old-err"' in response.content.decode()
    user.refresh_from_db()
    assert user.check_password(PASSWORD) and not user.check_password(NEW_PASSWORD)
    assert len(events(A.LOGIN_FAILURE)) == 1
    assert events(A.LOGIN_SUCCESS) == []


@override_settings(RBEE_LOGIN_MAX_FAILURES=2)
def test_guessing_the_current_password_locks_out() -> None:
    user = make_user("ops", "fleet")
    client = signed_in(user)
    for _ in range(2):
        client.post(
            "/ui/settings/password",
            {"old_password": "guess-000000", "new_password1": "x" * 12, "new_password2": "x" * 12},
        )
    # Locked: even the right current password is refused, before any hashing.
    response = client.post(
        "/ui/settings/password",
        {"old_password": PASSWORD, "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD},
    )
    assert response.status_code == 400
    assert "Too many failed attempts: try again in" in text(response)
    user.refresh_from_db()
    assert user.check_password(PASSWORD)


@pytest.mark.parametrize(
    ("new1", "new2", "message"),
    [
        ("short", "short", "This password is too short. It must contain at least 8 characters."),
        (NEW_PASSWORD, NEW_PASSWORD + "x", "The two password fields didn\u2019t match."),
    ],
)
def test_the_new_password_passes_djangos_validators(new1: str, new2: str, message: str) -> None:
    user = make_user("ops", "fleet")
    response = signed_in(user).post(
        "/ui/settings/password",
        {"old_password": PASSWORD, "new_password1": new1, "new_password2": new2},
    )
    assert response.status_code == 400
    assert message in text(response)
    user.refresh_from_db()
    assert user.check_password(PASSWORD)


def test_the_password_form_needs_its_csrf_token() -> None:
    user = make_user("ops", "fleet")
    client = signed_in(user, enforce_csrf_checks=True)
    response = client.post(
        "/ui/settings/password",
        {"old_password": PASSWORD, "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD},
    )
    assert response.status_code == 403
    user.refresh_from_db()
    assert user.check_password(PASSWORD)
    # With the token from the page, the same post goes through.
    page = client.get("/ui/settings").content.decode()
    token = match(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    response = client.post(
        "/ui/settings/password",
        {
            "csrfmiddlewaretoken": token,
            "old_password": PASSWORD,
            "new_password1": NEW_PASSWORD,
            "new_password2": NEW_PASSWORD,
        },
    )
    assert response.status_code == 302
    user.refresh_from_db()
    assert user.check_password(NEW_PASSWORD)


# Operators (superusers) -------------------------------------------------------------------


def test_only_a_superuser_manages_operators() -> None:
    make_user("carol", "fleet")
    ops = signed_in(make_user("ops", "fleet", "scheduler", "tenants", "audit"))
    before = AuditEvent.objects.count()
    assert ops.post("/ui/settings/operators/carol/areas", {"areas": ["audit"]}).status_code == 403
    response = ops.post(
        "/ui/settings/operators",
        {
            "username": "mallory",
            "areas": ["fleet"],
            "password1": NEW_PASSWORD,
            "password2": NEW_PASSWORD,
        },
    )
    assert response.status_code == 403
    assert operator_areas(user=fresh("carol")) == ["fleet"]
    assert not User.objects.filter(username="mallory").exists()
    assert AuditEvent.objects.count() == before


def test_a_superuser_sees_every_operator_and_their_areas() -> None:
    make_user("carol", "fleet", "audit")
    make_user("dave")  # not staff: a portal user, not listed
    root = signed_in(make_user("root", superuser=True))
    response = root.get("/ui/settings")
    body = response.content.decode()
    assert re.findall(r'<tr data-operator="([^"]+)">', body) == ["carol", "root"]
    carol = match(r'<tr data-operator="carol">(.*?)</tr>', body)
    assert re.findall(r'value="(\w+)" checked', carol) == ["fleet", "audit"]
    root_row = match(r'<tr data-operator="root">(.*?)</tr>', body)
    assert "every area" in root_row and "<form" not in root_row


def test_a_superuser_grants_and_revokes_areas_audited_as_the_cli() -> None:
    make_user("carol", "fleet")
    root = signed_in(make_user("root", superuser=True))
    response = root.post("/ui/settings/operators/carol/areas", {"areas": ["fleet", "audit"]})
    assert response.status_code == 302
    assert response["Location"] == "/ui/settings#operators"
    assert operator_areas(user=fresh("carol")) == ["fleet", "audit"]
    grant = one(A.OPERATOR_GRANT)
    assert (grant["actor"], grant["subject"]) == ("user:root@example.com", "user:carol@example.com")
    assert grant["data"]["areas"] == ["audit"]
    assert events(A.OPERATOR_REVOKE) == []
    assert "carol may now manage: fleet, audit." in text(root.get("/ui/settings"))

    root.post("/ui/settings/operators/carol/areas", {"areas": ["audit"]})
    assert operator_areas(user=fresh("carol")) == ["audit"]
    revoke = one(A.OPERATOR_REVOKE)
    assert revoke["actor"] == "user:root@example.com"
    assert revoke["data"]["areas"] == ["fleet"]
    assert len(events(A.OPERATOR_GRANT)) == 1

    # Nothing ticked differently: nothing recorded.
    before = AuditEvent.objects.count()
    root.post("/ui/settings/operators/carol/areas", {"areas": ["audit"]})
    assert AuditEvent.objects.count() == before


def test_areas_of_unknown_users_and_unknown_areas_change_nothing() -> None:
    make_user("carol", "fleet")
    make_user("dave")  # exists, but not an operator: not made one from here
    root = signed_in(make_user("root", superuser=True))
    before = AuditEvent.objects.count()
    assert root.post("/ui/settings/operators/nobody/areas", {"areas": ["fleet"]}).status_code == 404
    assert root.post("/ui/settings/operators/dave/areas", {"areas": ["fleet"]}).status_code == 404
    assert not fresh("dave").is_staff and operator_areas(user=fresh("dave")) == []
    response = root.post("/ui/settings/operators/carol/areas", {"areas": ["fleet", "root"]})
    assert response.status_code == 302
    assert operator_areas(user=fresh("carol")) == ["fleet"]
    assert AuditEvent.objects.count() == before
    assert "Unknown area: use fleet, scheduler, tenants, audit." in text(root.get("/ui/settings"))


def test_a_superuser_creates_an_operator_with_a_password_they_set() -> None:
    root = signed_in(make_user("root", superuser=True))
    response = root.post(
        "/ui/settings/operators",
        {
            "username": "erin",
            "email": "erin@example.com",
            "areas": ["scheduler", "audit"],
            "password1": NEW_PASSWORD,
            "password2": NEW_PASSWORD,
        },
    )
    assert response.status_code == 302
    erin = fresh("erin")
    assert erin.is_staff and not erin.is_superuser and erin.check_password(NEW_PASSWORD)
    assert operator_areas(user=erin) == ["scheduler", "audit"]
    made = one(A.OPERATOR_CREATE)
    assert (made["actor"], made["subject"]) == ("user:root@example.com", "user:erin@example.com")
    assert made["data"]["areas"] == ["audit", "scheduler"] and made["data"]["superuser"] is False
    assert NEW_PASSWORD not in root.get("/ui/settings").content.decode()
    # The new operator signs in with it.
    assert (
        Client().post("/ui/login", {"username": "erin", "password": NEW_PASSWORD}).status_code
        == 302
    )


@pytest.mark.parametrize(
    ("form", "message"),
    [
        (
            {"username": "erin", "areas": ["fleet"], "password1": "short", "password2": "short"},
            "This password is too short.",
        ),
        (
            {"username": "erin", "areas": ["fleet"], "password1": NEW_PASSWORD, "password2": "x"},
            "The two passwords differ.",
        ),
        (
            {"username": "erin", "password1": NEW_PASSWORD, "password2": NEW_PASSWORD},
            "This field is required.",
        ),
        (
            {
                "username": "er in",
                "areas": ["fleet"],
                "password1": NEW_PASSWORD,
                "password2": NEW_PASSWORD,
            },
            "Letters, digits and @ . + - _ only.",
        ),
    ],
)
def test_a_refused_new_operator_is_a_400_and_nothing_is_created(
    form: dict[str, Any], message: str
) -> None:
    root = signed_in(make_user("root", superuser=True))
    before = AuditEvent.objects.count()
    response = root.post("/ui/settings/operators", form)
    assert response.status_code == 400
    assert message in text(response)
    assert not User.objects.filter(username__in=["erin", "er in"]).exists()
    assert AuditEvent.objects.count() == before


def test_an_existing_name_is_refused() -> None:
    make_user("carol", "fleet")
    root = signed_in(make_user("root", superuser=True))
    response = root.post(
        "/ui/settings/operators",
        {
            "username": "carol",
            "areas": ["audit"],
            "password1": NEW_PASSWORD,
            "password2": NEW_PASSWORD,
        },
    )
    assert response.status_code == 400
    assert "user 'carol' already exists" in text(response)
    assert fresh("carol").check_password(PASSWORD)
    assert operator_areas(user=fresh("carol")) == ["fleet"]


# Hive setup ---------------------------------------------------------------------------------


def test_the_hive_commands_carry_this_queens_url_and_the_name_asked_for() -> None:
    client = signed_in(make_user("ops", "fleet"))
    body = client.get("/ui/settings?hive=gpu-box-1", HTTP_HOST="queen.lan:7833").content.decode()
    assert '<pre id="cmd-token"><code>rbee hive token --name gpu-box-1</code></pre>' in body
    assert (
        '<pre id="cmd-start"><code>rbee hive start --queen http://queen.lan:7833 '
        "--name gpu-box-1 --token TOKEN</code></pre>"
    ) in body
    assert 'data-copy="#cmd-start"' in body and 'data-copy="#cmd-token"' in body
    assert '<a href="/console/hives">Console · Hives</a>' in body  # the fleet area makes tokens
    assert "loopback address" not in body

    # A name rbee would refuse stays a placeholder; a loopback host gets a warning.
    audit_only = signed_in(make_user("aud", "audit"))
    body = audit_only.get("/ui/settings?hive=<b>x", HTTP_HOST="127.0.0.1:7833").content.decode()
    assert "rbee hive token --name NAME</code>" in body
    assert "<b>x" not in body
    assert "You reached this queen through a loopback address" in body
    assert '<a href="/console/hives">' not in body


# The owner `rbee up` signs in with a link: a password nobody knows ------------------------


def link_signed_in() -> tuple[Client, User]:
    from web import services as web_services

    owner = web_services.owner_operator_ensure(actor="cli:test")
    token = web_services.login_link_create(user=owner)
    client = Client()
    assert client.post(f"/ui/link/{token}").status_code == 302
    return client, owner


def test_a_fresh_link_sign_in_sets_a_password_once_without_the_current_one() -> None:
    client, owner = link_signed_in()
    page = client.get("/ui/settings").content.decode()
    assert "data-link-signin" in page and 'name="old_password"' not in page
    response = client.post(
        "/ui/settings/password", {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD}
    )
    assert response.status_code == 302
    owner.refresh_from_db()
    assert owner.check_password(NEW_PASSWORD)
    assert client.get("/ui/settings").status_code == 200  # still signed in
    # Once: the next change needs the current password again.
    page = client.get("/ui/settings").content.decode()
    assert "data-link-signin" not in page and 'name="old_password"' in page
    response = client.post(
        "/ui/settings/password",
        {"new_password1": "third-pw-55555", "new_password2": "third-pw-55555"},
    )
    assert response.status_code == 400
    owner.refresh_from_db()
    assert owner.check_password(NEW_PASSWORD)


def test_a_link_sign_in_older_than_the_links_lifetime_needs_the_current_password() -> None:
    client, owner = link_signed_in()
    session = client.session
    session["rbee_link_signin_at"] = int(time.time()) - 16 * 60
    session.save()
    response = client.post(
        "/ui/settings/password", {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD}
    )
    assert response.status_code == 400
    assert "This field is required." in text(response)
    owner.refresh_from_db()
    assert not owner.check_password(NEW_PASSWORD)


def test_a_password_sign_in_never_skips_the_current_password() -> None:
    user = make_user("ops", "fleet")
    client = Client()
    assert client.post("/ui/login", {"username": "ops", "password": PASSWORD}).status_code == 302
    response = client.post(
        "/ui/settings/password", {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD}
    )
    assert response.status_code == 400
    user.refresh_from_db()
    assert user.check_password(PASSWORD)
