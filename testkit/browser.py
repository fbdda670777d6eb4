"""A real browser for the web faces' tests: Playwright for Python driving Debian's
chromium (never `playwright install`: no browser is downloaded). Every page records the
console errors and CSP violations it meets, so a test fails when a page breaks its
Content-Security-Policy, and `shot()` keeps a screenshot of each page under
artifacts/screenshots/ (RBEE_ARTIFACTS) for a person to look at."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("RBEE_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ARTIFACTS = Path(os.environ.get("RBEE_ARTIFACTS", str(ROOT / "artifacts")))


@dataclass
class PageLog:
    """What a page said that a person would not want: console errors, CSP refusals,
    uncaught exceptions, and failed requests to the queen (4xx/5xx are the test's business)."""

    errors: list[str] = field(default_factory=list)

    def attach(self, page: Any) -> None:
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))

    def _console(self, msg: Any) -> None:
        text = msg.text
        if msg.type == "error" and not re.search(r"status of (4\d\d)", text):
            self.errors.append(text)
        elif "Content Security Policy" in text or "Refused to" in text:
            self.errors.append(text)


class Browser:
    """One chromium for a test module: `new_page()` gives a fresh context (own cookies)."""

    def __init__(self) -> None:
        if not Path(CHROMIUM).exists():
            raise RuntimeError(
                f"{CHROMIUM} is missing: apt-get install chromium (.ci/run installs it)"
            )
        from playwright.sync_api import sync_playwright

        self._pw = sync_playwright().start()
        self.browser = self._pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        self.logs: list[PageLog] = []

    def new_page(
        self, base_url: str, *, width: int = 1280, height: int = 900, mobile: bool = False
    ) -> Any:
        context = self.browser.new_context(
            base_url=base_url,
            viewport={"width": width, "height": height},
            is_mobile=mobile,
            has_touch=mobile,
            permissions=["clipboard-read", "clipboard-write"],
        )
        context.set_default_timeout(15_000)
        page = context.new_page()
        log = PageLog()
        log.attach(page)
        page.rbee_log = log
        self.logs.append(log)
        return page

    def close(self) -> None:
        self.browser.close()
        self._pw.stop()


def problems(page: Any) -> list[str]:
    """The console errors and CSP refusals this page has met so far."""
    return list(page.rbee_log.errors)


def shot(page: Any, name: str) -> Path:
    """Save a full-page screenshot as artifacts/screenshots/<name>.png."""
    path = ARTIFACTS / "screenshots" / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True)
    return path


def operator_login(page: Any, username: str, password: str) -> None:
    page.goto("/ui/login")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r".*/ui/.*|.*/console/.*"))


def portal_login(page: Any, email: str, password: str) -> None:
    page.goto("/portal/login")
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r".*/portal/.*"))
    assert "/portal/login" not in page.url, "portal sign-in failed"
