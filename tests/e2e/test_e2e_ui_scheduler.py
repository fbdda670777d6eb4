"""An operator changes the scheduler in a real browser and real requests feel it.

A real queen and a hive presenting a server with two RTX 3090s (a recorded inventory; the
echo engine answers). In chromium the operator types a broken script (Check marks line 2,
column 13), then one whose should_admit refuses llama-3-70b and whose route_task sends
everything to the second GPU; Check dry-runs it over the live fleet, Reload puts it in force
without a restart. The official openai client then sees the effect (served by cuda:1,
decided by the script; llama-3-70b refused with the script's reason), the page's recent
decisions name the script, and the charts count exactly the requests that were served."""

from __future__ import annotations

import re
import time
from typing import Any

import openai
import pytest
from playwright.sync_api import expect

from testkit.browser import Browser, operator_login, problems, shot
from testkit.live import Deployment, Hive, Queen
from testkit.machines import machine_path

pytestmark = pytest.mark.e2e

PASSWORD = "pw-123456789"
BROKEN = "fn route_task(task, workers) {\n    let x = ;\n}\n"
SCRIPT = """\
// Keep the 70B model for batch jobs; send everything else to the second GPU.
fn should_admit(task, customer) {
    if task.model == "llama-3-70b" { return deny("70b is kept for batch jobs"); }
    admit()
}

fn route_task(task, workers) {
    workers.filter(|w| w.device == "cuda:1").first()
}
"""
MESSAGES = [{"role": "user", "content": "route me please"}]


def ask(client: openai.OpenAI, model: str = "llama-3-8b") -> Any:
    """A chat completion with its headers (the raw response)."""
    return client.chat.completions.with_raw_response.create(model=model, messages=MESSAGES)


def test_an_operator_reloads_the_scheduler_and_requests_follow_it(browser: Browser) -> None:
    dep = Deployment()
    try:
        queen = Queen(
            dep, env={"RBEE_SCHEDULER_CHECK_SECONDS": "0.2", "RBEE_METRICS_FLUSH_SECONDS": "1"}
        )
        Hive(
            dep,
            queen,
            "old-server",
            [
                "llama-3-8b=echo:@cuda:0",
                "llama-3-8b=echo:@cuda:1",
                "llama-3-70b=echo:@cuda:0",
            ],
            extra_args=["--inventory", machine_path("old-server-2x3090")],
        )
        queen.wait_for_model("old-server", "llama-3-70b")
        dep.rbee(
            "operator", "create", "ops", "--perm", "scheduler", "--password-stdin",
            input=f"{PASSWORD}\n",
        )  # fmt: skip
        dep.rbee("tenant", "create", "acme")
        key = dep.rbee("key", "create", "--tenant", "acme", "--operator").stdout.strip()
        client = openai.OpenAI(base_url=f"{queen.url}/v1", api_key=key, max_retries=0)
        served = 0

        # No script yet: the default policy decides.
        raw = ask(client)
        served += 1
        assert raw.headers["x-rbee-decision"] == "default"

        page = browser.new_page(queen.url)
        operator_login(page, "ops", PASSWORD)
        page.goto("/ui/scheduler")
        assert page.title() == "Scheduler · rbee"
        assert page.get_by_role("heading", level=1).inner_text() == "Scheduler"
        editor = page.get_by_label("Rhai script (should_admit, route_task)")

        # The keyboard: Tab indents, Esc then Tab moves on.
        editor.fill("")
        editor.focus()
        page.keyboard.press("Tab")
        assert editor.input_value() == "    "
        page.keyboard.press("Escape")
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.id") == "check-model"

        # A broken script: Check names line and column, and the editor marks the line.
        editor.fill(BROKEN)
        page.get_by_role("button", name="Check").click()
        alert = page.locator("#check-result [role=alert]")
        expect(alert).to_contain_text("2:13: Unexpected ';'")
        expect(page.locator(".editor .line-err")).to_have_text("    let x = ;")
        assert page.locator(".editor .tok-kw").first.inner_text() == "fn"
        shot(page, "ui-scheduler-check-error")
        page.locator("[data-goto-line]").click()
        assert page.evaluate("document.activeElement.id") == "source"
        assert page.locator("[data-editor-pos]").inner_text() == "Line 2, column 13"

        # The real script: Check dry-runs it over the live fleet, then Reload.
        editor.fill(SCRIPT)
        expect(page.locator(".editor .line-err")).to_have_count(0)
        page.get_by_label("Model").select_option("llama-3-8b")
        page.get_by_role("button", name="Check").click()
        expect(page.locator("[data-check-admission]")).to_have_text("admitted")
        expect(page.locator("[data-check-route]")).to_contain_text("old-server/cuda:1 script")
        page.get_by_label("Model").select_option("llama-3-70b")
        page.get_by_role("button", name="Check").click()
        expect(page.locator("[data-check-admission]")).to_have_text(
            "denied (403): 70b is kept for batch jobs"
        )
        page.get_by_role("button", name="Reload").click()
        page.wait_for_url(re.compile(r".*/ui/scheduler$"))
        expect(page.locator(".messages")).to_contain_text("stored; every queen switches to it")
        expect(page.locator("#in-force")).to_contain_text("web: ops")
        assert editor.input_value() == SCRIPT

        # Real requests feel it, without a restart.
        deadline = time.monotonic() + 15
        while True:
            raw = ask(client)
            served += 1
            if raw.headers["x-rbee-decision"] == "script":
                break
            assert time.monotonic() < deadline, "the reloaded script never decided"
            time.sleep(0.2)
        for _ in range(3):
            raw = ask(client)
            served += 1
            assert raw.headers["x-rbee-decision"] == "script"
            assert raw.headers["x-rbee-worker"] == "old-server/cuda:1"
            answer = raw.parse()
            assert answer.choices[0].message.content == "route me please"
        with pytest.raises(openai.PermissionDeniedError) as refused:
            client.chat.completions.create(model="llama-3-70b", messages=MESSAGES)
        assert "70b is kept for batch jobs" in str(refused.value)

        # The recent decisions name the script, and why.
        page.goto("/ui/scheduler")
        newest = page.locator("tr.decision").first
        assert newest.get_attribute("data-kind") == "admission"
        assert newest.get_attribute("data-source") == "script"
        expect(newest).to_contain_text("should_admit: 70b is kept for batch jobs")
        routed = page.locator('tr.decision[data-kind="route"][data-source="script"]').first
        expect(routed).to_contain_text("old-server/cuda:1")
        expect(routed).to_contain_text("route_task chose worker")
        shot(page, "ui-scheduler")
        # The stored version, highlighted read-only (it is in force: nothing to restore).
        page.get_by_role("link", name=re.compile(r"^View v\d+$")).first.click()
        expect(page.get_by_role("heading", level=1)).to_contain_text("Scheduler script v")
        comment = page.locator("pre[data-highlight] .tok-com").first
        expect(comment).to_have_text(SCRIPT.split("\n")[0])
        assert page.get_by_role("button", name=re.compile("Restore")).count() == 0

        # The charts count exactly the requests that were served (the refusal reached no
        # worker), once the queen has flushed its sums.
        row = page.locator('#totals tr[data-model="llama-3-8b"] td')
        deadline = time.monotonic() + 20
        while True:
            page.goto("/ui/charts?range=15m")
            if row.count() and row.nth(0).inner_text() == str(served):
                break
            assert time.monotonic() < deadline, f"the charts never showed {served} requests"
            time.sleep(1)
        assert row.nth(1).inner_text() == "0"  # errors
        assert page.locator('#totals tr[data-model="llama-3-70b"]').count() == 0
        expect(page.locator("#chart-rps .uplot")).to_have_count(1)
        expect(page.locator("#chart-ttft .uplot")).to_have_count(1)
        expect(page.locator("#chart-memory .uplot")).to_have_count(1)
        # A chart's table loads its figures when opened (the page computes none).
        assert page.locator("table[data-table]").count() == 0
        page.locator("#table-rps").locator("xpath=..").locator("summary").click()
        expect(page.locator('table[data-table="rps"] tbody tr')).not_to_have_count(0)
        shot(page, "ui-charts")

        # A phone-sized window: the scheduler page fits without sideways scrolling.
        small = browser.new_page(queen.url, width=390, height=844, mobile=True)
        operator_login(small, "ops", PASSWORD)
        small.goto("/ui/scheduler")
        expect(small.get_by_role("button", name="Reload")).to_be_visible()
        assert small.evaluate("document.documentElement.scrollWidth") <= 390
        shot(small, "ui-scheduler-390")

        assert problems(page) == []
        assert problems(small) == []
    finally:
        dep.close()
