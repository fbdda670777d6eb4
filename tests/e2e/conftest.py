"""Fixtures of the end-to-end tests: a real chromium for the web faces."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from testkit.browser import Browser


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    b = Browser()
    try:
        yield b
    finally:
        b.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """`item.failed_call` is True once the test itself failed, for fixtures that leave
    evidence behind (process logs) only then."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.when == "call" and report.failed:
        item.failed_call = True  # type: ignore[attr-defined]
