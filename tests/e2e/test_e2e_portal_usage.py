"""A tenant's owner sees a real request in the portal: a real queen and hive serving the
bundled SmolLM2, a key from `rbee key create`, one chat completion with the official
openai client; then, in a real chromium, the usage page's chart and table show that
request with the exact token counts of the response's `usage`, the CSV download holds
the same row, the billing page shows the plan and its remaining quota, and the page
works at 390 px wide. No console error, no CSP refusal."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import openai
import pytest
from playwright.sync_api import expect

from testkit.browser import Browser, problems, shot
from testkit.live import Deployment, Hive, Queen

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CHAT_MODEL = "smollm2-135m-instruct"
EMAIL = "owner@acme.example"
PASSWORD = "pw-123456789"

SETUP = f"""
from decimal import Decimal
from django.contrib.auth.models import User
from billing.models import Price
from tenants.models import Membership, Plan, Tenant
plan = Plan.objects.create(name="team", tokens_per_day=100000, requests_per_minute=60)
Tenant.objects.filter(name="acme").update(plan=plan)
user = User.objects.create_user({EMAIL!r}, {EMAIL!r}, {PASSWORD!r})
Membership.objects.create(user=user, tenant=Tenant.objects.get(name="acme"), role="owner")
Price.objects.create(model={CHAT_MODEL!r}, unit="prompt_tokens", unit_price=Decimal("0.001"))
Price.objects.create(model={CHAT_MODEL!r}, unit="completion_tokens", unit_price=Decimal("0.002"))
"""

INVOICE = """
from datetime import UTC, datetime
from billing.invoices import invoice_build
from tenants.models import Tenant
now = datetime.now(UTC)
invoice_build(tenant=Tenant.objects.get(name="acme"), year=now.year, month=now.month)
"""


def sign_in(page: object, next_url: str) -> None:
    page.goto(f"/portal/login?next={next_url}")  # type: ignore[attr-defined]
    page.get_by_label("E-mail").fill(EMAIL)  # type: ignore[attr-defined]
    page.get_by_label("Password").fill(PASSWORD)  # type: ignore[attr-defined]
    page.get_by_role("button", name="Sign in").click()  # type: ignore[attr-defined]
    page.wait_for_url(f"**{next_url}")  # type: ignore[attr-defined]


def test_an_owner_sees_a_real_request_in_the_portal(browser: Browser) -> None:
    dep = Deployment()
    try:
        queen = Queen(dep)
        Hive(dep, queen, "hive-a", [CHAT_MODEL])
        dep.rbee("tenant", "create", "acme")
        key = dep.rbee("key", "create", "--tenant", "acme").stdout.strip()
        subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", SETUP],
            env=dep.env,
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        )
        client = openai.OpenAI(base_url=f"{queen.url}/v1", api_key=key, max_retries=0)
        reply = client.chat.completions.create(
            model=CHAT_MODEL,
            messages=[{"role": "user", "content": "Say hello to the bees."}],
            max_tokens=16,
            temperature=0,
        )
        assert reply.usage is not None
        prompt, completion = reply.usage.prompt_tokens, reply.usage.completion_tokens
        assert prompt > 0 and completion > 0
        total = prompt + completion
        cost = f"{prompt * 0.001 + completion * 0.002:.6f}"
        today = datetime.now(UTC).date().isoformat()

        page = browser.new_page(queen.url)
        sign_in(page, "/portal/t/acme/usage")
        assert page.title() == "Usage · acme · rbee portal"
        assert page.get_by_role("heading", level=1).inner_text() == "Usage"
        # The table: today's row holds the one request with the response's exact counts.
        row = page.locator(f'[data-usage-table] tr[data-row="{today}"]')
        cells = row.locator("td").all_inner_texts()
        assert cells[:4] == ["1", str(prompt), str(completion), str(total)]
        assert cells[-1] == cost
        assert page.locator('[data-total="requests"]').inner_text() == "1"
        assert page.locator('[data-total="tokens"]').inner_text() == str(total)
        # The charts: drawn by uPlot, from JSON that has the request on today's point.
        expect(page.locator(".chart[data-loaded] .uplot")).to_have_count(3)
        src = page.locator(".chart").nth(1).get_attribute("data-src")
        tokens = page.request.get(queen.url + src).json()
        assert [s["values"][-1] for s in tokens["series"]] == [prompt, completion]
        src = page.locator(".chart").nth(0).get_attribute("data-src")
        requests = page.request.get(queen.url + src).json()
        assert requests["series"][0]["values"][-1] == 1
        assert sum(requests["series"][0]["values"]) == 1
        # Today's quota, as the gate counts it.
        remaining = page.locator('tr[data-limit="tokens_per_day"] [data-remaining]').inner_text()
        assert remaining == str(100000 - total)
        shot(page, "portal-usage")
        # The CSV download: the same row.
        with page.expect_download() as download:
            page.get_by_role("link", name="Download CSV").click()
        path = download.value.path()
        lines = list(csv.reader(io.StringIO(Path(path).read_text())))
        assert lines[0][:4] == ["day", "requests", "prompt_tokens", "completion_tokens"]
        today_line = dict(zip(lines[0], next(line for line in lines if line[0] == today)))
        assert today_line == {
            "day": today,
            "requests": "1",
            "prompt_tokens": str(prompt),
            "completion_tokens": str(completion),
            "images": "0",
            "audio_seconds": "0",
            "characters": "0",
            "video_seconds": "0",
            "total_tokens": str(total),
            "cost": cost,
            "currency": "usd",
        }
        # Grouped by model, through the form.
        page.get_by_label("Group by").select_option("model")
        page.get_by_role("button", name="Show").click()
        page.wait_for_url("**group=model**")
        model_row = page.locator(f'[data-usage-table] tr[data-row="{CHAT_MODEL}"] td')
        assert model_row.all_inner_texts()[:3] == ["1", str(prompt), str(completion)]
        # Custom dates: picking one switches the range to "Custom dates" (usage.js).
        page.get_by_label("From (UTC)").fill(today)
        page.get_by_label("To (UTC)").fill(today)
        assert page.get_by_label("Range", exact=True).input_value() == "custom"
        page.get_by_role("button", name="Show").click()
        page.wait_for_url("**range=custom**")
        period = page.locator("[data-usage-period]").inner_text()
        assert period == f"{today} to {today} (UTC)."
        assert page.locator('[data-total="tokens"]').inner_text() == str(total)
        # A bad custom date is a message, not an error page.
        page.goto("/portal/t/acme/usage?range=custom&start=2026-02-30&end=2026-03-01")
        assert "is not a date" in page.get_by_role("alert").inner_text()
        # Billing: the plan and this month's draft invoice, built from that usage.
        subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", INVOICE],
            env=dep.env,
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        )
        page.get_by_role("link", name="Billing").click()
        page.wait_for_url("**/portal/t/acme/billing")
        assert page.locator("[data-plan]").inner_text() == "team"
        invoice = page.locator("[data-invoices] tbody tr")
        assert invoice.count() == 1
        assert invoice.locator("td").all_inner_texts()[:3] == ["draft", cost, "USD"]
        shot(page, "portal-billing")
        invoice.get_by_role("link").click()
        page.wait_for_url("**/portal/t/acme/billing/invoices/*")
        lines = page.locator("[data-invoice-lines] tbody tr")
        assert [lines.nth(i).locator("th, td").all_inner_texts()[:3] for i in range(2)] == [
            [CHAT_MODEL, "prompt tokens", str(prompt)],
            [CHAT_MODEL, "completion tokens", str(completion)],
        ]
        shot(page, "portal-invoice")
        assert problems(page) == []

        narrow = browser.new_page(queen.url, width=390, height=844, mobile=True)
        sign_in(narrow, "/portal/t/acme/usage")
        expect(narrow.locator(".chart[data-loaded] .uplot")).to_have_count(3)
        width = narrow.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"the page is {width}px wide at 390px"
        assert narrow.get_by_role("button", name="Show").is_visible()
        shot(narrow, "portal-usage-390")
        assert problems(narrow) == []
    finally:
        dep.close()
