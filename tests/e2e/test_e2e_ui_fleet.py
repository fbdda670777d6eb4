"""The issue's Done-when for /ui, in a real chromium against a real queen and a real
hive: sign in, see the hive's workers with their memory, spawn a worker pinned to a
device and watch it become ready without reloading the page; the page follows the fleet
again after the queen restarts; at 390 px wide it still fits. And `rbee up` prints a
one-time link that signs its owner in to /ui."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest

from testkit.browser import Browser, operator_login, problems, shot
from testkit.live import ROOT, Deployment, Hive, Queen, free_port, stop_process
from testkit.machines import machine_path
from tests.conftest import CHAT_MODEL

pytestmark = pytest.mark.e2e

PW = "pw-123456789"
READY_SDXL = '[data-worker="sdxl@cuda:0"][data-state="ready"]'


def _besides_the_outage(found: list[str]) -> list[str]:
    """What a page logged besides its socket failing while the queen was down: chromium's
    "WebSocket connection ... failed" and htmx's ws extension logging the error event
    (console.error(event), which reads "Event")."""
    return [
        p
        for p in found
        if p != "Event"
        and not re.search(r"WebSocket connection to 'ws://[^']+/ui/ws/fleet' failed", p)
    ]


def test_spawn_a_pinned_worker_and_watch_it_become_ready_live(
    deployment: Deployment, browser: Browser
) -> None:
    queen = Queen(deployment)
    Hive(
        deployment,
        queen,
        "gaming-pc",
        [CHAT_MODEL],
        extra_args=["--inventory", machine_path("gaming-pc-rtx4090")],
    )
    deployment.rbee(
        "operator", "create", "ops", "--perm", "fleet", "--password-stdin", input=PW + "\n"
    )
    page = browser.new_page(queen.url)
    page.goto("/ui/")
    assert "/ui/login" in page.url  # no session: asked to sign in
    operator_login(page, "ops", PW)
    assert page.url.endswith("/ui/") and page.title() == "Fleet · rbee"
    page.wait_for_selector("[data-live-status].connected")
    hive = page.locator('[data-hive="gaming-pc"]')
    assert hive.get_attribute("data-status") == "online"
    assert "RTX4090" in hive.locator("h2").inner_text()
    chat = page.locator(f'[data-worker="{CHAT_MODEL}@cpu"]')
    chat.wait_for()
    page.wait_for_selector(f'[data-worker="{CHAT_MODEL}@cpu"][data-state="ready"]', timeout=60_000)
    cells = chat.locator("td").all_inner_texts()
    assert re.fullmatch(r"\d+\.\d (MiB|GiB)", cells[2]), cells  # its memory
    assert page.locator('[data-hive="gaming-pc"] tr[data-device="cuda:0"] meter').count() == 1
    assert (
        page.locator('[data-hive="gaming-pc"] tr[data-device="cuda:0"] [data-free-device]').count()
        == 1
    )
    shot(page, "ui-fleet")

    # Spawn SDXL (the echo engine stands in) pinned to the RTX 4090.
    page.get_by_label("Hive", exact=True).select_option("gaming-pc")
    page.get_by_label("Model", exact=True).fill("sdxl=echo:")
    page.get_by_label("Device", exact=True).select_option("cuda:0")
    page.get_by_label("Pin this worker").check()
    page.get_by_role("button", name="Spawn").click()
    page.wait_for_url(re.compile(r".*/ui/$"))
    assert "Spawning sdxl on gaming-pc:cuda:0 (pinned)" in page.locator(".messages").inner_text()
    page.evaluate("window.rbeeNotReloaded = true")
    assert page.locator(READY_SDXL).count() == 0  # not ready yet when the page loaded
    page.wait_for_selector(READY_SDXL, timeout=60_000)
    assert page.evaluate("window.rbeeNotReloaded") is True  # pushed live, no reload
    sdxl = page.locator('[data-worker="sdxl@cuda:0"]')
    assert "pinned" in sdxl.locator("th").inner_text()
    assert deployment.sql("SELECT model_name, device, pinned FROM hives_assignment") == [
        ("sdxl", "cuda:0", True)
    ]
    shot(page, "ui-fleet-spawned")
    assert problems(page) == []

    # The queen restarts: the page says so, reconnects by itself and follows the fleet again.
    queen.stop()
    page.wait_for_selector("[data-live-status]:not(.connected)", timeout=15_000)
    queen.start()
    page.wait_for_selector("[data-live-status].connected", timeout=60_000)
    queen.wait_for_model("gaming-pc", "sdxl", timeout=60)
    deployment.rbee("worker", "stop", "sdxl", "--hive", "gaming-pc", "--device", "cuda:0")
    page.wait_for_selector('[data-worker="sdxl@cuda:0"][data-state="stopped"]', timeout=60_000)
    assert page.evaluate("window.rbeeNotReloaded") is True
    assert _besides_the_outage(problems(page)) == []

    # A phone: 390 px wide, nothing wider than the screen.
    phone = browser.new_page(queen.url, width=390, height=844, mobile=True)
    operator_login(phone, "ops", PW)
    phone.wait_for_selector('[data-hive="gaming-pc"]')
    phone.wait_for_selector("[data-live-status].connected")
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390
    shot(phone, "ui-fleet-phone")
    assert problems(phone) == []


def test_rbee_up_prints_a_one_time_link_that_signs_the_owner_in(tmp_path, browser: Browser) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RBEE_", "DJANGO_"))}
    env.update(
        {
            "RBEE_HOME": str(tmp_path / "home"),
            "HF_HUB_OFFLINE": "1",
            "PYTHONPATH": str(ROOT),
            "RBEE_LLAMA_THREADS": "1",
        }
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "rbee.cli", "up", "--port", str(port), "--model", CHAT_MODEL],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        start_new_session=True,
    )
    lines: list[str] = []
    link = ""
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not link:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            m = re.search(rf"(http://localhost:{port}/ui/link/[A-Za-z0-9_-]+)", line)
            if m:
                link = m.group(1)
        text = "".join(lines)
        assert link, text
        assert f"Dashboard: http://localhost:{port}/ui\n" in text
        page = browser.new_page(f"http://localhost:{port}")
        page.goto(link)
        page.get_by_role("button", name="Sign in as the owner").click()
        page.wait_for_url(re.compile(r".*/ui/$"))
        page.wait_for_selector(f'[data-hive="local"] [data-worker="{CHAT_MODEL}@cpu"]')
        assert "owner" in page.locator(".who").inner_text()
        assert problems(page) == []
        # Used once: a second browser gets nothing from it.
        again = browser.new_page(f"http://localhost:{port}")
        assert again.goto(link).status == 410
        again.goto("/ui/")
        assert "/ui/login" in again.url
    finally:
        stop_process(proc, timeout=30)
