"""Failed sign-ins are throttled (tenants/auth.py), over real HTTP against a real queen:
five failures lock the username, from any address, and the address, for any username,
for 15 minutes (429 with Retry-After, even for the right password: nothing is hashed);
the admin's login form is locked the same way. HTTP Basic is refused on cross-site
requests and never challenged (no `WWW-Authenticate: Basic`, which browsers cache)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from testkit.live import Deployment, Queen

pytestmark = pytest.mark.e2e

PASSWORD = "right-pw-for-tests"


@pytest.fixture(scope="module")
def queen() -> Iterator[Queen]:
    dep = Deployment()
    try:
        q = Queen(dep)
        for name in ("ops", "ops2", "ops3", "ops4"):
            dep.rbee(
                "operator", "create", name, "--perm", "fleet", "--password-stdin",
                input=PASSWORD + "\n",
            )  # fmt: skip
        yield q
    finally:
        dep.close()


def client(address: str) -> httpx.Client:
    """A client whose requests come from `address` (any of 127.0.0.0/8 is this machine)."""
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=30)


def models(queen: Queen, address: str, user: str, password: str, **headers: str) -> httpx.Response:
    with client(address) as c:
        return c.get(f"{queen.url}/api/models", auth=(user, password), headers=headers)


def test_five_failures_lock_the_username_from_every_address(queen: Queen) -> None:
    for n in range(2, 7):  # one failure from each of five addresses
        r = models(queen, f"127.0.0.{n}", "ops", "wrong")
        assert r.status_code == 403, r.text
    locked = models(queen, "127.0.0.7", "ops", PASSWORD)
    assert locked.status_code == 429, locked.text
    assert 850 <= int(locked.headers["retry-after"]) <= 900
    assert "too many failed sign-ins" in locked.json()["error"]["message"]
    # The username is locked, not that last address.
    assert models(queen, "127.0.0.7", "ops2", PASSWORD).status_code == 200


def test_five_failures_lock_the_address_for_every_username(queen: Queen) -> None:
    for n in range(5):
        assert models(queen, "127.0.0.20", f"nobody-{n}", "wrong").status_code == 403
    locked = models(queen, "127.0.0.20", "ops3", PASSWORD)
    assert locked.status_code == 429 and int(locked.headers["retry-after"]) > 0
    assert models(queen, "127.0.0.21", "ops3", PASSWORD).status_code == 200


def test_four_failures_and_a_success_do_not_lock(queen: Queen) -> None:
    for _ in range(4):
        assert models(queen, "127.0.0.30", "ops4", "wrong").status_code == 403
    assert models(queen, "127.0.0.30", "ops4", PASSWORD).status_code == 200


def test_the_admin_login_form_is_locked_too(queen: Queen) -> None:
    with client("127.0.0.40") as c:

        def login(password: str) -> httpx.Response:
            page = c.get(f"{queen.url}/admin/login/")
            token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
            assert token is not None, page.text[:500]
            return c.post(
                f"{queen.url}/admin/login/?next=/admin/",
                data={
                    "username": "ops2",
                    "password": password,
                    "csrfmiddlewaretoken": token.group(1),
                    "next": "/admin/",
                },
            )

        for _ in range(5):
            assert login("wrong").status_code == 200  # the form again, with its error
        assert login(PASSWORD).status_code == 200  # locked: the right password fails too
    # The username is now locked for HTTP Basic as well.
    assert models(queen, "127.0.0.41", "ops2", PASSWORD).status_code == 429
    # Another user, from another address, signs in (a redirect to the admin).
    with client("127.0.0.42") as c:
        page = c.get(f"{queen.url}/admin/login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
        assert token is not None
        ok = c.post(
            f"{queen.url}/admin/login/?next=/admin/",
            data={"username": "ops4", "password": PASSWORD, "csrfmiddlewaretoken": token.group(1)},
        )
        assert ok.status_code == 302, ok.text[:300]


def test_basic_is_refused_cross_site_and_never_challenged(queen: Queen) -> None:
    good = ("127.0.0.50", "ops3", PASSWORD)
    for headers in (
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
    ):
        r = models(queen, *good, **headers)
        assert r.status_code == 403, (headers, r.text)
        assert "another site" in r.json()["error"]["message"]
        assert "www-authenticate" not in r.headers
    own = queen.url
    assert models(queen, *good, Origin=own).status_code == 200
    assert models(queen, *good, **{"Sec-Fetch-Site": "same-origin"}).status_code == 200
    assert models(queen, *good, **{"Sec-Fetch-Site": "none"}).status_code == 200
    # No credentials, wrong ones, or a locked user: never a Basic challenge.
    with client("127.0.0.51") as c:
        for r in (
            c.get(f"{queen.url}/api/models"),
            c.get(f"{queen.url}/api/tenants"),
            c.get(f"{queen.url}/api/models", auth=("ops3", "wrong")),
        ):
            assert r.status_code in (401, 403)
            assert "www-authenticate" not in r.headers, r.headers
