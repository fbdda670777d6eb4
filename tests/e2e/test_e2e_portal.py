"""The tenant portal in a real chromium against a real queen and a real hive serving
SmolLM2: an owner accepts an invitation on its page (setting a password), signs in,
creates a key in the page, reads its secret from the page, calls the API with it through
the official openai client, sees that request in the usage chart and table, and sees the
key's "last used" on the keys page; a member of
one tenant opening another tenant's pages gets 404. Every page loads under the strict
CSP without a console error, at 1280 px and at 390 px."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime

import openai
import pytest
from playwright.sync_api import expect

from testkit.browser import Browser, portal_login, problems, shot
from testkit.live import ROOT, Deployment, Hive, Queen
from tests.conftest import CHAT_MODEL

pytestmark = pytest.mark.e2e

OWNER = "owner@example.com"
PASSWORD = "owner-pw-123456789"

INVITE = """
import django, sys
django.setup()
from tenants.models import Tenant
from tenants.services import invitation_create
invitation, token = invitation_create(
    tenant=Tenant.objects.get(name=sys.argv[1]), email=sys.argv[2], role=sys.argv[3],
    invited_by=None, actor="cli",
)
print(token)
"""


WIDE = """Array.from(document.querySelectorAll('body *'))
  .filter(e => e.getBoundingClientRect().right > 391 && !e.closest('.table-wrap'))
  .map(e => e.tagName + '.' + e.className + '#' + e.id).slice(0, 12)"""


def invite(dep: Deployment, tenant: str, email: str, role: str) -> str:
    """An invitation made with tenants.services in the deployment's own database."""
    proc = subprocess.run(
        [sys.executable, "-c", INVITE, tenant, email, role],
        env={**dep.env, "DJANGO_SETTINGS_MODULE": "rbee.settings"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return proc.stdout.strip().splitlines()[-1]


def test_an_owner_joins_creates_a_key_and_uses_it(browser: Browser) -> None:
    dep = Deployment()
    try:
        queen = Queen(dep)
        Hive(dep, queen, "hive-a", [CHAT_MODEL])
        dep.rbee("tenant", "create", "acme")
        dep.rbee("tenant", "create", "globex")
        token = invite(dep, "acme", OWNER, "owner")

        page = browser.new_page(queen.url)
        page.goto(f"/portal/invitations/{token}")
        assert page.title() == "Invitation · rbee portal"
        assert page.get_by_role("heading", name="Invitation").is_visible()
        shot(page, "portal-invitation")
        page.get_by_label("Password", exact=True).fill(PASSWORD)
        page.get_by_label("Password again").fill(PASSWORD)
        page.get_by_role("button", name="Create account and join").click()
        page.wait_for_url("**/portal/t/acme/")
        assert "you joined acme as owner." in page.locator(".messages").inner_text()

        # Sign out and in again with the password chosen on the invitation page.
        page.get_by_role("button", name="Sign out").click()
        page.wait_for_url("**/portal/login")
        portal_login(page, OWNER, PASSWORD)
        assert page.url.endswith("/portal/t/acme/")
        assert page.title() == "acme · Overview · rbee portal"
        assert page.locator("#qs-base").input_value() == f"{queen.url}/v1"
        assert "$RBEE_API_KEY" in page.locator("#qs-curl").inner_text()
        assert CHAT_MODEL in page.locator("#qs-curl").inner_text()
        shot(page, "portal-overview")

        page.get_by_role("link", name="API keys", exact=True).click()
        page.wait_for_url("**/portal/t/acme/keys")
        page.get_by_label("Name").fill("e2e")
        page.get_by_label("chat").check()
        page.get_by_role("button", name="Create key").click()
        secret = page.locator("[data-secret]").inner_text().strip()
        assert secret.startswith("sk-rbee-")
        page.get_by_role("button", name="Copy key").click()
        assert page.evaluate("navigator.clipboard.readText()") == secret
        assert secret in page.locator("#qs-curl").inner_text()
        shot(page, "portal-key-created")
        assert problems(page) == []

        client = openai.OpenAI(base_url=f"{queen.url}/v1", api_key=secret, max_retries=0)
        reply = client.chat.completions.create(
            model=CHAT_MODEL,
            messages=[{"role": "user", "content": "Say hello."}],
            max_tokens=8,
        )
        assert reply.choices[0].message.content
        assert reply.usage is not None

        # That request in the usage chart and table, made with the key made in the page.
        page.get_by_role("link", name="Usage", exact=True).click()
        page.wait_for_url("**/portal/t/acme/usage")
        today = datetime.now(UTC).date().isoformat()
        cells = page.locator(f'[data-usage-table] tr[data-row="{today}"] td').all_inner_texts()
        used = [reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.total_tokens]
        assert cells[:4] == ["1", *map(str, used)]
        expect(page.locator(".chart[data-loaded] .uplot")).to_have_count(3)
        src = page.locator(".chart").nth(0).get_attribute("data-src")
        assert src is not None
        drawn = page.request.get(queen.url + src).json()
        assert drawn["series"][0]["values"][-1] == 1 and sum(drawn["series"][0]["values"]) == 1
        # The free plan is unlimited: today's use still shows (from the roll-up), not 0.
        today_used = page.locator('tr[data-limit="requests_per_day"] [data-used]').inner_text()
        assert today_used == "1"
        page.get_by_label("Group by").select_option("key")
        page.get_by_role("button", name="Show").click()
        page.wait_for_url("**group=key**")
        assert "e2e" in page.locator("[data-usage-table]").inner_text()
        assert secret not in page.content()
        shot(page, "portal-usage-own-key")
        assert problems(page) == []

        page.goto("/portal/t/acme/keys")
        prefix = secret.split("-")[2]
        row = page.locator(f'tr[data-key-prefix="{prefix}"]')
        assert row.locator("[data-last-used]").inner_text().strip() != "never"
        assert row.locator("td").nth(6).inner_text().strip() == "active"
        assert secret not in page.content()
        shot(page, "portal-keys")

        # Rotate with an hour's grace: both keys work; then revoke the old one (confirmed).
        row.get_by_label("keeps working for").select_option("3600")
        row.get_by_role("button", name="Rotate").click()
        assert page.get_by_role("heading", name="Key rotated").is_visible()
        rotated = page.locator("[data-secret]").inner_text().strip()
        assert rotated != secret
        for key in (secret, rotated):
            again = openai.OpenAI(base_url=f"{queen.url}/v1", api_key=key, max_retries=0)
            assert again.models.list().data[0].id == CHAT_MODEL
        page.goto("/portal/t/acme/keys")
        page.once("dialog", lambda dialog: dialog.accept())
        row.get_by_role("button", name="Revoke").click()
        page.wait_for_url("**/portal/t/acme/keys")
        assert row.locator("td").nth(6).inner_text().strip() == "revoked"
        with pytest.raises(openai.AuthenticationError):
            client.models.list()

        page.get_by_role("link", name="Members", exact=True).click()
        page.wait_for_url("**/portal/t/acme/members")
        assert page.locator(f'tr[data-member="{OWNER}"]').is_visible()
        shot(page, "portal-members")

        page.get_by_role("link", name="Privacy", exact=True).click()
        page.wait_for_url("**/portal/t/acme/privacy")
        page.get_by_role("button", name="Request an export").click()
        page.wait_for_url("**/portal/t/acme/privacy")
        assert "Export #" in page.locator(".messages").inner_text()
        shot(page, "portal-privacy")
        assert problems(page) == []

        # Another tenant's pages are a 404 for a member of acme only.
        for path in ("/portal/t/globex/", "/portal/t/globex/keys", "/portal/t/globex/members"):
            response = page.goto(path)
            assert response is not None and response.status == 404, path
        assert problems(page) == []

        narrow = browser.new_page(queen.url, width=390, height=844, mobile=True)
        portal_login(narrow, OWNER, PASSWORD)
        narrow.goto("/portal/t/acme/keys")
        wide = narrow.evaluate(WIDE)
        assert narrow.evaluate("document.documentElement.scrollWidth") <= 390, wide
        narrow.get_by_text("Menu").click()
        assert narrow.get_by_role("link", name="Privacy").is_visible()
        shot(narrow, "portal-keys-390")
        assert problems(narrow) == []
    finally:
        dep.close()
