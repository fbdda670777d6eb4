"""The production profile (rbee/profile.py, RBEE_PRODUCTION=1) and RBEE_HOME's mode."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from kernel.paths import rbee_home
from rbee.profile import security

ROOT = Path(__file__).resolve().parents[2]
PROD = {
    "RBEE_PRODUCTION": "1",
    "RBEE_ALLOWED_HOSTS": "rbee.example.com",
    "RBEE_CSRF_TRUSTED_ORIGINS": "https://rbee.example.com",
}


def test_production_turns_on_secure_cookies_and_hsts() -> None:
    s = security(PROD)
    assert s["RBEE_PRODUCTION"] is True
    assert s["ALLOWED_HOSTS"] == ["rbee.example.com"]
    assert s["CSRF_TRUSTED_ORIGINS"] == ["https://rbee.example.com"]
    assert s["SESSION_COOKIE_SECURE"] is True and s["CSRF_COOKIE_SECURE"] is True
    assert s["SECURE_HSTS_SECONDS"] == 31_536_000 and s["SECURE_HSTS_INCLUDE_SUBDOMAINS"]
    assert security({**PROD, "RBEE_HSTS_SECONDS": "600"})["SECURE_HSTS_SECONDS"] == 600


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"RBEE_PRODUCTION": "1"}, "RBEE_ALLOWED_HOSTS and RBEE_CSRF_TRUSTED_ORIGINS"),
        ({**PROD, "RBEE_ALLOWED_HOSTS": ""}, "RBEE_ALLOWED_HOSTS"),
        ({**PROD, "RBEE_CSRF_TRUSTED_ORIGINS": ""}, "RBEE_CSRF_TRUSTED_ORIGINS"),
        ({**PROD, "RBEE_ALLOWED_HOSTS": "*"}, "may not be '*'"),
        ({**PROD, "RBEE_CSRF_TRUSTED_ORIGINS": "rbee.example.com"}, "not an origin"),
        ({**PROD, "RBEE_DEBUG": "1"}, "RBEE_DEBUG"),
        ({**PROD, "RBEE_TRUSTED_PROXIES": "10.0.0.0/8,proxy"}, "'proxy'"),
        ({**PROD, "RBEE_CORS_ORIGINS": "https://app.example,*"}, "RBEE_CORS_ORIGINS may not"),
        ({"RBEE_CORS_ORIGINS": "app.example"}, "not '\\*' or an origin"),
        ({"RBEE_CORS_ORIGINS": "https://app.example/path"}, "not '\\*' or an origin"),
    ],
)
def test_production_refuses_what_it_cannot_run_safely(env: dict[str, str], says: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=says):
        security(env)


def test_development_keeps_its_defaults_and_trusts_no_proxy_headers() -> None:
    s = security({})
    assert s["RBEE_PRODUCTION"] is False and s["ALLOWED_HOSTS"] == ["*"]
    assert "SESSION_COOKIE_SECURE" not in s and "SECURE_HSTS_SECONDS" not in s
    assert s["SECURE_PROXY_SSL_HEADER"] is None  # a client could claim https otherwise


def test_cors_is_off_unless_origins_are_named() -> None:
    assert security({})["RBEE_CORS_ORIGINS"] == []
    assert security(PROD)["RBEE_CORS_ORIGINS"] == []
    both = "https://app.example, http://localhost:5173"
    named = security({**PROD, "RBEE_CORS_ORIGINS": both})["RBEE_CORS_ORIGINS"]
    assert named == ["https://app.example", "http://localhost:5173"]
    assert security({"RBEE_CORS_ORIGINS": "*"})["RBEE_CORS_ORIGINS"] == ["*"]  # development


def test_proxy_headers_count_only_when_the_proxies_are_named() -> None:
    s = security({**PROD, "RBEE_TRUSTED_PROXIES": "10.0.0.5, 192.168.0.0/16"})
    assert s["RBEE_TRUSTED_PROXIES"] == ["10.0.0.5", "192.168.0.0/16"]
    assert s["SECURE_PROXY_SSL_HEADER"] == ("HTTP_X_FORWARDED_PROTO", "https")
    assert security(PROD)["SECURE_PROXY_SSL_HEADER"] is None


def test_a_queen_serving_tls_sets_secure_cookies_and_hsts_in_either_profile() -> None:
    tls = {"RBEE_TLS_CERT": "/etc/rbee/cert.pem"}
    s = security(tls)
    assert s["RBEE_TLS"] is True and s["RBEE_PRODUCTION"] is False
    assert s["SESSION_COOKIE_SECURE"] is True and s["CSRF_COOKIE_SECURE"] is True
    assert s["SECURE_HSTS_SECONDS"] == 31_536_000
    # Subdomains are the production profile's promise, not every TLS queen's.
    assert "SECURE_HSTS_INCLUDE_SUBDOMAINS" not in s
    assert security({**tls, "RBEE_HSTS_SECONDS": "0"})["SECURE_HSTS_SECONDS"] == 0
    both = security({**PROD, **tls})
    assert both["SECURE_HSTS_SECONDS"] == 31_536_000 and both["SECURE_HSTS_INCLUDE_SUBDOMAINS"]
    assert security({})["RBEE_TLS"] is False


@pytest.mark.parametrize("value", ["soon", "-5"])
def test_a_bad_hsts_duration_is_refused_when_tls_is_served(value: str) -> None:
    with pytest.raises(ImproperlyConfigured, match="RBEE_HSTS_SECONDS"):
        security({"RBEE_TLS_CERT": "/c.pem", "RBEE_HSTS_SECONDS": value})
    assert "SECURE_HSTS_SECONDS" not in security({"RBEE_HSTS_SECONDS": value})  # unused


def test_the_settings_refuse_to_load_in_production_without_hosts(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RBEE_")}
    env.update(RBEE_HOME=str(tmp_path / "home"), RBEE_PRODUCTION="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        env={**env, "DJANGO_SETTINGS_MODULE": "rbee.settings"},
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "RBEE_PRODUCTION=1 needs RBEE_ALLOWED_HOSTS" in proc.stderr


def test_rbee_home_is_created_for_its_owner_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = os.umask(0o022)
    try:
        monkeypatch.setenv("RBEE_HOME", str(tmp_path / "a" / "rbee"))
        made = rbee_home()
        assert stat.S_IMODE(made.stat().st_mode) == 0o700
        open_dir = tmp_path / "open"
        open_dir.mkdir(mode=0o755)
        os.chmod(open_dir, 0o755)
        monkeypatch.setenv("RBEE_HOME", str(open_dir))
        assert stat.S_IMODE(rbee_home().stat().st_mode) == 0o700
    finally:
        os.umask(old)
