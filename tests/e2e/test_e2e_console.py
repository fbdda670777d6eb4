"""The operators' console in a real chromium against a real queen: an operator with the
tenants, audit and fleet areas creates a tenant, changes its plan, makes a hive token and
sees it once, finds those events in the audit log and opens the GDPR queue; an operator
with only the fleet area is refused the tenants page. No page meets a CSP refusal or a
console error."""

from __future__ import annotations

import re

import pytest

from testkit.browser import Browser, operator_login, problems, shot
from testkit.live import Deployment, Queen

pytestmark = pytest.mark.e2e

PW = "pw-123456789"


def test_an_operator_runs_the_console_in_a_real_browser(browser: Browser) -> None:
    dep = Deployment()
    try:
        queen = Queen(dep)
        dep.rbee("plan", "defaults")
        dep.rbee(
            "operator",
            "create",
            "boss",
            "--email",
            "boss@example.com",
            "--perm",
            "tenants",
            "--perm",
            "audit",
            "--perm",
            "fleet",
            "--password-stdin",
            input=f"{PW}\n",
        )
        dep.rbee(
            "operator", "create", "racker", "--perm", "fleet", "--password-stdin", input=f"{PW}\n"
        )
        dep.rbee(
            "gdpr", "export", "--subject", "someone@example.com", "--out", str(dep.home / "x.zip")
        )

        page = browser.new_page(queen.url)
        operator_login(page, "boss", PW)
        page.goto("/console/")
        assert page.title() == "Console · rbee console"
        for panel in ("Tenants past due", "GDPR deadlines within 7 days", "Hives not online"):
            assert page.get_by_role("heading", name=re.compile(panel)).is_visible()
        shot(page, "console-home")

        # A tenant, created and moved to another plan.
        page.get_by_role("link", name="Tenants", exact=True).click()
        page.get_by_label("Name", exact=True).fill("acme")
        page.get_by_label("Plan", exact=True).select_option("free")
        page.get_by_role("button", name="Create tenant").click()
        page.wait_for_url("**/console/tenants/acme")
        assert page.get_by_role("heading", level=1).inner_text().startswith("Tenant acme")
        page.get_by_label("Plan", exact=True).select_option("pro")
        page.get_by_role("button", name="Change plan").click()
        page.wait_for_url("**/console/tenants/acme")
        assert "acme is now on the plan pro." in page.get_by_role("status").inner_text()
        shot(page, "console-tenant-detail")
        page.goto("/console/tenants")
        row = page.get_by_role("row", name=re.compile(r"^acme"))
        assert "pro" in row.inner_text() and "active" in row.inner_text()
        shot(page, "console-tenants")

        # A hive token, shown once with a copy button, then never again.
        page.get_by_role("link", name="Hives").click()
        page.get_by_label("Hive name").fill("gpu-1")
        page.get_by_label("Region").fill("eu-west")
        page.get_by_role("button", name="Create token").click()
        token = page.locator("#new-token").inner_text()
        assert re.fullmatch(r"[a-z-]+-[a-z0-9]{10}-\S{20,}", token), token
        page.get_by_role("button", name="Copy").click()
        assert page.evaluate("navigator.clipboard.readText()") == token
        shot(page, "console-hives")
        page.goto("/console/hives")
        assert token not in page.content()
        assert page.get_by_role("rowheader", name="gpu-1", exact=True).count() == 1

        # The audit log has those events, by this operator.
        page.get_by_role("link", name="Audit log").click()
        page.get_by_label("Actor").fill("boss@example.com")
        page.get_by_role("button", name="Search").click()
        page.wait_for_url(re.compile(r".*/console/audit\?.*actor=boss"))
        table = page.locator("table").first.inner_text()
        for action in ("tenant.create", "tenant.plan", "hive.token"):
            assert action in table, action
        assert token not in page.content()
        page.get_by_role("button", name="Verify now").click()
        assert page.get_by_role("status").first.inner_text().startswith("verified ok:")
        page.goto("/console/audit?actor=boss%40example.com")
        shot(page, "console-audit")

        # The GDPR queue with the export request and its deadline.
        page.get_by_role("link", name="GDPR requests").click()
        assert "No request here." in page.locator("table").inner_text()  # none open
        page.get_by_label("Requests", exact=True).select_option("all")
        page.get_by_role("button", name="Show").click()
        page.wait_for_url(re.compile(r".*state=all.*"))
        queue = page.locator("table").inner_text()
        assert "user:someone@example.com" in queue and "export" in queue
        shot(page, "console-gdpr")
        assert problems(page) == []

        # Narrow: the tenant page at 390 px, every control reachable.
        narrow = browser.new_page(queen.url, width=390, height=844, mobile=True)
        operator_login(narrow, "boss", PW)
        narrow.goto("/console/tenants/acme")
        assert narrow.get_by_role("button", name="Change plan").is_visible()
        width = narrow.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, width
        shot(narrow, "console-tenant-detail-390")
        assert problems(narrow) == []

        # Only the fleet area: the tenants page is refused on the server.
        fleet = browser.new_page(queen.url)
        operator_login(fleet, "racker", PW)
        response = fleet.goto("/console/tenants")
        assert response is not None and response.status == 403
        response = fleet.goto("/console/hives")
        assert response is not None and response.status == 200
        assert problems(fleet) == []
    finally:
        dep.close()
