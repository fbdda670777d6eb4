"""Log records carry no secret, in their message or in a logged exception's traceback,
and a value a client chose cannot forge a log line (kernel/logs.py)."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from kernel.logs import RedactSecrets

KEY = "sk-rbee-abcdefghij-" + "S" * 40
HIVE_TOKEN = "rbee-hive-klmnopqrst-" + "H" * 40
OPENAI_KEY = "sk-proj-" + "O" * 48
STRIPE_KEY = "sk_live_" + "P" * 24
STRIPE_HOOK = "whsec_" + "W" * 32
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0." + "J" * 20
DB_PASSWORD = "hunter2-db-pass"


@pytest.fixture
def log() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactSecrets())
    logger = logging.getLogger("tests.rbee.logs")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    try:
        yield logger, out
    finally:
        logger.removeHandler(handler)


def _secrets() -> list[str]:
    return [
        "S" * 40,
        "H" * 40,
        OPENAI_KEY,
        STRIPE_KEY,
        STRIPE_HOOK,
        "J" * 20,
        DB_PASSWORD,
    ]


def test_an_exception_quoting_secrets_is_logged_without_them(
    log: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, out = log

    def connect() -> None:
        raise ConnectionError(
            f"auth failed for {KEY} (hive {HIVE_TOKEN}); upstream said 'Authorization: "
            f"Bearer {JWT}' with {OPENAI_KEY}, stripe {STRIPE_KEY} {STRIPE_HOOK} on "
            f"postgres://rbee:{DB_PASSWORD}@db:5432/rbee"
        )

    try:
        try:
            connect()
        except ConnectionError as exc:
            raise RuntimeError(f"while serving key {KEY}") from exc
    except RuntimeError:
        logger.exception("request failed for %s", KEY)
    text = out.getvalue()
    assert "Traceback (most recent call last):" in text  # the traceback is still there
    assert "ConnectionError" in text and "RuntimeError" in text and "connect()" in text
    for secret in _secrets():
        assert secret not in text, secret
    assert "sk-rbee-abcdefghij-[redacted]" in text  # the public prefix stays, to say which
    assert "rbee-hive-klmnopqrst-[redacted]" in text
    assert "postgres://rbee:[redacted]@db:5432/rbee" in text


def test_exc_info_given_as_an_argument_and_stack_info_are_redacted(
    log: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, out = log
    try:
        raise ValueError(f"bad key {KEY}")
    except ValueError as exc:
        logger.error("failed", exc_info=exc, stack_info=True)
    logger.warning("token=%s and redis://:%s@cache:6379/0", STRIPE_KEY, DB_PASSWORD)
    text = out.getvalue()
    assert "S" * 40 not in text and STRIPE_KEY not in text and DB_PASSWORD not in text
    assert "Stack (most recent call last)" in text


def test_user_values_cannot_forge_log_lines(log: tuple[logging.Logger, io.StringIO]) -> None:
    logger, out = log
    path = "/v1/chat\r\nINFO rbee.api: admin logged in\x1b[2J"
    logger.warning("not found: %s", path)
    try:
        raise ValueError(f"no such model\nERROR forged: {path}")
    except ValueError:
        logger.exception("lookup of %r", "x")
    lines = out.getvalue().splitlines()
    assert lines[0] == (
        "WARNING tests.rbee.logs: not found: /v1/chat\\r\\nINFO rbee.api: admin logged in\\x1b[2J"
    )
    assert not any(line.startswith(("INFO rbee.api", "ERROR forged")) for line in lines)
    assert "\x1b" not in out.getvalue()
    last = lines[-1]
    assert last.startswith("ValueError: ") and "\\nERROR forged: /v1/chat\\r\\n" in last
