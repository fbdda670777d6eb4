"""A real chromium signs in to /ui against a real queen: the page loads every script
under the strict CSP without a single refusal, and a wrong password stays on the form."""

from __future__ import annotations

import pytest

from testkit.browser import Browser, operator_login, problems, shot
from testkit.live import Deployment, Queen

pytestmark = pytest.mark.e2e


def test_an_operator_signs_in_to_the_dashboard_in_a_real_browser(browser: Browser) -> None:
    dep = Deployment()
    try:
        queen = Queen(dep)
        dep.rbee(
            "operator",
            "create",
            "ops",
            "--perm",
            "fleet",
            "--password-stdin",
            input="pw-123456789\n",
        )
        page = browser.new_page(queen.url)
        missing: list[str] = []
        page.on("response", lambda r: missing.append(r.url) if r.status == 404 else None)
        page.goto("/ui/")
        assert "/ui/login" in page.url
        assert page.title() == "Sign in · rbee"
        page.get_by_label("Username").fill("ops")
        page.get_by_label("Password").fill("not-it")
        page.get_by_role("button", name="Sign in").click()
        assert page.get_by_role("alert").inner_text() == "Unknown account or wrong password."
        shot(page, "ui-login-failed")
        operator_login(page, "ops", "pw-123456789")
        assert page.url.endswith("/ui/")
        assert page.evaluate("typeof htmx") == "object"
        assert page.evaluate("typeof Alpine") == "object"
        assert problems(page) == []
        assert missing == []  # every file a page asks for (its icon too) is there
    finally:
        dep.close()
