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
