"""The Settings page in a real chromium against a real queen with one hive.

An operator opens Settings from the nav and reads this queen's facts (the address it
listens on, its live hive and worker; no database URL), copies the hive command with this
queen's URL, changes their password, signs out and in with the new one (the old one is
refused). A superuser grants that operator the audit area from the page, and `rbee
operator list` sees it. The page at 390 px fits the screen. No console error or CSP
refusal on any page."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from testkit.browser import Browser, operator_login, problems, shot
from testkit.live import Deployment, Hive, Queen
from testkit.machines import machine_path

pytestmark = pytest.mark.e2e

PASSWORD = "pw-123456789"
NEW_PASSWORD = "a-new-pw-987654"


def test_an_operator_changes_their_password_and_a_superuser_grants_an_area(
    browser: Browser,
) -> None:
    dep = Deployment()
    try:
        queen = Queen(dep)
        Hive(
            dep,
            queen,
            "box-1",
            ["llama-3-8b=echo:@cuda:0"],
            extra_args=["--inventory", machine_path("old-server-2x3090")],
        )
        queen.wait_for_model("box-1", "llama-3-8b")
        dep.rbee(
            "operator", "create", "ops", "--perm", "fleet", "--password-stdin",
            input=f"{PASSWORD}\n",
        )  # fmt: skip
        dep.rbee(
            "operator", "create", "root", "--superuser", "--password-stdin",
            input=f"{PASSWORD}\n",
        )  # fmt: skip

        # An operator opens Settings from the nav.
        page = browser.new_page(queen.url)
        operator_login(page, "ops", PASSWORD)
        page.get_by_role("navigation", name="Main").get_by_role("link", name="Settings").click()
        page.wait_for_url(re.compile(r".*/ui/settings$"))
        assert page.title() == "Settings · rbee"
        assert page.get_by_role("heading", level=1).inner_text() == "Settings"
        assert page.locator("[data-fact=listen]").inner_text() == f"127.0.0.1:{queen.port}"
        assert page.locator("[data-fact=hives]").inner_text() == "1 (1 live)"
        assert page.locator("[data-fact=workers]").inner_text() == "1 (1 ready)"
        assert page.locator("[data-my-areas]").inner_text() == "fleet"
        expect(page.locator("#operators")).to_have_count(0)  # not a superuser
        body = page.content()
        assert "postgres://" not in body and "redis://" not in body

        # The hive commands, for a name, with this queen's URL, copied to the clipboard.
        page.get_by_label("Hive name").fill("gpu-box-2")
        page.get_by_role("button", name="Fill in the commands").click()
        start = f"rbee hive start --queen {queen.url} --name gpu-box-2 --token TOKEN"
        expect(page.locator("#cmd-start")).to_have_text(start)
        expect(page.locator("#cmd-token")).to_have_text("rbee hive token --name gpu-box-2")
        page.get_by_role("button", name="Copy the start command").click()
        expect(page.get_by_role("button", name="Copy the start command")).to_have_text("Copied")
        assert page.evaluate("navigator.clipboard.readText()") == start

        # A wrong current password is refused beside the field; then the right one.
        page.get_by_label("Current password").fill("not-it-000")
        page.get_by_label("New password", exact=True).fill(NEW_PASSWORD)
        page.get_by_label("New password again").fill(NEW_PASSWORD)
        page.get_by_role("button", name="Change password").click()
        expect(page.locator("#pw-old-err")).to_have_text(
            "Your current password was entered incorrectly."
        )
        page.get_by_label("Current password").fill(PASSWORD)
        page.get_by_label("New password", exact=True).fill(NEW_PASSWORD)
        page.get_by_label("New password again").fill(NEW_PASSWORD)
        page.get_by_role("button", name="Change password").click()
        expect(page.get_by_role("status")).to_have_text("Your password is changed.")
        assert page.url.endswith("/ui/settings#account")  # still signed in
        assert problems(page) == []

        # Signed out, the old password is refused and the new one lets them in.
        page.get_by_role("button", name="Sign out").click()
        page.wait_for_url(re.compile(r".*/ui/login$"))
        page.get_by_label("Username").fill("ops")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        assert page.get_by_role("alert").inner_text() == "Unknown account or wrong password."
        operator_login(page, "ops", NEW_PASSWORD)
        page.goto("/ui/settings")
        assert page.locator("[data-my-areas]").inner_text() == "fleet"
        assert problems(page) == []

        # A superuser grants ops the audit area.
        root = browser.new_page(queen.url)
        operator_login(root, "root", PASSWORD)
        root.goto("/ui/settings")
        row = root.locator("tr[data-operator=ops]")
        expect(row.get_by_role("checkbox", name="fleet")).to_be_checked()
        row.get_by_role("checkbox", name="audit").check()
        row.get_by_role("button", name="Save the areas of ops").click()
        expect(root.get_by_role("status")).to_have_text("ops may now manage: fleet, audit.")
        expect(
            root.locator("tr[data-operator=ops]").get_by_role("checkbox", name="audit")
        ).to_be_checked()
        listed = dep.rbee("operator", "list").stdout
        assert re.search(r"^ops\s+fleet, audit\s*$", listed, re.M), listed
        root.locator("#queen").scroll_into_view_if_needed()
        shot(root, "ui-settings")
        assert problems(root) == []

        # ops sees the new area at once (their next page load).
        page.reload()
        assert page.locator("[data-my-areas]").inner_text() == "fleet, audit"
        assert problems(page) == []

        # 390 px: the page fits, the commands and forms are reachable.
        narrow = browser.new_page(queen.url, width=390, height=844, mobile=True)
        operator_login(narrow, "root", PASSWORD)
        narrow.goto("/ui/settings")
        assert narrow.get_by_role("button", name="Change password").is_visible()
        assert narrow.get_by_role("button", name="Create operator").is_visible()
        width = narrow.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, width
        shot(narrow, "ui-settings-phone")
        assert problems(narrow) == []
    finally:
        dep.close()
